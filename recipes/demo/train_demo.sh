#!/usr/bin/env bash
# Reproduce the demo checkpoints that ship in latentmusic/checkpoints/ (docs/model-card.md) on a CPU.
#
#   bash recipes/demo/train_demo.sh          # from the repository root, with the package installed
#
# Stages: the autoencoder, then the RVQ codec (each with both cores of a 2-core machine: two torch threads); then
# the diffusion model and the token LM side by side (one thread each) with the same data, windows, batch and wall
# time. Every stage resumes where it stopped when the script is run again (rendering skips finished pieces, the
# recipes resume from their last checkpoint), so it can be trained in pieces. With a GPU, drop OMP_NUM_THREADS and
# add run.mixed_precision=bf16 to the recipe overrides.
set -euo pipefail
LAUNCH=(accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no)

# 16 kHz mono, at most 30 s per rendition, 2 renditions per piece: the first 105 pieces of all collections (35 string
# quartet movements among them), then the first 260 of the five collections without quartets (whose repeat
# expansion takes minutes per movement); the second command skips what the first rendered.
# Demo v2 was trained on the second command's 260 pieces plus the first 5 quartet movements (the first command,
# time-boxed: about 35 s per movement on the shared 2-core machine): 530 clips.
RENDER=(--out data/demo --renditions-per-piece 2 --sample-rate 16000 --max-seconds 30 --workers 2)
latentmusic render-corpus "${RENDER[@]}" --max-pieces 260 --collections palestrina bach ryans oneills essen
latentmusic render-corpus "${RENDER[@]}" --max-pieces 105

OMP_NUM_THREADS=2 "${LAUNCH[@]}" recipes/train_autoencoder.py --config recipes/configs/demo/autoencoder.yaml "$@"
OMP_NUM_THREADS=2 "${LAUNCH[@]}" recipes/train_autoencoder.py --config recipes/configs/demo/codec.yaml "$@"

# Diffusion v2 (flow matching, pooled-text conditioning: recipes/configs/demo/diffusion.yaml) was chosen by
# recipes/demo/ablation_v2.sh and trained alone, one thread, on the v1 autoencoder (add
# vae=latentmusic/checkpoints/demo/vae to skip the autoencoder stage); the token LM is still v1's recipe.
# v2 was step 4500 (trained in pieces, each resume exact). The shipped v3 is the same run trained on: uniform noise
# levels to step 7500, then resumed to step 11000 with SD3's logit-normal noise levels (flow_logit_mean=1, std=1:
# more training at high noise, where the held-out loss depends on the caption's key; docs/model-card.md).
export OMP_NUM_THREADS=1
DIFFUSION=(recipes/train_diffusion.py --config recipes/configs/demo/diffusion.yaml "$@")
( "${LAUNCH[@]}" "${DIFFUSION[@]}" run.max_steps=7500 &&
  "${LAUNCH[@]}" "${DIFFUSION[@]}" run.max_steps=11000 diffusion.flow_logit_mean=1.0 diffusion.flow_logit_std=1.0 ) &
first=$!
"${LAUNCH[@]}" recipes/train_token_lm.py --config recipes/configs/demo/token_lm.yaml "$@" & second=$!
wait $first && wait $second

# v4 (shipped): v3's pipeline given a beat grid (beat.enabled: two more U-Net inputs, zero-initialised, with the phase
# of each crop's quarter-note pulse), trained on the corpus plus one tempo-only variant of every train rendition,
# crops on a beat: 42 min on two threads (run.max_minutes=42), which reached step 6636 (docs/model-card.md)
latentmusic render-corpus "${RENDER[@]/data\/demo/data/demo-tempo}" --max-pieces 260 --collections palestrina bach ryans oneills essen \
    --tempo-variants 1
latentmusic render-corpus "${RENDER[@]/data\/demo/data/demo-tempo}" --max-pieces 5 --collections beethoven --tempo-variants 1
OMP_NUM_THREADS=2 "${LAUNCH[@]}" "${DIFFUSION[@]}" init_from=outputs/demo/diffusion/pipeline data.root=data/demo-tempo \
    data.beat_aligned_crops=true beat.enabled=true diffusion.flow_logit_mean=1.0 diffusion.flow_logit_std=1.0 \
    run.output_dir=outputs/demo/diffusion-beat run.max_steps=6636
python recipes/demo/export_demo.py --diffusion outputs/demo/diffusion-beat/pipeline
# (recipes/configs/lora/demo-turbo.yaml distils v4's guidance into a LoRA; it ships no longer: docs/model-card.md)
python benchmarks/demo.py --corpus data/demo-tempo   # add --earlier LABEL=FOLDER to score earlier demos in the same run
