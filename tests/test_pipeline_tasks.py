"""Continuation, inpainting, audio-to-audio, long-form and story mode: lengths, what is preserved, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from .conftest import make_tiny_pipe

PROMPT = "a fast fiddle tune on flute at 132 BPM"
STEPS = 3
MARGIN = 512  # samples near a kept/generated boundary, where the decoder mixes both sides


@pytest.fixture(scope="module")
def pipe():
    return make_tiny_pipe()


@pytest.fixture(scope="module")
def masked_pipe():
    """A U-Net with JEN-1's extra input channels (mask + masked latents), as `masking` training builds it."""
    return make_tiny_pipe(masking=True)


def music(seconds: float, sample_rate: int = 8000, seed: int = 0) -> torch.Tensor:
    """A few decaying notes: audio with structure for the autoencoder to reconstruct."""
    t = torch.arange(round(seconds * sample_rate)) / sample_rate
    generator = torch.Generator().manual_seed(seed)
    freqs = 220 * 2 ** (torch.randint(0, 12, (8,), generator=generator) / 12)
    note = (t * 4).long().clamp(max=7)
    return (0.3 * torch.sin(2 * torch.pi * freqs[note] * t) * torch.exp(-3 * (t % 0.25)))[None]


def generate(pipe, seed=0, **kwargs):
    kwargs = {"prompt": PROMPT, "num_inference_steps": STEPS, "output_type": "pt", **kwargs}
    if "audio" in kwargs:
        kwargs.setdefault("audio_sample_rate", 8000)  # the tiny pipeline's rate, which `music` renders at
    return pipe(generator=torch.Generator().manual_seed(seed), **kwargs).audios


def reconstruction(pipe, audio: torch.Tensor, seconds: float) -> torch.Tensor:
    """The autoencoder's reconstruction of `audio` zero-padded to `seconds`: what kept regions should equal."""
    samples = round(seconds * pipe.sample_rate)
    frames = pipe.latent_length(seconds)
    return pipe.decode_latents(pipe.encode_audio(audio[None], frames), samples)[0]


@pytest.mark.parametrize("which", ["pipe", "masked_pipe"])
def test_continuation_starts_with_the_prefix(which, request):
    pipe = request.getfixturevalue(which)
    prefix = music(0.6)
    out = generate(pipe, audio=prefix, audio_length_in_s=1.5)[0]
    assert out.shape == (1, 12000) and torch.isfinite(out).all()
    kept = 0.6 * 8000 // 32 * 32  # whole latent frames inside the prefix
    reference = reconstruction(pipe, prefix, 1.5)
    torch.testing.assert_close(out[:, : int(kept) - MARGIN], reference[:, : int(kept) - MARGIN], atol=1e-4, rtol=0)
    assert (out[:, 6000:] - reference[:, 6000:]).abs().mean() > 1e-3  # the rest is generated, not the padding


@pytest.mark.parametrize("which", ["pipe", "masked_pipe"])
def test_inpainting_keeps_everything_outside_the_mask(which, request):
    pipe = request.getfixturevalue(which)
    audio = music(1.5)
    out = generate(pipe, audio=audio, mask=[(0.5, 1.0)])[0]
    assert out.shape == audio.shape
    reference = reconstruction(pipe, audio, 1.5)
    for low, high in ((0, 4000 - MARGIN), (8000 + MARGIN, 12000)):
        torch.testing.assert_close(out[:, low:high], reference[:, low:high], atol=1e-4, rtol=0)
    assert (out[:, 4500:7500] - reference[:, 4500:7500]).abs().mean() > 1e-3


