#!/usr/bin/env bash
# Reproduce the bundled model (geovl-rs-tiny) on a CPU, then measure it as its model card reports.
# Run from the repository root with ../shared/data beside it:  bash runs/bundled/train.sh
# About 35 minutes on a 2-core CPU with bf16 units; the GPU path is the same command.
set -euo pipefail
RECIPE=${RECIPE:-minilm}                     # minilm (the shipped recipe) or scratch (the comparison)
OUT=out/runs/bundled-$RECIPE

geovl synth captions out/bundled/synth --n 3000 --size 128 --seed 1
geovl train clip --config runs/bundled/recipe-$RECIPE.yaml --output "$OUT"

# The model card's figures (the EuroSAT images scored are the 20% hold-out the recipe never trained on).
geovl eval retrieval ../shared/data/ucm_captions --split test --model "$OUT/final" --precision fp32 --out "$OUT/eval-ucm-test"
geovl eval zeroshot ../shared/data/eurosat_rgb --holdout 0.2 --label-set eurosat --model "$OUT/final" --precision fp32 --out "$OUT/eval-eurosat-holdout"
geovl eval zeroshot ../shared/data/ucm_captions --split test --label-set ucmerced --model "$OUT/final" --precision fp32 --out "$OUT/eval-ucm-zeroshot"
