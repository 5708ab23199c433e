"""Diffusion training objectives on top of diffusers schedulers: what to noise, what to predict, how to weight.

Three objectives, chosen by the scheduler the model ships with:

- `epsilon` and `v_prediction` with a DDPM-style scheduler (noising by `scheduler.add_noise`, velocity by
  `scheduler.get_velocity`), optionally with min-SNR-γ loss weighting (Hang et al., 2023);
- `flow` (rectified flow / flow matching) with `FlowMatchEulerDiscreteScheduler`: `x_t = (1 - σ) x + σ ε`,
  the model predicts the velocity `ε - x`, and the timestep it sees is `σ · num_train_timesteps`, the
  convention that scheduler samples with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_snr

OBJECTIVES = ("epsilon", "v_prediction", "flow")

Generators = torch.Generator | Sequence[torch.Generator] | None


def draw(
    generator: Generators, batch: int, sample: Callable[[int, torch.Generator | None], torch.Tensor]
) -> torch.Tensor:
    """Draw `batch` examples' random numbers from one generator, or each from its own (a list of `batch`).

    Per-example generators make an example's draws independent of which batch, micro-batch or process it is in
    (see `Trainer.example_generators`).

    Args:
        generator: `None`, one generator, or one per example.
        batch: Examples in the batch.
        sample: `sample(n, generator)` draws `n` examples' numbers with a leading axis of `n`.

    Returns:
        The draws, `batch` along the first axis.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return sample(batch, generator)
    if len(generator) != batch:
        raise ValueError(f"got {len(generator)} generators for a batch of {batch}; pass one per example")
    return torch.cat([sample(1, g) for g in generator])


def _device_of(generator: Generators, fallback: torch.device) -> torch.device:
    first = generator if isinstance(generator, torch.Generator) else (generator[0] if generator else None)
    return first.device if first is not None else fallback


