r"""Calibrate the bundled change captioner's verdict on the real LEVIR-CD sample pairs and write the shipped folder.

    python runs/bundled-change/calibrate_verdict.py out/runs/bundled-change/final \
        geovl/models/bundled/geovl-change-small

The verdict becomes the feature distance of the two dates against one threshold fitted on the LEVIR-CD sample
(its 11 pairs and their 128 px windows, ``../shared/data/change_samples/levir_cd_bitcd``); the figures printed are
leave-one-source-tile-out estimates (each tile scored with a threshold fitted without it), and DSIFN is scored with
the threshold as shipped (it is never used for fitting). See geovl.eval.change_calibration.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from geovl.eval.change_calibration import calibrate_distance
from geovl.eval.change_protocol import mask_pairs, mask_windows
from geovl.models.change_captioner import (
    ChangeCaptioner,
    VerdictCalibration,
    load_change_captioner,
    save_change_captioner,
)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "change_samples"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("model", help="the trained change-captioner folder")
    ap.add_argument("out", help="where to write the calibrated folder")
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--scale", type=float, default=20.0, help="slope of P(changed) in the distance")
    args = ap.parse_args()
    model = load_change_captioner(args.model, device="cpu", precision="fp32")
    levir, dsifn = args.shared / "levir_cd_bitcd", args.shared / "dsifn_changeformer"
    pairs, windows = mask_pairs(levir), mask_windows(levir, 128, 64, 0.02)
    evaluate = {"LEVIR-CD pairs": pairs, "LEVIR-CD 128 px windows": windows,
                "LEVIR-CD 64 px windows": mask_windows(levir, 64, 64, 0.02)}
    result = calibrate_distance(model, [*pairs, *windows], evaluate)
    shipped = VerdictCalibration("distance", result.threshold, args.scale,
                                 f"LEVIR-CD sample ({len(pairs)} pairs + {len(windows)} 128 px windows)")
    calibrated = replace_verdict(model, shipped)
    dsifn_scores = {}
    if dsifn.is_dir():
        from geovl.eval.change_calibration import pair_distances
        from geovl.eval.change_scores import verdict_scores

        for name, items in (("DSIFN pairs", mask_pairs(dsifn)), ("DSIFN 128 px windows", mask_windows(dsifn))):
            d = pair_distances(calibrated, items)
            dsifn_scores[name] = verdict_scores([p.changed for p in items], (d >= result.threshold).tolist())
    print(f"distance threshold {result.threshold:.4f} (fitted on {result.calibration_pairs} pairs and windows; "
          f"distance AUROC on them {100 * (result.auroc or 0):.1f})\n")
    print("| set | pairs | changed | accuracy | balanced acc. | precision | recall | TP | FP | TN | FN |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, v in {**result.held_out, **dsifn_scores}.items():
        def pct(x: float | None) -> str:
            return "-" if x is None else f"{100 * x:.1f}"
        print(f"| {name} | {v.n_pairs} | {v.n_changed} | {pct(v.accuracy)} | {pct(v.balanced_accuracy)} | "
              f"{pct(v.precision)} | {pct(v.recall)} | {v.tp} | {v.fp} | {v.tn} | {v.fn} |")
    report = {**result.to_dict(), "dsifn": {k: v.to_dict() for k, v in dsifn_scores.items()}}
    report.pop("distances")
    save_change_captioner(calibrated, args.out, metadata={"verdict_calibration": report}, dtype=_dtype(args.model))
    print(f"\nwrote {args.out}")


def replace_verdict(model: ChangeCaptioner, verdict: VerdictCalibration) -> ChangeCaptioner:
    """``model`` with its verdict from ``verdict`` (P(changed) = 0.5 at the distance threshold)."""
    model.verdict = verdict
    model.threshold = 0.5
    return model


def _dtype(folder: str) -> torch.dtype:
    meta = json.loads((Path(folder) / "change_captioner_config.json").read_text())["metadata"]
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
        meta.get("training", {}).get("run", {}).get("save_dtype", "fp32")]


if __name__ == "__main__":
    main()
