"""The shared embedding backbone: one object that every geovl capability encodes images and text through."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from geovl.io.images import ImageSource
from geovl.io.loading import load_image
from geovl.models.device import precision_name
from geovl.models.features import ImageFeatures, TextFeatures
from geovl.models.inference import InferenceRewrite, count_convolutions, fold_checked
from geovl.models.registry import Preprocess
from geovl.models.towers import Towers

logger = logging.getLogger(__name__)


def build_transform(pre: Preprocess) -> Callable[[Image.Image], torch.Tensor]:
    """The evaluation transform for ``pre`` (resize / crop / normalise), built by open_clip."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = PreprocessCfg(
        size=pre.image_size, mean=pre.mean, std=pre.std, interpolation=pre.interpolation, resize_mode=pre.resize_mode
    )
    return image_transform_v2(cfg, is_train=False)


def build_uint8_transform(pre: Preprocess) -> Callable[[Image.Image], torch.Tensor]:
    """The geometric part of :func:`build_transform` (resize / crop / RGB), returning a (3, S, S) uint8 tensor.

    Decode workers use it so that they ship a quarter of the bytes and leave the float conversion and
    normalisation to one vectorised step on the whole batch (:meth:`Backbone.embed_pixels` accepts uint8).
    The pixels are those of open_clip's transform (tested bit for bit), computed with fewer Python layers.
    """
    full = build_transform(pre)
    steps = [t for t in getattr(full, "transforms", []) if type(t).__name__ not in ("MaybeToTensor", "ToTensor",
                                                                                    "Normalize")]
    return Uint8Transform(steps)


class Uint8Transform:
    """Run open_clip's geometric eval steps on a PIL image and return a (3, H, W) uint8 tensor.

    torchvision's ``Resize`` (to the short side or to a fixed size) and ``CenterCrop`` are done with one direct
    PIL call each, skipped when they would not change the image, with torchvision's size and offset rounding;
    any other step (``ResizeKeepRatio``, ``CenterCropOrPad``, mode conversion) runs as it is. For small images
    this takes about a fifth off the per-image decode cost, which is what a CPU pipeline is bound by.
    """

    def __init__(self, steps: Sequence[Callable[[Any], Any]]):
        from torchvision.transforms import CenterCrop, InterpolationMode, Resize
        from torchvision.transforms.functional import pil_modes_mapping

        self.steps = list(steps)
        self._plan: list[Callable[[Image.Image], Image.Image]] = []
        for step in self.steps:
            if isinstance(step, Resize) and type(step) is Resize and step.max_size is None \
                    and isinstance(step.interpolation, InterpolationMode):
                self._plan.append(_FastResize(step.size, pil_modes_mapping[step.interpolation]))
            elif isinstance(step, CenterCrop) and type(step) is CenterCrop:
                self._plan.append(_FastCenterCrop(tuple(step.size), step))
            else:
                self._plan.append(step)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        for step in self._plan:
            image = step(image)
        if image.mode != "RGB":
            image = image.convert("RGB")
        return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.steps})"


class _FastResize:
    """torchvision ``Resize(size)`` on a PIL image: same output size rule, same PIL filter."""

    def __init__(self, size: int | Sequence[int], resample: int):
        self.size = [size] if isinstance(size, int) else list(size)
        self.resample = resample

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        if len(self.size) == 1:  # the short side becomes size, the long side keeps the ratio (rounded down)
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = self.size[0], int(self.size[0] * long / short)
            new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        else:
            new_h, new_w = self.size
        if (new_w, new_h) == (w, h):
            return image
        return image.resize((new_w, new_h), self.resample)


class _FastCenterCrop:
    """torchvision ``CenterCrop``: a no-op on an image of the crop size, PIL ``crop`` inside it, else the step
    itself (which pads)."""

    def __init__(self, size: tuple[int, ...], step: Callable[[Any], Any]):
        self.th, self.tw = (size[0], size[0]) if len(size) == 1 else (size[0], size[1])
        self.step = step

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        if (w, h) == (self.tw, self.th):
            return image
        if w < self.tw or h < self.th:
            return self.step(image)
        top, left = round((h - self.th) / 2.0), round((w - self.tw) / 2.0)  # Python rounds half to even, as torchvision
        return image.crop((left, top, left + self.tw, top + self.th))


