"""The bundled models side by side: image embedding throughput and text query latency, old vs new, one run.

Each model is loaded by name exactly as users get it (real weights), in fp32 and bf16. Timed runs alternate
between the models and precisions so that machine noise hits all alike; medians of ``--repeats`` are reported,
with the ratio new / old. Image throughput is the model on preprocessed tensors (decode is the same for both);
query latency is one caption encoded at a time, as a search box does.

    python benchmarks/bundled_models.py                              # geovl-rs-tiny vs geovl-rs-small
    python benchmarks/bundled_models.py --old geovl-rs-tiny --new out/runs/bundled-small/final --n 256
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from geovl.data.sources import list_images
from geovl.models import load_backbone
from geovl.models.device import cpu_has_bf16_matmul

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucm_captions"
QUERIES = [f"an aerial image of {w} next to a road" for w in ("farmland", "a harbour", "dense houses", "a forest",
                                                               "a baseball field", "storage tanks", "a river",
                                                               "an airport")]


def _seconds(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of images (default: UCM)")
    ap.add_argument("--n", type=int, default=384, help="images per run")
    ap.add_argument("--old", default="geovl-rs-tiny")
    ap.add_argument("--new", default="geovl-rs-small")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if not args.images.exists():
        raise SystemExit(f"{args.images} not found; pass --images DIR")
    files = list_images([args.images])
    files = [files[i] for i in np.random.default_rng(0).permutation(len(files))[: args.n]]
    variants = {(name, p): load_backbone(model, device=args.device, precision=p)
                for name, model in (("old", args.old), ("new", args.new)) for p in ("fp32", "bf16")}
    pixels = {name: variants[(name, "fp32")].preprocess_images(files) for name in ("old", "new")}
    img: dict[tuple[str, str], list[float]] = {k: [] for k in variants}
    txt: dict[tuple[str, str], list[float]] = {k: [] for k in variants}
    for r in range(args.repeats + 1):  # round 0 warms up and is not counted
        for key, bb in variants.items():
            t_img = _seconds(lambda bb=bb, key=key: bb.encode_images(pixels[key[0]], batch_size=args.batch_size))
            t_txt = _seconds(lambda bb=bb: [bb.encode_texts([q]) for q in QUERIES])
            if r:
                img[key].append(t_img)
                txt[key].append(t_txt)
    print(f"# bundled models, {date.today()}, {platform.machine()} {torch.get_num_threads()} threads, "
          f"bf16 matrix units: {cpu_has_bf16_matmul()}, torch {torch.__version__}, device {args.device}, "
          f"{len(files)} images from {args.images.name}, batch {args.batch_size}, median of {args.repeats}")
    print(f"old = {args.old} ({variants[('old', 'fp32')].image_size} px), "
          f"new = {args.new} ({variants[('new', 'fp32')].image_size} px)")
    print("| precision | old img/s | new img/s | new / old | old ms/query | new ms/query | new / old |")
    print("|---|---|---|---|---|---|---|")
    for p in ("fp32", "bf16"):
        old_i, new_i = (len(files) / statistics.median(img[(m, p)]) for m in ("old", "new"))
        old_t, new_t = (1000 * statistics.median(txt[(m, p)]) / len(QUERIES) for m in ("old", "new"))
        print(f"| {p} | {old_i:.1f} | {new_i:.1f} | {new_i / old_i:.2f}x | {old_t:.2f} | {new_t:.2f} | "
              f"{new_t / old_t:.2f}x |")
    for name in ("old", "new"):
        a = variants[(name, "fp32")].encode_images(pixels[name][:64])
        b = variants[(name, "bf16")].encode_images(pixels[name][:64])
        print(f"{name}: bf16 vs fp32 image embeddings, cosine min {float((a * b).sum(1).min()):.4f} "
              f"mean {float((a * b).sum(1).mean()):.4f}")


if __name__ == "__main__":
    main()
