"""Resolution-guided text-to-image diffusion on the shared backbone (Text2Earth-style), built from diffusers parts.

Rules:

* The denoiser is a diffusers ``UNet2DConditionModel``; the samplers are diffusers' DDPM, DDIM and Euler schedulers
  built from the one training scheduler's config; :class:`GeoDiffusionPipeline` is a ``DiffusionPipeline`` so that
  ``save_pretrained`` / ``from_pretrained`` round-trip (the backbone is not part of the folder: the folder's
  ``model_index.json`` names it and records its sha256, and loading checks it).
* The diffusion runs in pixel space on 4x4 space-to-depth patches (``patch``; Hoogeboom et al., *simple diffusion*):
  a 64 px RGB tile is a 16x16x48 array, which keeps the UNet cheap enough to train on a CPU while staying lossless
  (no VAE can be downloaded here, and a small one trained on a CPU would blur what it encodes).
* Samplers: DDPM (the default: ancestral, seeded; on the bundled model it leaves less high-frequency noise than
  DDIM at the same step count), DDIM and Euler, all with trailing timesteps (sampling starts at the last training
  timestep, as the pure-noise start assumes; Lin et al. 2024, *Common diffusion noise schedules are flawed*).
* Conditions (:mod:`geovl.models.diffusion_conditioning`): the backbone's text token features through the UNet's
  cross-attention (``encoder_hid_proj`` maps them to its width) and the zoom level through its class embedding.
* Guidance: three predictions, ``e(∅, ∅)``, ``e(text, ∅)`` and ``e(text, level)``, combined as
  ``e(∅,∅) + g_text (e(text,∅) - e(∅,∅)) + g_res (e(text,level) - e(text,∅))``: text and resolution guidance are
  set separately (``guidance`` and ``guidance_resolution``, default equal). Passes that the weights make redundant
  are skipped (equal weights: two passes; no level: two; both 1: one).
* Same prompt, GSD, settings and ``seed`` -> the same image: the starting noise of image ``i`` of a call comes from
  a CPU generator seeded with ``seed + i`` (so it does not depend on the device), sampler noise from ``seed``.
* Scenes larger than a tile (``size`` > the tile) are sampled as one canvas whose every step averages the
  predictions of overlapping tile windows (MultiDiffusion, Bar-Tal et al. 2023), so the scene is seamless;
  :meth:`GeoDiffusionPipeline.extend` outpaints around a given image by keeping its pixels fixed (re-noised to
  each step's level) while the rest of the canvas is sampled.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline, EulerDiscreteScheduler, UNet2DConditionModel
from PIL import Image

from geovl.models.backbone import Backbone
from geovl.models.diffusion_conditioning import (
    NULL_LEVEL,
    RESOLUTION_CLASSES,
    TextConditioner,
    TextTokens,
    gsd_level,
    level_class,
    level_gsd,
)

__all__ = [
    "SAMPLERS",
    "GenerationOutput",
    "GeneratorConfig",
    "GeoDiffusionPipeline",
    "Sampler",
    "build_scheduler",
    "build_unet",
    "combine_guidance",
    "tile_windows",
]

Sampler = Literal["ddim", "ddpm", "euler"]
SAMPLERS: tuple[str, ...] = ("ddim", "ddpm", "euler")
MAX_STEPS = 1000
MAX_SIDE = 1024


@dataclass
class GeneratorConfig:
    """Shape of a generator's UNet and its noise schedule.

    Attributes:
        image_size: tile side in pixels.
        patch: space-to-depth factor (the UNet sees ``image_size / patch`` squares of ``3 * patch**2`` channels).
        channels: UNet block widths (one resolution level each).
        attention: which levels have self- and cross-attention.
        layers_per_block: ResNet layers per level.
        cross_attention_dim: width of the cross-attention keys and values (the text features are projected to it).
        head_dim: attention head width.
        text_length: text tokens kept.
        pooled_text: also add an attention-pooled summary of the text tokens to the time embedding (Imagen /
            DeepFloyd IF's ``addition_embed_type="text"``), so that every ResNet block, not only the attention
            levels, sees the text; it makes the text condition learnable in far fewer steps.
        prediction_type: ``v_prediction`` or ``epsilon``.
        beta_schedule: the training noise schedule (``squaredcos_cap_v2``: cosine).
        train_timesteps: diffusion steps of the training schedule.
    """

    image_size: int = 64
    patch: int = 4
    channels: tuple[int, ...] = (128, 256, 256)
    attention: tuple[bool, ...] = (False, True, True)
    layers_per_block: int = 1
    cross_attention_dim: int = 128
    head_dim: int = 32
    text_length: int = 32
    pooled_text: bool = True
    prediction_type: str = "v_prediction"
    beta_schedule: str = "squaredcos_cap_v2"
    train_timesteps: int = 1000

    def validate(self) -> None:
        down = 2 ** (len(self.channels) - 1)
        checks = [
            (len(self.channels) == len(self.attention), "channels and attention need one entry per level"),
            (self.patch >= 1 and self.image_size % self.patch == 0, "image_size must be a multiple of patch"),
            ((self.image_size // max(self.patch, 1)) % down == 0,
             f"image_size / patch must be divisible by {down} (one halving per level after the first)"),
            (all(c % 32 == 0 for c in self.channels), "channels must be multiples of 32 (group norm)"),
            (self.prediction_type in ("v_prediction", "epsilon"), "prediction_type: v_prediction or epsilon"),
            (self.text_length >= 2, "text_length must be >= 2"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"generator config: {message}")


def build_unet(config: GeneratorConfig, text_dim: int) -> UNet2DConditionModel:
    """A randomly initialised UNet for ``config`` whose text features are ``text_dim`` wide."""
    config.validate()
    downs = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.attention)
    ups = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention))
    channels = 3 * config.patch ** 2
    pooled: dict[str, Any] = {}
    if config.pooled_text:
        pooled = {"addition_embed_type": "text",
                  "addition_embed_type_num_heads": text_dim // 64 if text_dim % 64 == 0 else 1}
    return UNet2DConditionModel(
        sample_size=config.image_size // config.patch, in_channels=channels, out_channels=channels,
        block_out_channels=tuple(config.channels), down_block_types=downs, up_block_types=ups,
        layers_per_block=config.layers_per_block, cross_attention_dim=config.cross_attention_dim,
        attention_head_dim=config.head_dim, norm_num_groups=32, encoder_hid_dim=text_dim,
        encoder_hid_dim_type="text_proj", num_class_embeds=RESOLUTION_CLASSES, **pooled,
    )


def build_scheduler(config: GeneratorConfig) -> DDPMScheduler:
    """The training noise schedule (samplers are built from its config)."""
    return DDPMScheduler(num_train_timesteps=config.train_timesteps, beta_schedule=config.beta_schedule,
                         prediction_type=config.prediction_type, clip_sample=False)


def combine_guidance(uncond: torch.Tensor, text: torch.Tensor | None, full: torch.Tensor, guidance: float,
                     guidance_resolution: float) -> torch.Tensor:
    """``uncond + g_text (text - uncond) + g_res (full - text)``; ``text=None`` means the pass was skipped because
    the weights are equal (the sum is then ``uncond + g (full - uncond)``)."""
    if text is None:
        return uncond + guidance * (full - uncond)
    return uncond + guidance * (text - uncond) + guidance_resolution * (full - text)


def tile_windows(length: int, tile: int) -> list[int]:
    """Start offsets of windows of ``tile`` covering ``length`` with half-tile overlap (the last one flush)."""
    if length < tile:
        raise ValueError(f"canvas side {length} is smaller than one tile ({tile})")
    stride = max(1, tile // 2)
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


@dataclass
class GenerationOutput:
    """Images of one call and the settings that reproduce them."""

    images: list[Image.Image]
    prompts: list[str]
    gsd: float | None
    level: int
    seed: int
    steps: int
    guidance: float
    guidance_resolution: float
    sampler: str
    width: int
    height: int
    seconds: float = 0.0
    model: dict[str, Any] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        """JSON-able settings (no images)."""
        out = asdict(self)
        out.pop("images")
        out["level_gsd"] = level_gsd(self.level) if self.level != NULL_LEVEL else None
        return out


class GeoDiffusionPipeline(DiffusionPipeline):
    """Text + resolution -> image. Call :meth:`attach_backbone` (the loaders do) before sampling.

    Args:
        unet: the denoiser.
        scheduler: the training noise schedule.
        patch: space-to-depth factor.
        text_length: text tokens kept.
        backbone_name, backbone_sha256: the backbone whose text features the UNet was trained on.
        default_steps, default_guidance: what the loaders, CLI, API and demo use when none is given.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DConditionModel, scheduler: DDPMScheduler, patch: int = 4, text_length: int = 32,
                 backbone_name: str = "", backbone_sha256: str | None = None, default_steps: int = 50,
                 default_guidance: float = 4.0) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(patch=patch, text_length=text_length, backbone_name=backbone_name,
                                backbone_sha256=backbone_sha256, default_steps=default_steps,
                                default_guidance=default_guidance)
        self.conditioner: TextConditioner | None = None
        self.name = ""
        self.metadata: dict[str, Any] = {}

    # ------------------------------------------------------------------ set-up
    def attach_backbone(self, backbone: Backbone) -> GeoDiffusionPipeline:
        """Use ``backbone`` for the text features (it must be the one the UNet was trained on)."""
        self.conditioner = TextConditioner(backbone, int(self.config.text_length))
        width = self.conditioner.dim
        expected = getattr(self.unet.config, "encoder_hid_dim", None)
        if expected is not None and width != expected:
            raise ValueError(f"backbone {backbone.info.name!r} gives {width}-d text features; this generator was "
                             f"trained on {expected}-d ones ({self.config.backbone_name!r})")
        return self

    @property
    def backbone(self) -> Backbone:
        if self.conditioner is None:
            raise ValueError("no backbone attached: load the generator with geovl.models.load_generator, or call "
                             "attach_backbone(backbone)")
        return self.conditioner.backbone

    @property
    def tile(self) -> int:
        """Side in pixels of one generated tile."""
        return int(self.unet.config.sample_size) * int(self.config.patch)

    @property
    def model_device(self) -> torch.device:
        return next(self.unet.parameters()).device

    # ------------------------------------------------------------------ pixels <-> UNet space
    def to_latent(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 3 p^2, H/p, W/p)."""
        return F.pixel_unshuffle(pixels, int(self.config.patch))

    def to_pixels(self, latent: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(latent, int(self.config.patch))

    # ------------------------------------------------------------------ prediction
    def predict(self, x: torch.Tensor, t: torch.Tensor | int, text: TextTokens, levels: torch.Tensor) -> torch.Tensor:
        """The UNet's output for a batch (no guidance). ``levels`` are zoom levels (0: null)."""
        classes = torch.tensor([level_class(int(v)) for v in levels.tolist()], device=x.device)
        timestep = torch.as_tensor(t, device=x.device)
        if timestep.ndim == 0:
            timestep = timestep.expand(x.shape[0])
        dtype = next(self.unet.parameters()).dtype
        out = self.unet(x.to(dtype), timestep, encoder_hidden_states=text.features.to(x.device, dtype),
                        class_labels=classes, encoder_attention_mask=text.mask.to(x.device)).sample
        return out.float()

    def guided(self, x: torch.Tensor, t: torch.Tensor | int, text: TextTokens, level: int, guidance: float,
               guidance_resolution: float) -> torch.Tensor:
        """The guided prediction for ``x`` (B images sharing one zoom ``level``)."""
        b = x.shape[0]
        null = self._null_like(b)
        with_level = torch.full((b,), level, dtype=torch.long)
        no_level = torch.zeros(b, dtype=torch.long)
        if level == NULL_LEVEL or guidance == guidance_resolution:
            if guidance == 1.0:
                return self.predict(x, t, text, with_level)
            out = self.predict(torch.cat([x, x]), t, TextTokens.cat([null, text]), torch.cat([no_level, with_level]))
            return combine_guidance(out[:b], None, out[b:], guidance, guidance)
        out = self.predict(torch.cat([x, x, x]), t, TextTokens.cat([null, text, text]),
                           torch.cat([no_level, no_level, with_level]))
        return combine_guidance(out[:b], out[b:2 * b], out[2 * b:], guidance, guidance_resolution)

    def _null_like(self, n: int) -> TextTokens:
        null = self._conditioner().null()
        return TextTokens(null.features.expand(n, -1, -1), null.mask.expand(n, -1))

    def _conditioner(self) -> TextConditioner:
        if self.conditioner is None:
            raise ValueError("no backbone attached: load the generator with geovl.models.load_generator, or call "
                             "attach_backbone(backbone)")
        return self.conditioner

    # ------------------------------------------------------------------ sampling
    def sampler(self, name: str) -> Any:
        """A fresh diffusers scheduler of kind ``name`` with the training schedule and trailing timesteps (the
        first step at the last training timestep, where the input is pure noise; Lin et al. 2024)."""
        kinds = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler, "euler": EulerDiscreteScheduler}
        if name not in kinds:
            raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
        return kinds[name].from_config(self.scheduler.config, timestep_spacing="trailing")

    @torch.inference_mode()
    def __call__(self, prompt: str | Sequence[str], gsd: float | None = None, *, steps: int | None = None,
                 guidance: float | None = None, guidance_resolution: float | None = None, seed: int = 0,
                 size: int | tuple[int, int] | None = None, sampler: str = "ddpm", batch_size: int = 8,
                 output_type: Literal["pil", "np"] = "pil") -> GenerationOutput:
        """Generate one image per prompt.

        Args:
            prompt: a text or a list of texts.
            gsd: metres per pixel wanted (mapped to the nearest zoom level); ``None``: no resolution condition.
            steps: sampler steps (default: the model's, usually 50).
            guidance: text guidance weight (1: none; default: the model's).
            guidance_resolution: resolution guidance weight (default: ``guidance``).
            seed: image ``i`` starts from noise seeded with ``seed + i``.
            size: output side, or ``(width, height)``, in pixels (multiples of the patch, at least one tile);
                larger than a tile gives a seamless tiled scene.
            sampler: ``ddim``, ``ddpm`` or ``euler``.
            batch_size: tile windows denoised per UNet call.
        """
        prompts, settings = self._check(prompt, gsd, steps, guidance, guidance_resolution, seed, size, sampler)
        start = time.perf_counter()
        text = self._conditioner().encode(prompts).to(self.model_device)
        latents = [self._sample_one(text.index([i]), settings, seed + i, batch_size) for i in range(len(prompts))]
        pixels = self.to_pixels(torch.cat(latents)).clamp(-1, 1)
        array = ((pixels + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        images = [Image.fromarray(a) for a in array] if output_type == "pil" else list(array)
        return GenerationOutput(images=images, prompts=prompts, gsd=gsd, level=settings["level"], seed=seed,
                                steps=settings["steps"], guidance=settings["guidance"],
                                guidance_resolution=settings["guidance_resolution"], sampler=sampler,
                                width=settings["width"], height=settings["height"],
                                seconds=time.perf_counter() - start, model=self.record())

    def _check(self, prompt: str | Sequence[str], gsd: float | None, steps: int | None, guidance: float | None,
               guidance_resolution: float | None, seed: int, size: int | tuple[int, int] | None,
               sampler: str) -> tuple[list[str], dict[str, Any]]:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
            raise ValueError("each prompt must be a non-empty text")
        steps = int(self.config.default_steps if steps is None else steps)
        g = float(self.config.default_guidance if guidance is None else guidance)
        gr = g if guidance_resolution is None else float(guidance_resolution)
        width, height = (size, size) if isinstance(size, int) else (size or (self.tile, self.tile))
        patch = int(self.config.patch)
        checks = [
            (1 <= steps <= MAX_STEPS, f"steps must be in 1..{MAX_STEPS}, got {steps}"),
            (0 <= g <= 50 and 0 <= gr <= 50, f"guidance weights must be in [0, 50], got {g} and {gr}"),
            (isinstance(seed, int) and seed >= 0, f"seed must be a non-negative integer, got {seed!r}"),
            (self.tile <= width <= MAX_SIDE and self.tile <= height <= MAX_SIDE,
             f"size must be {self.tile}..{MAX_SIDE} px per side, got {width}x{height}"),
            (width % patch == 0 and height % patch == 0, f"width and height must be multiples of {patch} px"),
            (sampler in SAMPLERS, f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return prompts, {"steps": steps, "guidance": g, "guidance_resolution": gr, "level": gsd_level(gsd),
                         "width": int(width), "height": int(height), "sampler": sampler}

    def _sample_one(self, text: TextTokens, settings: dict[str, Any], seed: int, batch_size: int,
                    known: torch.Tensor | None = None, known_mask: torch.Tensor | None = None) -> torch.Tensor:
        patch = int(self.config.patch)
        shape = (1, 3 * patch ** 2, settings["height"] // patch, settings["width"] // patch)
        sched = self.sampler(settings["sampler"])
        sched.set_timesteps(settings["steps"], device=self.model_device)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(self.model_device)
        x = x * sched.init_noise_sigma
        step_gen = torch.Generator().manual_seed(seed + 1_000_003)
        known_noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 2_000_003))
        timesteps = list(sched.timesteps)
        for i, t in enumerate(self.progress_bar(timesteps) if len(timesteps) > 1 else timesteps):
            if known is not None and known_mask is not None and i == 0:
                noised = sched.add_noise(known, known_noise.to(x.device), t.reshape(1))
                x = torch.where(known_mask, noised, x)
            model_in = sched.scale_model_input(x, t)
            pred = self._canvas_prediction(model_in, t, text, settings, batch_size)
            x = sched.step(pred, t, x, generator=step_gen).prev_sample
            if known is not None and known_mask is not None:
                if i + 1 < len(timesteps):
                    noised = sched.add_noise(known, known_noise.to(x.device), timesteps[i + 1].reshape(1))
                else:
                    noised = known
                x = torch.where(known_mask, noised, x)
        return x

    def _canvas_prediction(self, x: torch.Tensor, t: torch.Tensor, text: TextTokens, settings: dict[str, Any],
                           batch_size: int) -> torch.Tensor:
        side = int(self.unet.config.sample_size)
        g, gr, level = settings["guidance"], settings["guidance_resolution"], settings["level"]
        if x.shape[-2:] == (side, side):
            return self.guided(x, t, text, level, g, gr)
        windows = [(r, c) for r in tile_windows(x.shape[-2], side) for c in tile_windows(x.shape[-1], side)]
        total = torch.zeros_like(x)
        count = torch.zeros_like(x[:, :1])
        for start in range(0, len(windows), max(1, batch_size)):
            chunk = windows[start:start + batch_size]
            crops = torch.cat([x[..., r:r + side, c:c + side] for r, c in chunk])
            texts = TextTokens(text.features.expand(len(chunk), -1, -1), text.mask.expand(len(chunk), -1))
            pred = self.guided(crops, t, texts, level, g, gr)
            for k, (r, c) in enumerate(chunk):
                total[..., r:r + side, c:c + side] += pred[k:k + 1]
                count[..., r:r + side, c:c + side] += 1
        return total / count

    @torch.inference_mode()
    def extend(self, image: Image.Image, prompt: str, gsd: float | None = None, *, width: int, height: int,
               offset: tuple[int, int] | None = None, steps: int | None = None, guidance: float | None = None,
               guidance_resolution: float | None = None, seed: int = 0, sampler: str = "ddpm",
               batch_size: int = 8) -> GenerationOutput:
        """Outpaint: a ``width`` x ``height`` scene that contains ``image`` unchanged at ``offset`` (x, y; default
        centred) and continues it, sampled with the same prompt and resolution."""
        prompts, settings = self._check(prompt, gsd, steps, guidance, guidance_resolution, seed, (width, height),
                                        sampler)
        patch = int(self.config.patch)
        rgb = np.array(image.convert("RGB"))
        h, w = rgb.shape[:2]
        if w > width or h > height:
            raise ValueError(f"the image ({w}x{h}) is larger than the scene asked for ({width}x{height})")
        if w % patch or h % patch:
            raise ValueError(f"the image sides must be multiples of {patch} px, got {w}x{h}")
        centred = ((width - w) // 2 // patch * patch, (height - h) // 2 // patch * patch)
        ox, oy = offset if offset is not None else centred
        if ox % patch or oy % patch or ox < 0 or oy < 0 or ox + w > width or oy + h > height:
            raise ValueError(f"offset {ox, oy} must be a multiple of {patch} px that keeps the image in the scene")
        start = time.perf_counter()
        canvas = torch.zeros(1, 3, height, width)
        mask = torch.zeros(1, 1, height, width, dtype=torch.bool)
        canvas[..., oy:oy + h, ox:ox + w] = torch.from_numpy(rgb).permute(2, 0, 1).float() / 127.5 - 1
        mask[..., oy:oy + h, ox:ox + w] = True
        known = self.to_latent(canvas).to(self.model_device)
        known_mask = F.pixel_unshuffle(mask.float(), patch).amax(1, keepdim=True).bool().to(self.model_device)
        text = self._conditioner().encode(prompts).to(self.model_device)
        latent = self._sample_one(text, settings, seed, batch_size, known=known, known_mask=known_mask)
        pixels = self.to_pixels(latent).clamp(-1, 1)
        array = ((pixels + 1) * 127.5).round().to(torch.uint8)[0].permute(1, 2, 0).cpu().numpy()
        array[oy:oy + h, ox:ox + w] = rgb  # exactly the given pixels
        return GenerationOutput(images=[Image.fromarray(array)], prompts=prompts, gsd=gsd, level=settings["level"],
                                seed=seed, steps=settings["steps"], guidance=settings["guidance"],
                                guidance_resolution=settings["guidance_resolution"], sampler=sampler, width=width,
                                height=height, seconds=time.perf_counter() - start, model=self.record())

    def record(self) -> dict[str, Any]:
        """What produced an image: the generator's name and the backbone's."""
        backbone = self.conditioner.backbone.info.name if self.conditioner is not None else self.config.backbone_name
        return {"name": self.name or "geovl generator", "kind": "diffusion", "backbone": backbone,
                "tile": self.tile, "patch": int(self.config.patch)}