@dataclass
class ModelInfo:
    """Where a backbone came from, for manifests and reports.

    Attributes:
        name: what the user asked for (registry name, path, or ``random:<arch>``).
        architecture: open_clip architecture name or ``"siglip"``.
        checkpoint: resolved weights path, or ``None`` for random weights.
        checkpoint_sha256: digest of the weights file when it was computed.
        extra: anything else worth recording (family, format, seed).
    """

    name: str
    architecture: str
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Backbone:
    """A dual image/text encoder with its preprocessing, on one device and precision.

    Use :func:`geovl.models.load_backbone` to make one. All ``encode_*`` methods run without gradients and return
    float32 numpy arrays; the ``*_features`` methods return torch tensors (with gradients if enabled by the
    caller) for captioners and generators that condition on patch and token features.
    """

    def __init__(
        self,
        towers: Towers,
        preprocess: Preprocess,
        info: ModelInfo,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.towers = towers
        self.preprocess = preprocess
        self.info = info
        self.device = device
        self.dtype = dtype
        self.transform = build_transform(preprocess)
        self.uint8_transform = build_uint8_transform(preprocess)
        self._mean = torch.tensor(preprocess.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(preprocess.std, device=device).view(1, 3, 1, 1)
        # whether cutting trailing padding off token batches leaves the text embeddings unchanged (None: not yet
        # checked; see _trim_padding)
        self._trim_ok: bool | None = None
        self._channels_last = False
        #: what :meth:`optimize_for_inference` did (``None``: not called)
        self.inference_rewrite: InferenceRewrite | None = None
        towers.module.to(device=device, dtype=dtype).eval()

    # ---- properties
    @property
    def model(self) -> torch.nn.Module:
        """The underlying ``nn.Module`` (open_clip or transformers)."""
        return self.towers.module

    @property
    def embed_dim(self) -> int:
        """Dimension D of the joint embedding space."""
        return self.towers.embed_dim

    @property
    def image_size(self) -> int:
        """Square input side in pixels."""
        return self.preprocess.image_size

    @property
    def precision(self) -> str:
        return precision_name(self.dtype)

    def __repr__(self) -> str:
        return (
            f"Backbone(name={self.info.name!r}, architecture={self.info.architecture!r}, dim={self.embed_dim}, "
            f"image_size={self.image_size}, device={self.device}, precision={self.precision})"
        )

    # ---- preprocessing
    def preprocess_image(self, image: ImageSource) -> torch.Tensor:
        """Decode (if needed; 16-bit and multispectral GeoTIFFs are stretched to RGB) and preprocess one image into a
        (3, S, S) float32 tensor."""
        return self.transform(load_image(image))

    def preprocess_images(self, images: Sequence[ImageSource]) -> torch.Tensor:
        """(B, 3, S, S) float32 batch from image sources."""
        if len(images) == 0:
            raise ValueError("no images given")
        return torch.stack([self.preprocess_image(img) for img in images])

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """(B, L) token ids for ``texts``."""
        if isinstance(texts, str):
            raise ValueError("pass a list of strings, not a single string")
        return self.towers.tokenize(texts)

    # ---- pooled embeddings
    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True)

    def _pixels(self, x: torch.Tensor) -> torch.Tensor:
        """A (B, 3, S, S) batch on the device, in the layout the image tower runs fastest in."""
        x = self._to_device(x)
        return x.contiguous(memory_format=torch.channels_last) if self._channels_last else x

    # ---- inference rewrites
    @property
    def folded(self) -> bool:
        """Whether BatchNorm layers were folded into convolutions (the model can then be neither trained nor
        saved as its architecture)."""
        return bool(self.inference_rewrite is not None and self.inference_rewrite.folded)

    def optimize_for_inference(self) -> InferenceRewrite:
        """Run CNN image towers channels-last and, in fp32, fold their BatchNorms into the convolutions
        (:mod:`geovl.models.inference`); :func:`geovl.models.load_backbone` does this unless ``optimize=False``.

        The folds are checked on a fixed random batch and undone if the output moves. bf16 / fp16 towers are not
        folded: rounding the folded weights moved real embeddings further from fp32 (geovl-rs-small on EuroSAT:
        mean cosine 0.9950 against 0.9965 unfolded). Idempotent.
        """
        if self.inference_rewrite is not None:
            return self.inference_rewrite
        module = self.towers.module
        convolutions = count_convolutions(module)
        if convolutions == 0:
            self.inference_rewrite = InferenceRewrite()
            return self.inference_rewrite
        if self.dtype == torch.float32:
            generator = torch.Generator().manual_seed(0)
            batch = torch.randn(2, 3, self.image_size, self.image_size, generator=generator).to(self.device)
            rewrite = fold_checked(module, lambda: self.towers.encode_image(batch))
            module.eval()
        else:  # folded weights rounded to bf16 moved real embeddings further from fp32 than bf16 alone does
            rewrite = InferenceRewrite()
        if convolutions > 1 and not rewrite.skipped:  # a CNN; a ViT's patch convolution alone gains nothing
            module.to(memory_format=torch.channels_last)
            rewrite.channels_last = self._channels_last = True
        if rewrite.skipped:
            logger.warning("%s: %s", self.info.name, rewrite.skipped)
        self.inference_rewrite = rewrite
        return rewrite

    def normalize_uint8(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) uint8 from :attr:`uint8_transform` -> the model's normalised float input, on its device."""
        x = self._to_device(pixels).float().div_(255.0)
        return x.sub_(self._mean).div_(self._std)

    @torch.inference_mode()
    def embed_pixels(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, D) float32 embeddings of a preprocessed (B, 3, S, S) batch, on the backbone's device: float input
        is taken as normalised (:attr:`transform`), uint8 input as resized and cropped only
        (:attr:`uint8_transform`) and is normalised here."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) pixel batch, got shape {tuple(pixels.shape)}")
        if pixels.dtype == torch.uint8:
            pixels = self.normalize_uint8(pixels)
        out = self.towers.encode_image(self._pixels(pixels)).float()
        return F.normalize(out, dim=-1) if normalize else out

    @torch.inference_mode()
    def embed_tokens(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, D) float32 embeddings of tokenised text, on the backbone's device."""
        out = self.towers.encode_text(self._to_device(tokens)).float()
        return F.normalize(out, dim=-1) if normalize else out

    def encode_images(
        self,
        images: Iterable[ImageSource] | torch.Tensor,
        *,
        batch_size: int = 32,
        normalize: bool = True,
        progress: bool = False,
    ) -> np.ndarray:
        """Embed images: paths, bytes, PIL images, uint8 arrays, or a preprocessed (B, 3, S, S) tensor.

        Returns:
            (N, D) float32 array, L2-normalised unless ``normalize=False``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(images, torch.Tensor):
            chunks = [
                self.embed_pixels(images[i : i + batch_size], normalize) for i in range(0, len(images), batch_size)
            ]
        else:
            items = list(images)
            if not items:
                raise ValueError("no images given")
            chunks = []
            bar = _progress(len(items), "images", progress)
            for i in range(0, len(items), batch_size):
                batch = self.preprocess_images(items[i : i + batch_size])
                chunks.append(self.embed_pixels(batch, normalize))
                bar.update(len(batch))
            bar.close()
        return torch.cat(chunks).cpu().numpy()

    def encode_texts(
        self, texts: Sequence[str], *, batch_size: int = 256, normalize: bool = True, progress: bool = False
    ) -> np.ndarray:
        """Embed texts. Returns a (N, D) float32 array, L2-normalised unless ``normalize=False``."""
        if isinstance(texts, str):
            raise ValueError("pass a list of strings, not a single string")
        if len(texts) == 0:
            raise ValueError("no texts given")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        chunks = []
        bar = _progress(len(texts), "texts", progress)
        for i in range(0, len(texts), batch_size):
            batch = list(texts[i : i + batch_size])
            chunks.append(self._embed_trimmed(self.tokenize(batch), normalize))
            bar.update(len(batch))
        bar.close()
        return torch.cat(chunks).cpu().numpy()

    def _embed_trimmed(self, tokens: torch.Tensor, normalize: bool) -> torch.Tensor:
        """:meth:`embed_tokens` without the batch's trailing padding columns, where that gives the same embeddings.

        Tokenizers pad every text to the context length (64-77 tokens) while a search query has ~10: the text tower
        then does 6x the work. Towers that mask padding (HF encoders) or pool the end-of-text token (CLIP) give the
        same result on the trimmed batch; towers that pool the last position (SigLIP) do not. So the first batch is
        embedded both ways and trimming is kept only if they agree.
        """
        if self._trim_ok is False or tokens.ndim != 2 or tokens.shape[1] < 2:
            return self.embed_tokens(tokens, normalize)
        pad = tokens[0, -1]
        used = (tokens != pad).any(0).nonzero()
        length = int(used.max()) + 2 if used.numel() else tokens.shape[1]  # keep one padding column
        if length >= tokens.shape[1]:
            return self.embed_tokens(tokens, normalize)
        trimmed = self.embed_tokens(tokens[:, :length].contiguous(), normalize)
        if self._trim_ok is None:
            full = self.embed_tokens(tokens, normalize)
            # agreement up to the rounding of bf16 / fp16 towers (their outputs differ in the 3rd digit anyway);
            # last-position pooling on a shorter batch gives a different vector altogether
            cosine = (F.normalize(trimmed, dim=-1) * F.normalize(full, dim=-1)).sum(-1)
            self._trim_ok = bool(cosine.min() > 0.999)
            if not self._trim_ok:
                return full
        # every call after the check (and the checking one) returns the trimmed result: a backbone gives the same
        # numbers for the same texts whatever it embedded before
        return trimmed

    # ---- rich features
    def image_features(self, images: Sequence[ImageSource] | torch.Tensor) -> ImageFeatures:
        """Pooled embeddings and patch-level features for a batch (torch tensors in the backbone's dtype)."""
        pixels = images if isinstance(images, torch.Tensor) else self.preprocess_images(images)
        return self.towers.image_features(self._pixels(pixels))

    def text_features(self, texts: Sequence[str] | torch.Tensor) -> TextFeatures:
        """Pooled embeddings, per-token features and the padding mask for a batch of texts or token ids."""
        tokens = texts if isinstance(texts, torch.Tensor) else self.tokenize(texts)
        return self.towers.text_features(self._to_device(tokens))

    @property
    def supports_patch_embeddings(self) -> bool:
        """Whether :meth:`patch_embeddings` works for this image tower (see :mod:`geovl.models.towers`)."""
        return self.towers.patch_embeddings_error() is None

    @torch.inference_mode()
    def patch_embeddings(
        self, images: Sequence[ImageSource] | torch.Tensor, *, normalize: bool = False
    ) -> torch.Tensor:
        """Patch-level embeddings in the joint image-text space, for dense similarity maps.

        Args:
            images: image sources, or a (B, 3, S, S) batch as :meth:`embed_pixels` takes it (float: normalised;
                uint8: from :attr:`uint8_transform`).
            normalize: L2-normalise each patch embedding.

        Returns:
            (B, h, w, D) float32 torch tensor on the backbone's device, without gradients; (h, w) is the tower's
            patch grid (ViT patches, ResNet cells of the last feature map), in raster order over the model's input.

        Raises:
            ValueError: the image tower has no patch embeddings (:attr:`supports_patch_embeddings` is False).
        """
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"expected a (B, 3, H, W) pixel batch, got shape {tuple(images.shape)}")
            pixels = self.normalize_uint8(images) if images.dtype == torch.uint8 else images
        else:
            pixels = self.preprocess_images(images)
        out = self.towers.patch_embeddings(self._pixels(pixels)).float()
        return F.normalize(out, dim=-1) if normalize else out

    @torch.inference_mode()
    def logits(self, image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
        """Scaled similarity logits (N_images, N_texts) with the model's learned temperature (and bias)."""
        scale, bias = self.towers.logit_scale_bias()
        sims = torch.from_numpy(np.asarray(image_embeddings, np.float32) @ np.asarray(text_embeddings, np.float32).T)
        out = sims * scale.float().exp().cpu()
        if bias is not None:
            out = out + bias.float().cpu()
        return out.numpy()


class _NullBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, unit: str, enabled: bool) -> Any:
    if not enabled:
        return _NullBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, dynamic_ncols=True)
