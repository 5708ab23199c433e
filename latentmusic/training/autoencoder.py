"""Training the audio autoencoder (used by `recipes/train_autoencoder.py`).

One step updates the autoencoder on reconstruction (+ KL) losses, and, once the discriminators' warm-up
is over, on the adversarial and feature-matching losses; then it updates the discriminators on the
hinge loss. An EMA of the autoencoder is kept; the final model carries the EMA weights and the latent
scaling (unit variance on training audio) in its config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderOobleck
from diffusers.training_utils import EMAModel
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from ..data.datasets import AudioCaptionDataset, collate
from ..evaluation.reconstruction import reconstruction_metrics
from ..models import AudioAutoencoder, compute_latent_statistics, vae_utils
from ..models.discriminators import MultiDiscriminator
from .losses import AutoencoderLoss, AutoencoderLossWeights, hinge_discriminator_loss
from .media import log_audio_samples
from .runner import OptimConfig, RunConfig, Trainer, make_lr_scheduler

MODEL_CLASSES = {"AudioAutoencoder": AudioAutoencoder, "AutoencoderOobleck": AutoencoderOobleck}


@dataclass
class AutoencoderDataConfig:
    root: str = "data/corpus"  # folder with metadata.jsonl (the rendered corpus or your own)
    segment_seconds: float = 1.0  # training crop length
    batch_size: int = 8
    num_workers: int = 0
    valid_clips: int = 8  # held-out clips (fixed crops) for the reconstruction metrics


@dataclass
class AutoencoderOptimConfig(OptimConfig):
    discriminator_lr: float = 2e-4
    discriminator_start: int = 1000  # steps of reconstruction-only training before the GAN terms start


@dataclass
class AutoencoderTrainingConfig:
    model_class: str = "AudioAutoencoder"  # or "AutoencoderOobleck" (diffusers), for comparisons
    model: dict[str, Any] = field(default_factory=dict)  # the model class's constructor arguments
    # fine-tuning: a trained autoencoder folder, or a pipeline folder or shipped name ("latentmusic/demo") whose
    # `vae` (or `codec`) the run starts from; its config then replaces `model_class` and `model`. "" = from scratch
    init_from: str = ""
    discriminator: dict[str, Any] = field(default_factory=dict)  # MultiDiscriminator arguments
    loss: AutoencoderLossWeights = field(default_factory=AutoencoderLossWeights)
    data: AutoencoderDataConfig = field(default_factory=AutoencoderDataConfig)
    optim: AutoencoderOptimConfig = field(default_factory=AutoencoderOptimConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/autoencoder"))


def sample_rate_of(model) -> int:
    return model.config.sampling_rate if isinstance(model, AutoencoderOobleck) else model.config.sample_rate


def build_autoencoder(model_class: str, model_kwargs: dict[str, Any]):
    if model_class not in MODEL_CLASSES:
        raise ValueError(f"model_class must be one of {sorted(MODEL_CLASSES)}, got {model_class!r}")
    cls = MODEL_CLASSES[model_class]
    return cls.from_config(model_kwargs) if cls is AudioAutoencoder else cls(**model_kwargs)


class Reconstruction(torch.nn.Module):
    """An autoencoder's encode-sample-decode pass as a `forward`, so that DDP, which synchronises gradients only
    for passes through its wrapper's forward, sees it. Its state dict is the autoencoder's, so checkpoints keep
    the autoencoder's parameter names.

    Args:
        autoencoder: `AudioAutoencoder` or `AutoencoderOobleck`.
    """

    def __init__(self, autoencoder: torch.nn.Module) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, audio: torch.Tensor, generator: Any = None) -> tuple[torch.Tensor, Any]:
        return vae_utils.reconstruct(self.autoencoder, audio, generator)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.autoencoder.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        return self.autoencoder.load_state_dict(state_dict, strict=strict, assign=assign)


def split_batch(tree: Any, size: int) -> tuple[Any, Any]:
    """Split every tensor of a nested output (lists, tuples) along the batch axis at `size`."""
    if isinstance(tree, torch.Tensor):
        return tree[:size], tree[size:]
    halves = [split_batch(item, size) for item in tree]
    return type(tree)(a for a, _ in halves), type(tree)(b for _, b in halves)


class AutoencoderTrainer(Trainer):
    """The autoencoder recipe on the shared loop: reconstruction (+ KL or commitment) losses, then GAN terms once
    the discriminators' warm-up is over; an EMA of the weights for the final model (not for RVQ codecs)."""

    def __init__(self, config: DictConfig) -> None:
        super().__init__(config, "latentmusic-autoencoder")

    def build(self) -> tuple[Dataset, Any]:
        config, accelerator, optim = self.config, self.accelerator, self.config.optim
        if config.init_from:
            try:
                model = vae_utils.load_vae(config.init_from)
            except FileNotFoundError as error:
                raise FileNotFoundError(f"init_from={error}") from None
        else:
            model = build_autoencoder(config.model_class, OmegaConf.to_container(config.model))
        self.sample_rate, channels = sample_rate_of(model), model.config.audio_channels
        data = dict(root=config.data.root, sample_rate=self.sample_rate, segment_seconds=config.data.segment_seconds)
        self.train_set = AudioCaptionDataset(**data, channels=channels, split="train", seed=self.run_config.seed)
        valid_set = AudioCaptionDataset(**data, channels=channels, split="valid", random_crop=False)
        clips = min(len(valid_set), config.data.valid_clips)
        self.valid_audio = torch.stack([valid_set[i]["audio"] for i in range(clips)]) if clips else torch.zeros(0)

        discriminator = MultiDiscriminator(
            **{"audio_channels": channels, **OmegaConf.to_container(config.discriminator)}
        )
        # not prepared: it has no weights, and its STFTs run in float32 outside the models' autocast
        self.loss_fn = AutoencoderLoss(self.sample_rate, AutoencoderLossWeights(**config.loss)).to(accelerator.device)
        betas = tuple(optim.betas)
        opt_g = torch.optim.AdamW(model.parameters(), lr=optim.lr, betas=betas, weight_decay=optim.weight_decay)
        opt_d = torch.optim.AdamW(discriminator.parameters(), lr=optim.discriminator_lr, betas=betas)
        sched_g = make_lr_scheduler(opt_g, optim, self.run_config.max_steps)
        self.ema = EMAModel(model.parameters(), decay=optim.ema_decay)
        self.reconstruction, self.discriminator, self.opt_g, self.opt_d, self.sched_g = self.prepare(
            Reconstruction(model), discriminator, opt_g, opt_d, sched_g
        )
        self.model = model
        self.lr_schedulers = {"lr": self.sched_g}
        self.ema.to(accelerator.device)
        accelerator.register_for_checkpointing(self.ema)
        self.quantized = is_rvq(model)
        return self.train_set, collate

    def on_start(self) -> None:
        # the untrained baseline (not for RVQ: its first encode would initialise the codebooks on validation audio)
        if self.step == 0 and self.accelerator.is_main_process and not self.quantized:
            self.log(evaluate(self.unwrap(self.model), self.valid_audio, self.sample_rate))

    def train_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        audio = batch["audio"].to(self.accelerator.device)
        adversarial = self.step >= self.config.optim.discriminator_start
        noise = self.example_generators("noise", len(audio), self.accelerator.device)
        model, discriminator = self.model, self.discriminator

        reconstruction, posterior = self.reconstruction(audio, noise)
        # the generator's adversarial terms go through the unwrapped discriminator and only reach the generator's
        # weights (`inputs=`): the discriminator's gradients come from its own loss alone
        critic = self.unwrap(discriminator)
        real = critic(audio) if adversarial else None
        fake = critic(reconstruction) if adversarial else None
        terms = self.loss_fn(audio, reconstruction, posterior, real, fake)
        if self.quantized:  # already weighted by the codec's commitment_weight
            terms["commitment"] = posterior.commitment_loss
            terms["total"] = terms["total"] + posterior.commitment_loss
        generator_weights = list(model.parameters())
        self.optimize(terms["total"], self.opt_g, generator_weights, self.sched_g, inputs=generator_weights)
        logs: dict[str, Any] = {f"loss/{name}": value.detach() for name, value in terms.items()}
        if self.quantized:  # running codebook usage (EMA counts, cheap): perplexity, dead codes
            logs.update(self.unwrap(model).codebook_usage().as_logs("codebook"))

        if adversarial:  # real and reconstructed audio in one pass (DDP expects one forward per backward)
            judged = discriminator(torch.cat([audio, reconstruction.detach()]))
            d_loss = hinge_discriminator_loss(*split_batch(judged, len(audio)))
            self.optimize(d_loss, self.opt_d, discriminator.parameters())
            logs["loss/discriminator"] = d_loss.detach()
        return logs

    def after_step(self) -> None:
        self.ema.step(self.unwrap(self.model).parameters())

    def evaluate(self) -> dict[str, float]:
        return evaluate(self.unwrap(self.model), self.valid_audio, self.sample_rate)

    def sample(self) -> None:
        if len(self.valid_audio):
            log_reconstructions(
                self.accelerator, self.unwrap(self.model), self.valid_audio, self.step, self.output_dir
            )

    def save(self) -> Path:
        # RVQ codebooks are buffers the EMA does not average: an EMA encoder would not match them, so a codec
        # ships its live weights
        live = self.unwrap(self.model)
        final = fresh_copy(live).eval() if self.quantized else ema_copy(live, self.ema)
        if self.accelerator.is_main_process and isinstance(final, AudioAutoencoder) and not self.quantized:
            train_set = self.train_set
            scaling_batches = (train_set[i]["audio"].unsqueeze(0) for i in range(min(len(train_set), 32)))
            compute_latent_statistics(final, scaling_batches)
        return self.save_pipeline(final, "autoencoder")


