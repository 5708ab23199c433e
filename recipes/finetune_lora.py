"""Fine-tune a trained diffusion pipeline with a LoRA adapter on a folder of audio and captions.

    accelerate launch recipes/finetune_lora.py --config recipes/configs/lora/demo.yaml data.root=data/my-folder

The folder has the corpus layout the diffusion recipe reads (audio files and a `metadata.jsonl` with captions and
splits). `init_from` names the pipeline whose U-Net is adapted (a `save_pretrained` folder or a shipped name such as
`latentmusic/demo`); its U-Net stays frozen and only the adapter trains. Every key is documented in
`latentmusic.training.diffusion.DiffusionTrainingConfig` (the `lora` section in
`latentmusic.training.lora.LoraTrainingConfig`). The run writes
`<run.output_dir>/lora/pytorch_lora_weights.safetensors`; use it with
`pipe.load_lora_weights("<run.output_dir>/lora")`. With `lora.save_fused_pipeline=true` it also writes
`<run.output_dir>/pipeline`, the pipeline with the adapter fused in. Re-running the same command resumes.
"""

from latentmusic.training.config import run_recipe
from latentmusic.training.diffusion import DiffusionTrainingConfig
from latentmusic.training.lora import finetune_lora

if __name__ == "__main__":
    print(run_recipe(DiffusionTrainingConfig, finetune_lora, __doc__))
