"""Train the MusicGen-style token LM on a trained RVQ codec's codes.

    accelerate launch recipes/train_token_lm.py --config recipes/configs/token_lm/tiny.yaml \
        codec=outputs/codec-tiny/autoencoder data.root=data/corpus

Every key is documented in `latentmusic.training.token_lm.TokenLMTrainingConfig`; the YAML file holds
what differs from its defaults and `key=value` arguments override both. The run tokenises the corpus once
into `<run.output_dir>/codes` (reused by later runs), then writes checkpoints, TensorBoard logs, audio samples
with spectrogram pictures and finally `<run.output_dir>/pipeline`, a `TokenMusicPipeline` folder. Re-running
the same command resumes from the last checkpoint.
"""

from latentmusic.training.config import run_recipe
from latentmusic.training.token_lm import TokenLMTrainingConfig, train_token_lm

if __name__ == "__main__":
    print(run_recipe(TokenLMTrainingConfig, train_token_lm, __doc__))
