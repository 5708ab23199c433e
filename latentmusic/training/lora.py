"""LoRA fine-tuning of a trained diffusion pipeline's U-Net (used by `recipes/finetune_lora.py`).

The diffusion recipe does the training; with `lora.rank > 0` it adds a peft LoRA adapter to the U-Net it starts
from (`init_from`), freezes everything else, optimises only the adapter and saves only the adapter
(`<output_dir>/lora/pytorch_lora_weights.safetensors`, loadable with `pipe.load_lora_weights`), optionally with a
copy of the pipeline that has it fused in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ..loaders.lora import get_lora_layers, make_lora_config
from ..pipelines.pipeline_latent_music import LatentMusicPipeline

ADAPTER_NAME = "default"


@dataclass
class LoraTrainingConfig:
    """The `lora` section of the diffusion recipe."""

    rank: int = 0  # 0 = no adapter: the whole U-Net is trained; > 0 = only a LoRA of this rank is
    alpha: float = 0.0  # lora_alpha: the update is scaled by alpha / rank (0 = rank, so scale 1)
    # modules adapted ([] = the attention projections to_q, to_k, to_v, to_out.0 of every attention block; add
    # "ff.net.0.proj", "ff.net.2" for the feed-forward layers or "conv1", "conv2" for the residual blocks' convs)
    target_modules: list[str] = field(default_factory=list)
    dropout: float = 0.0  # dropout on the adapter's input
    save_fused_pipeline: bool = False  # also write <output_dir>/pipeline: the pipeline with the adapter fused in


def add_lora_adapter(unet: torch.nn.Module, config: LoraTrainingConfig | DictConfig, train_text_encoder: bool) -> bool:
    """Add the configured LoRA adapter to the U-Net (freezing its own weights), if `config.rank > 0`.

    Args:
        unet: The U-Net the run starts from.
        config: The recipe's `lora` section.
        train_text_encoder: The recipe's `text_encoder.train` (it must be off with LoRA).

    Returns:
        Whether an adapter was added (after which only its weights require gradients).

    Raises:
        ValueError: If the text encoder is to be trained too, or the adapter's settings do not fit the U-Net.
    """
    if config.rank <= 0:
        return False
    if train_text_encoder:
        raise ValueError(
            "text_encoder.train=true with lora.rank > 0: a LoRA run trains only the U-Net's adapter, and the "
            "saved adapter could not carry a changed text encoder; set text_encoder.train=false"
        )
    lora_config = make_lora_config(
        unet,
        rank=config.rank,
        alpha=config.alpha or None,
        target_modules=list(config.target_modules),
        dropout=config.dropout,
    )
    unet.requires_grad_(False)
    unet.add_adapter(lora_config, adapter_name=ADAPTER_NAME)  # peft makes only the adapter trainable
    return True


def save_lora_outputs(
    pipe: LatentMusicPipeline, config: LoraTrainingConfig | DictConfig, output_dir: Path, is_main_process: bool
) -> Path:
    """Save the trained adapter of `pipe.unet` and, if configured, the pipeline with it fused in.

    Args:
        pipe: The final `LatentMusicPipeline` (its U-Net carries the adapter); fused in place when
            `config.save_fused_pipeline` is set.
        config: The recipe's `lora` section.
        output_dir: The run's folder.
        is_main_process: Only the main process writes.

    Returns:
        The adapter's folder, `<output_dir>/lora`.
    """
    folder = output_dir / "lora"
    if not is_main_process:
        return folder
    layers, metadata = get_lora_layers(pipe.unet, ADAPTER_NAME)
    pipe.save_lora_weights(folder, unet_lora_layers=layers, unet_lora_adapter_metadata=metadata)
    if config.save_fused_pipeline:
        pipe.fuse_lora()
        pipe.unload_lora_weights()  # leaves the merged weights in plain layers, so the folder loads anywhere
        pipe.save_pretrained(output_dir / "pipeline")
    return folder


def finetune_lora(config: DictConfig) -> Path:
    """Train a LoRA on the U-Net of the pipeline `config.init_from` with the diffusion recipe; save the adapter.

    `vae` defaults to the same pipeline's autoencoder.

    Returns:
        The adapter's folder (`<output_dir>/lora`).

    Raises:
        ValueError: If `init_from` is empty or `lora.rank` is not positive.
    """
    from .diffusion import train_diffusion

    if not config.init_from:
        raise ValueError(
            "init_from= is required: the pipeline folder or shipped name (e.g. latentmusic/demo) whose U-Net the "
            "LoRA adapts"
        )
    if config.lora.rank <= 0:
        raise ValueError(f"lora.rank must be positive for a LoRA run, got {config.lora.rank}; try lora.rank=8")
    if not config.vae:
        config = OmegaConf.merge(config, {"vae": config.init_from})
    return train_diffusion(config)
