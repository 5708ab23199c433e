"""Held-out losses of the recipes that cross-attend to captions: does the model listen to the text?"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..data.captions import make_captions
from ..data.datasets import LatentDataset, collate
from ..evaluation.scoring import pitch_class

Record = dict[str, Any]
# The spelling of each key with the fewest accidentals, as the corpus writes it (`data/rendering.py`)
KEY_NAMES = {
    "major": ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"),
    "minor": ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B"),
}
# A tempo 25 % off is no metrical level of the true one (16 % or more from x1, x3/2, x2/3, x2, ...; the tempo
# metric's tolerance is 8 %), so a caption with it is not true of the audio at any level
TEMPO_SWAP_RATIO = 1.25


def swap_key(record: Record, others: list[Record]) -> Record | None:
    """The key a tritone away, same mode: the fewest pitch classes in common with the true key's scale."""
    tonic, mode = record["key"].split()
    return {"key": f"{KEY_NAMES[mode][(pitch_class(tonic) + 6) % 12]} {mode}"}


def swap_tempo(record: Record, others: list[Record]) -> Record | None:
    """A tempo `TEMPO_SWAP_RATIO` faster (below 100 BPM) or slower."""
    bpm = record["bpm"]
    return {"bpm": round(bpm * TEMPO_SWAP_RATIO if bpm < 100 else bpm / TEMPO_SWAP_RATIO)}


def swap_instrument(record: Record, others: list[Record]) -> Record | None:
    """The instrument of the next clip of the batch (cyclically) from another family; `None` if there is none."""
    for other in others:
        if other["family"] != record["family"]:
            return {"instrument": other["instrument"], "family": other["family"]}
    return None


ATTRIBUTE_SWAPS = {"key": swap_key, "tempo": swap_tempo, "instrument": swap_instrument}


def attribute_swapped_captions(
    captions: list[str], records: list[Record], swap: Callable[[Record, list[Record]], Record | None]
) -> list[str] | None:
    """The captions with one attribute changed and everything else the same (the same template of
    `make_captions` with the changed record).

    Args:
        captions: One caption per clip.
        records: The clips' metadata records (with the attributes `make_captions` reads).
        swap: Gives the changed attributes of a record, from it and the other records of the batch (the next
            clip first), or `None` when it cannot.

    Returns:
        The changed captions, or `None` if there is not one record per caption, a caption is not one of its
        record's `make_captions` phrasings (a corpus captioned another way, or a dropped caption) or a record
        cannot be changed.
    """
    if len(records) != len(captions):
        return None
    swapped = []
    for i, (caption, record) in enumerate(zip(captions, records)):
        try:
            phrasings = make_captions(record)
        except (KeyError, TypeError, ValueError):
            return None
        changed = swap(record, records[i + 1 :] + records[:i]) if caption in phrasings else None
        if changed is None:
            return None
        swapped.append(make_captions({**record, **changed})[phrasings.index(caption)])
    return swapped


@torch.no_grad()
def caption_gap_losses(
    loss: Callable[[dict[str, Any], list[str], int], torch.Tensor],
    valid_set: LatentDataset,
    batch_size: int,
    max_batches: int,
) -> dict[str, float]:
    """Held-out loss on fixed crops with the right captions, with captions shuffled (rolled by one), and with one
    attribute of the captions changed (key, tempo, instrument) where the corpus's captions allow it.

    The gap between the right and shuffled losses is how much the model uses the text; the gap to an attribute's
    loss is how much it uses the words for that attribute (a model that ignores "in C major" loses nothing when it
    reads "in F# major").

    Args:
        loss: `loss(batch, captions, batch_index)`, the training loss (with its randomness fixed per batch).
        valid_set: The validation split of the cache.
        batch_size: Clips per batch.
        max_batches: Batches per evaluation.

    Returns:
        `valid_loss` and `valid_loss_shuffled_captions`, and `valid_loss_<attribute>_swapped` for each attribute
        of `ATTRIBUTE_SWAPS` that every evaluated batch could be changed in. Empty without validation clips.
    """
    if len(valid_set) == 0:
        return {}
    loader = torch.utils.data.DataLoader(valid_set, batch_size=batch_size, shuffle=False, collate_fn=collate)
    losses: dict[str, list[float]] = {"valid_loss": [], "valid_loss_shuffled_captions": []}
    swappable = set(ATTRIBUTE_SWAPS)
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        captions = batch["caption"]
        losses["valid_loss"].append(loss(batch, captions, i).item())
        losses["valid_loss_shuffled_captions"].append(loss(batch, captions[1:] + captions[:1], i).item())
        for name in sorted(swappable):
            swapped = attribute_swapped_captions(captions, batch.get("metadata", []), ATTRIBUTE_SWAPS[name])
            if swapped is None:
                swappable.discard(name)  # an attribute is reported only over the same batches as the right loss
                losses.pop(f"valid_loss_{name}_swapped", None)
            else:
                losses.setdefault(f"valid_loss_{name}_swapped", []).append(loss(batch, swapped, i).item())
    return {name: sum(values) / len(values) for name, values in losses.items()}
