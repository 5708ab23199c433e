"""Short names for the diffusers schedulers the pipeline is tested with, and a safe way to swap them.

`pipe.scheduler = X.from_config(pipe.scheduler.config)` is the diffusers way and works as is; this
table adds the command line's names (`--scheduler dpm++`) and one check diffusers leaves out: a model
trained with the flow-matching objective only fits flow-matching schedulers, and a noise-prediction
model only fits the others.

The flow-matching schedulers are diffusers' `FlowMatch*` ones and the multistep solvers DPM-Solver++ and UniPC
configured for flow (`use_flow_sigmas=True, prediction_type="flow_prediction"`): those sample the same ODE,
`x_t = (1 - σ) x + σ ε` from σ = 1 to 0 with the velocity `ε - x`, and show the model the timestep σ · 1000
(truncated to an integer: at most 0.001 off in σ).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.configuration_utils import FrozenDict
from diffusers.utils import logging

# how DPM-Solver++ and UniPC sample a flow-matching model: sigmas evenly from 1 to 0 (their `flow_shift` bends
# them towards 1 as FlowMatchEuler's `shift` does), the model's output read as the velocity ε - x
FLOW_MULTISTEP = {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "use_karras_sigmas": False}

# name → (scheduler class, config overrides)
SCHEDULERS: dict[str, tuple[type, dict[str, Any]]] = {
    "ddpm": (DDPMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}),
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "dpm++-sde": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
    "dpm-single": (DPMSolverSinglestepScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler-a": (EulerAncestralDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
    "kdpm2": (KDPM2DiscreteScheduler, {}),
    "lms": (LMSDiscreteScheduler, {}),
    "unipc": (UniPCMultistepScheduler, {}),
    "deis": (DEISMultistepScheduler, {}),
    "flow-euler": (FlowMatchEulerDiscreteScheduler, {"stochastic_sampling": False}),
    "flow-heun": (FlowMatchHeunDiscreteScheduler, {}),
    # ping-pong sampling (Stable Audio 3, SAO Small): each step predicts the clean latents and re-noises them with
    # fresh noise to the next noise level, instead of moving along the velocity; meant for few steps
    "flow-pingpong": (FlowMatchEulerDiscreteScheduler, {"stochastic_sampling": True}),
    # multistep solvers: one U-Net evaluation a step, like Euler, but each step also uses the last step's
    # prediction (second order, DPM-Solver++ 2M and UniPC's predictor-corrector), for fewer steps
    "flow-dpm++": (DPMSolverMultistepScheduler, {**FLOW_MULTISTEP, "algorithm_type": "dpmsolver++"}),
    "flow-unipc": (UniPCMultistepScheduler, FLOW_MULTISTEP),
    # the same with its sigmas shifted towards the noisy end (σ' = 2σ / (1 + σ), SD3's shift): at 8 steps it lands
    # nearer the ODE's exact end than evenly spaced sigmas on the demo (docs/benchmarks/schedulers.md)
    "flow-unipc-shift2": (UniPCMultistepScheduler, {**FLOW_MULTISTEP, "flow_shift": 2.0}),
}

FLOW_SCHEDULERS = (FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler)

logger = logging.get_logger(__name__)


def is_flow_config(class_name: str, config: Mapping[str, Any]) -> bool:
    """Whether a scheduler of class `class_name` with `config` samples a flow-matching model.

    Args:
        class_name: The scheduler's class name (a config's `_class_name`).
        config: Its config (or the overrides it is built with).

    Returns:
        True for diffusers' `FlowMatch*` schedulers and for a multistep solver set to flow sigmas and the
        `flow_prediction` prediction type; False otherwise.
    """
    if class_name.startswith("FlowMatch"):
        return True
    return bool(config.get("use_flow_sigmas")) and config.get("prediction_type") == "flow_prediction"


def is_flow_scheduler(scheduler_or_class: Any) -> bool:
    """Whether a scheduler samples a flow-matching model (see `is_flow_config`); a class alone only tells for the
    `FlowMatch*` ones (a `DPMSolverMultistepScheduler` is flow or not by its config)."""
    is_class = isinstance(scheduler_or_class, type)
    cls = scheduler_or_class if is_class else type(scheduler_or_class)
    return issubclass(cls, FLOW_SCHEDULERS) or is_flow_config(
        cls.__name__, {} if is_class else scheduler_or_class.config
    )


def scheduler_names(flow: bool) -> list[str]:
    """Names of the schedulers that fit a model trained with (`flow=True`) or without flow matching."""
    return [name for name, (cls, overrides) in SCHEDULERS.items() if is_flow_config(cls.__name__, overrides) == flow]


@dataclass(frozen=True)
class Objective:
    """What a denoiser was trained to predict, as its scheduler family sees it.

    `family` is `"flow"` (flow matching, velocity over sigmas in [0, 1]), `"ddpm"` (a betas schedule over discrete
    timesteps: DDPM, DDIM, DPM-Solver, Euler, ...), `"edm"` (Karras et al.'s preconditioning with `sigma_data`,
    whose model input is a continuous noise level) or `"unknown"`; `prediction_type` is the scheduler's
    (`"epsilon"`, `"v_prediction"`, `"sample"`; `None` for flow).
    """

    family: str
    prediction_type: str | None

    def __str__(self) -> str:
        return self.family if self.prediction_type is None else f"{self.family} {self.prediction_type}"


def objective_of_scheduler(scheduler: Any) -> Objective:
    """The objective a scheduler samples for.

    Args:
        scheduler: A diffusers scheduler instance.

    Returns:
        Its family and prediction type.
    """
    if is_flow_scheduler(scheduler):
        return Objective("flow", None)
    config = scheduler.config
    if "sigma_data" in config:
        family = "edm"
    elif hasattr(scheduler, "alphas_cumprod"):
        family = "ddpm"
    else:
        family = "unknown"
    return Objective(family, config.get("prediction_type"))


def check_scheduler_fits(scheduler: Any, trained: Objective) -> None:
    """Refuse a scheduler whose family or prediction type is not the one the model was trained for.

    diffusers leaves this to the user: `EDMEulerScheduler.from_config(ddpm_config)` builds without a word, and
    `FlowMatchEulerDiscreteScheduler` on a v-prediction model runs to the end, but the audio is meaningless.

    Args:
        scheduler: The pipeline's current scheduler.
        trained: The objective of the scheduler the model was trained and saved with.

    Raises:
        ValueError: The scheduler does not fit; the message lists the names that do.
    """
    current = objective_of_scheduler(scheduler)
    if current.family == "unknown" or trained.family == "unknown":
        logger.warning(
            f"cannot tell whether {type(scheduler).__name__} fits this model (trained for {trained}); "
            "check its output, or use one of the tested schedulers: " + ", ".join(SCHEDULERS)
        )
        return
    if current == trained:
        return
    fitting = ", ".join(scheduler_names(trained.family == "flow")) if trained.family in ("flow", "ddpm") else "none"
    if scheduler.config.get("prediction_type") == "flow_prediction" and current.family != "flow":
        problem = (
            f"{type(scheduler).__name__} predicts flow_prediction without use_flow_sigmas=True (its sigmas are not "
            "the flow's σ in [0, 1])"
        )
    elif current.family != trained.family:
        problem = f"{type(scheduler).__name__} belongs to the {current.family} family"
    else:
        problem = f"{type(scheduler).__name__} predicts {current.prediction_type}"
    raise ValueError(
        f"{problem}, but this model was trained for {trained} (the scheduler it was saved with); build the new "
        "scheduler from the old one's config so its training settings carry over, "
        "X.from_config(pipe.scheduler.config), with a fitting scheduler (latentmusic.pipelines.schedulers names: "
        f"{fitting})"
    )


def make_scheduler(name: str, current: Any) -> Any:
    """Build the scheduler called `name` from the current scheduler's config.

    Args:
        name: A key of `SCHEDULERS` (e.g. "dpm++", "euler-a", "unipc").
        current: The pipeline's scheduler (or its config); its training-time settings (number of
            train timesteps, beta schedule, prediction type) carry over.

    Raises:
        ValueError: Unknown name, or a scheduler family that does not fit the model's objective.
    """
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")
    cls, overrides = SCHEDULERS[name]
    if isinstance(current, (dict, FrozenDict)):
        config, class_name = current, str(current.get("_class_name", ""))
    else:  # a live scheduler's config has no `_class_name` (only a saved one has)
        config, class_name = current.config, type(current).__name__
    flow_model = is_flow_config(class_name, config)
    if is_flow_config(cls.__name__, overrides) != flow_model:
        kind = "flow-matching" if flow_model else "noise/v-prediction"
        raise ValueError(
            f"scheduler {name!r} does not fit this {kind} model; choose from {', '.join(scheduler_names(flow_model))}"
        )
    carried = _carried_shift(cls, config) if flow_model else {}
    return cls.from_config(config, **{**carried, **overrides})


def _carried_shift(cls: type, config: Mapping[str, Any]) -> dict[str, float]:
    """The sigma shift of a flow config under the name `cls` gives it: `FlowMatch*` schedulers call it `shift`,
    DPM-Solver and UniPC `flow_shift`, and `from_config` does not translate one into the other."""
    shift = config.get("shift", config.get("flow_shift"))
    if shift is None:
        return {}
    return {"shift": shift} if cls.__name__.startswith("FlowMatch") else {"flow_shift": shift}
