"""The generation protocol: generate class images with a geovl generator and score them next to real held-out
images, and measure whether the GSD condition changes what the images look like. One run, one report.

Rules:

* **Class images.** Class ``c``'s prompt ``k`` (k = 0 .. ``per_class`` - 1) is ``templates[k % T]`` filled with the
  class phrase (:func:`geovl.data.labelsets.prompt_names`), generated at ``gsd`` with seed ``seed + k`` (the same
  seeds for every class, so a run is deterministic and two generators can be compared image for image).
* **Real side** (:mod:`geovl.eval.generation_sets`): the held-out images of ``real`` (the stable ``holdout`` share
  that generator training keeps out), ``per_class`` per class as the *real sample*, the other held-out images of
  the same classes as the *Fréchet reference*.
* **Figures, generated and real side by side.** ``cls_oa`` / ``cls_oa_real``: % of images the generator's own
  backbone classifies zero-shot (prompt ensemble of :data:`~geovl.tasks.zeroshot.prompts.RS_TEMPLATES`) as the
  class they were generated for / belong to. ``clip_score`` / ``clip_score_real``: mean of
  ``100 * max(cos(image, prompt), 0)``, real image ``k`` of a class scored against the same prompt as generated
  image ``k``. ``fd_clip``: Fréchet distance on the backbone's L2-normalised image embeddings (not Inception FID)
  between the generated images and the Fréchet reference; ``fd_clip_real_floor``: the same distance between the
  real sample and the reference, i.e. what a generator indistinguishable from real held-out images would get with
  the same number of images.
* **Resolution control.** Every resolution pair ``(prompt, seed)`` (default: the class prompts and seeds above) is
  generated at the coarse and at the fine GSD of ``resolution_gsds``. A GSD probe (:mod:`geovl.eval.gsd_probe`:
  ridge regression from the backbone's image embeddings to ``log2(GSD)``) is fitted on real tile-sized views of
  known GSD: the complement (non-held-out) images of ``real`` at their GSD, and the complement images of
  ``probe_data`` downsampled by each of ``probe_factors``; its held-out R^2 and mean absolute error (log2) are
  reported. ``resolution_order_accuracy``: % of pairs whose coarse image has the larger predicted GSD (ties
  count one half; chance 50 %). ``resolution_pred_log2_coarse`` / ``_fine``: mean predicted ``log2(GSD)`` at each
  condition. ``resolution_gap``: ``mean(pred log2 coarse - pred log2 fine)``, to compare with
  ``resolution_gap_conditioned`` = ``log2(coarse / fine)``. The ``*_real`` figures apply the same probe to
  held-out real views resampled to each GSD (from ``real`` and ``probe_data`` images fine enough and large enough
  to give one); their order accuracy compares every coarse view with every fine one (unpaired AUC).
* **Sample grid** (with ``out``): ``generation_grid.png``, one row per class (prompt ``k = 0``, seed ``seed``), one
  column per GSD from coarse to fine (``gsd`` and ``resolution_gsds``) and a last column without a resolution
  condition; every cell is one tile, no margins.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from geovl.eval.fingerprint import dataset_fingerprint
from geovl.eval.generation import clip_scores, frechet_distance, zero_shot_accuracy
from geovl.eval.generation_sets import RealClasses, load_gsd_sources, load_real_classes, shared_dataset
from geovl.eval.gsd_probe import GsdProbe, GsdSource, fit_gsd_probe, order_accuracy, probe_views, views_at_gsd
from geovl.eval.report_record import EvalReport
from geovl.models.backbone import Backbone
from geovl.models.diffusion import GeoDiffusionPipeline
from geovl.models.diffusion_conditioning import gsd_level
from geovl.models.record import model_record
from geovl.tasks.generation import GenerationPipeline, image_settings, save_png
from geovl.tasks.zeroshot.prompts import RS_TEMPLATES

__all__ = [
    "DEFAULT_PROBE_FACTORS",
    "DEFAULT_RESOLUTION_GSDS",
    "DEFAULT_TEMPLATES",
    "GRID_FILE",
    "UCM_GSD",
    "eval_generator",
    "sample_grid",
]

PathLike = str | os.PathLike[str]
GsdKey = float | None

DEFAULT_TEMPLATES: tuple[str, ...] = ("a satellite image of {}.",)
DEFAULT_RESOLUTION_GSDS: tuple[float, float] = (10.0, 0.5)
DEFAULT_PROBE_FACTORS: tuple[int, ...] = (1, 2, 4, 8, 16)
#: UC Merced's ground sample distance (1 ft), the default ``probe_gsd``.
UCM_GSD = 0.3048
GRID_FILE = "generation_grid.png"

PROTOCOL = (
    "{per_class} images per class ({classes} classes of {real}), prompt '{template}' with the class phrase, "
    "generated at {gsd:g} m (zoom level {level}), seeds {seed}..{last_seed}, {steps} {sampler} steps, guidance "
    "{guidance:g} (resolution {guidance_resolution:g}). Cls-OA: % classified zero-shot by the generator's own "
    "backbone ({n_templates}-prompt ensemble) as the class generated for; CLIP score: mean 100*max(cos(image, "
    "prompt), 0); FD-CLIP: Fréchet distance of L2-normalised backbone image embeddings (not Inception FID) to "
    "{n_reference} real held-out images (holdout {holdout:g}) of the same classes. The *_real figures score "
    "{per_class} other held-out real images per class the same way (fd_clip_real_floor: those images against the "
    "same reference). Resolution control: {pairs} (prompt, seed) pairs generated at {coarse:g} m and {fine:g} m; a "
    "ridge probe from image embeddings to log2(GSD), fitted on real tile-sized views ({probe}; a view that would "
    "be smaller than a tile is not made: details.resolution.gsd_probe.views_per_gsd counts them), predicts each "
    "image's GSD. resolution_order_accuracy = % of pairs whose {coarse:g} m image is predicted coarser (ties 1/2, "
    "chance 50 %); resolution_gap = mean(pred log2 coarse - pred log2 fine), to compare with "
    "resolution_gap_conditioned = log2({coarse:g}/{fine:g}); the *_real resolution figures apply the probe to "
    "held-out real views at both GSDs (order accuracy over all coarse x fine pairs)."
)


# ------------------------------------------------------------------------------------------- generation


@dataclass
class _Bank:
    """Generated images by (prompt, GSD, seed): each is generated once per run and reused (grid, resolution)."""

    pipe: GenerationPipeline
    progress: bool = False
    images: dict[tuple[str, GsdKey, int], tuple[Image.Image, dict[str, Any]]] = field(default_factory=dict)

    def get(self, requests: Sequence[tuple[str, GsdKey, int]], desc: str) -> list[Image.Image]:
        """The images of ``requests``, generating the missing ones."""
        from tqdm.auto import tqdm

        missing = [r for r in dict.fromkeys(requests) if r not in self.images]
        for prompt, gsd, seed in tqdm(missing, desc=desc, disable=not self.progress or not missing, leave=False):
            out = self.pipe(prompt, gsd, seed=seed)
            self.images[(prompt, gsd, seed)] = (out.images[0], image_settings(out))
        return [self.images[r][0] for r in requests]


def _class_prompts(names: Sequence[str], templates: Sequence[str], per_class: int, seed: int) -> list[tuple[str, int]]:
    """``(prompt, seed)`` of every class image, class-major."""
    return [(templates[k % len(templates)].format(name), seed + k) for name in names for k in range(per_class)]


def sample_grid(rows: Sequence[Sequence[Image.Image]], tile: int) -> Image.Image:
    """One RGB image of ``len(rows)`` x ``len(rows[0])`` cells of ``tile`` px (each image resized to a tile if it is
    not one), without margins.

    Raises:
        ValueError: no rows, rows of different lengths, or a bad ``tile``.
    """
    if not rows or not rows[0]:
        raise ValueError("the grid needs at least one row with one image")
    if any(len(r) != len(rows[0]) for r in rows):
        raise ValueError(f"every grid row needs {len(rows[0])} images, got {[len(r) for r in rows]}")
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise ValueError(f"tile must be a positive number of pixels, got {tile!r}")
    grid = Image.new("RGB", (len(rows[0]) * tile, len(rows) * tile))
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            cell = image.convert("RGB")
            if cell.size != (tile, tile):
                cell = cell.resize((tile, tile), Image.Resampling.LANCZOS)
            grid.paste(cell, (c * tile, r * tile))
    return grid


# ------------------------------------------------------------------------------------------- checks


def _check_inputs(per_class: int, gsd: float, resolution_gsds: Sequence[float], templates: Sequence[str],
                  seed: int, probe_factors: Sequence[float]) -> tuple[float, float]:
    """``ValueError`` naming the first bad input; returns ``(coarse, fine)``."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be a positive number of images per class, got {per_class!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    gsd_level(gsd)  # a positive, finite GSD
    values = list(resolution_gsds)
    if len(values) != 2 or values[0] == values[1]:
        raise ValueError(f"resolution_gsds must be two different GSDs (coarse and fine, metres per pixel), got "
                         f"{values!r}")
    for value in values:
        gsd_level(value)
    if isinstance(templates, str) or not templates or any(
            not isinstance(t, str) or t.count("{}") != 1 for t in templates):
        raise ValueError(f"templates must be a list of prompt templates with one '{{}}' each, got {templates!r}")
    if not probe_factors or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not f >= 1
                                for f in probe_factors):
        raise ValueError(f"probe_factors must be downsampling factors >= 1, got {list(probe_factors)!r}")
    return float(max(values)), float(min(values))


