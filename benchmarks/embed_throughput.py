"""Embedding throughput: fp32 vs bf16 weights, bare model vs the full decode + embed pipeline.

Weights are random (throughput does not depend on their values). Runs alternate between the variants so that
machine noise hits both alike; medians of ``--repeats`` runs are reported, with ratios side by side.

    python benchmarks/embed_throughput.py                      # geovl-tiny and ViT-B-32 on EuroSAT
    python benchmarks/embed_throughput.py --archs geovl-tiny --n 256
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
from geovl.models import create_backbone
from geovl.models.device import cpu_has_bf16_matmul

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "eurosat_rgb"


def _time(fn, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def bench_arch(arch: str, files: list[Path], batch: int, repeats: int, device: str) -> dict[str, float]:
    fp32 = create_backbone(arch, device=device, precision="fp32")
    bf16 = create_backbone(arch, device=device, precision="bf16")
    pixels = fp32.preprocess_images(files)
    n = len(files)
    queries = [f"a satellite image of {w} near a river" for w in ("farmland", "a harbour", "dense housing", "a forest")]

    def images(bb):  # type: ignore[no-untyped-def]
        return lambda: bb.encode_images(pixels, batch_size=batch)

    def texts(bb):  # type: ignore[no-untyped-def]
        return lambda: [bb.encode_texts([q]) for q in queries * 8]

    for bb in (fp32, bf16):  # warm-up
        bb.encode_images(pixels[:batch], batch_size=batch)
        bb.encode_texts(queries)
    t_img = {"fp32": [], "bf16": []}  # type: dict[str, list[float]]
    t_txt = {"fp32": [], "bf16": []}  # type: dict[str, list[float]]
    for _ in range(repeats):
        for name, bb in (("fp32", fp32), ("bf16", bf16)):
            t_img[name] += _time(images(bb), 1)
            t_txt[name] += _time(texts(bb), 1)
    a, b = fp32.encode_images(pixels[:64]), bf16.encode_images(pixels[:64])
    res = {
        "fp32_img_s": n / statistics.median(t_img["fp32"]),
        "bf16_img_s": n / statistics.median(t_img["bf16"]),
        "fp32_ms_query": 1000 * statistics.median(t_txt["fp32"]) / (len(queries) * 8),
        "bf16_ms_query": 1000 * statistics.median(t_txt["bf16"]) / (len(queries) * 8),
        "cosine_min": float((a * b).sum(axis=1).min()),
    }
    res["img_speedup"] = res["bf16_img_s"] / res["fp32_img_s"]
    res["txt_speedup"] = res["fp32_ms_query"] / res["bf16_ms_query"]
    return res


def bench_pipeline(
    arch: str, files: list[Path], batch: int, repeats: int, device: str, workers: list[int]
) -> dict[int, dict[str, float]]:
    """Bare model forward on preprocessed tensors vs the full pipeline (decode, model, parquet/npy writes) on the
    same images, with each number of decode worker processes (0: decode in the model's process), alternating."""
    import tempfile

    from geovl.data.sources import FolderSource
    from geovl.index.pipeline import EmbedConfig, run_embed

    bb = create_backbone(arch, device=device, precision="auto")
    pixels = bb.preprocess_images(files)
    bb.encode_images(pixels[:batch], batch_size=batch)
    listing = Path(tempfile.mkdtemp()) / "imgs"
    listing.mkdir()
    for f in files:  # the pipeline reads folders: link the sample into one
        (listing / f"{f.parent.name}_{f.name}").symlink_to(f.resolve())
    bare: list[float] = []
    pipe: dict[int, list[float]] = {w: [] for w in workers}
    for r in range(repeats + 1):  # the first round warms up (imports, file cache) and is not counted
        start = time.perf_counter()
        bb.encode_images(pixels, batch_size=batch)
        if r:
            bare.append(time.perf_counter() - start)
        for w in workers:
            out = listing.parent / f"run{r}-w{w}"
            config = EmbedConfig(batch_size=batch, workers=w, partition_size=len(files), progress=False)
            seconds = run_embed(bb, [FolderSource([listing])], out, config).seconds
            if r:
                pipe[w].append(seconds)
    n = len(files)
    return {w: {"bare_img_s": n / statistics.median(bare), "pipeline_img_s": n / statistics.median(pipe[w]),
                "ratio": statistics.median(bare) / statistics.median(pipe[w])} for w in workers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of images (default: EuroSAT-RGB)")
    ap.add_argument("--n", type=int, default=512, help="images per run")
    ap.add_argument("--archs", default="geovl-tiny,ViT-B-32")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", default="0,1",
                    help="comma-separated decode worker counts for the pipeline runs (0: in the model's process)")
    args = ap.parse_args()
    if not args.images.exists():
        raise SystemExit(f"{args.images} not found; pass --images DIR")
    files = list_images([args.images])
    files = [files[i] for i in np.random.default_rng(0).permutation(len(files))[: args.n]]
    print(f"# embed throughput, {date.today()}, {platform.machine()} {torch.get_num_threads()} threads, "
          f"bf16 matrix units: {cpu_has_bf16_matmul()}, torch {torch.__version__}, device {args.device}, "
          f"{len(files)} images from {args.images.name}, batch {args.batch_size}, median of {args.repeats}")
    print("| arch | fp32 img/s | bf16 img/s | bf16/fp32 | fp32 ms/query | bf16 ms/query | speed-up | min cosine |")
    print("|---|---|---|---|---|---|---|---|")
    for arch in args.archs.split(","):
        r = bench_arch(arch, files, args.batch_size, args.repeats, args.device)
        print(f"| {arch} | {r['fp32_img_s']:.1f} | {r['bf16_img_s']:.1f} | {r['img_speedup']:.2f}x | "
              f"{r['fp32_ms_query']:.2f} | {r['bf16_ms_query']:.2f} | {r['txt_speedup']:.2f}x | "
              f"{r['cosine_min']:.5f} |")
    print("\n| pipeline arch | decode workers | bare model img/s | pipeline img/s | pipeline / bare |")
    print("|---|---|---|---|---|")
    workers = [int(w) for w in args.workers.split(",")]
    for arch in args.archs.split(","):
        for w, p in bench_pipeline(arch, files, args.batch_size, args.repeats, args.device, workers).items():
            print(f"| {arch} | {w} | {p['bare_img_s']:.1f} | {p['pipeline_img_s']:.1f} | {p['ratio']:.2f} |")

if __name__ == "__main__":
    main()