def train_autoencoder(config: AutoencoderTrainingConfig | DictConfig) -> Path:
    """Train an autoencoder.

    Args:
        config: The recipe's configuration (see `AutoencoderTrainingConfig`).

    Returns:
        The folder of the final model (`<output_dir>/autoencoder`).
    """
    if isinstance(config, AutoencoderTrainingConfig):
        config = OmegaConf.structured(config)
    return AutoencoderTrainer(config).fit()


def is_rvq(model) -> bool:
    """Whether `model` is a residual-VQ codec (the token-LM branch's tokenizer)."""
    return isinstance(model, AudioAutoencoder) and model.is_codec


def fresh_copy(model):
    """A copy of `model` rebuilt from its config (deepcopy fails on modules with old-style weight norm, such as
    diffusers' `AutoencoderOobleck`)."""
    copied = type(model).from_config(model.config)
    copied.load_state_dict(model.state_dict())
    return copied.to(model.device)


def ema_copy(model, ema: EMAModel):
    """A copy of `model` holding the EMA weights, in eval mode."""
    final = fresh_copy(model)
    ema.copy_to(final.parameters())
    return final.eval()


@torch.no_grad()
def evaluate(model, valid_audio: torch.Tensor, sample_rate: int) -> dict[str, float]:
    """Reconstruction metrics (posterior mode) on the fixed held-out clips."""
    if len(valid_audio) == 0:
        return {}
    was_training = model.training
    model.eval()
    audio = valid_audio.to(model.device)
    reconstruction, _ = vae_utils.reconstruct(model, audio)
    metrics = reconstruction_metrics(audio, reconstruction, sample_rate)
    if is_rvq(model):  # how the held-out clips use the codebooks
        metrics.update(model.codebook_usage(model.encode_codes(audio)).as_logs("codebook"))
    model.train(was_training)
    return {f"valid/{k}": v for k, v in metrics.items()}


@torch.no_grad()
def log_reconstructions(accelerator, model, valid_audio: torch.Tensor, step: int, output_dir: Path) -> None:
    was_training = model.training
    model.eval()
    audio = valid_audio[:1].to(model.device)
    reconstruction, _ = vae_utils.reconstruct(model, audio)
    model.train(was_training)
    log_audio_samples(
        accelerator, step, {"input": audio[0], "reconstruction": reconstruction[0]}, sample_rate_of(model), output_dir
    )
