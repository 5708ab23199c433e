"""What every training recipe shares: the run's settings, the accelerator, resumable data order, the loop's
bookkeeping (logging, checkpoints, progress bar).

Exact resume rests on one rule: the data for step `s` depends only on the seed and `s`. Batches come from
a seeded permutation per epoch (`StepBatches`), random crops are drawn from per-item generators seeded by
the data set from (seed, epoch, index), and model-side randomness (noise, timesteps) is restored by
`Accelerator.load_state` with the RNG states.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from .config import save_config
from .media import LossHistory


@dataclass
class RunConfig:
    """Settings every recipe shares."""

    output_dir: str = "outputs/run"  # checkpoints, samples, logs and the final model go here
    max_steps: int = 1000  # optimisation steps in total (a resumed run continues up to this)
    seed: int = 0  # seeds data order, crops, initialisation and noise
    mixed_precision: str = "no"  # "no", "fp16" or "bf16" (only where the device supports it)
    log_every: int = 10  # steps between logged losses
    eval_every: int = 100  # steps between validation passes
    sample_every: int = 250  # steps between audio samples and spectrogram pictures (0: never)
    checkpoint_every: int = 250  # steps between checkpoints (0: only at the end)
    keep_checkpoints: int = 2  # complete checkpoints kept on disk
    resume: str = "latest"  # "latest", "" (start fresh) or a checkpoint folder
    report_to: str = "tensorboard"  # an Accelerate tracker name, or "none"
    progress_bar: bool = True


@dataclass
class OptimConfig:
    """AdamW with linear warm-up."""

    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0  # max gradient norm (0: no clipping)
    ema_decay: float = 0.999  # EMA of the trained weights, used for samples and the final model


def make_accelerator(run: RunConfig | DictConfig, config: DictConfig, project_name: str) -> Accelerator:
    """An `Accelerator` writing into `run.output_dir`, with trackers started and the config saved."""
    mixed_precision = run.mixed_precision
    if mixed_precision != "no" and not torch.cuda.is_available():
        mixed_precision = "no"  # fp16/bf16 autocast on a CPU is slower, not faster
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        log_with=None if run.report_to == "none" else run.report_to,
        project_config=ProjectConfiguration(
            project_dir=run.output_dir, logging_dir=str(Path(run.output_dir) / "logs")
        ),
    )
    set_seed(run.seed)
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


def warmup_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup_steps)))


class EpochPermutation(Sampler[int]):
    """A permutation of the data set that depends only on (seed, epoch)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class StepBatches:
    """Batches for steps `start, start + 1, ...`, the same whichever step a run starts or resumes at.

    The data set may implement `set_epoch(epoch)` to make its random crops depend on the epoch.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0, collate_fn=None) -> None:
        if len(dataset) < batch_size:
            raise ValueError(
                f"the training set has {len(dataset)} items, fewer than batch_size={batch_size}; "
                "lower data.batch_size or add data"
            )
        self.dataset = dataset
        self.sampler = EpochPermutation(len(dataset), seed)
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            drop_last=True,
            num_workers=num_workers,
            collate_fn=collate_fn,
        )
        self.steps_per_epoch = len(self.loader)

    def from_step(self, start: int) -> Iterator[Any]:
        epoch, skip = divmod(start, self.steps_per_epoch)
        while True:
            self.sampler.set_epoch(epoch)
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            for i, batch in enumerate(self.loader):
                if i >= skip:
                    yield batch
            epoch, skip = epoch + 1, 0


class Run:
    """The loop's bookkeeping: resume, progress bar, logging, checkpoint and sample schedules."""

    def __init__(self, accelerator: Accelerator, run: RunConfig | DictConfig) -> None:
        self.accelerator = accelerator
        self.config = run
        self.output_dir = Path(run.output_dir)
        self.history = LossHistory(self.output_dir / "losses.jsonl")
        self.step = 0
        self._bar = None

    def resume(self) -> int:
        """Restore the latest (or named) checkpoint, if any, and return the step to start from."""
        checkpoint = resolve_resume(self.output_dir, self.config.resume)
        if checkpoint is not None:
            self.step = load_checkpoint(self.accelerator, checkpoint)["step"]
            self.accelerator.print(f"resumed from {checkpoint} at step {self.step}")
        if self.accelerator.is_main_process:
            self.history.truncate_after(self.step)
        return self.step

    def seed_step(self) -> None:
        """Seed torch's global RNG (dropout, random code replacement) for the step about to run, so that a resumed
        run draws exactly the numbers of an uninterrupted one whatever ran in between; each process differs."""
        processes = self.accelerator.num_processes
        torch.manual_seed((self.config.seed * 1_000_003 + self.step) * processes + self.accelerator.process_index)

    @property
    def done(self) -> bool:
        return self.step >= self.config.max_steps

    def start_progress(self) -> None:
        self._bar = tqdm(
            total=self.config.max_steps,
            initial=self.step,
            desc="training",
            disable=not (self.config.progress_bar and self.accelerator.is_local_main_process),
        )

    def end_step(self, logs: dict[str, float]) -> None:
        """Count a finished optimisation step; log, checkpoint on schedule."""
        self.step += 1
        if self._bar is not None:
            self._bar.update()
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in list(logs.items())[:3]})
        if self.due(self.config.log_every) or self.step == self.config.max_steps:
            self.log(logs)
        if self.due(self.config.checkpoint_every) and not self.done:
            self.checkpoint()

    def log(self, logs: dict[str, float]) -> None:
        self.accelerator.log(logs, step=self.step)
        if self.accelerator.is_main_process:
            self.history.append(self.step, logs)

    def due(self, every: int) -> bool:
        """Whether the step count is a multiple of `every` (never when `every` is 0)."""
        return every > 0 and self.step % every == 0

    @property
    def evaluating(self) -> bool:
        """Whether the step in progress ends with an evaluation: every `eval_every` steps, and always the last."""
        upcoming = self.step + 1
        every = self.config.eval_every
        return (every > 0 and upcoming % every == 0) or upcoming == self.config.max_steps

    def checkpoint(self) -> Path:
        return save_checkpoint(self.accelerator, self.output_dir, self.step, keep_last=self.config.keep_checkpoints)

    def finish(self) -> None:
        """Final checkpoint, loss-curve picture, trackers closed."""
        if self._bar is not None:
            self._bar.close()
        self.checkpoint()
        if self.accelerator.is_main_process and self.history.read():
            self.history.plot(self.output_dir / "losses.png")
        self.accelerator.end_training()
