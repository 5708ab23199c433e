"""Atomic, resumable training checkpoints on top of `Accelerator.save_state`.

A checkpoint is written to `checkpoint-<step>.tmp` and renamed only once complete, so a run killed
mid-write never leaves a checkpoint that looks valid. `trainer_state.json`, written last, marks it
complete and records the step to resume from.

Why not Accelerate's own rotation (`ProjectConfiguration(automatic_checkpoint_naming=True, total_limit=N)`): it
writes straight into the final `checkpoint_<i>` folder (a killed run leaves one that looks complete), deletes the
oldest checkpoint *before* the new one is written (with `total_limit=1` a crash mid-write leaves none), and numbers
folders by its own save counter rather than the optimisation step. Atomic writes and exact resume need the few
lines below.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

STATE_FILE = "trainer_state.json"
PREFIX = "checkpoint-"


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def save_checkpoint(
    accelerator: Accelerator, output_dir: str | Path, step: int, keep_last: int = 2, **state: Any
) -> Path:
    """Save models, optimisers, schedulers, RNG states and registered objects at `step`.

    Args:
        accelerator: The run's accelerator; everything `prepare`d or registered for checkpointing
            is saved.
        output_dir: The run's output folder; checkpoints go to `output_dir/checkpoints/`.
        step: The number of optimisation steps completed.
        keep_last: How many complete checkpoints to keep (older ones are deleted).
        **state: Extra JSON-serialisable values to restore on resume.

    Returns:
        The path of the complete checkpoint.
    """
    final = checkpoint_dir(output_dir) / f"{PREFIX}{step:08d}"
    partial = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if accelerator.is_main_process:
        (partial / STATE_FILE).write_text(json.dumps({"step": step, **state}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        for old in list_checkpoints(output_dir)[:-keep_last]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (half-written `.tmp` folders are ignored)."""
    folder = checkpoint_dir(output_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.suffix != ".tmp"]
    return sorted(found, key=lambda p: p.name)


def resolve_resume(output_dir: str | Path, resume: str | None) -> Path | None:
    """Find the checkpoint to resume from: `None`/"" (start fresh), "latest", or a path."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"resume checkpoint {path} does not exist; pass resume=latest or a checkpoint folder")
    return path


def load_checkpoint(accelerator: Accelerator, path: str | Path) -> dict[str, Any]:
    """Restore a checkpoint written by `save_checkpoint` and return its trainer state."""
    path = Path(path)
    state_file = path / STATE_FILE
    try:
        state = json.loads(state_file.read_text())
        step = int(state["step"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"checkpoint {path} is incomplete or corrupt ({state_file.name} unreadable: {error}); "
            "delete it and resume from an earlier one"
        ) from None
    try:
        accelerator.load_state(str(path))
    except Exception as error:  # noqa: BLE001 - re-raised with the checkpoint named
        raise ValueError(
            f"checkpoint {path} could not be loaded ({type(error).__name__}: {error}); it is corrupt or "
            "was written by a different model configuration"
        ) from error
    state["step"] = step
    return state
