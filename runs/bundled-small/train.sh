#!/usr/bin/env bash
# Reproduce the bundled default model (geovl-rs-small) on a CPU, then measure it as its model card reports.
# Run from the repository root with ../shared/data beside it:  bash runs/bundled-small/train.sh
# About 25 minutes on a 2-core CPU with bf16 units (most of it computing the locked trunk's features once).
#   RECIPE=locked | locked-captions | unfreeze-last | finetune | l3-text   a recipe it was compared with;
#   RECIPE=small-lodo-ucm | lodo-ucm | lodo-ucm-captions   leave-one-dataset-out controls (no UCM image).
set -euo pipefail
RECIPE=${RECIPE:-small}
OUT=${OUT:-out/runs/bundled-small$([ "$RECIPE" = small ] || echo "-$RECIPE")}

geovl synth captions out/bundled/synth --n 3000 --size 128 --seed 1
python runs/bundled-small/aid_labels.py ../shared/data/rsicd_train out/bundled/rsicd_aid_classes.csv
geovl train clip --config "runs/bundled-small/recipe-$RECIPE.yaml" --output "$OUT"
bash runs/bundled-small/evaluate.sh "$OUT/final" "$OUT/eval"
# the shipped folder is $OUT/final copied to geovl/models/bundled/geovl-rs-small/ (heads only, fp16)
