"""Short names for the diffusers schedulers the pipeline is tested with, and a safe way to swap them.

`pipe.scheduler = X.from_config(pipe.scheduler.config)` is the diffusers way and works as is; this
table adds the command line's names (`--scheduler dpm++`) and one check diffusers leaves out: a model
trained with the flow-matching objective only fits flow-matching schedulers, and a noise-prediction
model only fits the others.
"""

from __future__ import annotations

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
    HeunDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.configuration_utils import FrozenDict

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
    "flow-euler": (FlowMatchEulerDiscreteScheduler, {}),
}

FLOW_SCHEDULERS = (FlowMatchEulerDiscreteScheduler,)


def is_flow_scheduler(scheduler_or_class: Any) -> bool:
    cls = scheduler_or_class if isinstance(scheduler_or_class, type) else type(scheduler_or_class)
    return issubclass(cls, FLOW_SCHEDULERS)


def scheduler_names(flow: bool) -> list[str]:
    """Names of the schedulers that fit a model trained with (`flow=True`) or without flow matching."""
    return [name for name, (cls, _) in SCHEDULERS.items() if is_flow_scheduler(cls) == flow]


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
        config = current
        flow_model = config.get("_class_name") in {c.__name__ for c in FLOW_SCHEDULERS}
    else:
        config, flow_model = current.config, is_flow_scheduler(current)
    if is_flow_scheduler(cls) != flow_model:
        kind = "flow-matching" if flow_model else "noise/v-prediction"
        raise ValueError(
            f"scheduler {name!r} does not fit this {kind} model; choose from {', '.join(scheduler_names(flow_model))}"
        )
    return cls.from_config(config, **overrides)
