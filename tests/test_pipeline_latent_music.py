"""LatentMusicPipeline with tiny random components: every call argument does what its docstring says."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from latentmusic import LatentMusicPipeline
from latentmusic.pipelines.schedulers import SCHEDULERS, make_scheduler, scheduler_names
from latentmusic.training.objectives import make_training_scheduler

from .conftest import make_tiny_pipe

PROMPT = "a slow Bach chorale played by a string ensemble"
SECONDS = 0.5


def run(pipe, prompt=PROMPT, seed=0, **kwargs):
    kwargs.setdefault("audio_length_in_s", SECONDS)
    kwargs.setdefault("num_inference_steps", 3)
    return pipe(prompt, generator=torch.Generator().manual_seed(seed), **kwargs).audios


def test_output_is_audio_of_the_requested_length(tiny_pipe):
    audio = run(tiny_pipe)
    assert isinstance(audio, np.ndarray) and audio.dtype == np.float32
    assert audio.shape == (1, 1, int(SECONDS * tiny_pipe.sample_rate))
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0


@pytest.mark.parametrize("seconds", [0.1, 0.37, 0.8])
def test_any_length_is_honoured(tiny_pipe, seconds):
    assert run(tiny_pipe, audio_length_in_s=seconds).shape[-1] == round(seconds * tiny_pipe.sample_rate)


def test_output_types(tiny_pipe):
    as_np = run(tiny_pipe, output_type="np")
    as_pt = run(tiny_pipe, output_type="pt")
    latents = run(tiny_pipe, output_type="latent")
    assert isinstance(as_pt, torch.Tensor)
    np.testing.assert_array_equal(as_np, as_pt.numpy())
    assert latents.shape == (1, tiny_pipe.vae.config.latent_channels, tiny_pipe.latent_length(SECONDS))


def test_return_dict_false_gives_a_tuple(tiny_pipe):
    (audio,) = tiny_pipe(PROMPT, audio_length_in_s=SECONDS, num_inference_steps=2, return_dict=False)
    assert audio.shape[0] == 1


def test_batching_by_prompts_and_waveforms_per_prompt(tiny_pipe):
    audio = run(tiny_pipe, prompt=[PROMPT, "a fast fiddle tune on flute"], num_waveforms_per_prompt=3)
    assert audio.shape[0] == 6
    # variations of one prompt differ from each other
    assert not np.allclose(audio[0], audio[1])


def test_a_seed_reproduces_and_another_seed_differs(tiny_pipe):
    np.testing.assert_array_equal(run(tiny_pipe, seed=3), run(tiny_pipe, seed=3))
    assert not np.allclose(run(tiny_pipe, seed=3), run(tiny_pipe, seed=4))


def test_the_prompt_changes_the_output(tiny_pipe):
    assert not np.allclose(run(tiny_pipe, prompt="organ"), run(tiny_pipe, prompt="fast flute fiddle tune"))


def test_passed_latents_are_used_as_given(tiny_pipe):
    shape = (1, tiny_pipe.vae.config.latent_channels, tiny_pipe.latent_length(SECONDS))
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    original = tiny_pipe.scheduler
    tiny_pipe.scheduler = make_scheduler("ddim", original)  # deterministic: only the latents are random
    try:
        first = run(tiny_pipe, seed=0, latents=latents)
        second = run(tiny_pipe, seed=99, latents=latents)  # the generator no longer matters
        other = run(tiny_pipe, seed=0, latents=torch.randn(shape))
    finally:
        tiny_pipe.scheduler = original
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, other)


def test_guidance_scale_changes_the_output(tiny_pipe):
    assert not np.allclose(run(tiny_pipe, guidance_scale=1.0), run(tiny_pipe, guidance_scale=6.0))


def test_negative_prompt_changes_the_output(tiny_pipe):
    plain = run(tiny_pipe, guidance_scale=4.0)
    steered = run(tiny_pipe, guidance_scale=4.0, negative_prompt="organ")
    assert not np.allclose(plain, steered)


def test_prompt_embeds_reproduce_the_prompt(tiny_pipe):
    text = tiny_pipe.encode_prompt([PROMPT], torch.device("cpu"), do_classifier_free_guidance=False)
    from_text = run(tiny_pipe, guidance_scale=1.0)
    from_embeds = tiny_pipe(
        prompt_embeds=text.hidden_states,
        attention_mask=text.attention_mask,
        audio_length_in_s=SECONDS,
        num_inference_steps=3,
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(0),
    ).audios
    np.testing.assert_allclose(from_text, from_embeds, atol=1e-6)


def test_callback_sees_every_step_and_can_edit_latents(tiny_pipe):
    seen = []

    def zero_latents(pipe, step, timestep, kwargs):
        seen.append(step)
        return {"latents": torch.zeros_like(kwargs["latents"])}

    edited = run(tiny_pipe, num_inference_steps=4, callback_on_step_end=zero_latents)
    assert seen == [0, 1, 2, 3]
    zeros = torch.zeros(1, tiny_pipe.vae.config.latent_channels, tiny_pipe.latent_length(SECONDS))
    with torch.no_grad():
        expected = tiny_pipe.decode_latents(zeros, edited.shape[-1]).numpy()
    np.testing.assert_allclose(edited, expected, atol=1e-6)


def test_callback_can_stop_the_loop(tiny_pipe):
    steps = []

    def stop_after_two(pipe, step, timestep, kwargs):
        steps.append(step)
        if step == 1:
            pipe._interrupt = True
        return {}

    run(tiny_pipe, num_inference_steps=6, callback_on_step_end=stop_after_two)
    assert steps == [0, 1]


def test_save_and_load_give_identical_audio(tiny_pipe, tmp_path):
    before = run(tiny_pipe, seed=5)
    tiny_pipe.save_pretrained(tmp_path / "pipe")
    assert (tmp_path / "pipe" / "model_index.json").is_file()
    loaded = LatentMusicPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(before, run(loaded, seed=5))


def test_a_pipeline_saved_in_float16_loads_in_float32_unless_asked(tmp_path):

    make_tiny_pipe().save_pretrained(tmp_path / "full")
    make_tiny_pipe().to(torch.float16).save_pretrained(tmp_path / "half")
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert (tmp_path / "half" / weights).stat().st_size < 0.6 * (tmp_path / "full" / weights).stat().st_size
    loaded = LatentMusicPipeline.from_pretrained(tmp_path / "half")
    dtypes = {name: next(c.parameters()).dtype for name, c in loaded.components.items() if hasattr(c, "parameters")}
    assert dtypes == {"vae": torch.float32, "text_encoder": torch.float32, "unet": torch.float32}
    half = LatentMusicPipeline.from_pretrained(tmp_path / "half", torch_dtype=torch.float16)
    assert next(half.text_encoder.parameters()).dtype == next(half.unet.parameters()).dtype == torch.float16


def test_scheduler_swap_changes_sampling_not_the_interface(tiny_pipe):
    original = tiny_pipe.scheduler
    try:
        outputs = {}
        for name in ("ddim", "euler", "dpm++"):
            tiny_pipe.scheduler = make_scheduler(name, original)
            outputs[name] = run(tiny_pipe, seed=2, num_inference_steps=4)
    finally:
        tiny_pipe.scheduler = original
    assert len({a.shape for a in outputs.values()}) == 1
    assert not np.allclose(outputs["ddim"], outputs["euler"])
    assert not np.allclose(outputs["ddim"], outputs["dpm++"])


def test_a_flow_matching_model_samples_along_its_velocity_field():
    """With the flow objective the pipeline runs `flow-euler` (and refuses noise schedulers); fed the exact velocity
    of the straight path to a target latent, `noise - target`, its sampler lands on that target from any noise."""
    pipe = LatentMusicPipeline(**{**make_tiny_pipe().components, "scheduler": make_training_scheduler("flow")})
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler("flow-euler", pipe.scheduler)
    with pytest.raises(ValueError, match="does not fit this flow-matching model"):
        make_scheduler("dpm++", pipe.scheduler)
    frames = -(-int(SECONDS * pipe.sample_rate) // pipe.vae.hop_length)
    target = torch.randn(1, 4, frames, generator=torch.Generator().manual_seed(5))
    predict = pipe.unet.forward

    def exact_velocity(sample, timestep, *args, **kwargs):
        output = predict(sample, timestep, *args, **kwargs)  # runs the real network: shapes and conditioning
        sigma = torch.as_tensor(timestep, dtype=sample.dtype) / pipe.scheduler.config.num_train_timesteps
        output.sample = (sample - target) / sigma  # x_t = target + sigma (noise - target)
        return output

    pipe.unet.forward = exact_velocity
    for seed in (0, 1):
        latents = run(pipe, seed=seed, num_inference_steps=6, output_type="latent")
        torch.testing.assert_close(latents, target, atol=1e-4, rtol=1e-4)
    # Heun's second-order steps and ping-pong's predict-the-clean-latents-then-re-noise steps land there too
    base = pipe.scheduler
    for name in ("flow-heun", "flow-pingpong"):
        pipe.scheduler = make_scheduler(name, base)
        latents = run(pipe, seed=2, num_inference_steps=4, output_type="latent")
        torch.testing.assert_close(latents, target, atol=1e-4, rtol=1e-4, msg=name)
    pipe.scheduler = base
    pipe.unet.forward = predict
    audio = run(pipe, seed=3, num_inference_steps=4)
    assert np.isfinite(audio).all()
    np.testing.assert_array_equal(audio, run(pipe, seed=3, num_inference_steps=4))


def test_flow_scheduler_is_refused_for_a_v_prediction_model(tiny_pipe):
    with pytest.raises(ValueError, match="does not fit this noise/v-prediction model"):
        make_scheduler("flow-euler", tiny_pipe.scheduler)
    with pytest.raises(ValueError, match="unknown scheduler 'fast'"):
        make_scheduler("fast", tiny_pipe.scheduler)
    assert set(scheduler_names(False)) | set(scheduler_names(True)) == set(SCHEDULERS)


def test_long_text_is_truncated_with_a_warning(tiny_pipe, caplog):
    long_prompt = " ".join(["chorale"] * 200)
    with caplog.at_level(logging.WARNING):
        run(tiny_pipe, prompt=long_prompt)
    assert "truncated to 16 tokens" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": []}, "empty list"),
        ({"prompt": "   "}, "is empty"),
        ({"audio_length_in_s": -1.0}, r"audio_length_in_s must be in \(0, 3600\]"),
        ({"audio_length_in_s": 1e4}, r"audio_length_in_s must be in \(0, 3600\]"),
        ({"guidance_scale": 0.5, "negative_prompt": "noise"}, "guidance_scale > 1"),
        ({"num_inference_steps": 0}, "positive integer"),
        ({"output_type": "wav"}, "output_type must be one of"),
        ({"callback_on_step_end_tensor_inputs": ["noise_pred"]}, "not available"),
        ({"negative_prompt": ["a", "b"]}, "negative_prompt` has 2 entries"),
    ],
)
def test_bad_input_is_answered_clearly(tiny_pipe, kwargs, message):
    kwargs = {"prompt": PROMPT, "audio_length_in_s": SECONDS, "num_inference_steps": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        tiny_pipe(**kwargs)


def test_mismatched_prompt_embeds_are_rejected(tiny_pipe):
    width = tiny_pipe.unet.config.cross_attention_dim
    with pytest.raises(ValueError, match="hidden size"):
        tiny_pipe(prompt_embeds=torch.randn(1, 5, width + 1), audio_length_in_s=SECONDS, num_inference_steps=2)
    with pytest.raises(ValueError, match="same shape"):
        tiny_pipe(
            prompt_embeds=torch.randn(1, 5, width),
            negative_prompt_embeds=torch.randn(2, 5, width),
            audio_length_in_s=SECONDS,
            num_inference_steps=2,
        )
    with pytest.raises(ValueError, match="exactly one of"):
        tiny_pipe(PROMPT, prompt_embeds=torch.randn(1, 5, width), audio_length_in_s=SECONDS)
    with pytest.raises(ValueError, match="`latents` have shape"):
        tiny_pipe(PROMPT, latents=torch.randn(1, 1, 3), audio_length_in_s=SECONDS, num_inference_steps=2)


def test_chunked_vae_decoding_matches(tiny_pipe):
    whole = run(tiny_pipe, audio_length_in_s=0.8, seed=4)
    tiny_pipe.vae.enable_chunking(chunk_size=16, context=12)
    try:
        chunked = run(tiny_pipe, audio_length_in_s=0.8, seed=4)
    finally:
        tiny_pipe.vae.disable_chunking()
    np.testing.assert_allclose(whole, chunked, atol=1e-5)
