"""Melody conditioning: the chromagram bottleneck, the pipeline's chroma channels, and training with melodies."""

from __future__ import annotations

import pytest
import torch

from latentmusic import LatentMusicPipeline, UNet1DConditionModel
from latentmusic.melody import melody_chroma
from latentmusic.training.config import load_config
from latentmusic.training.diffusion import DiffusionTrainingConfig, train_diffusion

from .conftest import make_tiny_pipe

NOTES = [440.0, 523.25, 659.25, 392.0]  # A, C, E, G: pitch classes 9, 0, 4, 7


def tune(sample_rate: int = 8000, seconds_per_note: float = 0.5, notes=NOTES) -> torch.Tensor:
    t = torch.arange(int(sample_rate * seconds_per_note)) / sample_rate
    return torch.cat([0.3 * torch.sin(2 * torch.pi * f * t) for f in notes])


def test_chroma_keeps_the_tune_one_pitch_class_per_frame():
    chroma = melody_chroma(tune(16000), 16000, num_frames=8)
    assert chroma.shape == (12, 8)
    assert chroma.sum(0).eq(1).all()  # one-hot: the information bottleneck
    assert chroma.argmax(0).tolist() == [9, 9, 0, 0, 4, 4, 7, 7]
    # an octave lower: the same pitch classes
    lower = tune(16000, notes=[f / 2 for f in NOTES])
    assert melody_chroma(lower, 16000, 8).argmax(0).tolist() == [9, 9, 0, 0, 4, 4, 7, 7]


def test_silence_has_no_pitch_class():
    audio = torch.cat([tune(8000, notes=[440.0]), torch.zeros(4000)])
    chroma = melody_chroma(audio, 8000, num_frames=4)
    assert chroma[:, :2].sum() == 2 and chroma[:, 3].sum() == 0


@pytest.mark.parametrize("masking", [False, True], ids=["melody", "melody+masks"])
def test_pipeline_feeds_the_chroma_channels(masking):
    pipe = make_tiny_pipe(masking=masking, melody=True)
    assert pipe.trained_with_melody and pipe.trained_with_masks == masking
    seen = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0][:, -12:].clone()))
    generator = torch.Generator().manual_seed(0)
    try:
        with_tune = pipe(
            "a folk song",
            audio_length_in_s=2.0,
            num_inference_steps=2,
            generator=generator,
            melody=tune(16000),
            melody_sample_rate=16000,
            output_type="pt",
        ).audios
        chroma = seen[-1]
        without = pipe(
            "a folk song",
            audio_length_in_s=2.0,
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).audios
    finally:
        hook.remove()
    assert chroma.sum(1).eq(1).all() and chroma[0].argmax(0)[[0, -1]].tolist() == [9, 7]
    assert seen[-1].abs().sum() == 0  # no melody: zeros, as in training with melody dropout
    assert not torch.allclose(with_tune, without)


def test_a_melody_needs_a_model_trained_with_melodies():
    with pytest.raises(ValueError, match="not trained with melodies"):
        make_tiny_pipe()("a folk song", audio_length_in_s=1.0, num_inference_steps=2, melody=tune())
    with pytest.raises(ValueError, match="'melody_chroma' has 12 channels"):
        UNet1DConditionModel(in_channels=4, conditioning_inputs={"melody_chroma": 3})


@pytest.mark.slow
def test_the_recipe_trains_with_melodies_and_masks(corpus_dir, tmp_path):
    from latentmusic import AudioAutoencoder

    torch.manual_seed(0)
    vae = AudioAutoencoder(
        sample_rate=16000, strides=(4, 8), latent_channels=4, encoder_kwargs=dict(base_channels=8, max_channels=32)
    )
    vae.save_pretrained(tmp_path / "vae")
    config = load_config(
        DiffusionTrainingConfig,
        "recipes/configs/diffusion/tiny.yaml",
        [
            f"vae={tmp_path / 'vae'}",
            f"data.root={corpus_dir}",
            f"run.output_dir={tmp_path / 'run'}",
            "run.max_steps=10",
            "run.eval_every=10",
            "run.sample_every=0",
            "run.checkpoint_every=0",
            "run.report_to=none",
            "run.progress_bar=false",
            "melody.enabled=true",
            "masking.continuation=0.5",
        ],
    )
    pipe = LatentMusicPipeline.from_pretrained(train_diffusion(config))
    assert pipe.trained_with_melody and pipe.trained_with_masks
    assert (tmp_path / "run" / "latents-melody" / "latents.jsonl").is_file()
    pipe.set_progress_bar_config(disable=True)
    audio = pipe(
        "a folk song",
        audio_length_in_s=1.0,
        num_inference_steps=2,
        melody=tune(16000),
        melody_sample_rate=16000,
        output_type="pt",
    ).audios
    assert audio.shape == (1, 1, 16000) and torch.isfinite(audio).all()
