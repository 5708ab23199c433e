"""The training loop every recipe shares: `Trainer` and the run's settings (the `Accelerator` it runs on, and the
seeds of its random streams, come from `latentmusic.training.accelerator`).

A recipe subclasses `Trainer` and fills in what differs (`build`, `train_step`, and optionally `adapt_model`,
`after_step`, `evaluate`, `sample`, `on_start`, `save`); the loop itself, resume, logging, checkpoints and the
progress bar are here, once, on Accelerate used as designed:

- the model(s), optimiser(s), scheduler(s) and the training `DataLoader` all go through `accelerator.prepare`,
  so with N processes each rank gets its own shard of every global batch and DDP averages the gradients;
- the `DataLoader` uses Accelerate's seedable sampler (`DataLoaderConfiguration(use_seedable_sampler=True)`):
  the permutation of epoch `e` depends only on the seed and `e`, the same on every rank;
- a resumed run skips the batches already trained on with `accelerator.skip_first_batches`, without loading them;
- `run.gradient_accumulation_steps` micro-batches are accumulated with `accelerator.accumulate` (one optimiser and
  scheduler step, gradients synchronised once, per optimisation step);
- the learning rate follows diffusers' `get_scheduler` (`optim.lr_scheduler`, warm-up `optim.warmup_steps`),
  stepped once per optimisation step whatever the number of processes.

Random streams are seeded separately from `(run.seed, stream name, step, ...)` (see
`latentmusic.training.accelerator.stream_seed`): data order, per-example noise (`Trainer.example_generators`, keyed by
the example's position in the global batch, so a run on N processes draws the same noise for an example as one process
with an N times larger batch), and torch's global RNG (dropout, random code replacement), seeded per micro-batch and
rank. With the data set's crops and caption choices seeded from (seed, epoch, index), the data of step `s` depends only
on the seed and `s`, and a run resumed from a checkpoint continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers.optimization import SchedulerType, get_scheduler
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..data.index import read_metadata
from .accelerator import make_accelerator, stream_seed
from .checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from .media import LossHistory, log_audio_samples

LR_SCHEDULERS = tuple(kind.value for kind in SchedulerType if kind.value != "piecewise_constant")


@dataclass
class RunConfig:
    """Settings every recipe shares."""

    output_dir: str = "outputs/run"  # checkpoints, samples, logs and the final model go here
    max_steps: int = 1000  # optimisation steps in total (a resumed run continues up to this)
    # stop this invocation after so many minutes of training (0: no limit), with a checkpoint and the final model
    # as at max_steps, so a run fits a job's time limit (a GPU lease, a queue); run it again to continue
    max_minutes: float = 0.0
    seed: int = 0  # seeds data order, crops, initialisation and noise (each its own stream)
    # micro-batches per optimisation step: the batch of one step is data.batch_size x this x the number of processes
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # "no", "fp16" or "bf16" autocast (fp16 needs a GPU; bf16 a GPU with it, or a CPU)
    log_every: int = 10  # steps between logged losses
    eval_every: int = 100  # steps between validation passes
    sample_every: int = 250  # steps between audio samples and spectrogram pictures (0: never)
    checkpoint_every: int = 250  # steps between checkpoints (0: only at the end)
    keep_checkpoints: int = 2  # complete checkpoints kept on disk
    resume: str = "latest"  # "latest", "" (start fresh) or a checkpoint folder
    report_to: str = "tensorboard"  # an Accelerate tracker name, or "none"
    progress_bar: bool = True
    # write which examples each process trained on, per micro-batch, to <output_dir>/examples/process-<rank>.jsonl
    record_examples: bool = False


@dataclass
class OptimConfig:
    """AdamW with a warm-up and a learning-rate schedule."""

    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    # diffusers `get_scheduler` name: constant_with_warmup, linear, cosine, cosine_with_restarts, polynomial, constant
    lr_scheduler: str = "constant_with_warmup"
    warmup_steps: int = 100
    grad_clip: float = 1.0  # max gradient norm (0: no clipping)
    ema_decay: float = 0.999  # EMA of the trained weights, used for samples and the final model


@dataclass
class SampleConfig:
    """What the recipes generate during training to listen to (`run.sample_every`)."""

    prompts: list[str] = field(default_factory=lambda: ["a Bach chorale played by a string ensemble"])
    seconds: float = 4.0
    guidance_scale: float = 3.0


def make_lr_scheduler(
    optimizer: torch.optim.Optimizer, optim: OptimConfig | DictConfig, max_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """diffusers' `get_scheduler(optim.lr_scheduler)` with `optim.warmup_steps` of warm-up over `max_steps`.

    Args:
        optimizer: The optimiser whose learning rate is scheduled.
        optim: The recipe's `optim` section.
        max_steps: Optimisation steps of the run (for the decaying schedules).

    Returns:
        The scheduler, to step once per optimisation step.
    """
    if optim.lr_scheduler not in LR_SCHEDULERS:
        raise ValueError(f"optim.lr_scheduler must be one of {LR_SCHEDULERS}, got {optim.lr_scheduler!r}")
    return get_scheduler(
        optim.lr_scheduler, optimizer, num_warmup_steps=optim.warmup_steps, num_training_steps=max_steps
    )


class Trainer:
    """The loop the autoencoder, diffusion and token-LM recipes share (as audiocraft's solvers do).

    Subclasses implement `build` (models, data, optimisers; `self.prepare` them) and `train_step` (one
    micro-batch: losses, `self.optimize`); the optional hooks are `check_data` (before anything is written),
    `adapt_model` (change the model before it is trained), `after_step` (after each optimisation step, e.g. EMA),
    `evaluate` (validation metrics), `sample` (audio, main process only), `on_start` (before the first step) and
    `save` (the final model, main process only writes: `save_pipeline`). `fit` runs it all.

    Args:
        config: The recipe's whole configuration; `config.run` holds the `RunConfig` and `config.optim` the
            `OptimConfig`.
        project_name: The trackers' project name.
    """

    def __init__(self, config: DictConfig, project_name: str) -> None:
        self.config = config
        self.run_config = config.run
        self.check_data()  # bad data is reported before anything is written to the output folder
        self.accelerator = make_accelerator(config.run, config, project_name)
        self.output_dir = Path(config.run.output_dir)
        self.history = LossHistory(self.output_dir / "losses.jsonl")
        self.step = 0  # optimisation steps done
        self.micro = 0  # micro-batch within the step in progress
        self.models: list[torch.nn.Module] = []  # the prepared modules `accumulate` covers
        self.lr_schedulers: dict[str, Any] = {}  # name -> scheduler whose learning rate is logged each step
        self._pending: list[dict[str, Any]] = []
        self._bar = None

    # -- what recipes fill in ---------------------------------------------------------------------------------

    def check_data(self) -> None:
        """Fail early, naming the file, on a data folder without audio or with files missing captions."""
        read_metadata(self.config.data.root)

    def build(self) -> tuple[Dataset, Any]:
        """Build models, data sets and optimisers, and `prepare` them.

        Returns:
            The training set and its collate function.
        """
        raise NotImplementedError

    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor | float]:
        """Losses and optimiser steps (through `optimize`) for one micro-batch.

        Returns:
            Values to log; tensors are averaged over the step's micro-batches and all processes.
        """
        raise NotImplementedError

    def adapt_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model to train, given the one built or loaded: override to change it before the optimiser, EMA and
        `prepare` see it (e.g. add LoRA adapters and freeze the rest). The diffusion recipe calls it on its U-Net,
        the token-LM recipe on its LM.

        Returns:
            The model to train (by default `model` unchanged).
        """
        return model

    def after_step(self) -> None:
        """Runs after each optimisation step (e.g. an EMA update)."""

    def evaluate(self) -> dict[str, float]:
        """Validation metrics, every `run.eval_every` steps and at the end (on every process)."""
        return {}

    def sample(self) -> None:
        """Audio samples, every `run.sample_every` steps (main process only)."""

    def on_start(self) -> None:
        """Runs once before the first step of the run (also after a resume)."""

    def save(self) -> Path:
        """Save the final model (write from the main process only) and return its folder."""
        raise NotImplementedError

    # -- helpers for recipes ----------------------------------------------------------------------------------

    def prepare(self, *objects: Any) -> Any:
        """`accelerator.prepare`, remembering the modules for gradient accumulation; a frozen module (no trainable
        weights, e.g. a text encoder that is not trained) is only moved to the device and set to eval mode, as
        DDP refuses it."""

        def frozen(obj: Any) -> bool:
            return isinstance(obj, torch.nn.Module) and not any(p.requires_grad for p in obj.parameters())

        trained = [obj for obj in objects if not frozen(obj)]
        prepared = self.accelerator.prepare(*trained) if trained else ()
        prepared = iter(prepared if len(trained) > 1 else [prepared])
        result = [obj.to(self.accelerator.device).eval() if frozen(obj) else next(prepared) for obj in objects]
        self.models += [obj for obj in result if isinstance(obj, torch.nn.Module) and not frozen(obj)]
        return tuple(result) if len(objects) > 1 else result[0]

    def save_pipeline(self, pipe: Any, subfolder: str = "pipeline") -> Path:
        """Write the final pipeline (or model) with `save_pretrained` to `<output_dir>/<subfolder>`, from the main
        process only; what `save` ends with.

        Args:
            pipe: Anything with `save_pretrained` (a pipeline, or a model such as the autoencoder).
            subfolder: The folder under `run.output_dir`.

        Returns:
            The folder, on every process.
        """
        folder = self.output_dir / subfolder
        if self.accelerator.is_main_process:
            pipe.save_pretrained(folder)
        return folder

    def log_prompt_samples(self, pipe: Any, **call_kwargs: Any) -> Path:
        """Generate the `sample` section's prompts with `pipe` (seed 0, so every step's samples compare) and save
        them as FLAC plus a spectrogram picture under `<output_dir>/samples/` (TensorBoard too, when on).

        Args:
            pipe: The current pipeline.
            **call_kwargs: More arguments of the pipeline's call (steps, `top_k`, ...).

        Returns:
            The path of the spectrogram picture.
        """
        sample = self.config.sample
        audios = pipe(
            list(sample.prompts),
            audio_length_in_s=min(sample.seconds, getattr(pipe, "max_audio_length_in_s", None) or sample.seconds),
            guidance_scale=sample.guidance_scale,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
            **call_kwargs,
        ).audios
        named = {f"prompt{i}": audio for i, audio in enumerate(audios)}
        return log_audio_samples(self.accelerator, self.step, named, pipe.sample_rate, self.output_dir)

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.unwrap_model(model)

    @property
    def sync(self) -> bool:
        """Whether the micro-batch in progress ends an optimisation step."""
        return self.accelerator.sync_gradients

    def optimize(
        self,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        parameters: Any,
        scheduler: Any = None,
        inputs: Sequence[torch.Tensor] | None = None,
    ) -> None:
        """Backward pass of `loss`, and on the last micro-batch of a step: clip, optimiser and scheduler step.

        Args:
            loss: The micro-batch's loss (Accelerate divides it by the accumulation steps).
            optimizer: The prepared optimiser.
            parameters: What `optim.grad_clip` clips.
            scheduler: The prepared learning-rate scheduler, if any.
            inputs: Restrict the gradients to these tensors (e.g. the generator's parameters in a GAN step).
        """
        self.accelerator.backward(loss, **({"inputs": list(inputs)} if inputs is not None else {}))
        if not self.sync:
            return
        if self.config.optim.grad_clip > 0:
            self.accelerator.clip_grad_norm_(parameters, self.config.optim.grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    def example_generators(self, stream: str, batch_size: int, device: Any = "cpu") -> list[torch.Generator]:
        """One generator per example of the micro-batch in progress, seeded from the example's position in the
        step's global batch: the same draws whether the batch is split over processes or micro-batches.

        Args:
            stream: The random stream ("noise", "tasks", ...).
            batch_size: Examples in this process's micro-batch.
            device: Where the generators draw.
        """
        accelerator = self.accelerator
        first = (self.micro * accelerator.num_processes + accelerator.process_index) * batch_size
        seed = self.run_config.seed
        return [
            torch.Generator(device=device).manual_seed(stream_seed(seed, stream, self.step, first + i))
            for i in range(batch_size)
        ]

    @property
    def evaluating(self) -> bool:
        """Whether the step in progress ends with an evaluation: every `eval_every` steps, and always the last."""
        upcoming = self.step + 1
        every = self.run_config.eval_every
        return (every > 0 and upcoming % every == 0) or upcoming == self.run_config.max_steps

    @property
    def done(self) -> bool:
        return self.step >= self.run_config.max_steps

    def due(self, every: int) -> bool:
        """Whether the step count is a multiple of `every` (never when `every` is 0)."""
        return every > 0 and self.step % every == 0

    def log(self, logs: dict[str, float]) -> None:
        self.accelerator.log(logs, step=self.step)
        if self.accelerator.is_main_process:
            self.history.append(self.step, logs)

    # -- the loop ---------------------------------------------------------------------------------------------

    def fit(self) -> Path:
        """Train to `run.max_steps` (resuming from the latest checkpoint), then save the final model.

        Returns:
            The folder `save` wrote.
        """
        train_set, collate_fn = self.build()
        loader = self._make_loader(train_set, collate_fn)
        self._resume()
        self.on_start()
        self._start_progress()
        self._train_mode()
        batches = self._micro_batches(loader, train_set)
        self._started = time.monotonic()
        while not self.done and not self._out_of_time():
            batch = next(batches)
            self._record_examples(batch)
            torch.manual_seed(
                stream_seed(self.run_config.seed, "global", self.step, self.micro, self.accelerator.process_index)
            )
            with self.accelerator.accumulate(*self.models):
                self._pending.append(self.train_step(batch))
            if not self.sync:
                self.micro += 1
                continue
            self.micro = 0
            self.after_step()
            logs = self._step_logs()
            if self.evaluating:
                logs.update(self.evaluate())
                self._train_mode()
            self._end_step(logs)
            if self.due(self.run_config.sample_every) and self.accelerator.is_main_process:
                self.sample()
                self._train_mode()
        folder = self.save()
        self._finish()
        return folder

    def _out_of_time(self) -> bool:
        """Whether `run.max_minutes` have passed since the loop started, decided by the main process's clock and
        shared, so every process stops after the same step."""
        minutes = self.run_config.max_minutes
        if not minutes or self.micro:
            return False
        late = float(time.monotonic() - self._started > minutes * 60)
        flag = torch.tensor(late if self.accelerator.is_main_process else 0.0, device=self.accelerator.device)
        if self.accelerator.reduce(flag, reduction="sum").item() > 0:
            self.accelerator.print(f"run.max_minutes={minutes:g} reached at step {self.step}: saving")
            return True
        return False

    def _train_mode(self) -> None:
        # only trained modules are in `models`: frozen ones (a text encoder that is not trained) stay in eval mode
        for model in self.models:
            model.train()

    def _make_loader(self, train_set: Dataset, collate_fn: Any) -> DataLoader:
        data = self.config.data
        global_batch = data.batch_size * self.accelerator.num_processes
        if len(train_set) < global_batch:
            raise ValueError(
                f"the training set has {len(train_set)} items, fewer than data.batch_size={data.batch_size} x "
                f"{self.accelerator.num_processes} processes; lower data.batch_size or add data"
            )
        # shuffle=True: Accelerate swaps the RandomSampler for its seedable one; drop_last keeps batches full
        loader = DataLoader(
            train_set,
            batch_size=data.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=data.num_workers,
            collate_fn=collate_fn,
        )
        return self.accelerator.prepare(loader)

    def _micro_batches(self, loader: DataLoader, train_set: Dataset) -> Iterator[Any]:
        """This process's micro-batches from the current step on, epoch after epoch."""
        sampler = loader.get_sampler()
        epoch, skip = divmod(self.step * self.run_config.gradient_accumulation_steps, len(loader))
        while True:
            source = self.accelerator.skip_first_batches(loader, skip) if skip else loader
            for each in (loader, source):
                each.set_epoch(epoch)
            sampler.set_epoch(epoch)  # not every path of Accelerate's set_epoch reaches the sampler or data set
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
            yield from source
            epoch, skip = epoch + 1, 0

    def _record_examples(self, batch: dict[str, Any]) -> None:
        if not self.run_config.record_examples:
            return
        rank = self.accelerator.process_index
        file = self.output_dir / "examples" / f"process-{rank}.jsonl"
        file.parent.mkdir(parents=True, exist_ok=True)
        paths = [record["path"] for record in batch["metadata"]]
        with open(file, "a", encoding="utf-8") as out:
            out.write(json.dumps({"step": self.step, "micro": self.micro, "process": rank, "paths": paths}) + "\n")

    def _step_logs(self) -> dict[str, float]:
        """The step's logged values: tensors averaged over micro-batches and processes."""
        logs: dict[str, float] = {}
        pending, self._pending = self._pending, []
        for key, value in pending[-1].items():
            if isinstance(value, torch.Tensor):
                mean = torch.stack([p[key].detach().float() for p in pending]).mean()
                value = self.accelerator.reduce(mean.to(self.accelerator.device), reduction="mean")
                logs[key] = value.item()
            else:
                logs[key] = float(value)
        for name, scheduler in self.lr_schedulers.items():
            logs[name] = scheduler.get_last_lr()[0]
        return logs

    def _resume(self) -> None:
        checkpoint = resolve_resume(self.output_dir, self.run_config.resume)
        if checkpoint is not None:
            self.step = load_checkpoint(self.accelerator, checkpoint)["step"]
            self.accelerator.print(f"resumed from {checkpoint} at step {self.step}")
        if self.accelerator.is_main_process:
            self.history.truncate_after(self.step)

    def _start_progress(self) -> None:
        self._bar = tqdm(
            total=self.run_config.max_steps,
            initial=self.step,
            desc="training",
            disable=not (self.run_config.progress_bar and self.accelerator.is_local_main_process),
        )

    def _end_step(self, logs: dict[str, float]) -> None:
        self.step += 1
        if self._bar is not None:
            self._bar.update()
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in list(logs.items())[:3]})
        if self.due(self.run_config.log_every) or self.step == self.run_config.max_steps:
            self.log(logs)
        if self.due(self.run_config.checkpoint_every) and not self.done:
            self._checkpoint()

    def _checkpoint(self) -> Path:
        return save_checkpoint(
            self.accelerator, self.output_dir, self.step, keep_last=self.run_config.keep_checkpoints
        )

    def _finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._checkpoint()
        if self.accelerator.is_main_process and self.history.read():
            self.history.plot(self.output_dir / "losses.png")
        self.accelerator.end_training()