def make_training_scheduler(objective: str, num_train_timesteps: int = 1000, beta_schedule: str = "scaled_linear"):
    """The scheduler a model is trained (and then shipped) with for `objective`.

    The default betas are Stable Diffusion's scaled-linear 0.00085 → 0.012 (σ_max ≈ 14.6). The cosine
    schedule reaches σ_max ≈ 2·10⁴, where diffusers' Euler-ancestral step loses float32 precision and
    returns NaN, so it is not the default.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown diffusion objective {objective!r}; choose from {OBJECTIVES}")
    if objective == "flow":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps)
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=beta_schedule,
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type=objective,
        clip_sample=False,
    )


def objective_of(scheduler) -> str:
    """The objective a training scheduler implies."""
    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        return "flow"
    return scheduler.config.prediction_type


@dataclass
class NoisedBatch:
    noisy: torch.Tensor
    timesteps: torch.Tensor
    target: torch.Tensor
    weights: torch.Tensor


def noise_batch(
    scheduler,
    latents: torch.Tensor,
    generator: Generators = None,
    snr_gamma: float | None = None,
    flow_logit_normal: tuple[float, float] = (0.0, 0.0),
) -> NoisedBatch:
    """Draw timesteps and noise for a batch of clean latents and return the model's input and target.

    Args:
        scheduler (DDPMScheduler | FlowMatchEulerDiscreteScheduler): The training scheduler (see
            `make_training_scheduler`).
        latents: Clean, scaled latents `(batch, channels, frames)`.
        generator: Optional generator for reproducible timesteps and noise, or one per example.
        snr_gamma: If set (e.g. 5.0), weight each example by min-SNR-γ; ignored for `flow`.
        flow_logit_normal: `(mean, std)`: for `flow`, draw the noise levels as sigmoid(N(mean, std)) (SD3's
            logit-normal sampling, diffusers' `compute_density_for_timestep_sampling`); std 0 draws them uniformly.

    Returns:
        The noisy latents, the timesteps to condition on, the regression target and per-example weights.
    """
    batch = latents.shape[0]
    device = latents.device
    # drawn where the generator lives, then moved: a CPU generator also serves a GPU batch
    where = _device_of(generator, device)
    noise = draw(generator, batch, lambda n, g: torch.randn((n, *latents.shape[1:]), generator=g, device=where))
    noise = noise.to(device, latents.dtype)
    num_train_timesteps = scheduler.config.num_train_timesteps
    if objective_of(scheduler) == "flow":
        mean, std = flow_logit_normal
        if std < 0:
            raise ValueError(f"diffusion.flow_logit_std must be >= 0 (0 = uniform noise levels), got {std}")
        scheme = "logit_normal" if std > 0 else "uniform"
        sigmas = draw(
            generator,
            batch,
            lambda n, g: compute_density_for_timestep_sampling(scheme, n, mean, std, device=where, generator=g),
        )
        sigmas = sigmas.to(device, latents.dtype)
        sigma = sigmas.view(-1, 1, 1)
        # by hand: the scheduler's `scale_noise` looks sigmas up in its discrete schedule, and these are continuous
        noisy = (1 - sigma) * latents + sigma * noise
        return NoisedBatch(noisy, sigmas * num_train_timesteps, noise - latents, torch.ones_like(sigmas))

    timesteps = draw(
        generator, batch, lambda n, g: torch.randint(0, num_train_timesteps, (n,), generator=g, device=where)
    ).to(device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    objective = objective_of(scheduler)
    if objective == "epsilon":
        target = noise
    elif objective == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ValueError(f"training with prediction_type={objective!r} is not supported; use one of {OBJECTIVES}")
    weights = torch.ones(batch, device=device, dtype=latents.dtype)
    if snr_gamma:
        snr = compute_snr(scheduler, timesteps).to(latents.dtype)
        clipped = torch.minimum(snr, torch.full_like(snr, snr_gamma))
        weights = clipped / (snr + 1) if objective == "v_prediction" else clipped / snr
    return NoisedBatch(noisy, timesteps, target, weights)


def weighted_mse(prediction: torch.Tensor, batch: NoisedBatch, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error per example, weighted, averaged over the batch.

    `mask` (batch, 1 or channels, frames) restricts the loss to frames that count (e.g. real audio,
    not padding; or the generated span in masked training).
    """
    error = (prediction.float() - batch.target.float()) ** 2
    if mask is None:
        per_example = error.mean(dim=(1, 2))
    else:
        mask = mask.to(error.dtype).expand_as(error)
        per_example = (error * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp(min=1)
    return (per_example * batch.weights.float()).mean()


TASKS = ("generation", "continuation", "inpainting")


def sample_keep_masks(
    lengths: torch.Tensor, frames: int, probabilities: tuple[float, float, float], generator: Generators
) -> torch.Tensor:
    """JEN-1's omnidirectional training tasks, one per example: which latent frames the model is shown.

    - generation: nothing kept;
    - continuation: a prefix of 10–90 % of the clip kept;
    - inpainting: a span of 10–50 % of the clip removed, the rest kept.

    Args:
        lengths: `(batch,)` real (unpadded) frames of each clip.
        frames: Frames of the padded batch.
        probabilities: Weights of generation, continuation and inpainting (normalised here).
        generator: For reproducible draws (on the CPU): one, or one per example.

    Returns:
        A `(batch, 1, frames)` float mask, 1 where the clean latents are given to the model.
    """
    weights = torch.tensor(probabilities, dtype=torch.float)
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"masking probabilities must be >= 0 and not all 0, got {probabilities}")
    batch = len(lengths)
    weights = weights / weights.sum()

    def task_and_draws(n: int, g: torch.Generator | None) -> torch.Tensor:
        tasks = torch.multinomial(weights, n, replacement=True, generator=g).float()
        return torch.cat([tasks[:, None], torch.rand(n, 2, generator=g)], dim=1)

    drawn = draw(generator, batch, task_and_draws)
    tasks, draws = drawn[:, 0].long(), drawn[:, 1:]
    keep = torch.zeros(batch, 1, frames)
    for i, (task, length) in enumerate(zip(tasks.tolist(), lengths.tolist())):
        length = int(length)
        if TASKS[task] == "continuation":
            keep[i, 0, : max(1, int(length * (0.1 + 0.8 * draws[i, 0])))] = 1
        elif TASKS[task] == "inpainting":
            span = max(1, int(length * (0.1 + 0.4 * draws[i, 0])))
            start = round((length - span) * float(draws[i, 1]))
            keep[i, 0, :length] = 1
            keep[i, 0, start : start + span] = 0
    return keep
