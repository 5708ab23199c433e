#!/usr/bin/env bash
# Reproduce the demo checkpoints that ship in latentmusic/checkpoints/ (docs/model-card.md) on a CPU.
#
#   bash recipes/demo/train_demo.sh          # from the repository root, with the package installed
#
# Two jobs run side by side at each stage (one torch thread each, for a 2-core machine): the autoencoder and the
# RVQ codec, then the diffusion model and the token LM with the same data, windows, batch and wall time. Every
# stage resumes where it stopped when the script is run again (rendering skips finished pieces, the recipes
# resume from their last checkpoint), so it can be trained in pieces. With a GPU, drop OMP_NUM_THREADS and add
# run.mixed_precision=bf16 to the recipe overrides.
set -euo pipefail
export OMP_NUM_THREADS=1
LAUNCH=(accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no)

# 16 kHz mono, at most 30 s per rendition, 2 renditions per piece: the first 105 pieces of all collections (35 string
# quartet movements among them), then the first 260 of the five collections without quartets (whose repeat
# expansion takes minutes per movement); the second command skips what the first rendered.
RENDER=(--out data/demo --renditions-per-piece 2 --sample-rate 16000 --max-seconds 30 --workers 2)
latentmusic render-corpus "${RENDER[@]}" --max-pieces 105
latentmusic render-corpus "${RENDER[@]}" --max-pieces 260 --collections palestrina bach ryans oneills essen

"${LAUNCH[@]}" recipes/train_autoencoder.py --config recipes/configs/demo/autoencoder.yaml "$@" & first=$!
"${LAUNCH[@]}" recipes/train_autoencoder.py --config recipes/configs/demo/codec.yaml "$@" & second=$!
wait $first && wait $second

"${LAUNCH[@]}" recipes/train_diffusion.py --config recipes/configs/demo/diffusion.yaml "$@" & first=$!
"${LAUNCH[@]}" recipes/train_token_lm.py --config recipes/configs/demo/token_lm.yaml "$@" & second=$!
wait $first && wait $second

python recipes/demo/export_demo.py
python benchmarks/demo.py
