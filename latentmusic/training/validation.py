"""Held-out losses of the recipes that cross-attend to captions: does the model listen to the text?"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..data.datasets import LatentDataset, collate


@torch.no_grad()
def caption_gap_losses(
    loss: Callable[[dict[str, Any], list[str], int], torch.Tensor],
    valid_set: LatentDataset,
    batch_size: int,
    max_batches: int,
) -> dict[str, float]:
    """Held-out loss on fixed crops with the right captions and with captions shuffled (rolled by one).

    The gap between the two is how much the model uses the text.

    Args:
        loss: `loss(batch, captions, batch_index)`, the training loss (with its randomness fixed per batch).
        valid_set: The validation split of the cache.
        batch_size: Clips per batch.
        max_batches: Batches per evaluation.
    """
    if len(valid_set) == 0:
        return {}
    loader = torch.utils.data.DataLoader(valid_set, batch_size=batch_size, shuffle=False, collate_fn=collate)
    right, shuffled = [], []
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        captions = batch["caption"]
        right.append(loss(batch, captions, i).item())
        shuffled.append(loss(batch, captions[1:] + captions[:1], i).item())
    return {"valid_loss": sum(right) / len(right), "valid_loss_shuffled_captions": sum(shuffled) / len(shuffled)}
