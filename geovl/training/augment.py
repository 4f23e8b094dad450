"""Remote-sensing training augmentations, drawn from an explicit generator (so a sample's augmentation is a
function of its position in the run, which makes resumed runs exact)."""

from __future__ import annotations

import math

import torch
from torchvision.transforms.v2 import functional as TF

from geovl.models.registry import Preprocess
from geovl.training.config import AugmentConfig

__all__ = ["RSAugment"]


class RSAugment:
    """uint8 (3, H, W) -> normalised float32 (3, S, S): random resized crop, flips, 90-degree rotations and
    optional colour jitter, then the model's mean / std."""

    def __init__(self, config: AugmentConfig, preprocess: Preprocess, train: bool = True) -> None:
        self.config = config
        self.size = preprocess.image_size
        self.mean = torch.tensor(preprocess.mean).view(3, 1, 1)
        self.std = torch.tensor(preprocess.std).view(3, 1, 1)
        self.train = train

    def _uniform(self, gen: torch.Generator, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=gen))

    def _crop_box(self, h: int, w: int, gen: torch.Generator) -> tuple[int, int, int, int]:
        lo, hi = self.config.crop_scale
        area = h * w
        for _ in range(10):
            target = area * self._uniform(gen, lo, hi)
            ratio = math.exp(self._uniform(gen, math.log(3 / 4), math.log(4 / 3)))
            cw = round(math.sqrt(target * ratio))
            ch = round(math.sqrt(target / ratio))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(h - ch + 1, (1,), generator=gen))
                left = int(torch.randint(w - cw + 1, (1,), generator=gen))
                return top, left, ch, cw
        side = min(h, w)
        return (h - side) // 2, (w - side) // 2, side, side

    def __call__(self, image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) uint8 image, got {tuple(image.shape)} {image.dtype}")
        cfg = self.config
        s = self.size
        h, w = image.shape[-2:]
        if self.train and cfg.random_resized_crop:
            top, left, ch, cw = self._crop_box(h, w, gen)
            x = TF.resized_crop(image, top, left, ch, cw, [s, s], antialias=True)
        else:
            x = TF.center_crop(TF.resize(image, [s], antialias=True), [s, s])
        if self.train:
            flips = torch.rand(2, generator=gen)
            if cfg.hflip and flips[0] < 0.5:
                x = x.flip(-1)
            if cfg.vflip and flips[1] < 0.5:
                x = x.flip(-2)
            if cfg.rot90:
                k = int(torch.randint(4, (1,), generator=gen))
                x = torch.rot90(x, k, dims=(-2, -1))
        out = x.float() / 255.0
        if self.train and cfg.color_jitter > 0:
            j = cfg.color_jitter
            out = TF.adjust_brightness(out, self._uniform(gen, 1 - j, 1 + j))
            out = TF.adjust_contrast(out, self._uniform(gen, 1 - j, 1 + j))
            out = TF.adjust_saturation(out, self._uniform(gen, 1 - j, 1 + j))
        return ((out - self.mean) / self.std).contiguous()
