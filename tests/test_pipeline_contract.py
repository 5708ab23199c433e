"""The diffusers pipeline contract, written once and run for both pipelines (as diffusers' PipelineTesterMixin).

Saving and loading (by class and by `DiffusionPipeline`), dtype moves, callbacks, generators, batch shapes, every
scheduler, every bad input (refused before any model work), and an oracle of classifier-free guidance.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, EDMDPMSolverMultistepScheduler, EDMEulerScheduler

import latentmusic.models.token_lm as token_lm_module
from latentmusic import LatentMusicPipeline, TokenMusicPipeline
from latentmusic.checkpoints import SHIPPED, shipped_path
from latentmusic.pipelines.checks import check_device_dtype
from latentmusic.pipelines.schedulers import SCHEDULERS, make_scheduler, scheduler_names
from latentmusic.training.objectives import make_training_scheduler

from .conftest import make_tiny_pipe
from .test_pipeline_token_music import make_tiny_token_pipe

PROMPT = "a slow Bach chorale played by a string ensemble"


@dataclass
class Contract:
    """How to build and call one pipeline quickly, and what differs between the two."""

    name: str
    make: Callable[[], DiffusionPipeline]
    call: dict[str, Any]
    step_tensor: str  # the tensor callbacks can edit
    denoiser: str  # the component that does the model work
    audio_encoder: str


CONTRACTS = {
    "diffusion": Contract(
        "diffusion",
        make_tiny_pipe,
        {"audio_length_in_s": 0.25, "num_inference_steps": 3},
        "latents",
        "unet",
        "vae",
    ),
    "token": Contract("token", make_tiny_token_pipe, {"audio_length_in_s": 0.03}, "sequence", "lm", "codec"),
}


@pytest.fixture(scope="module", params=list(CONTRACTS))
def contract(request) -> Contract:
    return CONTRACTS[request.param]


@pytest.fixture(scope="module")
def pipe(contract):
    return contract.make()


def run(pipe, contract, seed=0, **kwargs):
    kwargs = {"prompt": PROMPT, **contract.call, **kwargs}
    if seed is not None:
        kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
    return pipe(**kwargs).audios


def samples(pipe, contract) -> int:
    return round(contract.call["audio_length_in_s"] * pipe.sample_rate)


# -- loading and saving -------------------------------------------------------------------------------------------


def test_save_then_load_by_class_and_by_diffusion_pipeline_gives_identical_audio(pipe, contract, tmp_path):
    before = run(pipe, contract, seed=5)
    pipe.save_pretrained(tmp_path)
    for loaded in (type(pipe).from_pretrained(tmp_path), DiffusionPipeline.from_pretrained(tmp_path)):
        assert type(loaded) is type(pipe)
        loaded.set_progress_bar_config(disable=True)
        np.testing.assert_array_equal(before, run(loaded, contract, seed=5))


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_shipped_checkpoint_loads_through_diffusion_pipeline_in_float32(name):
    by_class = {"latentmusic/demo": LatentMusicPipeline, "latentmusic/demo-token-lm": TokenMusicPipeline}[name]
    for loaded in (DiffusionPipeline.from_pretrained(shipped_path(name)), by_class.from_pretrained(name)):
        assert type(loaded) is by_class
        dtypes = {c.dtype for c in loaded.components.values() if isinstance(c, torch.nn.Module)}
        assert dtypes == {torch.float32}  # stored in float16, loaded as diffusers loads its own models


def test_a_folder_that_cannot_hold_the_pipeline_is_refused_naming_the_fix(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    other = TokenMusicPipeline if isinstance(pipe, LatentMusicPipeline) else LatentMusicPipeline
    with pytest.raises(ValueError, match=rf"holds a {type(pipe).__name__} .* not a {other.__name__}"):
        other.from_pretrained(tmp_path / "pipe")
    with pytest.raises(FileNotFoundError, match="has no model_index.json"):
        type(pipe).from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no pipeline folder at"):
        type(pipe).from_pretrained(tmp_path / "nowhere")
    component = "unet" if isinstance(pipe, LatentMusicPipeline) else "lm"
    shutil.rmtree(tmp_path / "pipe" / component)
    with pytest.raises(FileNotFoundError, match=rf"names the component '{component}' .* is missing"):
        type(pipe).from_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["_class_name"] == type(pipe).__name__


# -- dtypes -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_on_cpu(contract, dtype):
    pipe = contract.make().to(dtype)
    assert {c.dtype for c in pipe.components.values() if isinstance(c, torch.nn.Module)} == {dtype}
    audio = run(pipe, contract)
    assert audio.dtype == np.float32 and audio.shape == (1, 1, samples(pipe, contract))
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0


# -- batch shapes, outputs, generators ----------------------------------------------------------------------------


def test_batch_shapes_and_output_types(pipe, contract):
    audio = run(pipe, contract, prompt=[PROMPT, "a fast fiddle tune on flute"], num_waveforms_per_prompt=2)
    assert audio.shape == (4, 1, samples(pipe, contract))
    assert not np.allclose(audio[0], audio[1])  # variations of one prompt differ
    as_pt = run(pipe, contract, output_type="pt")
    np.testing.assert_array_equal(as_pt.numpy(), run(pipe, contract, output_type="np"))
    (as_tuple,) = pipe(PROMPT, generator=torch.Generator().manual_seed(0), return_dict=False, **contract.call)
    np.testing.assert_array_equal(as_tuple, run(pipe, contract))
    latent = run(pipe, contract, output_type="latent", prompt=[PROMPT] * 3)
    assert latent.shape[0] == 3 and latent.ndim == 3


def test_one_generator_per_waveform_reproduces_each_waveform_alone(pipe, contract):
    together = run(pipe, contract, seed=None, num_waveforms_per_prompt=2, generator=[
        torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)])  # fmt: skip
    first = run(pipe, contract, seed=1)
    second = run(pipe, contract, seed=2)
    np.testing.assert_allclose(together[0], first[0], atol=1e-5)
    np.testing.assert_allclose(together[1], second[0], atol=1e-5)
    np.testing.assert_array_equal(run(pipe, contract, seed=3), run(pipe, contract, seed=3))
    assert not np.allclose(first, second)


# -- callbacks ----------------------------------------------------------------------------------------------------


def test_the_callback_sees_every_step_and_only_the_tensors_asked_for(pipe, contract):
    seen = []

    def record(p, step, timestep, kwargs):
        seen.append((step, sorted(kwargs)))
        return {}

    run(pipe, contract, callback_on_step_end=record, callback_on_step_end_tensor_inputs=[contract.step_tensor])
    assert [step for step, _ in seen] == list(range(pipe.num_timesteps))
    assert all(keys == [contract.step_tensor] for _, keys in seen)


def test_the_callback_can_interrupt(pipe, contract):
    steps = []

    def stop_at_one(p, step, timestep, kwargs):
        steps.append(step)
        p._interrupt = step == 1
        return {}

    run(pipe, contract, callback_on_step_end=stop_at_one)
    assert steps == [0, 1]


# -- classifier-free guidance oracle ------------------------------------------------------------------------------


def test_classifier_free_guidance_is_uncond_plus_scale_times_the_difference(pipe, contract, monkeypatch):
    """What the sampler receives equals `u + g (c - u)` with `u` and `c` computed separately from the negative and
    the positive prompt: a wrong sign, swapped halves or a missing branch all fail this."""
    scale = 3.5
    cond = pipe.encode_prompt([PROMPT], torch.device("cpu"), do_classifier_free_guidance=False)
    uncond = pipe.encode_prompt(["noisy organ"], torch.device("cpu"), do_classifier_free_guidance=False)
    checked = []
    if contract.name == "diffusion":
        step = pipe.scheduler.step

        def checking_step(model_output, t, sample, **kwargs):
            seconds = torch.full((1,), contract.call["audio_length_in_s"])
            zeros = torch.zeros(1)

            def predict(text):
                args = dict(encoder_attention_mask=text.attention_mask, seconds_start=zeros, seconds_total=seconds)
                return pipe.unet(sample, t, encoder_hidden_states=text.hidden_states, **args).sample

            u, c = predict(uncond), predict(cond)
            torch.testing.assert_close(model_output, u + scale * (c - u), atol=1e-5, rtol=1e-4)
            assert not torch.allclose(c, u, atol=1e-3)  # the branches differ, so the check has teeth
            checked.append(t)
            return step(model_output, t, sample, **kwargs)

        monkeypatch.setattr(pipe.scheduler, "step", checking_step)
    else:
        sample = token_lm_module.sample_tokens
        inputs = []
        forward = pipe.lm.forward

        def recording_forward(tokens, *args, **kwargs):
            inputs.append(tokens[: len(tokens) // 2])
            return forward(tokens, *args, **kwargs)

        def checking_sample(logits, *args, **kwargs):
            tokens = inputs[-1]

            def predict(text):
                return pipe.lm(tokens, text.hidden_states, text.attention_mask).logits[:, :, -1].float()

            u, c = predict(uncond), predict(cond)
            torch.testing.assert_close(logits, u + scale * (c - u), atol=1e-4, rtol=1e-4)
            assert not torch.allclose(c, u, atol=1e-3)
            checked.append(len(checked))
            return sample(logits, *args, **kwargs)

        monkeypatch.setattr(pipe.lm, "forward", recording_forward)
        monkeypatch.setattr(token_lm_module, "sample_tokens", checking_sample)
        monkeypatch.setitem(contract.call, "use_cache", False)  # every step sees the whole sequence
    with torch.no_grad():
        run(pipe, contract, guidance_scale=scale, negative_prompt="noisy organ")
    assert len(checked) == pipe.num_timesteps > 0


# -- schedulers (diffusion) ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", scheduler_names(flow=False))
def test_every_fitting_scheduler_runs_and_reproduces(name):
    pipe = CONTRACTS["diffusion"].make()
    pipe.scheduler = make_scheduler(name, pipe.scheduler)
    audio = run(pipe, CONTRACTS["diffusion"], seed=1)
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    np.testing.assert_array_equal(audio, run(pipe, CONTRACTS["diffusion"], seed=1))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda old: DDIMScheduler.from_config(make_training_scheduler("flow").config),
         "predicts epsilon, but this model was trained for ddpm v_prediction"),
        (lambda old: SCHEDULERS["flow-euler"][0].from_config(old.config), "belongs to the flow family, but"),
        (lambda old: EDMEulerScheduler.from_config(old.config), "EDMEulerScheduler belongs to the edm family"),
        (lambda old: EDMDPMSolverMultistepScheduler.from_config(old.config), "belongs to the edm family"),
        (lambda old: DDIMScheduler(), "DDIMScheduler predicts epsilon, but this model was trained for ddpm v_pred"),
    ],
)  # fmt: skip
def test_a_scheduler_that_does_not_fit_the_model_is_refused(make, message, no_model_work):
    pipe = no_model_work(CONTRACTS["diffusion"].make())
    pipe.scheduler = make(pipe.scheduler)
    with pytest.raises(ValueError, match=message) as error:
        run(pipe, CONTRACTS["diffusion"])
    assert "X.from_config(pipe.scheduler.config)" in str(error.value) and "dpm++" in str(error.value)


def test_a_flow_model_refuses_noise_schedulers_built_from_its_config(no_model_work):
    base = CONTRACTS["diffusion"].make()
    pipe = no_model_work(LatentMusicPipeline(**{**base.components, "scheduler": make_training_scheduler("flow")}))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(
        ValueError, match="DDIMScheduler belongs to the ddpm family, but this model was trained for flow"
    ):
        run(pipe, CONTRACTS["diffusion"])


# -- bad input, refused before any model work ---------------------------------------------------------------------


@pytest.fixture
def no_model_work(monkeypatch):
    """Make every model raise when run: a check that comes after model work fails the test."""

    def wrap(pipe):
        for name, component in pipe.components.items():
            if isinstance(component, torch.nn.Module):
                message = f"{name} ran before the arguments were checked"
                monkeypatch.setattr(component, "forward", _raiser(message))
                for method in ("encode", "decode", "encode_codes", "decode_codes", "generate"):
                    if hasattr(component, method):
                        monkeypatch.setattr(component, method, _raiser(message))
        return pipe

    return wrap


def _raiser(message):
    def raise_(*args, **kwargs):
        raise AssertionError(message)

    return raise_


NAN_AUDIO = torch.full((1, 800), float("nan"))
STEREO_SOUNDFILE_LAYOUT = np.zeros((2000, 2), dtype=np.float32)  # what soundfile.read returns
GOOD_AUDIO = 0.1 * torch.randn(1, 2000, generator=torch.Generator().manual_seed(0))
WIDTH = 16  # the tiny text encoder's width

BAD_INPUTS = [
    ({"guidance_scale": float("nan")}, ValueError, "guidance_scale must be a finite number"),
    ({"guidance_scale": float("inf")}, ValueError, "guidance_scale must be a finite number"),
    ({"guidance_scale": -1.0}, ValueError, r"guidance_scale must be in \[0, inf\]"),
    ({"guidance_scale": "4"}, TypeError, "guidance_scale must be a number"),
    ({"guidance_scale": 1.0, "negative_prompt": "noise"}, ValueError, "guidance_scale > 1"),
    ({"audio_length_in_s": float("nan")}, ValueError, "audio_length_in_s must be a finite number"),
    ({"audio_length_in_s": 0}, ValueError, r"audio_length_in_s must be in \(0, 3600\]"),
    ({"audio_length_in_s": "10"}, TypeError, "audio_length_in_s must be a number"),
    ({"audio_length_in_s": 7200.0}, ValueError, r"audio_length_in_s must be in \(0, 3600\]"),
    ({"num_waveforms_per_prompt": 0}, ValueError, "num_waveforms_per_prompt must be a positive integer"),
    ({"num_waveforms_per_prompt": 2.0}, ValueError, "num_waveforms_per_prompt must be a positive integer"),
    ({"num_waveforms_per_prompt": True}, ValueError, "num_waveforms_per_prompt must be a positive integer"),
    ({"output_type": "wav"}, ValueError, "output_type must be one of"),
    ({"prompt": 3}, TypeError, "`prompt` must be a string or a list of strings"),
    ({"prompt": ["ok", ""]}, ValueError, "`prompt` 1 is empty"),
    ({"prompt": None}, ValueError, "exactly one of `prompt` or `prompt_embeds`"),
    ({"negative_prompt": ["a", "b"]}, ValueError, "`negative_prompt` has 2 entries"),
    ({"prompt": None, "prompt_embeds": torch.full((1, 4, WIDTH), float("nan"))}, ValueError, "`prompt_embeds` contains 64 NaN"),  # noqa: E501
    ({"prompt": None, "prompt_embeds": torch.ones(1, 4, WIDTH, dtype=torch.long)}, ValueError, "must be floating point"),  # noqa: E501
    ({"prompt": None, "prompt_embeds": torch.ones(1, 4, WIDTH), "attention_mask": torch.ones(1, 5)}, ValueError, r"must be a tensor of shape \(1, 4\)"),  # noqa: E501
    ({"prompt": None, "prompt_embeds": torch.ones(1, 4, WIDTH), "attention_mask": torch.zeros(1, 4)}, ValueError, "a row with no tokens"),  # noqa: E501
    ({"attention_mask": torch.ones(1, 16)}, ValueError, "`attention_mask` masks `prompt_embeds`"),
    ({"generator": [torch.Generator()] * 3}, ValueError, "got 3 generators for 1 waveforms"),
    ({"generator": 0}, TypeError, "generator must be a torch.Generator"),
    ({"callback_on_step_end": "print"}, TypeError, "callback_on_step_end must be callable"),
    ({"callback_on_step_end_tensor_inputs": ["noise_pred"]}, ValueError, "are not available"),
    ({"audio": GOOD_AUDIO}, ValueError, r"`audio` needs its sample rate: pass audio_sample_rate="),
    ({"audio": GOOD_AUDIO, "audio_sample_rate": 0}, ValueError, "audio_sample_rate must be a positive whole number of Hz"),  # noqa: E501
    ({"audio": GOOD_AUDIO, "audio_sample_rate": 8000.5}, ValueError, "got 8000.5"),
    ({"audio": GOOD_AUDIO, "audio_sample_rate": "8000"}, ValueError, "got '8000'"),
    ({"audio": STEREO_SOUNDFILE_LAYOUT, "audio_sample_rate": 8000}, ValueError, r"that is \(samples, channels\).*pass audio.T"),  # noqa: E501
    ({"audio": (GOOD_AUDIO * 32767).short(), "audio_sample_rate": 8000}, ValueError, "floating-point samples"),
    ({"audio": NAN_AUDIO, "audio_sample_rate": 8000}, ValueError, "800 NaN"),
    ({"audio": GOOD_AUDIO.tolist(), "audio_sample_rate": 8000}, TypeError, "`audio` must be a torch.Tensor or np.ndarray"),  # noqa: E501
    ({"audio": torch.zeros(1, 0), "audio_sample_rate": 8000}, ValueError, r"`audio` is empty"),
    ({"audio": torch.zeros(3, 1, 2000), "audio_sample_rate": 8000}, ValueError, "holds 3 clips but there are 1 prompts"),  # noqa: E501
    ({"audio_sample_rate": 8000}, ValueError, "audio_sample_rate is the rate of `audio`"),
]  # fmt: skip

DIFFUSION_BAD_INPUTS = [
    ({"latents": torch.full((1, 4, 63), float("nan"))}, ValueError, "`latents` contains 252 NaN"),
    ({"latents": torch.zeros(1, 4, 63, dtype=torch.long)}, ValueError, "`latents` must be floating point"),
    ({"latents": torch.zeros(1, 4, 10)}, ValueError, r"`latents` have shape \(1, 4, 10\)"),
    ({"latents": np.zeros((1, 4, 63))}, TypeError, "`latents` must be a torch.Tensor"),
    ({"num_inference_steps": 2.5}, ValueError, "num_inference_steps must be a positive integer"),
    ({"num_inference_steps": 5000}, ValueError, "more than the 1000 timesteps the model was trained on"),
    ({"prompt": None, "story": [("a calm chorale", 0.999), ("a reel", 0.0001)]}, ValueError, "story segment 1 .* shorter than one latent frame"),  # noqa: E501
    ({"eta": 2.0}, ValueError, r"eta must be in \[0, 1\]"),
    ({"audio": GOOD_AUDIO, "audio_sample_rate": 8000, "strength": float("nan")}, ValueError, "strength must be a finite"),  # noqa: E501
    ({"audio": GOOD_AUDIO, "audio_sample_rate": 8000, "mask": [(0.1, 0.2, 0.3)]}, ValueError, "not a .start_s, end_s. pair"),  # noqa: E501
    ({"audio": GOOD_AUDIO, "audio_sample_rate": 8000, "mask": "0.1:0.2"}, TypeError, "mask must be"),
    ({"prompt": None, "story": [("a calm chorale", 0.2), "a reel"]}, ValueError, r"story segment 1 'a reel' is not 'prompt:seconds'"),  # noqa: E501
    ({"prompt": None, "story": ["a reel:fast"]}, ValueError, "'fast' is not a number of seconds"),
    ({"prompt": None, "story": [("a", 1.0, 2.0)]}, ValueError, "is not a .prompt, seconds. pair"),
    ({"prompt": None, "story": [("a", float("inf"))]}, ValueError, "positive, finite number of seconds"),
    ({"prompt": None, "story": "a calm chorale:8"}, TypeError, "story must be a list of"),
    ({"window_overlap_in_s": 5.0, "audio_length_in_s": 3.0}, ValueError, "must be shorter than the U-Net's 2.0 s"),
    ({"window_overlap_in_s": -1.0, "audio_length_in_s": 3.0}, ValueError, r"window_overlap_in_s must be in \[0"),
    ({"melody_sample_rate": 8000}, ValueError, "melody_sample_rate is the rate of `melody`"),
    ({"melody": GOOD_AUDIO}, ValueError, "not trained with melodies"),
]  # fmt: skip

TOKEN_BAD_INPUTS = [
    ({"temperature": float("inf")}, ValueError, "temperature must be a finite number"),
    ({"temperature": float("nan")}, ValueError, "temperature must be a finite number"),
    ({"top_k": True}, ValueError, "top_k must be a non-negative integer"),
    ({"top_p": float("nan")}, ValueError, r"top_p must be in \(0, 1\]"),
    ({"audio": torch.zeros(1, 10), "audio_sample_rate": 8000}, ValueError, "less than one codec frame"),
]  # fmt: skip


def bad_input_cases():
    for name, cases in (("both", BAD_INPUTS), ("diffusion", DIFFUSION_BAD_INPUTS), ("token", TOKEN_BAD_INPUTS)):
        for contract_name in CONTRACTS if name == "both" else [name]:
            for kwargs, error, message in cases:
                yield pytest.param(contract_name, kwargs, error, message, id=f"{contract_name}-{message[:40]}")


@pytest.mark.parametrize(("contract_name", "kwargs", "error", "message"), list(bad_input_cases()))
def test_bad_input_is_refused_before_any_model_work(no_model_work, contract_name, kwargs, error, message):
    contract = CONTRACTS[contract_name]
    pipe = no_model_work(contract.make())
    if "audio" in kwargs and contract.name == "diffusion" and "mask" not in kwargs and "strength" not in kwargs:
        kwargs = {"audio_length_in_s": 0.5, **kwargs}  # continuation needs a longer clip than the prefix
    if "story" in kwargs:
        kwargs = {"audio_length_in_s": None, **kwargs}  # a story's length is the sum of its segments
    with pytest.raises(error, match=message):
        run(pipe, contract, seed=None, **kwargs)


def test_a_window_overlap_that_cannot_act_is_a_warning(caplog):
    pipe = CONTRACTS["diffusion"].make()
    with caplog.at_level(logging.WARNING):
        run(pipe, CONTRACTS["diffusion"], window_overlap_in_s=0.1)
    assert "window_overlap_in_s=0.1 has no effect: 0.25 s fits in one 2.0 s window" in caplog.text


def test_bfloat16_on_a_gpu_without_it_is_refused_naming_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "an old GPU")
    with pytest.raises(ValueError, match=r"an old GPU has no bfloat16; use pipe.to\(torch.float16\)"):
        check_device_dtype(torch.device("cuda"), torch.bfloat16)
    check_device_dtype(torch.device("cuda"), torch.float16)  # float16 is fine there
    check_device_dtype(torch.device("cpu"), torch.bfloat16)  # and CPUs have bfloat16