# ------------------------------------------------------------------------------------------- scoring


def _side_scores(backbone: Backbone, images: Sequence[Any], prompts: list[str], labels: list[int],
                 real: RealClasses, batch_size: int) -> tuple[float, dict[str, float], np.ndarray, np.ndarray]:
    """Cls-OA (%), its per-class values (%), per-image CLIP scores and the image embeddings of one side."""
    zs = zero_shot_accuracy(backbone, images, labels, real.names, templates=RS_TEMPLATES, batch_size=batch_size)
    label_of = dict(zip(real.names, real.classes, strict=True))
    per_class = {label_of[name]: 100 * v for name, v in zs.per_class.items()}
    clip = clip_scores(backbone, images, prompts, batch_size=batch_size)
    return 100 * zs.accuracy, per_class, clip, backbone.encode_images(list(images), batch_size=batch_size)


def _fidelity(backbone: Backbone, generated: list[Image.Image], prompts: list[str], real: RealClasses,
              batch_size: int) -> tuple[dict[str, float | int | None], dict[str, Any]]:
    """The generated-vs-real figures and their per-class table."""
    labels = real.sample_labels
    oa, per_class, clip, emb = _side_scores(backbone, generated, prompts, labels, real, batch_size)
    oa_real, per_class_real, clip_real, emb_real = _side_scores(backbone, real.sample, prompts, labels, real,
                                                                batch_size)
    ref = backbone.encode_images(real.reference, batch_size=batch_size)
    figures: dict[str, float | int | None] = {
        "cls_oa": oa, "cls_oa_real": oa_real,
        "clip_score": float(clip.mean()), "clip_score_real": float(clip_real.mean()),
        "fd_clip": frechet_distance(emb, ref), "fd_clip_real_floor": frechet_distance(emb_real, ref),
    }
    y = np.asarray(labels)
    table = {c: {"cls_oa": per_class[c], "cls_oa_real": per_class_real[c],
                 "clip_score": float(clip[y == i].mean()), "clip_score_real": float(clip_real[y == i].mean()),
                 "prompt": prompts[int(np.argmax(y == i))]}
             for i, c in enumerate(real.classes)}
    return figures, {"per_class": per_class, "per_class_metric": "Cls-OA", "classes": table}


