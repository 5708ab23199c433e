"""The autoencoder recipe end to end on rendered corpus audio: it learns, saves, and resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch

from latentmusic.data import AudioCaptionDataset
from latentmusic.evaluation.reconstruction import mrstft_distance
from latentmusic.models import AudioAutoencoder, vae_utils
from latentmusic.training.autoencoder import AutoencoderTrainingConfig, train_autoencoder
from latentmusic.training.config import load_config

CONFIG = "recipes/configs/autoencoder/tiny.yaml"


def tiny_config(corpus_dir, output_dir, *overrides):
    return load_config(
        AutoencoderTrainingConfig,
        CONFIG,
        [
            f"data.root={corpus_dir}",
            f"run.output_dir={output_dir}",
            "run.progress_bar=false",
            "run.report_to=none",
            "data.segment_seconds=0.25",
            *overrides,
        ],
    )


def losses(output_dir):
    return [json.loads(line) for line in (output_dir / "losses.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_tiny_autoencoder_learns_to_reconstruct_held_out_music(corpus_dir, tmp_path):
    output = tmp_path / "run"
    config = tiny_config(
        corpus_dir,
        output,
        "run.max_steps=240",
        "optim.discriminator_start=160",
        "run.eval_every=80",
        "run.sample_every=240",
        "run.checkpoint_every=0",
    )
    folder = train_autoencoder(config)

    evaluations = [row for row in losses(output) if "valid/mrstft" in row]
    assert evaluations[0]["step"] == 0 and evaluations[-1]["step"] == 240
    first, last = evaluations[0], evaluations[-1]
    assert last["valid/mrstft"] < 0.8 * first["valid/mrstft"]
    assert last["valid/mel"] < 0.8 * first["valid/mel"]
    assert last["valid/si_sdr"] > first["valid/si_sdr"] + 5
    assert any("loss/discriminator" in row for row in losses(output))  # the GAN phase ran

    # the final model: EMA weights, unit-variance latent scaling, pictures people look at
    vae = AudioAutoencoder.from_pretrained(folder)
    assert vae.config.scaling_factor != 1.0
    assert (output / "losses.png").is_file()
    assert list((output / "samples").glob("step-*/spectrograms.png"))
    clip = torch.randn(1, 1, 16000 * 3 + 7) * 0.1
    with torch.no_grad():
        assert vae(clip).sample.shape == clip.shape
        z = vae_utils.scale_latents(vae, vae.encode(clip).latent_dist.mode())
    assert z.shape[1] == 8


@pytest.mark.slow
def test_a_killed_run_resumes_with_the_same_next_losses(corpus_dir, tmp_path):
    common = ("run.log_every=1", "run.checkpoint_every=10", "optim.discriminator_start=12", "run.eval_every=1000")
    train_autoencoder(tiny_config(corpus_dir, tmp_path / "straight", "run.max_steps=24", *common))
    # the same run, stopped after step 16 (its last checkpoint is at step 10), then started again
    interrupted = tmp_path / "interrupted"
    train_autoencoder(tiny_config(corpus_dir, interrupted, "run.max_steps=16", *common))
    (interrupted / "checkpoints" / "checkpoint-00000016").rename(interrupted / "checkpoints" / "gone")
    import shutil

    shutil.rmtree(interrupted / "checkpoints" / "gone")
    train_autoencoder(tiny_config(corpus_dir, interrupted, "run.max_steps=24", *common))

    straight = {row["step"]: row["loss/total"] for row in losses(tmp_path / "straight") if "loss/total" in row}
    resumed = {row["step"]: row["loss/total"] for row in losses(interrupted) if "loss/total" in row}
    assert sorted(resumed) == list(range(1, 25))
    for step in range(11, 25):
        assert resumed[step] == pytest.approx(straight[step], rel=1e-5, abs=1e-6), step


@pytest.mark.slow
def test_rvq_codec_keeps_its_codes_alive_and_improves_with_more_codebooks(corpus_dir, tmp_path):
    """The token branch's codec, trained by the same recipe: dead-code expiry keeps the codebooks in use, every
    further codebook refines the latents the earlier ones left, and training makes the codes decode to audio far
    closer to the input than an untrained codec's."""
    output = tmp_path / "codec"
    config = load_config(
        AutoencoderTrainingConfig,
        "recipes/configs/autoencoder/tiny-rvq.yaml",
        [
            f"data.root={corpus_dir}",
            f"run.output_dir={output}",
            "run.progress_bar=false",
            "run.report_to=none",
            "data.segment_seconds=0.25",
            "run.max_steps=300",
            "optim.discriminator_start=1000",
            "run.eval_every=150",
            "run.sample_every=0",
            "run.checkpoint_every=0",
        ],
    )
    codec = AudioAutoencoder.from_pretrained(train_autoencoder(config)).eval()
    logged = losses(output)
    assert any("loss/commitment" in row for row in logged)
    assert any("codebook/perplexity_q0" in row for row in logged)

    # the quantizers' running usage at the end of training: >= 90 % of every codebook's codes in use
    usage = codec.codebook_usage()
    assert usage.dead_fraction.max() <= 0.1, usage
    clips = AudioCaptionDataset(corpus_dir, sample_rate=16000, segment_seconds=1.0, split="valid", random_crop=False)
    audio = torch.stack([clips[i]["audio"] for i in range(len(clips))])
    with torch.no_grad():
        codes = codec.encode_codes(audio)
        latents = codec.encoder(audio)
        # residual quantization: each prefix of the codebooks is a coarser code for the encoder's latents
        latent_errors = [(codec.bottleneck.decode(codes[:, :k]) - latents).pow(2).mean().item() for k in (1, 2, 3, 4)]
        trained = mrstft_distance(audio, codec.decode_codes(codes)[..., : audio.shape[-1]])
        torch.manual_seed(0)
        untrained = AudioAutoencoder.from_config(codec.config).eval()
        untrained.train()(audio)  # k-means initialisation of the codebooks, as on a first training batch
        untrained.eval()
        untrained_audio = untrained.decode_codes(untrained.encode_codes(audio))[..., : audio.shape[-1]]
        baseline = mrstft_distance(audio, untrained_audio)
    assert all(later < 0.9 * earlier for earlier, later in zip(latent_errors, latent_errors[1:])), latent_errors
    assert trained < 0.75 * baseline, (trained, baseline)


@pytest.mark.slow
def test_fine_tuning_starts_from_the_given_model(corpus_dir, tmp_path):
    """`init_from` loads the weights and architecture of a saved autoencoder (not the YAML's `model`): with a zero
    learning rate the run ends with exactly those weights."""
    torch.manual_seed(0)
    start = AudioAutoencoder(
        sample_rate=16000, strides=(2, 4, 8), latent_channels=8, encoder_kwargs=dict(base_channels=4, max_channels=32)
    )
    start.save_pretrained(tmp_path / "start")
    quiet = ("run.eval_every=1000", "run.sample_every=0", "run.max_steps=2", "optim.lr=0")
    folder = train_autoencoder(tiny_config(corpus_dir, tmp_path / "run", f"init_from={tmp_path / 'start'}", *quiet))
    tuned = AudioAutoencoder.from_pretrained(folder)
    assert tuned.config.decoder_kwargs == dict(base_channels=4, max_channels=32, activation="snake")
    for (name, before), after in zip(start.state_dict().items(), tuned.state_dict().values()):
        assert torch.equal(before, after), name
    with pytest.raises(FileNotFoundError, match="init_from=.*no autoencoder there"):
        train_autoencoder(tiny_config(corpus_dir, tmp_path / "bad", f"init_from={tmp_path / 'nothing'}", *quiet))
