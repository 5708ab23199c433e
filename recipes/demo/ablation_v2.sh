#!/usr/bin/env bash
# The demo v2 ablation (docs/model-card.md, "v2 against v1"): the diffusion recipe at the same budget (steps, data,
# seed, the shipped v1 autoencoder) with one change per arm, then benchmarks/demo_ablation.py scores every arm.
#
#   bash recipes/demo/ablation_v2.sh [STEPS]      # from the repository root, after train_demo.sh's rendering
#
# One torch thread per run, the arms one after another; a run that stopped resumes when the script is run again.
set -euo pipefail
STEPS=${1:-500}
OUT=outputs/demo-ablation
LAUNCH=(accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no)
COMMON=(vae=latentmusic/checkpoints/demo/vae data.latent_cache=$OUT/latents run.max_steps=$STEPS run.eval_every=250
        run.sample_every=0 run.checkpoint_every=250 run.report_to=none run.progress_bar=false valid_batches=3)
declare -A ARMS=(
  [v1]=""
  [flow]="diffusion.objective=flow"
  [flow-pooled]="diffusion.objective=flow unet.pooled_text_conditioning=true"
  [flow-pooled-drop]="diffusion.objective=flow unet.pooled_text_conditioning=true data.caption_dropout=0.3"
)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for arm in ${ARMS_ORDER:-v1 flow flow-pooled flow-pooled-drop}; do
  start=$(date +%s)
  # shellcheck disable=SC2086
  "${LAUNCH[@]}" recipes/train_diffusion.py --config recipes/configs/demo/diffusion.yaml "${COMMON[@]}" \
    run.output_dir=$OUT/$arm ${ARMS[$arm]}
  [ -f $OUT/$arm/wall_seconds.txt ] || echo $(( $(date +%s) - start )) > $OUT/$arm/wall_seconds.txt
done
python benchmarks/demo_ablation.py --corpus data/demo --guidance 3 6 \
  --runs $(for arm in ${ARMS_ORDER:-v1 flow flow-pooled flow-pooled-drop}; do printf '%s=%s/%s ' $arm $OUT $arm; done)
