"""The generator's guidance ablation and sampling cost, one run.

Quality (the generation protocol, :func:`geovl.eval.generation_protocol.eval_generator`, on EuroSAT's held-out 20 %):
for each pair of weights (text guidance ``g_t``, resolution guidance ``g_r``), zero-shot accuracy of the generated
class images (Cls-OA), CLIP score, FD-CLIP against real held-out images, and resolution control (the GSD probe's
order accuracy and predicted gap between images generated at 10 m and at 0.5 m for the same prompt and seed). The
real held-out images' own figures are printed once as the reference. The rows show what each condition's guidance
does: ``g_t`` should move Cls-OA / CLIP score, ``g_r`` the resolution figures.

Speed (same process, alternating, medians of ``--repeats``; DDPM sampler): seconds per 64 px tile for 25 and 50
steps with two UNet passes per step (``g_t == g_r``) and with three (``g_t != g_r``), and a 256 x 256 seamless
scene (MultiDiffusion over 49 overlapping tile windows) relative to one tile.

    python benchmarks/generation.py                       # the bundled geovl-gen-small
    python benchmarks/generation.py --model out/runs/bundled-gen/final --per-class 8 --steps 50
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch

from geovl.eval.generation_protocol import eval_generator
from geovl.models.generator import load_generator

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
#: (text guidance, resolution guidance) rows of the ablation.
GRID = ((1.0, 1.0), (4.0, 4.0), (7.0, 7.0), (4.0, 1.0), (4.0, 8.0))
FIGURES = ("cls_oa", "clip_score", "fd_clip", "resolution_order_accuracy", "resolution_gap")


def ablation(model: Any, args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows, reference = [], {}
    for g_text, g_res in GRID:
        start = time.perf_counter()
        report = eval_generator(model, args.real, per_class=args.per_class, steps=args.steps, guidance=g_text,
                                guidance_resolution=g_res, seed=args.seed, probe_data=args.probe_data,
                                progress=False)
        f = report.figures
        rows.append({"guidance": g_text, "guidance_resolution": g_res, **{k: f.get(k) for k in FIGURES},
                     "seconds": round(time.perf_counter() - start, 1)})
        print(_row(rows[-1]), flush=True)
        if not reference:
            reference = {k: f.get(k) for k in ("cls_oa_real", "clip_score_real", "fd_clip_real_floor",
                                               "resolution_order_accuracy_real", "resolution_gap_real",
                                               "resolution_gap_conditioned", "gsd_probe_r2", "gsd_probe_mae_log2")}
    return rows, reference


def _row(r: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.2f}"

    return (f"| {r['guidance']:g} | {r['guidance_resolution']:g} | " + " | ".join(fmt(r[k]) for k in FIGURES)
            + f" | {r['seconds']:.0f} |")


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def speed(model: Any, repeats: int) -> dict[str, float]:
    prompt = "a river through farmland"
    cases = {
        "tile, 25 steps, 2 passes": lambda: model(prompt, 10.0, steps=25, guidance=4.0, seed=0),
        "tile, 25 steps, 3 passes": lambda: model(prompt, 10.0, steps=25, guidance=4.0, guidance_resolution=6.0,
                                                  seed=0),
        "tile, 50 steps, 2 passes": lambda: model(prompt, 10.0, steps=50, guidance=4.0, seed=0),
        "256 px scene, 25 steps, 2 passes": lambda: model(prompt, 10.0, steps=25, guidance=4.0, seed=0, size=256,
                                                          batch_size=16),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in cases.items():
            times[name].append(_timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="geovl-gen-small", help="generator name or folder")
    parser.add_argument("--real", default=str(SHARED / "eurosat_rgb"))
    parser.add_argument("--probe-data", default=str(SHARED / "ucm_captions"))
    parser.add_argument("--per-class", type=int, default=6)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    model = load_generator(args.model, device="cpu")
    model.set_progress_bar_config(disable=True)
    print(f"# geovl generation benchmark, {date.today()}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, model {args.model}")
    result: dict[str, Any] = {"model": args.model, "date": str(date.today()), "per_class": args.per_class,
                              "steps": args.steps}
    if not args.skip_quality:
        print(f"\n## Guidance ablation ({args.per_class} images per EuroSAT class at 10 m, {args.steps} DDIM steps; "
              "resolution pairs 10 m vs 0.5 m)\n")
        print("| g_text | g_res | Cls-OA % | CLIP score | FD-CLIP | res. order acc. % | res. gap (log2) | s |")
        print("|---|---|---|---|---|---|---|---|")
        rows, reference = ablation(model, args)
        print("\nReal held-out images (the reference): " + ", ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in reference.items()))
        result |= {"ablation": rows, "reference": reference}
    times = speed(model, args.repeats)
    base = times["tile, 25 steps, 2 passes"]
    print(f"\n## Sampling cost (median of {args.repeats}, relative to one 64 px tile at 25 steps, 2 passes: "
          f"{base:.2f} s)\n")
    for name, seconds in times.items():
        print(f"- {name}: {seconds / base:.2f}x")
    result["speed_seconds"] = times
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
