#!/usr/bin/env bash
# The model card's evaluations of one model, each written as a JSON / Markdown report under OUT.
# Usage (repository root, ../shared/data beside it):  bash runs/bundled-small/evaluate.sh MODEL OUT
# MODEL: a registry name (geovl-rs-small, geovl-rs-tiny) or a run's final/ folder.
set -euo pipefail
MODEL=$1
OUT=$2
DATA=${DATA:-../shared/data}
run() { geovl eval "$@" --model "$MODEL" --precision fp32 --quiet; }

python runs/bundled-small/aid_labels.py "$DATA/rsicd_train" out/bundled/rsicd_aid_classes.csv
# retrieval on held-out caption sets: UCM test (210 images) and the 200 RSICD validation images
run retrieval "$DATA/ucm_captions" --split test --out "$OUT/ucm-test-retrieval"
run retrieval "$DATA/rsicd_train" --split val --out "$OUT/rsicd-val-retrieval"
# zero-shot scene classification: EuroSAT's stable 20% hold-out, UCM test (21 classes), RSICD val by AID class
run zeroshot "$DATA/eurosat_rgb" --holdout 0.2 --label-set eurosat --out "$OUT/eurosat-holdout-zeroshot"
run zeroshot "$DATA/ucm_captions" --split test --label-set ucmerced --out "$OUT/ucm-test-zeroshot"
run zeroshot "$DATA/rsicd_train" --split val --labels out/bundled/rsicd_aid_classes.csv --label-set aid \
  --out "$OUT/rsicd-val-aid-zeroshot"
# linear probe on frozen embeddings: UCM (logistic regression on the train split, scored on the test split)
run linear-probe "$DATA/ucm_captions" --out "$OUT/ucm-linear-probe"
python runs/bundled-small/summarise.py "$OUT"
