"""The multistep flow solvers (`flow-dpm++`, `flow-unipc`): the same ODE as `flow-euler`, fewer steps for it."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from latentmusic import LatentMusicPipeline
from latentmusic.cli import _saved_scheduler_is_flow
from latentmusic.pipelines.schedulers import (
    check_scheduler_fits,
    is_flow_scheduler,
    make_scheduler,
    objective_of_scheduler,
    scheduler_names,
)
from latentmusic.pipelines.tasks import add_noise_at
from latentmusic.training.objectives import make_training_scheduler

from .conftest import make_tiny_pipe

SECONDS = 0.5
MULTISTEP = ("flow-dpm++", "flow-unipc", "flow-unipc-shift2")


@pytest.fixture(scope="module")
def flow_pipe() -> LatentMusicPipeline:
    pipe = LatentMusicPipeline(**{**make_tiny_pipe().components, "scheduler": make_training_scheduler("flow")})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(pipe: LatentMusicPipeline, name: str, steps: int, base) -> torch.Tensor:
    pipe.scheduler = make_scheduler(name, base)
    generator = torch.Generator().manual_seed(3)
    return pipe(
        "a chorale",
        audio_length_in_s=SECONDS,
        num_inference_steps=steps,
        guidance_scale=1.0,
        generator=generator,
        output_type="latent",
    ).audios


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_they_are_flow_schedulers_and_carry_the_shift():
    trained = make_training_scheduler("flow")
    assert set(MULTISTEP) <= set(scheduler_names(flow=True))
    assert not set(MULTISTEP) & set(scheduler_names(flow=False))
    for name in MULTISTEP:
        scheduler = make_scheduler(name, trained)
        assert is_flow_scheduler(scheduler) and str(objective_of_scheduler(scheduler)) == "flow"
        check_scheduler_fits(scheduler, objective_of_scheduler(trained))  # a flow model takes them
        # the flow ODE from σ = 1 to 0, the model shown σ · 1000 (diffusers truncates it to an integer)
        scheduler.set_timesteps(8)
        assert scheduler.sigmas[0] > 0.998 and scheduler.sigmas[-1] == 0 and len(scheduler.sigmas) == 9
        sigmas = scheduler.sigmas[:-1].double()
        assert ((sigmas * 1000 - scheduler.timesteps).abs() < 1.0 + 1e-3).all()
    # a shifted FlowMatch config keeps its shift under the other name, there and back
    shifted = FlowMatchEulerDiscreteScheduler(shift=3.0)
    unipc = make_scheduler("flow-unipc", shifted)
    assert unipc.config.flow_shift == 3.0
    assert make_scheduler("flow-euler", unipc).config.shift == 3.0
    assert make_scheduler("flow-unipc-shift2", shifted).config.flow_shift == 2.0  # its own shift wins
    assert make_scheduler("flow-euler", make_scheduler("flow-pingpong", shifted)).config.stochastic_sampling is False
    # a noise (re-noising for inpainting) at a step's level is the flow's (1 - σ) x + σ ε
    unipc.set_timesteps(8)
    x, noise = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(0)).unbind(0)
    sigma = unipc.sigmas[3]
    torch.testing.assert_close(add_noise_at(unipc, x, noise, unipc.timesteps[3]), (1 - sigma) * x + sigma * noise)


def test_they_solve_the_flow_ode_of_gaussian_data_in_fewer_steps_than_euler(flow_pipe):
    """Fed the exact velocity of flow matching on N(m, s²) latents, every solver lands on the exact end of the ODE,
    m + s ε, given many steps; at 6 steps the multistep solvers land much nearer than Euler (same U-Net work)."""
    pipe, base = flow_pipe, flow_pipe.scheduler
    frames = pipe.latent_length(SECONDS)
    m = torch.randn(1, 4, frames, generator=torch.Generator().manual_seed(5))
    s = 0.3
    noise = torch.randn(1, 4, frames, generator=torch.Generator().manual_seed(3))  # what `sample` draws
    exact = m + s * noise
    predict = pipe.unet.forward

    def gaussian_velocity(x, timestep, *args, **kwargs):
        output = predict(x, timestep, *args, **kwargs)  # runs the real network: shapes and conditioning
        sigma = torch.as_tensor(timestep, dtype=x.dtype) / pipe.scheduler.config.num_train_timesteps
        a = 1 - sigma
        b = (a**2 * s**2 + sigma**2).sqrt()  # x_σ = a m + b z: the marginal's mean and std along the flow
        output.sample = -m + (sigma - a * s**2) / b * (x - a * m) / b  # d x_σ / dσ = E[ε - x_0 | x_σ]
        return output

    pipe.unet.forward = gaussian_velocity
    try:
        many = {name: sample(pipe, name, 60, base) for name in ("flow-euler", *MULTISTEP)}
        few = {name: sample(pipe, name, 6, base) for name in ("flow-euler", *MULTISTEP)}
    finally:
        pipe.unet.forward, pipe.scheduler = predict, base
    for name, latents in many.items():
        assert relative_error(latents, exact) < (0.02 if name == "flow-euler" else 0.005), name
    euler = relative_error(few["flow-euler"], exact)
    assert euler > 0.05  # Euler's 6 steps are visibly off on this curved flow
    for name in ("flow-dpm++", "flow-unipc"):  # (shift2's spacing suits the demo's flow, not this one: not asserted)
        assert relative_error(few[name], exact) < euler / 1.5, name


def test_they_sample_the_same_ode_as_euler_with_a_real_network(flow_pipe):
    """With the tiny random U-Net's own velocity field, many steps of each solver agree, and a multistep solver's
    few steps come nearer that common end than Euler's."""
    pipe, base = flow_pipe, flow_pipe.scheduler
    try:
        reference = sample(pipe, "flow-euler", 400, base)
        euler_few = relative_error(sample(pipe, "flow-euler", 6, base), reference)
        for name in ("flow-dpm++", "flow-unipc"):
            assert relative_error(sample(pipe, name, 100, base), reference) < 0.01, name
            assert relative_error(sample(pipe, name, 6, base), reference) < 0.8 * euler_few, name
    finally:
        pipe.scheduler = base


