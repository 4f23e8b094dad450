"""Choose decoding settings on the hold-out of the training splits (the selection sets of recipe.yaml), never on the
sets the model card reports. Prints BLEU-4 / CIDEr-D per setting on the UCM and RSICD hold-outs.

    python runs/bundled-caption/select_decoding.py out/runs/caption-small/best
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from geovl.eval.caption_protocol import evaluate_captioner, reference_set
from geovl.models.captioner import load_captioner
from geovl.models.decoding import DecodingConfig

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--holdout", type=float, default=0.1)
    args = ap.parse_args()
    model = load_captioner(args.model, device="cpu")
    sets = {
        "ucm-holdout": reference_set(SHARED / "ucm_captions" / "dataset.json", ["train", "val"],
                                     holdout_fraction=args.holdout),
        "rsicd-holdout": reference_set(SHARED / "rsicd_train" / "dataset.json", "train",
                                       holdout_fraction=args.holdout),
    }
    print("| method | beams | length penalty | no-repeat n-gram | " + " | ".join(
        f"{n} BLEU-4 | {n} CIDEr-D" for n in sets) + " |")
    print("|---|---|---|---|" + "---|---|" * len(sets))
    grid = [("greedy", 1, 0.0, 3), ("beam", 3, 1.0, 0)] + [("beam", b, lp, 3) for b, lp in
                                                           itertools.product((3, 5), (0.0, 1.0, 2.0))]
    for method, beams, lp, nr in grid:
        cfg = DecodingConfig(method=method, beam_size=beams, length_penalty=lp, no_repeat_ngram_size=nr)
        cells = []
        for refs in sets.values():
            scores = evaluate_captioner(model, refs, decoding=cfg).scores.as_percent()
            cells += [f"{scores['BLEU-4']:.2f}", f"{scores['CIDEr-D']:.2f}"]
        print(f"| {method} | {beams} | {lp} | {nr} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