@dataclass(frozen=True)
class _ProbeData:
    """The GSD probe's real sources: ``real``'s complement (fitted at its own GSD), ``probe_data``'s complement
    (fitted at every factor) and both held-out sets (the real reference)."""

    real_fit: list[GsdSource]
    probe_fit: list[GsdSource]
    held_out: list[GsdSource]
    factors: tuple[float, ...]
    description: str


def _real_views_at(sources: list[GsdSource], gsd: float, tile: int, limit: int, seed: int) -> list[np.ndarray]:
    """Up to ``limit`` held-out real views at ``gsd`` (sources shuffled, seeded; decoded until enough)."""
    able = [s for s in sources if s.gsd <= gsd * (1 + 1e-9)]
    order = np.random.default_rng(seed).permutation(len(able))
    views: list[np.ndarray] = []
    for start in range(0, len(able), limit):
        chunk = [able[i] for i in order[start:start + limit]]
        views += [v.image for v in views_at_gsd(chunk, gsd, tile)]
        if len(views) >= limit:
            break
    return views[:limit]


def _prediction_figures(pred_c: np.ndarray, pred_f: np.ndarray, *, paired: bool,
                        suffix: str) -> dict[str, float | int | None]:
    return {f"resolution_order_accuracy{suffix}": 100 * order_accuracy(pred_c, pred_f, paired=paired),
            f"resolution_pred_log2_coarse{suffix}": float(pred_c.mean()),
            f"resolution_pred_log2_fine{suffix}": float(pred_f.mean()),
            f"resolution_gap{suffix}": float(pred_c.mean() - pred_f.mean())}


