"""Training the text-conditioned latent diffusion U-Net (used by `recipes/train_diffusion.py`).

The data set is encoded to latents once with the frozen autoencoder (cached on disk and reused), then the
U-Net learns to denoise latent crops given their captions. Captions are dropped with a probability for
classifier-free guidance. An EMA of the U-Net is kept and is what samples and the final pipeline use.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import EMAModel
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from ..data.datasets import LatentDataset, collate
from ..data.latent_cache import encode_folder
from ..melody import PITCH_CLASSES, melody_chroma
from ..models import UNet1DConditionModel, conditioning, vae_utils
from ..pipelines.common import encode_text
from ..pipelines.pipeline_latent_music import LatentMusicPipeline
from .lora import LoraTrainingConfig, add_lora_adapter, save_lora_outputs
from .objectives import OBJECTIVES, draw, make_training_scheduler, noise_batch, sample_keep_masks, weighted_mse
from .optimizer import make_optimizer
from .runner import OptimConfig, RunConfig, SampleConfig, Trainer, make_lr_scheduler
from .text_conditioning import (
    TextEncoderConfig,
    check_prompt_length,
    load_text_encoder,
    pipeline_folder,
    prepare_text_encoder,
    text_width,
)
from .validation import caption_gap_losses


@dataclass
class DiffusionDataConfig:
    root: str = "data/corpus"  # folder with metadata.jsonl (the rendered corpus or your own)
    latent_cache: str = ""  # where encoded latents are kept ("" = <output_dir>/latents); reused if present
    segment_seconds: float = 4.0  # training window; also the longest clip the U-Net's timing embedding covers
    batch_size: int = 8
    caption_dropout: float = 0.1  # probability of an empty caption, for classifier-free guidance
    # crops start on a beat (the metadata's bpm; see LatentDataset's beat_aligned), so the caption's tempo tells the
    # model where the notes fall even at high noise; from any position, tempo barely lowers the loss
    beat_aligned_crops: bool = False
    num_workers: int = 0


@dataclass
class DiffusionObjectiveConfig:
    objective: str = "v_prediction"  # "epsilon", "v_prediction" or "flow"
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"  # "linear", "scaled_linear" or "squaredcos_cap_v2" (betas 0.00085→0.012)
    snr_gamma: float = 5.0  # min-SNR-γ loss weighting (0 = plain MSE); not used by "flow"
    # "flow" only: the training noise levels, sigmoid(N(flow_logit_mean, flow_logit_std)) as SD3 trains (diffusers'
    # compute_density_for_timestep_sampling); a positive mean trains the high noise levels more, where the demo's
    # held-out loss depends on the caption's key most (docs/model-card.md); flow_logit_std = 0: uniform in [0, 1]
    flow_logit_mean: float = 0.0
    flow_logit_std: float = 0.0
    # guidance distillation (Meng et al., 2023; FLUX-dev's and the turbo models' few-step path): > 1 trains the U-Net
    # to predict, in one unguided pass, what the model it starts from (init_from, kept frozen as the teacher)
    # predicts with classifier-free guidance at this scale; sample the result with guidance_scale=1, half the
    # U-Net work per step. 0 = off (the data's own target). Needs init_from and a frozen text encoder.
    distill_guidance_scale: float = 0.0


@dataclass
class MaskingConfig:
    """JEN-1's omnidirectional training: per example, a task is drawn with these weights. With any weight on
    continuation or inpainting the U-Net gets a mask channel and the masked clean latents as extra inputs, and
    the pipeline uses them for continuation, inpainting and long-form generation."""

    generation: float = 1.0  # nothing kept
    continuation: float = 0.0  # a prefix kept
    inpainting: float = 0.0  # a middle span removed

    @staticmethod
    def enabled(config) -> bool:
        return config.continuation > 0 or config.inpainting > 0


@dataclass
class MelodyConfig:
    """MusicGen-style melody conditioning: the dominant pitch class per latent frame of each training clip (12
    extra U-Net input channels, stored with the latents in the cache), dropped for some examples so the model
    also works without a melody."""

    enabled: bool = False
    dropout: float = 0.5  # probability of training an example without its melody


@dataclass
class BeatConfig:
    """Beat-grid conditioning, a rhythm control: each training crop gets the phase of its clip's quarter-note pulse
    (the metadata's `bpm`, from the clip's first note, where the rendered corpus starts; 2 extra U-Net input
    channels, `latentmusic.models.conditioning.beat_grid`), dropped for some examples so the model also works
    without; the pipeline takes it as `bpm=`. With `init_from` a U-Net without it gets the 2 input channels added,
    zero-initialised, so it starts as it was."""

    enabled: bool = False
    dropout: float = 0.3  # probability of training an example without its beat grid


@dataclass
class DiffusionSampleConfig(SampleConfig):
    steps: int = 25


@dataclass
class DiffusionTrainingConfig:
    vae: str = ""  # folder of the trained autoencoder (AudioAutoencoder or AutoencoderOobleck) — required
    # fine-tuning: a LatentMusicPipeline folder or shipped name ("latentmusic/demo") whose U-Net, text encoder and
    # tokenizer the run starts from (then `unet` and the text encoder's size are taken from it); "" = from scratch
    init_from: str = ""
    data: DiffusionDataConfig = field(default_factory=DiffusionDataConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    unet: dict[str, Any] = field(
        default_factory=dict
    )  # UNet1DConditionModel arguments (in_channels etc. are filled in)
    diffusion: DiffusionObjectiveConfig = field(default_factory=DiffusionObjectiveConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    melody: MelodyConfig = field(default_factory=MelodyConfig)
    beat: BeatConfig = field(default_factory=BeatConfig)
    lora: LoraTrainingConfig = field(default_factory=LoraTrainingConfig)  # rank > 0: train only a LoRA adapter
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/diffusion"))
    sample: DiffusionSampleConfig = field(default_factory=DiffusionSampleConfig)
    valid_batches: int = 2  # validation batches (fixed crops, fixed noise) per evaluation


def encode_latent_cache(vae, root: str | Path, cache: str | Path, progress: bool = True, melody: bool = False) -> Path:
    """Encode every clip of an audio folder with the autoencoder (posterior mode) into a latent cache.

    Clips already in the cache are skipped, so an interrupted encoding resumes and a second run with the
    same autoencoder reuses the cache. With `melody`, each clip's melody chromagram (12 channels, one-hot
    dominant pitch class per latent frame) is stored beside its latents as `melody_chroma`.
    """
    sample_rate = vae_utils.vae_sample_rate(vae)

    def encode(audio: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            latents = vae.encode(audio.unsqueeze(0).to(vae.device, vae.dtype)).latent_dist.mode()[0].float().cpu()
        if melody:
            chroma = melody_chroma(audio, sample_rate, latents.shape[-1])
            return {"latents": latents, conditioning.MELODY_CHROMA: chroma}
        return {"latents": latents}

    return encode_folder(
        root,
        cache,
        encode,
        sample_rate,
        vae_utils.vae_audio_channels(vae),
        latent_rate=sample_rate / vae_utils.vae_hop_length(vae),
        scaling_factor=vae_utils.vae_scaling_factor(vae),
        progress=progress,
        desc="encoding latents",
    )


class DiffusionTrainer(Trainer):
    """The diffusion recipe on the shared loop: a frozen autoencoder's latent cache, the U-Net (and optionally the
    text encoder) trained to denoise, an EMA of the U-Net for samples and the final pipeline."""

    def __init__(self, config: DictConfig) -> None:
        if not config.vae:
            raise ValueError(
                "vae= is required: the folder of a trained autoencoder (see recipes/train_autoencoder.py)"
            )
        if config.diffusion.objective not in OBJECTIVES:
            raise ValueError(f"diffusion.objective must be one of {OBJECTIVES}, got {config.diffusion.objective!r}")
        if not config.init_from:  # before the latent cache is encoded (a fine-tuning run brings its own encoder)
            check_prompt_length(config.text_encoder)
        check_distillation(config)
        super().__init__(config, "latentmusic-diffusion")

    def build(self) -> tuple[Dataset, Any]:
        config, accelerator = self.config, self.accelerator
        # Frozen autoencoder and the latent cache
        self.vae = vae = vae_utils.load_vae(config.vae).to(accelerator.device).eval().requires_grad_(False)
        self.with_melody = with_melody = bool(config.melody.enabled)
        cache = Path(config.data.latent_cache or self.output_dir / ("latents-melody" if with_melody else "latents"))
        with accelerator.main_process_first():
            if accelerator.is_main_process:
                encode_latent_cache(
                    vae, config.data.root, cache, progress=self.run_config.progress_bar, melody=with_melody
                )
        self.latent_rate = vae_utils.vae_sample_rate(vae) / vae_utils.vae_hop_length(vae)
        segment_frames = max(1, round(config.data.segment_seconds * self.latent_rate))
        self.latent_channels = latent_channels = vae_utils.vae_latent_channels(vae)
        cached = {"latents": latent_channels, **({conditioning.MELODY_CHROMA: PITCH_CLASSES} if with_melody else {})}
        common = dict(segment_frames=segment_frames, channels=cached, seed=self.run_config.seed)
        train_set = LatentDataset(
            cache,
            split="train",
            caption_dropout=config.data.caption_dropout,
            beat_aligned=config.data.beat_aligned_crops,
            **common,
        )
        self.valid_set = LatentDataset(cache, split="valid", random_crop=False, caption_choice="first", **common)

        # the U-Net's named conditioning inputs, which the pipeline reads from its config
        self.with_beat = bool(config.beat.enabled)
        if self.with_beat:
            train_set.require_bpm("beat grids", "beat.enabled=false")
        self.conditioning_inputs = inputs = conditioning.conditioning_inputs(
            latent_channels, masking=MaskingConfig.enabled(config.masking), melody=with_melody, beat=self.with_beat
        )
        if config.init_from:
            tokenizer, text_encoder, unet = load_initial_components(config.init_from, latent_channels, inputs)
            self.conditioning_inputs = conditioning.ordered(unet.config.conditioning_inputs or {})
            text_encoder.requires_grad_(bool(config.text_encoder.train))
        else:
            tokenizer, text_encoder = prepare_text_encoder(config.text_encoder, config.data.root)
            unet = UNet1DConditionModel(
                **{
                    **OmegaConf.to_container(config.unet),
                    "in_channels": latent_channels,
                    "cross_attention_dim": text_width(text_encoder),
                    "use_timing_conditioning": True,
                    "conditioning_inputs": inputs,
                    "max_seconds": config.data.segment_seconds,
                }
            )
        self.tokenizer = tokenizer
        # the teacher of guidance distillation: the starting U-Net as it is, before any adapter (a copy: it must not
        # follow the student's updates)
        self.teacher = None
        if config.diffusion.distill_guidance_scale:
            self.teacher = copy.deepcopy(unet).requires_grad_(False).eval().to(accelerator.device)
        unet = self.adapt_model(unet)
        self.train_scheduler = make_training_scheduler(
            config.diffusion.objective, config.diffusion.num_train_timesteps, config.diffusion.beta_schedule
        )
        optimizer = make_optimizer(unet, text_encoder, config.text_encoder, config.optim)
        lr_schedule = make_lr_scheduler(optimizer, config.optim, self.run_config.max_steps)
        self.ema = EMAModel(
            unet.parameters(), decay=config.optim.ema_decay, model_cls=UNet1DConditionModel, model_config=unet.config
        )
        self.unet, self.text_encoder, self.optimizer, self.lr_schedule = self.prepare(
            unet, text_encoder, optimizer, lr_schedule
        )
        self.lr_schedulers = {"lr": self.lr_schedule}
        self.ema.to(accelerator.device)
        accelerator.register_for_checkpointing(self.ema)
        return train_set, collate

    def denoise_loss(
        self,
        batch: dict[str, Any],
        noise: torch.Generator | list[torch.Generator],
        captions: list[str],
        tasks: torch.Generator | list[torch.Generator] | None = None,
        distill: bool = False,
    ) -> torch.Tensor:
        """The training loss; without `tasks` (the generators of the masks and melody dropout) every example is
        plain generation (nothing kept, no melody). With `distill` the target is the teacher's guided prediction
        (`diffusion.distill_guidance_scale`) instead of the data's; validation keeps the data's, so held-out losses
        and caption gaps stay comparable with other runs."""
        config, device = self.config, self.accelerator.device
        latents = vae_utils.scale_latents(self.vae, batch["latents"].to(device))
        text = encode_text(self.tokenizer, self.text_encoder, captions, device, config.text_encoder.max_length)
        noised = noise_batch(
            self.train_scheduler,
            latents,
            noise,
            config.diffusion.snr_gamma or None,
            flow_logit_normal=(config.diffusion.flow_logit_mean, config.diffusion.flow_logit_std),
        )
        lengths = batch["padding_mask"].sum(-1)
        seconds_total = lengths.to(device) / self.latent_rate
        loss_mask = batch["padding_mask"].to(device)[:, None]
        keep = chroma = None
        if MaskingConfig.enabled(config.masking):
            probabilities = (config.masking.generation, config.masking.continuation, config.masking.inpainting)
            if tasks is None:
                keep = torch.zeros_like(latents[:, :1])
            else:
                keep = sample_keep_masks(lengths, latents.shape[-1], probabilities, tasks).to(latents)
            loss_mask = loss_mask * (1 - keep)  # learn what is generated; kept frames are given
        if self.with_melody:  # dropped for some examples (and in validation, which measures the text's effect)
            if tasks is None:
                kept = torch.zeros(len(latents), 1, 1)
            else:
                kept = draw(tasks, len(latents), lambda n, g: torch.rand(n, generator=g)) >= config.melody.dropout
            chroma = batch[conditioning.MELODY_CHROMA].to(device) * kept.view(-1, 1, 1).to(latents)
        beat = None
        if self.with_beat and tasks is not None:  # validation, like the melody, goes without
            bpm = torch.tensor([float(record["bpm"]) for record in batch["metadata"]])
            grid = conditioning.beat_grid(bpm, latents.shape[-1], self.latent_rate, batch["crop_start_seconds"])
            kept = draw(tasks, len(latents), lambda n, g: torch.rand(n, generator=g)) >= config.beat.dropout
            beat = (grid * kept.view(-1, 1, 1)).to(latents)
        extra = conditioning.build_conditioning(
            self.conditioning_inputs, noised.noisy, keep=keep, known=latents, melody=chroma, beat=beat
        )
        model_input = noised.noisy if extra is None else torch.cat([noised.noisy, extra], dim=1)
        timing = conditioning.timing_conditioning(seconds_total)
        if distill:
            noised.target = self.guided_teacher_prediction(model_input, noised.timesteps, captions, seconds_total)
        prediction = self.unet(
            model_input,
            noised.timesteps,
            encoder_hidden_states=text.hidden_states,
            encoder_attention_mask=text.attention_mask,
            **timing,
        ).sample
        return weighted_mse(prediction, noised, loss_mask)

    @torch.no_grad()
    def guided_teacher_prediction(
        self, model_input: torch.Tensor, timesteps: torch.Tensor, captions: list[str], seconds_total: torch.Tensor
    ) -> torch.Tensor:
        """The teacher's classifier-free-guided prediction, as `LatentMusicPipeline` samples it: the empty caption
        (what caption dropout trains) and the caption in one batch, `uncond + scale * (cond - uncond)`."""
        config, device = self.config, self.accelerator.device
        text = encode_text(
            self.tokenizer,
            self.text_encoder,
            [""] * len(captions) + list(captions),
            device,
            config.text_encoder.max_length,
        )
        both = self.teacher(
            torch.cat([model_input] * 2),
            torch.cat([timesteps] * 2),
            encoder_hidden_states=text.hidden_states,
            encoder_attention_mask=text.attention_mask,
            **conditioning.timing_conditioning(torch.cat([seconds_total] * 2)),
        ).sample
        uncond, cond = both.chunk(2)
        return uncond + config.diffusion.distill_guidance_scale * (cond - uncond)

    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        size = len(batch["caption"])
        noise = self.example_generators("noise", size, self.accelerator.device)
        tasks = self.example_generators("tasks", size)
        loss = self.denoise_loss(batch, noise, batch["caption"], tasks, distill=self.teacher is not None)
        self.optimize(loss, self.optimizer, self.unet.parameters(), self.lr_schedule)
        return {"loss": loss.detach()}

    def after_step(self) -> None:
        self.ema.step(self.unwrap(self.unet).parameters())

    def evaluate(self) -> dict[str, float]:
        self.unet.eval()
        device, seed = self.accelerator.device, self.run_config.seed
        # generation only (nothing kept, no melody), the same noise for right and shuffled captions
        return caption_gap_losses(
            lambda batch, captions, i: self.denoise_loss(
                batch, torch.Generator(device).manual_seed(seed + i), captions
            ),
            self.valid_set,
            self.config.data.batch_size,
            self.config.valid_batches,
        )

    def pipeline(self) -> LatentMusicPipeline:
        return make_pipeline(
            self.vae, self.text_encoder, self.tokenizer, self.unwrap(self.unet), self.ema, self.train_scheduler
        )

    def sample(self) -> None:
        self.log_prompt_samples(self.pipeline(), num_inference_steps=self.config.sample.steps)

    def adapt_model(self, model: torch.nn.Module) -> torch.nn.Module:
        # with lora.rank > 0 only a LoRA adapter of the U-Net trains (the optimiser takes only trainable weights)
        self.with_lora = add_lora_adapter(model, self.config.lora, bool(self.config.text_encoder.train))
        return model

    def save(self) -> Path:
        pipe = self.pipeline()
        if self.with_lora:
            return save_lora_outputs(pipe, self.config.lora, self.output_dir, self.accelerator.is_main_process)
        return self.save_pipeline(pipe)


def check_distillation(config: DictConfig) -> None:
    """Refuse a guidance-distillation setting that cannot work, naming the fix.

    Raises:
        ValueError: For a scale other than 0 that is not above 1, without `init_from`, or with a trained text
            encoder (the teacher reads the same text states, which must not drift from the ones it learned).
    """
    scale = config.diffusion.distill_guidance_scale
    if not scale:
        return
    if scale <= 1:
        raise ValueError(
            f"diffusion.distill_guidance_scale={scale}: the guidance scale to distil must be above 1 (1 is no "
            "guidance: the student would copy its teacher); use e.g. 3, the scale you sample with, or 0 for off"
        )
    if not config.init_from:
        raise ValueError(
            "diffusion.distill_guidance_scale needs init_from=: the trained pipeline to distil (the teacher, and "
            "where the student starts)"
        )
    if config.text_encoder.train:
        raise ValueError(
            "diffusion.distill_guidance_scale with text_encoder.train=true: the teacher reads the same text "
            "encoder, which must stay as it learned it; set text_encoder.train=false"
        )


def train_diffusion(config: DiffusionTrainingConfig | DictConfig) -> Path:
    """Train the latent diffusion U-Net and save the whole pipeline.

    Args:
        config: The recipe's configuration (see `DiffusionTrainingConfig`).

    Returns:
        The folder of the saved `LatentMusicPipeline` (`<output_dir>/pipeline`), or with `lora.rank > 0` that of
        the saved adapter (`<output_dir>/lora`).
    """
    if isinstance(config, DiffusionTrainingConfig):
        config = OmegaConf.structured(config)
    return DiffusionTrainer(config).fit()


def add_conditioning_inputs(unet: UNet1DConditionModel, inputs: dict[str, int]) -> UNet1DConditionModel:
    """The U-Net with more conditioning inputs after its own, their input weights zero: it computes what it did
    for any values of the new channels, and learns to use them (as diffusers' inpainting fine-tunes widen
    `conv_in`).

    Args:
        unet: The U-Net.
        inputs: The inputs wanted; the U-Net's own must be their first ones, in order.

    Returns:
        A new U-Net (or `unet` itself when it already takes exactly `inputs`).
    """
    own, inputs = conditioning.ordered(unet.config.conditioning_inputs or {}), conditioning.ordered(inputs)
    if own == inputs:
        return unet
    if list(inputs.items())[: len(own)] != list(own.items()):
        raise ValueError(f"the U-Net's conditioning inputs {own} are not the first of {inputs}: cannot add to them")
    wider = UNet1DConditionModel.from_config({**unet.config, "conditioning_inputs": inputs})
    state = unet.state_dict()
    weight = state["conv_in.weight"]
    grown = weight.new_zeros(weight.shape[0], wider.conv_in.in_channels, weight.shape[2])
    grown[:, : weight.shape[1]] = weight
    wider.load_state_dict({**state, "conv_in.weight": grown})
    return wider


def load_initial_components(
    name_or_folder: str | Path, latent_channels: int, conditioning_inputs: dict[str, int]
) -> tuple[Any, torch.nn.Module, UNet1DConditionModel]:
    """The tokenizer, text encoder and U-Net of a saved pipeline, to fine-tune; checked against the run's layout.

    Args:
        name_or_folder: A `LatentMusicPipeline` folder or a shipped checkpoint's name.
        latent_channels: Latent channels of the run's autoencoder.
        conditioning_inputs: The conditioning inputs the run's masking and melody settings give the U-Net.

    Returns:
        A tuple of the tokenizer, the text encoder and the U-Net.

    Raises:
        FileNotFoundError: If it is not a pipeline folder.
        ValueError: If its U-Net does not fit the run's autoencoder or masking/melody settings.
    """
    folder = pipeline_folder(name_or_folder)
    tokenizer, text_encoder = load_text_encoder(folder / "text_encoder", folder / "tokenizer")
    unet = UNet1DConditionModel.from_pretrained(folder / "unet")
    found = (unet.config.in_channels, dict(unet.config.conditioning_inputs or {}))

    def without_grid(inputs: dict[str, int]) -> dict[str, int]:
        return {name: width for name, width in inputs.items() if name != conditioning.BEAT_GRID}

    if found[0] != latent_channels or without_grid(found[1]) != without_grid(conditioning_inputs):
        raise ValueError(
            f"init_from={name_or_folder}: its U-Net takes {found[0]} latent channels and the conditioning channels "
            f"{found[1]}, but this run gives {latent_channels} and {conditioning_inputs}; use the autoencoder it was "
            "trained on (vae=) and its masking and melody settings"
        )
    # the beat grid alone may differ: a run with one adds it to a U-Net without (zero-initialised), and a U-Net with
    # one fine-tunes on data without tempos, its grid input always empty (as for the examples beat.dropout leaves
    # without one)
    return tokenizer, text_encoder, add_conditioning_inputs(unet, {**found[1], **conditioning_inputs})


def make_pipeline(vae, text_encoder, tokenizer, unet, ema: EMAModel, train_scheduler) -> LatentMusicPipeline:
    """A pipeline with the EMA weights and a fast default sampler for the training objective."""
    ema_unet = copy.deepcopy(unet)
    ema.copy_to(ema_unet.parameters())
    if isinstance(train_scheduler, FlowMatchEulerDiscreteScheduler):
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(train_scheduler.config)
    else:
        scheduler = DPMSolverMultistepScheduler.from_config(train_scheduler.config)
    pipe = LatentMusicPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=ema_unet.eval(), scheduler=scheduler
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
