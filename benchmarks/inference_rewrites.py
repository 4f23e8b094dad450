"""Inference rewrites of CNN image towers: the model as loaded (``optimize=False``) against geovl's load
(BatchNorm folded into the convolutions, channels-last; ``geovl.models.inference``), side by side.

For each model and precision: image-tower throughput on the same pre-decoded images (alternating rounds, medians),
the speed-up, and how far the embeddings move: cosine between the two loads' embeddings, and of each against the
fp32 unrewritten model (the reference). bf16 rows of CNNs add the ablation geovl does not ship (BatchNorm folded in
fp32, then cast to bf16), which shows why bf16 towers are only made channels-last. Real images, the bundled
weights by default; ``random:<arch>`` entries time open_clip architectures without downloads (their BatchNorm
statistics are fresh, so only their speed counts).

    python benchmarks/inference_rewrites.py
    python benchmarks/inference_rewrites.py --models geovl-rs-small random:RN50 --n 128 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from geovl.data.sources import list_images
from geovl.models import load_backbone

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "eurosat_rgb"


def rate(bb, pixels: torch.Tensor, batch: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    bb.encode_images(pixels, batch_size=batch)
    return len(pixels) / (time.perf_counter() - start)


def folded_bf16(model: str):  # type: ignore[no-untyped-def]
    """The ablation geovl does not ship: BatchNorm folded in fp32, then the whole model cast to bf16."""
    bb = load_backbone(model, device="cpu", precision="fp32")
    bb.model.to(torch.bfloat16)
    bb.dtype = torch.bfloat16
    return bb


def bench(model: str, precisions: list[str], files: list[Path], batch: int, repeats: int) -> list[list[str]]:
    reference = load_backbone(model, device="cpu", precision="fp32", optimize=False)
    pixels = reference.preprocess_images(files)
    ref = reference.encode_images(pixels, batch_size=batch)
    rows = []
    for precision in precisions:
        plain = load_backbone(model, device="cpu", precision=precision, optimize=False)
        fast = load_backbone(model, device="cpu", precision=precision)
        variants = {"plain": plain, "fast": fast}
        if precision == "bf16" and fast.inference_rewrite and fast.inference_rewrite.channels_last:
            variants["folded"] = folded_bf16(model)
        for bb in variants.values():  # warm-up
            bb.encode_images(pixels[:batch], batch_size=batch)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(repeats):
            names = list(variants) if r % 2 == 0 else list(variants)[::-1]
            for name in names:
                times[name].append(rate(variants[name], pixels, batch))
        base = plain.encode_images(pixels, batch_size=batch)
        p = statistics.median(times["plain"])
        for name, bb in variants.items():
            if name == "plain":
                continue
            rewrite = bb.inference_rewrite
            if name == "folded":
                note = f"{rewrite.folded} BN folded in fp32, then cast (ablation, not geovl's default)"
            elif rewrite and rewrite.changed:
                note = f"{rewrite.folded} BN folded, channels-last {rewrite.channels_last}"
            else:
                note = f"unchanged{f' ({rewrite.skipped})' if rewrite and rewrite.skipped else ''}"
            out = bb.encode_images(pixels, batch_size=batch)
            f = statistics.median(times[name])
            rows.append([model, precision, note, f"{p:.1f}", f"{f:.1f}", f"{f / p:.2f}x",
                         f"{(base * out).sum(1).min():.5f}", f"{(ref * base).sum(1).mean():.5f}",
                         f"{(ref * out).sum(1).mean():.5f}", f"{(ref * base).sum(1).min():.5f}",
                         f"{(ref * out).sum(1).min():.5f}"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["geovl-rs-small", "random:RN50", "random:ViT-B-32"])
    ap.add_argument("--precisions", nargs="+", default=["bf16", "fp32"])
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--n", type=int, default=128, help="images per timed round")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not args.images.exists():
        raise SystemExit(f"{args.images} not found; pass --images with a folder of images")
    files = list_images([args.images])[: args.n]
    print(f"# Inference rewrites, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)\n")
    print(f"{len(files)} images from {args.images}, batch {args.batch}, medians of {args.repeats} alternating rounds "
          "after a warm-up; img/s of the image tower on pre-decoded tensors.\n")
    header = ["model", "precision", "rewrite", "as loaded img/s", "rewritten img/s", "speed-up",
              "min cos rewritten vs as loaded", "mean cos to fp32: as loaded", "rewritten",
              "min cos to fp32: as loaded", "rewritten"]
    rows = [row for model in args.models for row in bench(model, args.precisions, files, args.batch, args.repeats)]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
