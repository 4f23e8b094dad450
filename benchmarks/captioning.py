"""Captioning quality against the two baselines, and ``geovl caption`` throughput against the bare model, one run.

Quality: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and S*m (coco-caption) of the captioner on the UCM-Captions test split
and the 200 RSICD-sample val images (never trained on), next to, on the same images:

* the most frequent training caption (UCM train + val and RSICD train, pooled, as the bundled captioner saw them);
* nearest-neighbour retrieval with the captioner's own backbone (the caption of the closest training image,
  :mod:`geovl.eval.caption_baselines`).

Speed: ``run_captions`` (decode workers, batching, Parquet shards, manifest) over N images vs the bare model
(``caption_pixels`` on the same images already decoded into tensors), alternating, medians of ``--repeats``; the
figure is the ratio (target >= 0.8).

    python benchmarks/captioning.py                          # the bundled geovl-caption-small
    python benchmarks/captioning.py --model out/runs/caption-small/final --decoding greedy --n 128
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch

from geovl.data.sources import FolderSource, list_images
from geovl.eval.caption_baselines import most_frequent_caption, nearest_neighbour_captions
from geovl.eval.caption_protocol import ReferenceSet, evaluate_captioner, reference_set
from geovl.eval.captioning import caption_metrics
from geovl.io.loading import load_image
from geovl.models import load_backbone
from geovl.models.captioner import load_captioner
from geovl.models.decoding import DecodingConfig
from geovl.tasks.captioning.batch import CaptionRunConfig, run_captions

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "S*m")


def _merge(sets: list[ReferenceSet]) -> ReferenceSet:
    ids = [f"{n}:{i}" for n, s in enumerate(sets) for i in s.ids]
    images = [im for s in sets for im in s.images]
    refs = {f"{n}:{i}": s.references[i] for n, s in enumerate(sets) for i in s.ids}
    return ReferenceSet(ids, images, refs)


def quality(model: Any, decoding: DecodingConfig, shared: Path) -> list[dict[str, Any]]:
    ucm, rsicd = shared / "ucm_captions" / "dataset.json", shared / "rsicd_train" / "dataset.json"
    train = _merge([reference_set(ucm, "train"), reference_set(ucm, "val"), reference_set(rsicd, "train")])
    frequent = most_frequent_caption([c for refs in train.references.values() for c in refs])
    rows = []
    for name, path, split in (("UCM-Captions test", ucm, "test"), ("RSICD sample val", rsicd, "val")):
        test = reference_set(path, split)
        start = time.perf_counter()
        ours = evaluate_captioner(model, test, decoding=decoding, meteor=True).scores
        seconds = time.perf_counter() - start
        backbone = getattr(model, "backbone", None) or load_backbone()  # BLIP has no dual encoder: use the default
        nn = caption_metrics(test.references, dict(nearest_neighbour_captions(backbone, train, test)))
        base = caption_metrics(test.references, {i: frequent for i in test.ids})
        for label, scores in (("captioner", ours), ("nearest-neighbour caption", nn),
                              ("most frequent caption", base)):
            rows.append({"set": name, "images": len(test.ids), "method": label,
                         **{m: scores.as_percent().get(m) for m in METRICS}})
        rows[-3]["seconds"] = round(seconds, 1)
    print(f"most frequent training caption: {frequent!r}")
    return rows


def throughput(model: Any, decoding: DecodingConfig, images: list[Path], batch_size: int,
               repeats: int) -> dict[str, float]:
    pixels = torch.stack([model.uint8_transform(load_image(p)) for p in images])

    def bare() -> None:
        for i in range(0, len(pixels), batch_size):
            model.caption_pixels(pixels[i:i + batch_size], decoding)

    def pipeline() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            run_captions(model, [FolderSource(images)], Path(tmp) / "caps",
                         CaptionRunConfig(batch_size=batch_size, progress=False), decoding)

    bare()  # warm-up
    times: dict[str, list[float]] = {"bare": [], "pipeline": []}
    for _ in range(repeats):
        for name, fn in (("bare", bare), ("pipeline", pipeline)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"images": len(images), "bare_img_s": len(images) / med["bare"],
            "pipeline_img_s": len(images) / med["pipeline"], "ratio": med["bare"] / med["pipeline"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="geovl-caption-small")
    ap.add_argument("--decoding", default="beam", choices=["greedy", "beam", "nucleus"])
    ap.add_argument("--beam-size", type=int, default=3)
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--n", type=int, default=256, help="images for the throughput comparison")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    if not (args.shared / "ucm_captions").is_dir():
        raise SystemExit(f"{args.shared} has no ucm_captions folder (see ../shared/data/README.md)")
    model = load_captioner(args.model, device=args.device)
    decoding = DecodingConfig(method=args.decoding, beam_size=args.beam_size)
    print(f"# {date.today()} | {platform.processor() or platform.machine()} | {torch.get_num_threads()} threads | "
          f"{args.model} | decoding {decoding.to_dict()}")
    out: dict[str, Any] = {"model": args.model, "decoding": decoding.to_dict()}
    if not args.skip_quality:
        rows = quality(model, decoding, args.shared)
        out["quality"] = rows
        print("| set | method | " + " | ".join(METRICS) + " |")
        print("|---|---|" + "---|" * len(METRICS))
        for r in rows:
            cells = " | ".join("-" if r[m] is None else f"{r[m]:.2f}" for m in METRICS)
            print(f"| {r['set']} ({r['images']}) | {r['method']} | {cells} |")
    images = list_images([args.shared / "ucm_captions" / "images"])[: args.n]
    speed = throughput(model, decoding, images, args.batch_size, args.repeats)
    out["throughput"] = speed
    print(f"throughput on {speed['images']} UCM images: bare model {speed['bare_img_s']:.1f} img/s, geovl caption "
          f"{speed['pipeline_img_s']:.1f} img/s, ratio {speed['ratio']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
