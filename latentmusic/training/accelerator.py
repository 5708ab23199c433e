"""The accelerator a run trains on, and the seeds of its random streams.

`make_accelerator` builds the `Accelerator` every recipe's `Trainer` uses: the seedable sampler (the permutation of
epoch `e` depends only on the seed and `e`), gradient accumulation that never syncs with the end of an epoch (exact
resume), mixed precision where the device has it, trackers, and the run's config saved next to its outputs.
`stream_seed` gives each random stream of a run (data, noise, global RNG) its own seed.
"""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration, set_seed
from omegaconf import DictConfig, OmegaConf

from .config import save_config

if TYPE_CHECKING:
    from .runner import RunConfig

MIXED_PRECISION = ("no", "fp16", "bf16")


def stream_seed(seed: int, stream: str, *keys: int) -> int:
    """A 32-bit seed for one random stream of a run, unrelated to the seeds of other streams, steps or ranks.

    Args:
        seed: The run's seed (`run.seed`).
        stream: The stream's name ("data", "noise", "global", ...).
        *keys: Further integers that select the draw (step, micro-batch, rank, example position).

    Returns:
        A seed in `[0, 2**32)`.
    """
    # SeedSequence mixes its entropy, so neighbouring keys give unrelated seeds (unlike seed + step)
    entropy = [seed, zlib.crc32(stream.encode()), *keys]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint32)[0])


def resolve_mixed_precision(requested: str) -> str:
    """The autocast mode to train with: `requested` where the device supports it, else "no" with a warning.

    Args:
        requested: `run.mixed_precision`, one of "no", "fp16", "bf16".

    Returns:
        The mode to pass to `Accelerator`.

    Raises:
        ValueError: If `requested` is not one of the modes.
    """
    # YAML reads a bare `no` (run.mixed_precision=no on the command line, or in a config file) as false, which the
    # str-typed field then holds as "False"
    requested = "no" if str(requested).lower() == "false" else requested
    if requested not in MIXED_PRECISION:
        raise ValueError(f"run.mixed_precision must be one of {MIXED_PRECISION}, got {requested!r}")
    if requested == "no":
        return requested
    cuda = torch.cuda.is_available()
    if requested == "fp16" and not cuda:
        warnings.warn(
            "run.mixed_precision=fp16 needs a CUDA GPU; training in float32 (bf16 works on a CPU)", stacklevel=2
        )
        return "no"
    if requested == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        warnings.warn(
            "run.mixed_precision=bf16: this GPU has no bfloat16; training in float32 (try fp16)", stacklevel=2
        )
        return "no"
    return requested


def make_accelerator(run: RunConfig | DictConfig, config: DictConfig, project_name: str) -> Accelerator:
    """An `Accelerator` writing into `run.output_dir`, with trackers started and the config saved.

    Args:
        run: The run section of the config.
        config: The whole config (saved to `<output_dir>/config.yaml` and sent to the trackers).
        project_name: The trackers' project name.

    Returns:
        The accelerator, with the seedable sampler, gradient accumulation and mixed precision set up.
    """
    if run.gradient_accumulation_steps < 1:
        raise ValueError(
            f"run.gradient_accumulation_steps must be at least 1, got {run.gradient_accumulation_steps}; "
            "1 means no accumulation"
        )
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(run.mixed_precision),
        # sync_with_dataloader=False: a step is always `gradient_accumulation_steps` micro-batches, also across
        # epochs, so the data of step s stays a function of s (exact resume)
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=run.gradient_accumulation_steps, adjust_scheduler=False, sync_with_dataloader=False
        ),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=stream_seed(run.seed, "data")),
        step_scheduler_with_optimizer=False,  # stepped once per optimisation step, not once per process
        log_with=None if run.report_to == "none" else run.report_to,
        # no automatic_checkpoint_naming / total_limit: checkpoint.py rotates atomically, named by step (see there)
        project_config=ProjectConfiguration(
            project_dir=run.output_dir, logging_dir=str(Path(run.output_dir) / "logs")
        ),
    )
    set_seed(run.seed)  # model initialisation: the same on every rank
    if accelerator.is_main_process:
        save_config(config, Path(run.output_dir) / "config.yaml")
    if run.report_to != "none":
        flat = {k: v for k, v in _flatten(OmegaConf.to_container(config, resolve=True)).items()}
        accelerator.init_trackers(project_name, config=flat)
    return accelerator


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        value = tree if isinstance(tree, (int, float, str, bool)) else str(tree)
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}{key}/" if isinstance(value, dict) else f"{prefix}{key}"))
    return out
