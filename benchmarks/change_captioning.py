"""Change captioning against its baselines, and change / no-change verdicts on real pairs with masks, one run.

Synthetic (:mod:`geovl.eval.change_protocol`): ``--n`` held-out pairs of synthetic dataset seed ``--seed`` (9001,
never trained on), drawn like the model's training scenes (change types, gsd, unchanged share, size: read from the
model folder's metadata; the generator's defaults for a model without it, or with ``--scene default``). The
captioner's BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and S*m on all / changed / unchanged pairs
and its change head's verdicts, next to, on the same pairs: "always no-change" (the no-change sentence, verdict
unchanged) and "most frequent change caption" (of the changed pairs of the training seed, verdict changed).

Real: the LEVIR-CD (BIT_CD samples) and DSIFN (ChangeFormer samples) pairs with change masks in
``../shared/data/change_samples``: verdict accuracy against the masks on the full pairs (almost all changed) and on
``--window`` px windows (no changed pixel: unchanged; >= ``--min-changed`` changed: changed; slivers dropped),
next to "always no-change" and "always changed", with the AUROC of P(changed) and of the heat map's cells against
the mask. Skipped with a note when the folder is absent.

    python benchmarks/change_captioning.py                           # the bundled geovl-change-small
    python benchmarks/change_captioning.py --model out/runs/change-small/final --n 100 --json change.json
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import torch

from geovl.data.synthetic.config import SceneConfig
from geovl.eval.caption_scores import METRIC_NAMES
from geovl.eval.change_protocol import (
    HELDOUT_SEED,
    NUISANCES,
    TRAINING_SEED,
    ChangeCaptionReport,
    VerdictReport,
    evaluate_change_captioner,
    evaluate_change_verdicts,
    mask_pairs,
    mask_windows,
    robustness_pairs,
    synthetic_change_set,
    training_change_captions,
    training_scene,
)
from geovl.eval.change_scores import VerdictScores
from geovl.io.fs import atomic_write_json
from geovl.io.jsonable import to_jsonable
from geovl.models import DEFAULT_CHANGE_CAPTIONER
from geovl.models.change_captioner import VerdictCalibration, load_change_captioner
from geovl.models.decoding import DecodingConfig
from geovl.models.weights import CheckpointNotFoundError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_SETS = (("LEVIR-CD", "levir_cd_bitcd"), ("DSIFN", "dsifn_changeformer"))
VERDICT_COLUMNS = ("accuracy", "balanced acc.", "precision", "recall", "F1", "TP", "FP", "TN", "FN")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _verdict_cells(v: VerdictScores) -> list[str]:
    rates = [_pct(x) for x in (v.accuracy, v.balanced_accuracy, v.precision, v.recall, v.f1)]
    return rates + [str(x) for x in (v.tp, v.fp, v.tn, v.fn)]


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def caption_table(report: ChangeCaptionReport) -> str:
    rows = []
    for m in report.methods:
        if m.captions is None:
            continue
        for subset, scores in m.captions.as_percent().items():
            if scores is None:
                continue
            n = {"all": m.verdicts.n_pairs, "changed": m.verdicts.n_changed,
                 "unchanged": m.verdicts.n_pairs - m.verdicts.n_changed}[subset]
            rows.append([m.name, f"{subset} ({n})",
                         *("-" if scores[k] is None else f"{scores[k]:.2f}" for k in METRIC_NAMES)])
    return _table(["method", "pairs", *METRIC_NAMES], rows)


def verdict_table(report: ChangeCaptionReport) -> str:
    return _table(["method", *VERDICT_COLUMNS], [[m.name, *_verdict_cells(m.verdicts)] for m in report.methods])


def real_table(results: list[tuple[str, str, VerdictReport]]) -> str:
    rows = []
    for name, unit, rep in results:
        for m in rep.methods:
            model = m.name == "model"
            rows.append([name, unit, f"{rep.model.n_pairs} ({rep.model.n_changed} changed)", m.name,
                         *_verdict_cells(m.verdicts),
                         _pct(rep.probability_auroc) if model else "", _pct(rep.heat_auroc) if model else ""])
    return _table(["set", "unit", "pairs", "method", *VERDICT_COLUMNS, "P(changed) AUROC", "heat AUROC"], rows)


def scene(model: Any, args: argparse.Namespace) -> tuple[SceneConfig, int, str]:
    """The synthetic scenes to draw, the training seed and where they come from."""
    found = training_scene(getattr(model, "metadata", {})) if args.scene == "training" else None
    config, seed, origin = (SceneConfig(), TRAINING_SEED, "the generator's defaults") if found is None else \
        (*found, "the model's training scenes")
    if args.size is not None:
        config = replace(config, size=args.size)
    seed = seed if args.train_seed is None else args.train_seed
    if seed == args.seed:
        raise SystemExit(f"--seed {args.seed} is the training seed: the held-out pairs would be training pairs")
    return config, seed, origin


def synthetic(model: Any, args: argparse.Namespace, decoding: DecodingConfig) -> dict[str, Any]:
    config, train_seed, origin = scene(model, args)
    start = time.perf_counter()
    pairs = synthetic_change_set(args.seed, args.n, config=config, workers=args.workers)
    generated = len(pairs) / (time.perf_counter() - start)
    captions = training_change_captions(train_seed, args.train_n, config=config, workers=args.workers)
    report = evaluate_change_captioner(model, pairs, decoding, args.threshold, batch_size=args.batch_size,
                                       training_captions=captions, meteor=not args.no_meteor)
    changed = sum(p.changed for p in pairs)
    print(f"\n## Held-out synthetic pairs: seed {args.seed}, {len(pairs)} pairs ({changed} changed), {origin}: "
          f"{config.shape[0]} px, gsd {config.gsd_range}, {', '.join(config.change_type_names)}; baseline caption "
          f"from training seed {train_seed} ({len(captions)} change captions): {report.frequent_caption!r}\n")
    print(caption_table(report))
    print("\nChange / no-change verdicts (the change head; percent):\n")
    print(verdict_table(report))
    print(f"\nP(changed) AUROC {_pct(report.probability_auroc)}, heat-map cell AUROC {_pct(report.heat_auroc)}; "
          f"generation {generated:.1f} pairs/s, captioning {report.pairs_per_second:.1f} pairs/s")
    robust = robustness(model, pairs, args)
    return {"pairs": len(pairs), "changed": changed, "scene": {"origin": origin, **to_jsonable(config)},
            "train_seed": train_seed, "generated_pairs_per_second": generated, **report.to_dict(),
            "robustness": robust}


def robustness(model: Any, pairs: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    """Verdicts on the held-out pairs with the after image put through one acquisition nuisance at a time."""
    rows, out = [], {}
    for name in ("none", *NUISANCES):
        varied = pairs if name == "none" else robustness_pairs(pairs, name)
        v = evaluate_change_verdicts(model, varied, args.threshold, batch_size=args.batch_size).model
        out[name] = {"unchanged_kept": v.specificity, "changed_found": v.recall, "accuracy": v.accuracy}
        rows.append([name, _pct(v.specificity), _pct(v.recall), _pct(v.accuracy)])
    print("\nRobustness: the after image through one acquisition nuisance at full strength (percent):\n")
    print(_table(["after image", "unchanged pairs called unchanged", "changed pairs called changed", "accuracy"],
                 rows))
    return out


def real(model: Any, args: argparse.Namespace) -> dict[str, Any]:
    root = args.shared / "change_samples"
    if not root.is_dir():
        note = f"{root} is absent: the real-pair verdicts are skipped (see ../shared/data/README.md)"
        print(f"\nNote: {note}")
        return {"skipped": note}
    results: list[tuple[str, str, VerdictReport]] = []
    for name, folder in REAL_SETS:
        if not (root / folder).is_dir():
            print(f"\nNote: {root / folder} is absent: {name} is skipped")
            continue
        full = mask_pairs(root / folder)
        windows = mask_windows(root / folder, args.window, args.stride, args.min_changed)
        for unit, pairs in (("pair", full), (f"{args.window} px window", windows)):
            results.append((name, unit, evaluate_change_verdicts(model, pairs, args.threshold,
                                                                 batch_size=args.batch_size)))
    print(f"\n## Real pairs with change masks: verdicts (percent); windows {args.window} px, stride {args.stride}, "
          f"changed when >= {100 * args.min_changed:g}% of pixels changed, slivers dropped\n")
    print(real_table(results))
    speeds = ", ".join(f"{n} {u}s {r.pairs_per_second:.1f}" for n, u, r in results)
    print(f"\nverdict throughput (pairs/s, decode + model): {speeds}")
    return {"sets": [{"set": n, "unit": u, **r.to_dict()} for n, u, r in results]}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_CHANGE_CAPTIONER, help="registry name or change-captioner folder")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--decoding", default="beam", choices=["greedy", "beam", "nucleus"])
    ap.add_argument("--beam-size", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=None, help="most words per caption (default: decoding's)")
    ap.add_argument("--threshold", type=float, default=None, help="verdict threshold (default: the model's)")
    ap.add_argument("--verdict", default="model", choices=["model", "head", "distance"],
                    help="where P(changed) comes from: the model's setting, its trained head (threshold: the "
                         "training calibration unless --threshold), or the feature distance (its calibration)")
    ap.add_argument("--n", type=int, default=400, help="held-out synthetic pairs")
    ap.add_argument("--seed", type=int, default=HELDOUT_SEED, help="synthetic dataset seed of the held-out pairs")
    ap.add_argument("--scene", default="training", choices=["training", "default"],
                    help="draw the synthetic scenes like the model's training scenes (from its metadata) or with the "
                         "generator's defaults")
    ap.add_argument("--size", type=int, default=None, help="synthetic tile side (default: the scene's, 256)")
    ap.add_argument("--train-seed", type=int, default=None,
                    help="synthetic training seed whose change captions give the 'most frequent' baseline "
                         f"(default: the model's, else {TRAINING_SEED})")
    ap.add_argument("--train-n", type=int, default=1000, help="training pairs planned for that baseline")
    ap.add_argument("--workers", type=int, default=None, help="synthetic generator processes")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--no-meteor", action="store_true", help="skip METEOR (and S*m): no Java process")
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--stride", type=int, default=64)
    ap.add_argument("--min-changed", type=float, default=0.02)
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    try:
        model = load_change_captioner(args.model, device=args.device)
    except CheckpointNotFoundError as exc:
        raise SystemExit(f"{args.model}: {exc}") from None
    if args.verdict == "head" and model.verdict.source != "head":
        model.verdict = VerdictCalibration()
        model.threshold = float(model.metadata.get("eval", {}).get("val/threshold", 0.5))
    elif args.verdict == "distance" and model.verdict.source != "distance":
        raise SystemExit(f"{args.model} has no distance calibration (runs/bundled-change/calibrate_verdict.py)")
    extra = {} if args.max_length is None else {"max_length": args.max_length}
    decoding = DecodingConfig(method=args.decoding, beam_size=args.beam_size, **extra)
    print(f"# {date.today()} | {platform.processor() or platform.machine()} | {torch.get_num_threads()} threads | "
          f"{args.model} | verdict {model.verdict.source} | "
          f"threshold {model.threshold if args.threshold is None else args.threshold} | "
          f"decoding {decoding.to_dict()}")
    out: dict[str, Any] = {"model": args.model, "record": model.record(), "decoding": decoding.to_dict(),
                           "verdict": model.verdict.to_dict()}
    if not args.skip_synthetic:
        out["synthetic"] = synthetic(model, args, decoding)
    if not args.skip_real:
        out["real"] = real(model, args)
    if args.json:
        atomic_write_json(args.json, to_jsonable(out))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