def test_a_v_prediction_model_refuses_them_with_the_names_that_fit():
    pipe = make_tiny_pipe()
    for name in MULTISTEP:
        with pytest.raises(ValueError, match="does not fit this noise/v-prediction model; choose from ddpm") as error:
            make_scheduler(name, pipe.scheduler)
        fitting = str(error.value).split("choose from")[1]
        assert "dpm++" in fitting and "flow-" not in fitting
    # built by hand from the model's config, the pipeline's check refuses it before any model work
    pipe.scheduler = UniPCMultistepScheduler.from_config(
        pipe.scheduler.config, use_flow_sigmas=True, prediction_type="flow_prediction"
    )
    with pytest.raises(ValueError, match="UniPCMultistepScheduler belongs to the flow family, but this model was"):
        pipe("a chorale", audio_length_in_s=SECONDS, num_inference_steps=2)


def test_flow_prediction_without_flow_sigmas_is_refused():
    trained = objective_of_scheduler(make_training_scheduler("flow"))
    half = DPMSolverMultistepScheduler(prediction_type="flow_prediction")
    with pytest.raises(ValueError, match="flow_prediction without use_flow_sigmas=True") as error:
        check_scheduler_fits(half, trained)
    assert "flow-unipc" in str(error.value)


def test_the_cli_reads_a_saved_multistep_flow_scheduler_as_flow(tmp_path):
    make_scheduler("flow-unipc", make_training_scheduler("flow")).save_config(tmp_path / "scheduler")
    index = {"scheduler": ["diffusers", "UniPCMultistepScheduler"]}
    assert _saved_scheduler_is_flow(str(tmp_path), index)
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": "v_prediction"}))
    assert not _saved_scheduler_is_flow(str(tmp_path), index)
    euler = {"scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}
    assert _saved_scheduler_is_flow(str(tmp_path / "none"), euler)  # no saved config: the class name tells
