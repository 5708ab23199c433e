"""Training the MusicGen-style token LM over a frozen RVQ codec's codes (used by `recipes/train_token_lm.py`).

The data set is tokenised once with the frozen codec (`encode_codes`) into a code cache on disk, reused by
later runs: a `write_latent_cache` folder whose "latents" are the integer codes stored as float32 (exact up to
2**24), read back with `LatentDataset` and rounded to long. `TokenLM` then learns next-token cross-entropy on
crops of the codes given their captions, with captions dropped for classifier-free guidance. There is no EMA:
the final pipeline uses the trained weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from ..data.dataset import LatentDataset, collate, encode_folder
from ..models import AudioAutoencoder
from ..models.token_lm import TokenLM
from ..pipelines.common import encode_text
from ..pipelines.pipeline_token_music import TokenMusicPipeline
from .media import log_audio_samples
from .runner import OptimConfig, Run, RunConfig, StepBatches, make_accelerator, warmup_schedule
from .text_conditioning import TextEncoderConfig, caption_gap_losses, make_optimizer, prepare_text_encoder, text_width


@dataclass
class TokenLMDataConfig:
    root: str = "data/corpus"  # folder with metadata.jsonl (the rendered corpus or your own)
    code_cache: str = ""  # where the codec's codes are kept ("" = <output_dir>/codes); reused if present
    segment_seconds: float = 4.0  # training window
    batch_size: int = 8
    caption_dropout: float = 0.1  # probability of an empty caption, for classifier-free guidance
    num_workers: int = 0


@dataclass
class TokenSampleConfig:
    prompts: list[str] = field(default_factory=lambda: ["a Bach chorale played by a string ensemble"])
    seconds: float = 4.0
    guidance_scale: float = 3.0
    top_k: int = 250


@dataclass
class TokenLMTrainingConfig:
    codec: str = ""  # folder of the trained RVQ codec (AudioAutoencoder with bottleneck="rvq") — required
    data: TokenLMDataConfig = field(default_factory=TokenLMDataConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    lm: dict[str, Any] = field(default_factory=dict)  # TokenLM arguments (codebook_size etc. are filled in)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="outputs/token-lm"))
    sample: TokenSampleConfig = field(default_factory=TokenSampleConfig)
    valid_batches: int = 2  # validation batches (fixed crops) per evaluation


def load_codec(folder: str | Path) -> AudioAutoencoder:
    """A saved `AudioAutoencoder` with an RVQ bottleneck, frozen and in eval mode.

    Args:
        folder: The codec's `save_pretrained` folder.
    """
    codec = AudioAutoencoder.from_pretrained(folder)
    if codec.config.bottleneck != "rvq":
        raise ValueError(
            f"codec={folder} has a {codec.config.bottleneck!r} bottleneck; the token LM needs discrete codes: "
            "train an autoencoder with model.bottleneck=rvq (see recipes/configs/autoencoder/tiny-rvq.yaml)"
        )
    return codec.eval().requires_grad_(False)


def encode_code_cache(codec: AudioAutoencoder, root: str | Path, cache: str | Path, progress: bool = True) -> Path:
    """Tokenise every clip of an audio folder with the codec into a code cache (codes stored as float32).

    Clips already in the cache are skipped, so an interrupted encoding resumes and a second run with the same
    codec reuses the cache.

    Args:
        codec: The frozen RVQ codec.
        root: Folder with `metadata.jsonl` and the audio it names.
        cache: The cache folder (created if needed).
        progress: Show a progress bar.

    Returns:
        The cache folder.
    """

    def encode(audio: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return codec.encode_codes(audio.unsqueeze(0).to(codec.device, codec.dtype))[0].float().cpu()

    config = codec.config
    return encode_folder(
        root,
        cache,
        encode,
        config.sample_rate,
        config.audio_channels,
        codec.latent_rate,
        progress=progress,
        desc="encoding codes",
    )


def masked_lm_loss(
    lm: TokenLM, codes: torch.Tensor, frame_mask: torch.Tensor, text: Any, model: torch.nn.Module | None = None
) -> torch.Tensor:
    """`TokenLM.loss` over the real frames only (crops of short clips are zero-padded).

    Args:
        lm: The token LM (unwrapped: its pattern and special token are read).
        codes: `(batch, num_codebooks, frames)` long codes.
        frame_mask: `(batch, frames)` bool, True for real frames.
        text: Encoded captions (`hidden_states`, `attention_mask`).
        model: What runs the forward pass (`lm` wrapped for distributed training); `None` uses `lm`.
    """
    pattern = lm.pattern
    sequence = pattern.build(codes, lm.special_token)
    logits = (model or lm)(lm.shift_right(sequence), text.hidden_states, text.attention_mask).logits
    # the same layout applied to the frame mask marks the sequence positions that hold real codes
    real = pattern.build(frame_mask.long()[:, None].expand_as(codes).contiguous(), 0) == 1
    return F.cross_entropy(logits[real].float(), sequence[real])


def train_token_lm(config: TokenLMTrainingConfig | DictConfig) -> Path:
    """Train the token LM on a frozen codec's codes and save the whole pipeline.

    Args:
        config: The recipe's configuration (see `TokenLMTrainingConfig`).

    Returns:
        The folder of the saved `TokenMusicPipeline` (`<output_dir>/pipeline`).
    """
    if isinstance(config, TokenLMTrainingConfig):
        config = OmegaConf.structured(config)
    if not config.codec:
        raise ValueError("codec= is required: the folder of a trained RVQ codec (see recipes/train_autoencoder.py)")
    run_cfg = config.run
    accelerator = make_accelerator(run_cfg, config, "latentmusic-token-lm")
    output_dir = Path(run_cfg.output_dir)

    # Frozen codec and the code cache
    codec = load_codec(config.codec).to(accelerator.device)
    cache = Path(config.data.code_cache or output_dir / "codes")
    with accelerator.main_process_first():
        if accelerator.is_main_process:
            encode_code_cache(codec, config.data.root, cache, progress=run_cfg.progress_bar)
    segment_frames = max(1, round(config.data.segment_seconds * codec.latent_rate))
    common = dict(segment_frames=segment_frames, channels=codec.config.num_quantizers, seed=run_cfg.seed)
    train_set = LatentDataset(cache, split="train", caption_dropout=config.data.caption_dropout, **common)
    valid_set = LatentDataset(cache, split="valid", random_crop=False, caption_choice="first", **common)

    tokenizer, text_encoder = prepare_text_encoder(config.text_encoder, config.data.root)

    lm = TokenLM(
        **{
            "num_codebooks": codec.config.num_quantizers,
            **OmegaConf.to_container(config.lm),
            "codebook_size": codec.config.codebook_size,
            "cross_attention_dim": text_width(text_encoder),
        }
    )
    num_codebooks = lm.config.num_codebooks
    TokenMusicPipeline(codec=codec, text_encoder=None, tokenizer=None, lm=lm)  # fails early if the LM does not fit
    optimizer = make_optimizer(lm, text_encoder, config.text_encoder, config.optim)
    lr_schedule = warmup_schedule(optimizer, config.optim.warmup_steps)
    lm, text_encoder, optimizer, lr_schedule = accelerator.prepare(lm, text_encoder, optimizer, lr_schedule)

    run = Run(accelerator, run_cfg)
    start = run.resume()
    batches = StepBatches(train_set, config.data.batch_size, run_cfg.seed, config.data.num_workers, collate).from_step(
        start
    )

    def lm_loss(batch: dict[str, Any], captions: list[str]) -> torch.Tensor:
        codes = batch["latents"][:, :num_codebooks].round().long().to(accelerator.device)
        text = encode_text(tokenizer, text_encoder, captions, accelerator.device, config.text_encoder.max_length)
        mask = batch["padding_mask"].to(accelerator.device)
        return masked_lm_loss(accelerator.unwrap_model(lm), codes, mask, text, model=lm)

    run.start_progress()
    lm.train()
    while not run.done:
        batch = next(batches)
        run.seed_step()
        with accelerator.accumulate(lm):
            loss = lm_loss(batch, batch["caption"])
            accelerator.backward(loss)
            if config.optim.grad_clip > 0 and accelerator.sync_gradients:
                accelerator.clip_grad_norm_(lm.parameters(), config.optim.grad_clip)
            optimizer.step()
            lr_schedule.step()
            optimizer.zero_grad(set_to_none=True)
        logs = {"loss": loss.item(), "lr": lr_schedule.get_last_lr()[0]}
        if run.evaluating:
            lm.eval()
            logs.update(
                caption_gap_losses(
                    lambda batch, captions, i: lm_loss(batch, captions),
                    valid_set,
                    config.data.batch_size,
                    config.valid_batches,
                )
            )
            lm.train()
        run.end_step(logs)
        if run.due(run_cfg.sample_every) and accelerator.is_main_process:
            pipe = make_pipeline(codec, text_encoder, tokenizer, accelerator.unwrap_model(lm))
            log_samples(pipe, accelerator, run.step, config.sample, output_dir)
            lm.train()

    pipe = make_pipeline(codec, text_encoder, tokenizer, accelerator.unwrap_model(lm))
    folder = output_dir / "pipeline"
    if accelerator.is_main_process:
        pipe.save_pretrained(folder)
    run.finish()
    return folder


def make_pipeline(codec: AudioAutoencoder, text_encoder: Any, tokenizer: Any, lm: TokenLM) -> TokenMusicPipeline:
    """The pipeline of the trained components, in eval mode.

    Args:
        codec: The frozen codec.
        text_encoder: The text encoder.
        tokenizer: Its tokenizer.
        lm: The trained LM (unwrapped).
    """
    pipe = TokenMusicPipeline(codec=codec, text_encoder=text_encoder.eval(), tokenizer=tokenizer, lm=lm.eval())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def log_samples(pipe: TokenMusicPipeline, accelerator: Any, step: int, sample: Any, output_dir: Path) -> None:
    """Generate the sample prompts and log them with spectrograms.

    Args:
        pipe: The current pipeline.
        accelerator: The run's `Accelerator`.
        step: The training step.
        sample: The `sample` section of the config.
        output_dir: The run's folder.
    """
    audios = pipe(
        list(sample.prompts),
        audio_length_in_s=sample.seconds,
        guidance_scale=sample.guidance_scale,
        top_k=sample.top_k,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).audios
    named = {f"prompt{i}": audio for i, audio in enumerate(audios)}
    log_audio_samples(accelerator, step, named, pipe.sample_rate, output_dir)
