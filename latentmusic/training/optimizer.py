"""The optimiser of the recipes that cross-attend to captions: the model, and the text encoder when it is trained."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from .runner import OptimConfig
from .text_conditioning import TextEncoderConfig


def make_optimizer(
    model: torch.nn.Module,
    text_encoder: torch.nn.Module,
    text_config: TextEncoderConfig | DictConfig,
    optim: OptimConfig | DictConfig,
) -> torch.optim.AdamW:
    """AdamW over the model, and over the text encoder (at `lr_scale` times the rate) when it is trained.

    Args:
        model: The U-Net or LM.
        text_encoder: The text encoder.
        text_config: The recipe's `text_encoder` section.
        optim: The recipe's `optim` section.
    """
    # only what trains: with a LoRA adapter that is the adapter alone
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": optim.lr}]
    if text_config.train:
        groups.append({"params": text_encoder.parameters(), "lr": optim.lr * text_config.lr_scale})
    return torch.optim.AdamW(groups, betas=tuple(optim.betas), weight_decay=optim.weight_decay)