def test_a_masked_model_over_11_channel_latents_continues_with_a_melody():
    """11 latent channels + 1 mask = 12 = the melody's width: the named inputs tell them apart, widths could not."""
    pipe = make_tiny_pipe(masking=True, melody=True, latent_channels=11)
    assert pipe.conditioning_inputs == {"mask": 1, "known_latents": 11, "melody_chroma": 12}
    seen = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    prefix = music(0.6)
    try:
        out = generate(pipe, audio=prefix, audio_length_in_s=1.5, melody=music(1.0), melody_sample_rate=8000)[0]
    finally:
        hook.remove()
    kept = int(0.6 * 8000 // 32 * 32)
    reference = reconstruction(pipe, prefix, 1.5)
    torch.testing.assert_close(out[:, : kept - MARGIN], reference[:, : kept - MARGIN], atol=1e-4, rtol=0)
    model_input = seen[-1]
    assert model_input.shape[1] == 11 + 1 + 11 + 12
    mask = model_input[:, 11]
    assert mask[:, : kept // 32].eq(1).all() and mask[:, kept // 32 + 1 :].eq(0).all()
    assert model_input[:, -12:].sum(1).eq(1).all()  # one pitch class per frame


def test_a_sample_mask_equals_the_same_ranges_in_seconds(pipe):
    audio = music(1.5)
    sample_mask = np.zeros(12000, dtype=bool)
    sample_mask[4000:8000] = True
    torch.testing.assert_close(
        generate(pipe, audio=audio, mask=sample_mask), generate(pipe, audio=audio, mask=(0.5, 1.0))
    )


def test_masked_unet_sees_the_mask_and_the_known_latents(masked_pipe):
    seen = []
    hook = masked_pipe.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        generate(masked_pipe, audio=music(0.64), audio_length_in_s=1.28, guidance_scale=1.0)
    finally:
        hook.remove()
    mask = seen[0][:, 4]
    assert mask[:, :160].eq(1).all() and mask[:, 160:].eq(0).all()  # 0.64 s = 160 frames of 32 samples
    assert seen[0][:, 5:, :160].abs().sum() > 0 and seen[0][:, 5:, 160:].abs().sum() == 0


def test_a_reloaded_masked_pipeline_continues_as_the_saved_one(masked_pipe, tmp_path):
    """diffusers writes config keys sorted, so `conditioning_inputs` come back as {known_latents, mask}: the
    channels must still be concatenated in the order the U-Net was trained with (mask first), or a reloaded
    pipeline continues and inpaints from shuffled inputs."""
    masked_pipe.save_pretrained(tmp_path)
    reloaded = type(masked_pipe).from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert list(reloaded.unet.config.conditioning_inputs) == ["known_latents", "mask"]  # as stored
    assert list(reloaded.conditioning_inputs) == ["mask", "known_latents"]  # as concatenated
    kwargs = dict(audio=music(0.64), audio_length_in_s=1.28)
    torch.testing.assert_close(generate(reloaded, **kwargs), generate(masked_pipe, **kwargs))


def test_strength_zero_returns_the_reconstruction_and_one_ignores_the_input(pipe):
    audio = music(1.5)
    torch.testing.assert_close(generate(pipe, audio=audio, strength=0.0)[0], reconstruction(pipe, audio, 1.5))
    text_to_music = generate(pipe, audio_length_in_s=1.5)
    torch.testing.assert_close(generate(pipe, audio=audio, strength=1.0), text_to_music)
    middle = generate(pipe, audio=audio, strength=0.5, num_inference_steps=10)
    assert not torch.allclose(middle, text_to_music) and not torch.allclose(
        middle[0], reconstruction(pipe, audio, 1.5)
    )


def test_audio_at_another_sample_rate_is_resampled(pipe):
    prefix = music(0.6, sample_rate=16000)
    out = generate(pipe, audio=prefix, audio_sample_rate=16000, audio_length_in_s=1.5)
    assert out.shape == (1, 1, 12000)
    resampled = generate(pipe, audio=music(0.6, sample_rate=8000), audio_length_in_s=1.5)
    assert (out - resampled)[..., :4000].abs().max() < 0.05  # the same notes, resampled


def test_long_form_goes_window_by_window(pipe):
    steps = []
    out = generate(pipe, audio_length_in_s=5.0, callback_on_step_end=lambda p, i, t, kw: steps.append(i) or {})
    assert out.shape == (1, 1, 40000) and torch.isfinite(out).all()
    # 2 s windows (500 frames) overlapping by a quarter: 500 + 375 + 375 frames = 5 s
    assert steps == list(range(3 * STEPS))
    assert out[..., 36000:].abs().mean() > 0  # the last window was generated too


def test_story_mode_follows_its_segments(pipe):
    story = [(PROMPT, 0.7), ("a slow Bach chorale played by a string ensemble", 0.8)]
    out = generate(pipe, prompt=None, story=story)
    assert out.shape == (1, 1, 12000)
    other = generate(pipe, prompt=None, story=[story[0], ("an Irish tune on church organ, G minor", 0.8)])
    # the first section does not depend on the second prompt (up to the crossfade and the decoder's reach) ...
    torch.testing.assert_close(out[..., :3000], other[..., :3000])
    # ... and the second follows it
    assert (out[..., 6000:] - other[..., 6000:]).abs().mean() > 1e-3
    long = generate(pipe, prompt=None, story=["a:2.5", "b:1.5"])
    assert long.shape == (1, 1, 32000)


def test_num_waveforms_per_prompt_with_a_prefix(pipe):
    out = generate(pipe, audio=music(0.6), audio_length_in_s=1.0, num_waveforms_per_prompt=2)
    assert out.shape == (2, 1, 8000)
    assert not torch.allclose(out[0, :, 6000:], out[1, :, 6000:])  # different continuations
    torch.testing.assert_close(out[0, :, :3000], out[1, :, :3000])  # of the same prefix


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"audio": music(1.5), "mask": [(1.0, 2.0)]}, "not inside the 1.50 s audio"),
        ({"audio": music(1.5), "mask": [(1.0, 0.5)]}, "start < end"),
        ({"audio": music(1.5), "mask": np.zeros(10)}, "one value per audio sample"),
        ({"audio": music(1.5), "audio_length_in_s": 1.0}, "must be shorter than audio_length_in_s"),
        ({"audio": music(1.5)}, "continuation: pass audio_length_in_s"),
        ({"audio": music(1.5), "strength": 1.5}, r"strength must be in \[0, 1\]"),
        ({"audio": music(1.5), "strength": -0.1}, r"strength must be in \[0, 1\]"),
        ({"strength": 0.5}, "pass it as `audio=`"),
        ({"mask": [(0.0, 1.0)]}, "pass it as `audio=`"),
        ({"prompt": None, "story": []}, "story is empty"),
        ({"story": [("a", 1.0)]}, "either `story` segments or `prompt`"),
        ({"prompt": None, "story": [("a", 0.0)]}, "positive, finite number of seconds"),
        ({"prompt": None, "story": ["no seconds"]}, "is not 'prompt:seconds'"),
        ({"audio": music(3.0), "mask": [(0.0, 1.0)]}, "work within one window"),
        ({"audio": torch.full((1, 800), float("nan")), "audio_length_in_s": 1.0}, "NaN"),
        ({"audio": music(0.001), "audio_length_in_s": 1.0}, "shorter than one latent frame"),
    ],
)
def test_bad_task_input_is_answered_clearly(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(pipe, **kwargs)