def _resolution(backbone: Backbone, probe: GsdProbe, coarse_images: list[Image.Image],
                fine_images: list[Image.Image], real_views: tuple[list[np.ndarray], list[np.ndarray]],
                coarse: float, fine: float, batch_size: int) -> tuple[dict[str, float | int | None], dict[str, Any]]:
    """The resolution-control figures of the generated pairs and of the real views."""
    pred_c = probe.predict_images(backbone, coarse_images, batch_size=batch_size)
    pred_f = probe.predict_images(backbone, fine_images, batch_size=batch_size)
    figures = _prediction_figures(pred_c, pred_f, paired=True, suffix="")
    figures["resolution_gap_conditioned"] = math.log2(coarse / fine)
    details: dict[str, Any] = {"pairs": len(pred_c), "coarse_gsd": coarse, "fine_gsd": fine,
                               "coarse_level": gsd_level(coarse), "fine_level": gsd_level(fine),
                               "real_views": {"coarse": len(real_views[0]), "fine": len(real_views[1])}}
    if real_views[0] and real_views[1]:
        real_c = probe.predict_images(backbone, real_views[0], batch_size=batch_size)
        real_f = probe.predict_images(backbone, real_views[1], batch_size=batch_size)
        figures |= _prediction_figures(real_c, real_f, paired=False, suffix="_real")
    else:
        figures |= dict.fromkeys(("resolution_order_accuracy_real", "resolution_pred_log2_coarse_real",
                                  "resolution_pred_log2_fine_real", "resolution_gap_real"))
        details["real_missing"] = ("no held-out real image is fine and large enough to give a view at "
                                   f"{coarse:g} m and at {fine:g} m")
    quality = probe.quality
    figures |= {"gsd_probe_r2": quality.r2, "gsd_probe_mae_log2": quality.mae_log2}
    details["gsd_probe"] = quality.to_dict()
    return figures, details


# ------------------------------------------------------------------------------------------- data


def _dataset_path(path: PathLike | None, shared: str, name: str) -> Path:
    """``path``, or the shared dataset ``shared`` when ``path`` is None."""
    if path is not None:
        return Path(path)
    found = shared_dataset(shared)
    if found is None:
        raise ValueError(f"{name} is not given and no shared {shared} folder was found ($GEOVL_SHARED_DATA or "
                         f"../shared/data); pass {name}")
    return found


