"""Training the MusicGen-style token LM over a frozen RVQ codec's codes (used by `recipes/train_token_lm.py`).

The data set is tokenised once with the frozen codec (`encode_codes`) into a code cache on disk, reused by
later runs: a `write_latent_cache` folder holding each clip's integer `codes`, read back with `LatentDataset`.
`TokenLM` then learns next-token cross-entropy on crops of the codes given their captions, with captions dropped
for classifier-free guidance. There is no EMA: the final pipeline uses the trained weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import repeat
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from ..data.datasets import LatentDataset, collate
from ..data.latent_cache import encode_folder
from ..models import AudioAutoencoder
from ..models.token_lm import TokenLM
from ..pipelines.common import encode_text
from ..pipelines.pipeline_token_music import TokenMusicPipeline
from .optimizer import make_optimizer
from .runner import OptimConfig, RunConfig, SampleConfig, Trainer, make_lr_scheduler
from .text_conditioning import TextEncoderConfig, check_prompt_length, prepare_text_encoder, text_width
from .validation import caption_gap_losses


@dataclass
class TokenLMDataConfig:
    root: str = "data/corpus"  # folder with metadata.jsonl (the rendered corpus or your own)
    code_cache: str = ""  # where the codec's codes are kept ("" = <output_dir>/codes); reused if present
    segment_seconds: float = 4.0  # training window
    batch_size: int = 8
    caption_dropout: float = 0.1  # probability of an empty caption, for classifier-free guidance
    num_workers: int = 0


@dataclass
class TokenSampleConfig(SampleConfig):
    top_k: int = 250


@dataclass
class TokenLMTrainingConfig:
    codec: str = ""  # folder of the trained RVQ codec (AudioAutoencoder with bottleneck_type="rvq") — required
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
    if not codec.is_codec:
        raise ValueError(
            f"codec={folder} has a {codec.config.bottleneck_type!r} bottleneck; the token LM needs discrete codes: "
            "train an autoencoder with model.bottleneck_type=rvq (see recipes/configs/autoencoder/tiny-rvq.yaml)"
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

    def encode(audio: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {"codes": codec.encode_codes(audio.unsqueeze(0).to(codec.device, codec.dtype))[0].long().cpu()}

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
    real = pattern.build(repeat(frame_mask.long(), "b t -> b k t", k=codes.shape[1]), 0) == 1
    return F.cross_entropy(logits[real].float(), sequence[real])


class TokenLMTrainer(Trainer):
    """The token-LM recipe on the shared loop: a frozen codec's code cache, next-token cross-entropy given the
    captions, no EMA (the final pipeline holds the trained weights)."""

    def __init__(self, config: DictConfig) -> None:
        if not config.codec:
            raise ValueError(
                "codec= is required: the folder of a trained RVQ codec (see recipes/train_autoencoder.py)"
            )
        check_prompt_length(config.text_encoder)  # before the code cache is encoded
        super().__init__(config, "latentmusic-token-lm")

    def build(self) -> tuple[Dataset, Any]:
        config, accelerator = self.config, self.accelerator
        # Frozen codec and the code cache
        self.codec = codec = load_codec(config.codec).to(accelerator.device)
        cache = Path(config.data.code_cache or self.output_dir / "codes")
        with accelerator.main_process_first():
            if accelerator.is_main_process:
                encode_code_cache(codec, config.data.root, cache, progress=self.run_config.progress_bar)
        segment_frames = max(1, round(config.data.segment_seconds * codec.latent_rate))
        quantizers = codec.bottleneck.num_quantizers
        channels = {"codes": quantizers}
        common = dict(segment_frames=segment_frames, channels=channels, seed=self.run_config.seed)
        train_set = LatentDataset(cache, split="train", caption_dropout=config.data.caption_dropout, **common)
        self.valid_set = LatentDataset(cache, split="valid", random_crop=False, caption_choice="first", **common)

        self.tokenizer, text_encoder = prepare_text_encoder(config.text_encoder, config.data.root)
        lm = TokenLM(
            **{
                "num_codebooks": quantizers,
                **OmegaConf.to_container(config.lm),
                "codebook_size": codec.bottleneck.codebook_size,
                "cross_attention_dim": text_width(text_encoder),
            }
        )
        lm = self.adapt_model(lm)
        self.num_codebooks = lm.config.num_codebooks
        TokenMusicPipeline(codec=codec, text_encoder=None, tokenizer=None, lm=lm)  # fails early if the LM does not fit
        optimizer = make_optimizer(lm, text_encoder, config.text_encoder, config.optim)
        lr_schedule = make_lr_scheduler(optimizer, config.optim, self.run_config.max_steps)
        self.lm, self.text_encoder, self.optimizer, self.lr_schedule = self.prepare(
            lm, text_encoder, optimizer, lr_schedule
        )
        self.lr_schedulers = {"lr": self.lr_schedule}
        return train_set, collate

    def lm_loss(self, batch: dict[str, Any], captions: list[str]) -> torch.Tensor:
        device = self.accelerator.device
        codes = batch["codes"][:, : self.num_codebooks].to(device)
        text = encode_text(self.tokenizer, self.text_encoder, captions, device, self.config.text_encoder.max_length)
        mask = batch["padding_mask"].to(device)
        return masked_lm_loss(self.unwrap(self.lm), codes, mask, text, model=self.lm)

    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        loss = self.lm_loss(batch, batch["caption"])
        self.optimize(loss, self.optimizer, self.lm.parameters(), self.lr_schedule)
        return {"loss": loss.detach()}

    def evaluate(self) -> dict[str, float]:
        self.lm.eval()
        return caption_gap_losses(
            lambda batch, captions, i: self.lm_loss(batch, captions),
            self.valid_set,
            self.config.data.batch_size,
            self.config.valid_batches,
        )

    def pipeline(self) -> TokenMusicPipeline:
        return make_pipeline(self.codec, self.text_encoder, self.tokenizer, self.unwrap(self.lm))

    def sample(self) -> None:
        self.log_prompt_samples(self.pipeline(), top_k=self.config.sample.top_k)

    def save(self) -> Path:
        return self.save_pipeline(self.pipeline())


def train_token_lm(config: TokenLMTrainingConfig | DictConfig) -> Path:
    """Train the token LM on a frozen codec's codes and save the whole pipeline.

    Args:
        config: The recipe's configuration (see `TokenLMTrainingConfig`).

    Returns:
        The folder of the saved `TokenMusicPipeline` (`<output_dir>/pipeline`).
    """
    if isinstance(config, TokenLMTrainingConfig):
        config = OmegaConf.structured(config)
    return TokenLMTrainer(config).fit()


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
