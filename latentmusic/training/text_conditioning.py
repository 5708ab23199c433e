"""Text conditioning shared by the training recipes that cross-attend to captions (diffusion and token LM):
the text encoder's config, loading or building it, and the pipeline folder a fine-tuning run loads it from.

The optimiser that may train the text encoder with the model is in :mod:`latentmusic.training.optimizer`; the
held-out loss with right against shuffled captions, which shows whether the model listens to the text, in
:mod:`latentmusic.training.validation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from transformers import AutoConfig, AutoModel, AutoTokenizer, ClapModel, ClapTextModel, T5Config, T5EncoderModel

from ..checkpoints import resolve_pretrained
from ..data.index import read_metadata
from .tokenizer import build_caption_tokenizer


@dataclass
class TextEncoderConfig:
    pretrained: str = ""  # local folder with a transformers text encoder and its tokenizer ("" = build one)
    train: bool = False  # train the text encoder with the U-Net (needed for one built from scratch)
    lr_scale: float = 1.0  # its learning rate relative to optim.lr
    max_length: int = 48  # tokens per prompt (longer prompts are truncated with a warning)
    # a T5 encoder built from scratch when `pretrained` is empty (with a tokenizer built from the captions)
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    d_ff: int = 256


def load_text_encoder(folder: str | Path, tokenizer_folder: str | Path | None = None):
    """A local `transformers` text encoder and its tokenizer; the tokenizer is read from `tokenizer_folder` when
    given (a pipeline keeps them in `tokenizer/` and `text_encoder/`).

    T5 loads as its encoder alone and a whole CLAP checkpoint as its text tower (`ClapModel.text_model`); any
    other model (BERT, RoBERTa, a saved `ClapTextModel`, ...) through its own class.
    """
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder or folder, local_files_only=True)
    model_type = AutoConfig.from_pretrained(folder, local_files_only=True).model_type
    if model_type in ("t5", "mt5", "umt5"):
        model = T5EncoderModel.from_pretrained(folder, local_files_only=True)
    elif model_type == "clap":
        model = ClapModel.from_pretrained(folder, local_files_only=True).text_model
    elif model_type == "clap_text_model":
        model = ClapTextModel.from_pretrained(folder, local_files_only=True)
    else:
        model = AutoModel.from_pretrained(folder, local_files_only=True)
    # transformers keeps the saved dtype (the shipped demo's is float16); the recipes train and feed float32 models
    return tokenizer, model.float()


def pipeline_folder(name_or_folder: str | Path) -> Path:
    """The folder of a saved pipeline, or of a shipped checkpoint by name (`"latentmusic/demo"`).

    Raises:
        FileNotFoundError: If it holds no `model_index.json`.
    """
    folder = Path(resolve_pretrained(str(name_or_folder)))
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(
            f"{name_or_folder} is not a pipeline folder (no model_index.json): pass a folder written by "
            "save_pretrained or a shipped checkpoint's name such as 'latentmusic/demo'"
        )
    return folder


def build_text_encoder(config: TextEncoderConfig | DictConfig, captions: list[str]):
    """A tokenizer built from the captions and a fresh T5 encoder sized by the config."""
    tokenizer = build_caption_tokenizer(captions, model_max_length=config.max_length)
    t5 = T5Config(
        vocab_size=len(tokenizer),
        d_model=config.d_model,
        d_kv=config.d_model // config.num_heads,
        d_ff=config.d_ff,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return tokenizer, T5EncoderModel(t5)


def check_prompt_length(config: TextEncoderConfig | DictConfig) -> None:
    """Refuse a `max_length` longer than the position table of the pretrained encoder in `config.pretrained`.

    Only the folder's `config.json` is read, so a recipe can call this before any data work. Nothing is checked
    without a pretrained folder or for an encoder without a position table (T5's positions are relative).

    Args:
        config: The recipe's `text_encoder` section.

    Raises:
        ValueError: If `config.max_length` exceeds the encoder's `max_position_embeddings` (`n_positions`).
    """
    if not config.pretrained:
        return
    model_config = AutoConfig.from_pretrained(config.pretrained, local_files_only=True)
    model_config = getattr(model_config, "text_config", model_config)  # a whole CLAP checkpoint: its text tower
    positions = getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", None)
    if positions is not None and config.max_length > positions:
        raise ValueError(
            f"text_encoder.max_length={config.max_length} is longer than the pretrained encoder at "
            f"{config.pretrained} can read ({positions} positions): set text_encoder.max_length<={positions}"
        )


def prepare_text_encoder(config: TextEncoderConfig | DictConfig, data_root: str | Path) -> tuple[Any, torch.nn.Module]:
    """The local pretrained text encoder of `config.pretrained`, or one built from the training captions of
    `data_root`; trainable only when `config.train` is set.

    Args:
        config: The recipe's `text_encoder` section.
        data_root: Folder with the training set's `metadata.jsonl` (for the captions of a built tokenizer).

    Returns:
        `(tokenizer, text_encoder)`.
    """
    if config.pretrained:
        check_prompt_length(config)
        tokenizer, text_encoder = load_text_encoder(config.pretrained)
    else:
        captions = [c for record in read_metadata(data_root, split="train") for c in record["captions"]]
        tokenizer, text_encoder = build_text_encoder(config, captions)
    return tokenizer, text_encoder.requires_grad_(bool(config.train))


def text_width(text_encoder: torch.nn.Module) -> int:
    """Width of the text encoder's hidden states (what the model cross-attends to)."""
    return getattr(text_encoder.config, "hidden_size", None) or text_encoder.config.d_model
