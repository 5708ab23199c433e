"""Beat-grid conditioning: the phase it encodes, a U-Net widened for it that starts as it was, the pipeline's
`bpm=`, and the recipe training it from a pipeline without one."""

from __future__ import annotations

import math

import pytest
import torch

from latentmusic import LatentMusicPipeline
from latentmusic.models import UNet1DConditionModel
from latentmusic.models.conditioning import BEAT_GRID, beat_grid, conditioning_inputs
from latentmusic.training.config import load_config
from latentmusic.training.diffusion import DiffusionTrainingConfig, add_conditioning_inputs, train_diffusion

from .conftest import make_tiny_pipe, perturb_


def test_the_grid_is_at_phase_zero_on_every_beat():
    grid = beat_grid(120.0, num_frames=11, latent_rate=10.0)  # a beat every 0.5 s = 5 frames
    assert grid.shape == (1, 2, 11)
    for frame in (0, 5, 10):
        assert grid[0, :, frame].tolist() == pytest.approx([1.0, 0.0], abs=1e-6)
    phase = torch.atan2(grid[0, 1], grid[0, 0]) % (2 * math.pi)
    assert phase[1].item() == pytest.approx(2 * math.pi / 5, abs=1e-5)
    # a crop starting half a beat into the piece starts half-way round; one tempo per example
    shifted = beat_grid(torch.tensor([120.0, 60.0]), 4, 10.0, start_seconds=torch.tensor([0.25, 0.0]))
    assert shifted[0, :, 0].tolist() == pytest.approx([-1.0, 0.0], abs=1e-6)
    assert shifted[1, :, 0].tolist() == pytest.approx([1.0, 0.0], abs=1e-6)
    for bad in (0.0, -60.0, float("nan")):
        with pytest.raises(ValueError, match="positive, finite tempos"):
            beat_grid(bad, 4, 10.0)


def test_a_widened_unet_computes_what_it_did_whatever_the_new_channels_hold():
    inputs = conditioning_inputs(4, masking=True)
    unet = perturb_(UNet1DConditionModel(in_channels=4, block_out_channels=(8, 16), attention_levels=(False, True),
                                         attention_head_dim=8, cross_attention_dim=16, norm_num_groups=4,
                                         conditioning_inputs=inputs)).eval()  # fmt: skip
    wider = add_conditioning_inputs(unet, conditioning_inputs(4, masking=True, beat=True)).eval()
    assert list(wider.config.conditioning_inputs) == ["mask", "known_latents", BEAT_GRID]
    sample = torch.randn(2, 4 + 5, 32, generator=torch.Generator().manual_seed(0))
    grid = torch.randn(2, 2, 32)
    text = torch.randn(2, 3, 16)
    with torch.no_grad():
        before = unet(sample, torch.tensor([10, 500]), encoder_hidden_states=text).sample
        after = wider(torch.cat([sample, grid], 1), torch.tensor([10, 500]), encoder_hidden_states=text).sample
    torch.testing.assert_close(after, before)
    with pytest.raises(ValueError, match="not the first of"):
        add_conditioning_inputs(unet, conditioning_inputs(4, beat=True))


def test_bpm_places_the_beats_and_is_checked():
    pipe = make_tiny_pipe(masking=True, beat=True)
    assert pipe.trained_with_beat_grid

    def call(bpm, prompts=("a folk song",), seconds=2.0):
        generators = [torch.Generator().manual_seed(i) for i in range(len(prompts))]  # prompt i: seed i
        return pipe(list(prompts), audio_length_in_s=seconds, num_inference_steps=2, bpm=bpm, output_type="pt",
                    generator=generators).audios  # fmt: skip

    fast, again, slow = call(120.0), call(120.0), call(75.0)
    torch.testing.assert_close(fast, again)  # a seed reproduces
    assert not torch.allclose(fast, slow)
    assert not torch.allclose(fast, call(None))  # no grid: zeros, as in training with beat dropout
    both = call([120.0, 75.0], prompts=("a folk song", "a folk song"))
    torch.testing.assert_close(both[0], fast[0], atol=1e-4, rtol=1e-4)  # one tempo per prompt
    assert not torch.allclose(both[1], call(120.0, prompts=("a folk song", "a folk song"))[1])
    long = call(120.0, seconds=5.0)  # long-form: every window gets its part of one continuous grid
    assert long.shape[-1] == 5 * pipe.sample_rate
    with pytest.raises(ValueError, match="2 tempos in bpm for 1 prompts"):
        call([120.0, 90.0])
    with pytest.raises(ValueError, match="bpm"):
        call(-10.0)
    with pytest.raises(ValueError, match="not trained with beat grids.*beat.enabled=true"):
        make_tiny_pipe()("a folk song", audio_length_in_s=1.0, num_inference_steps=2, bpm=120.0)


@pytest.mark.slow
def test_the_recipe_adds_a_beat_grid_to_a_pipeline_and_learns_to_use_it(corpus_dir, tmp_path):
    """From a pipeline trained without one, `beat.enabled=true` widens the U-Net's input with zero weights (with a
    zero learning rate it ships the same U-Net plus those zeros); trained, the grid's weights leave zero."""
    from latentmusic import AudioAutoencoder

    torch.manual_seed(0)
    waveform = dict(base_channels=8, max_channels=32)
    vae = AudioAutoencoder(sample_rate=16000, strides=(4, 8), latent_channels=4, encoder_kwargs=waveform)
    vae.save_pretrained(tmp_path / "vae")
    common = [f"vae={tmp_path / 'vae'}", f"data.root={corpus_dir}", f"data.latent_cache={tmp_path / 'latents'}",
              "run.eval_every=1000", "run.sample_every=0", "run.checkpoint_every=0", "run.report_to=none",
              "run.progress_bar=false", "masking.continuation=0.3"]  # fmt: skip
    tiny = "recipes/configs/diffusion/tiny.yaml"

    def train(name, *extra):
        config = load_config(DiffusionTrainingConfig, tiny, [*common, f"run.output_dir={tmp_path / name}", *extra])
        return LatentMusicPipeline.from_pretrained(train_diffusion(config))

    plain = train("plain", "run.max_steps=2")
    assert not plain.trained_with_beat_grid
    start = f"init_from={tmp_path / 'plain' / 'pipeline'}"
    frozen = train("frozen", start, "beat.enabled=true", "optim.lr=0", "run.max_steps=2")
    assert frozen.trained_with_beat_grid
    old, new = plain.unet.conv_in.weight, frozen.unet.conv_in.weight
    assert torch.equal(new[:, : old.shape[1]], old) and new[:, old.shape[1] :].abs().sum() == 0
    trained = train("trained", start, "beat.enabled=true", "beat.dropout=0", "run.max_steps=6")
    assert trained.unet.conv_in.weight[:, old.shape[1] :].abs().sum() > 0
    # fine-tuned without beat.enabled (data without tempos): the grid input stays, left empty
    again = train("again", f"init_from={tmp_path / 'trained' / 'pipeline'}", "run.max_steps=2")
    assert again.trained_with_beat_grid
    trained.set_progress_bar_config(disable=True)
    audio = trained("a folk song", audio_length_in_s=1.0, num_inference_steps=2, bpm=100.0, output_type="pt").audios
    assert torch.isfinite(audio).all()
