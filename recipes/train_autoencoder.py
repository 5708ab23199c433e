"""Train the JEN-1-style audio autoencoder (or diffusers' AutoencoderOobleck, for comparison).

    accelerate launch recipes/train_autoencoder.py --config recipes/configs/autoencoder/tiny.yaml \
        data.root=data/corpus run.max_steps=2000

Every key is documented in `latentmusic.training.autoencoder.AutoencoderTrainingConfig`; the YAML file
holds what differs from its defaults and `key=value` arguments override both. The run writes
checkpoints, TensorBoard logs (losses, reconstruction metrics, spectrogram pictures and audio), a loss
curve picture, and finally `<run.output_dir>/autoencoder` (EMA weights, latent scaling in the config).
Re-running the same command resumes from the last checkpoint.
"""

from latentmusic.training.autoencoder import AutoencoderTrainingConfig, train_autoencoder
from latentmusic.training.config import run_recipe

if __name__ == "__main__":
    print(run_recipe(AutoencoderTrainingConfig, train_autoencoder, __doc__))