def _probe_data(real: Path, real_gsd: float, probe: Path, probe_gsd: float, factors: Sequence[float], *,
                formats: tuple[str, str], holdout: float, limit: int | None, seed: int) -> _ProbeData:
    """The GSD probe's sources: ``real``'s complement at its own GSD, ``probe``'s at every factor."""
    real_fit, real_held = load_gsd_sources(real, real_gsd, format=formats[0], holdout=holdout, limit=limit,
                                           seed=seed)
    probe_fit, probe_held = load_gsd_sources(probe, probe_gsd, format=formats[1], holdout=holdout, limit=limit,
                                             seed=seed)
    text = (f"{len(real_fit)} complement images of {real.name} at {real_gsd:g} m and {len(probe_fit)} of "
            f"{probe.name} at {probe_gsd:g} m downsampled x{', x'.join(f'{f:g}' for f in factors)}")
    return _ProbeData(real_fit=real_fit, probe_fit=probe_fit, held_out=real_held + probe_held, factors=tuple(factors),
                      description=text)


def _fit_probe(backbone: Backbone, data: _ProbeData, tile: int, seed: int, batch_size: int,
               progress: bool) -> GsdProbe:
    views = probe_views(data.real_fit, (1,), tile) + probe_views(data.probe_fit, data.factors, tile)
    return fit_gsd_probe(backbone, views, seed=seed, batch_size=batch_size, progress=progress)


def _resolution_pairs(class_pairs: list[tuple[str, int]], prompts: Sequence[str] | None, per_class: int,
                      seed: int) -> list[tuple[str, int]]:
    if prompts is None:
        return class_pairs
    if isinstance(prompts, str) or not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ValueError(f"resolution_prompts must be a non-empty list of prompts (or None: the class prompts), got "
                         f"{prompts!r}")
    return [(p, seed + k) for p in prompts for k in range(per_class)]


# ------------------------------------------------------------------------------------------- outputs


def _grid(bank: _Bank, real: RealClasses, template: str, columns: list[GsdKey], seed: int) -> Image.Image:
    rows = [bank.get([(template.format(name), g, seed) for g in columns], "grid images") for name in real.names]
    return sample_grid(rows, bank.pipe.tile)


