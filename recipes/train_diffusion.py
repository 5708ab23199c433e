"""Train the text-conditioned latent diffusion U-Net on a trained autoencoder's latents.

    accelerate launch recipes/train_diffusion.py --config recipes/configs/diffusion/tiny.yaml \
        vae=outputs/autoencoder-tiny/autoencoder data.root=data/corpus

Every key is documented in `latentmusic.training.diffusion.DiffusionTrainingConfig`; the YAML file holds
what differs from its defaults and `key=value` arguments override both. The run writes checkpoints,
TensorBoard logs, audio samples with spectrogram pictures and finally `<run.output_dir>/pipeline`, a
`LatentMusicPipeline` folder. Re-running the same command resumes from the last checkpoint.
"""

from latentmusic.training.config import run_recipe
from latentmusic.training.diffusion import DiffusionTrainingConfig, train_diffusion

if __name__ == "__main__":
    print(run_recipe(DiffusionTrainingConfig, train_diffusion, __doc__))