def _write_outputs(out: Path, grid: Image.Image, bank: _Bank, labels: dict[str, str],
                   save_images: bool) -> dict[str, str]:
    """The grid PNG and, with ``save_images``, every generated image with a ``generated.jsonl`` manifest (which
    ``geovl eval generation MANIFEST`` reads)."""
    import io
    import json

    from geovl.io.fs import atomic_write_bytes, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    atomic_write_bytes(out / GRID_FILE, buf.getvalue())
    files = {"grid": GRID_FILE}
    if save_images:
        rows = []
        for n, ((prompt, gsd, seed), (image, settings)) in enumerate(bank.images.items()):
            name = f"images/{n:05d}.png"
            save_png(image, out / name, settings)
            rows.append({"image": name, "prompt": prompt, "gsd": gsd, "seed": seed, "label": labels.get(prompt)})
        atomic_write_text(out / "generated.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        files |= {"images": "images/", "manifest": "generated.jsonl"}
    return files


def _generator_record(generator: GeoDiffusionPipeline) -> dict[str, Any]:
    record = generator.record()
    return {"name": record["name"], "architecture": f"diffusion UNet, {record['tile']} px tiles, patch "
                                                    f"{record['patch']}",
            "checkpoint": generator.name or None, "checkpoint_sha256": generator.metadata.get("sha256"),
            "precision": str(next(generator.unet.parameters()).dtype).removeprefix("torch."),
            "device": str(generator.model_device), "backbone": record["backbone"]}


UNITS = {"cls_oa": "%", "cls_oa_real": "%", "clip_score": "", "clip_score_real": "", "fd_clip": "",
         "fd_clip_real_floor": "", "resolution_order_accuracy": "%", "resolution_order_accuracy_real": "%",
         "resolution_gap": "log2", "resolution_gap_real": "log2", "resolution_gap_conditioned": "log2",
         "resolution_pred_log2_coarse": "log2 m", "resolution_pred_log2_fine": "log2 m",
         "resolution_pred_log2_coarse_real": "log2 m", "resolution_pred_log2_fine_real": "log2 m",
         "gsd_probe_r2": "", "gsd_probe_mae_log2": "log2", "generated_images": ""}


@dataclass(frozen=True)
class _Run:
    """What one protocol run settled on, for its report."""

    real: RealClasses
    real_path: Path
    probe: _ProbeData
    probe_path: Path
    pairs: int
    settings: dict[str, Any]


def _protocol_text(run: _Run, templates: Sequence[str], holdout: float, coarse: float, fine: float) -> str:
    s = run.settings
    return PROTOCOL.format(per_class=s["per_class"], classes=len(run.real.classes), real=run.real_path.name,
                           template=templates[0] + (f" (+{len(templates) - 1} more, in turn)" if len(templates) > 1
                                                    else ""),
                           gsd=s["gsd"], level=gsd_level(s["gsd"]), seed=s["seed"],
                           last_seed=s["seed"] + s["per_class"] - 1, steps=s["steps"], sampler=s["sampler"],
                           guidance=s["guidance"], guidance_resolution=s["guidance_resolution"],
                           n_templates=len(RS_TEMPLATES), n_reference=len(run.real.reference), holdout=holdout,
                           pairs=run.pairs, coarse=coarse, fine=fine, probe=run.probe.description)


def _report(generator: GeoDiffusionPipeline, run: _Run, figures: dict[str, float | int | None],
            details: dict[str, Any], protocol: str, seconds: float) -> EvalReport:
    real = run.real
    counts = {"classes": len(real.classes), "real_sample": len(real.sample), "reference": len(real.reference),
              "held_out_per_class": real.held_out_per_class}
    return EvalReport(
        task="generation",
        figures=figures,
        model=_generator_record(generator),
        dataset={"name": run.real_path.name, "path": str(run.real_path.resolve()), "format": real.kind,
                 "split": f"held out (holdout {run.settings['holdout']:g})", "counts": counts,
                 "fingerprint": dataset_fingerprint(run.real_path)},
        details=details,
        protocol=protocol,
        settings={**run.settings, "backbone": model_record(generator.backbone),
                  "probe_data": str(run.probe_path.resolve()), "classifier_templates": len(RS_TEMPLATES)},
        units=UNITS,
        seconds=seconds,
    )


def eval_generator(
    generator: GeoDiffusionPipeline,
    real: PathLike | None = None,
    *,
    format: str = "auto",
    label_set: str | None = "eurosat",
    holdout: float = 0.2,
    gsd: float = 10.0,
    per_class: int = 16,
    reference_per_class: int | None = 100,
    steps: int | None = None,
    guidance: float | None = None,
    guidance_resolution: float | None = None,
    sampler: str = "ddpm",
    seed: int = 0,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    resolution_gsds: Sequence[float] = DEFAULT_RESOLUTION_GSDS,
    resolution_prompts: Sequence[str] | None = None,
    probe_data: PathLike | None = None,
    probe_format: str = "auto",
    probe_gsd: float = UCM_GSD,
    probe_factors: Sequence[float] = DEFAULT_PROBE_FACTORS,
    probe_limit: int | None = 200,
    out: PathLike | None = None,
    save_images: bool = False,
    batch_size: int = 64,
    progress: bool = True,
) -> EvalReport:
    """Run the generation protocol (see the module rules) and return its report.

    Args:
        generator: a loaded generator (:func:`geovl.models.load_generator`); its backbone scores the images.
        real: a labelled dataset at ``gsd`` metres per pixel (default: the shared ``eurosat_rgb``).
        format, label_set: its format and the label set of its class phrases.
        holdout: the held-out share (what training's ``holdout_fraction`` kept out).
        gsd: the GSD of ``real`` and of the class images.
        per_class: generated images (and real sample images) per class.
        reference_per_class: Fréchet reference images per class (None: every other held-out image).
        steps, guidance, guidance_resolution, sampler: generation settings (None: the generator's defaults).
        seed: image ``k`` of every prompt is seeded ``seed + k``.
        templates: class prompt templates with one ``{}``, used in turn.
        resolution_gsds: the coarse and fine GSD of the resolution pairs (any order).
        resolution_prompts: prompts of the resolution pairs (None: the class prompts), each with ``per_class``
            seeds.
        probe_data: a dataset of images all at ``probe_gsd`` (default: the shared ``ucm_captions``, 0.3048 m),
            downsampled by ``probe_factors`` for the GSD probe; ``probe_limit`` images per side of each dataset.
        out: folder for the sample grid (and, with ``save_images``, every image and a ``generated.jsonl``).
        batch_size: images per backbone forward pass.

    Raises:
        ValueError: a bad input (named), a dataset without the images needed. FileNotFoundError: no dataset.
    """
    start = time.perf_counter()
    coarse, fine = _check_inputs(per_class, gsd, resolution_gsds, templates, seed, probe_factors)
    real_path, probe_path = _dataset_path(real, "eurosat_rgb", "real"), _dataset_path(probe_data, "ucm_captions",
                                                                                       "probe_data")
    bank = _Bank(GenerationPipeline(generator, steps=steps, guidance=guidance, guidance_resolution=guidance_resolution,
                                    sampler=sampler), progress)
    real_set = load_real_classes(real_path, format=format, label_set=label_set, holdout=holdout, per_class=per_class,
                                 reference_per_class=reference_per_class, seed=seed)
    class_pairs = _class_prompts(real_set.names, templates, per_class, seed)
    pairs = _resolution_pairs(class_pairs, resolution_prompts, per_class, seed)
    probe_set = _probe_data(real_path, gsd, probe_path, probe_gsd, probe_factors, formats=(format, probe_format),
                            holdout=holdout, limit=probe_limit, seed=seed)
    backbone, tile = generator.backbone, generator.tile
    generated = bank.get([(p, gsd, s) for p, s in class_pairs], "class images")
    figures, details = _fidelity(backbone, generated, [p for p, _ in class_pairs], real_set, batch_size)
    coarse_images = bank.get([(p, coarse, s) for p, s in pairs], f"images at {coarse:g} m")
    fine_images = bank.get([(p, fine, s) for p, s in pairs], f"images at {fine:g} m")
    probe = _fit_probe(backbone, probe_set, tile, seed, batch_size, progress)
    real_views = (_real_views_at(probe_set.held_out, coarse, tile, len(pairs), seed),
                  _real_views_at(probe_set.held_out, fine, tile, len(pairs), seed))
    res_figures, details["resolution"] = _resolution(backbone, probe, coarse_images, fine_images, real_views,
                                                     coarse, fine, batch_size)
    columns: list[GsdKey] = [*sorted({float(gsd), coarse, fine}, reverse=True), None]
    grid = _grid(bank, real_set, templates[0], columns, seed)
    details["grid"] = {"rows": real_set.classes, "columns": columns, "seed": seed, "tile": tile}
    figures |= res_figures
    figures["generated_images"] = len(bank.images)
    if out is not None:
        labels = {p: real_set.classes[i // per_class] for i, (p, _) in enumerate(class_pairs)}
        details["files"] = _write_outputs(Path(out), grid, bank, labels, save_images)
    first = next(iter(bank.images.values()))[1]
    settings = {"generator": generator.name or first.get("model"), "gsd": float(gsd), "level": gsd_level(gsd),
                "per_class": per_class, "seed": seed, "steps": first["steps"], "guidance": first["guidance"],
                "guidance_resolution": first["guidance_resolution"], "sampler": first["sampler"],
                "templates": list(templates), "resolution_gsds": [coarse, fine], "label_set": label_set,
                "resolution_prompts": None if resolution_prompts is None else list(resolution_prompts),
                "holdout": holdout, "reference_per_class": reference_per_class, "probe_gsd": probe_gsd,
                "probe_factors": list(probe_factors), "probe_limit": probe_limit, "batch_size": batch_size}
    run = _Run(real_set, real_path, probe_set, probe_path, len(pairs), settings)
    return _report(generator, run, figures, details, _protocol_text(run, templates, holdout, coarse, fine),
                   time.perf_counter() - start)
