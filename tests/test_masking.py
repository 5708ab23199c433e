"""JEN-1's omnidirectional training masks: each task keeps what it should, in the proportions asked for."""

from __future__ import annotations

import pytest
import torch

from latentmusic.training.objectives import sample_keep_masks


def masks(probabilities, lengths=(100,) * 400, frames=100, seed=0):
    return sample_keep_masks(torch.tensor(lengths), frames, probabilities, torch.Generator().manual_seed(seed))[:, 0]


def test_generation_keeps_nothing():
    assert masks((1, 0, 0)).sum() == 0


def test_continuation_keeps_a_prefix_of_ten_to_ninety_percent():
    keep = masks((0, 1, 0))
    kept = keep.sum(1)
    assert kept.min() >= 10 and kept.max() <= 90 and kept.std() > 10
    for row, n in zip(keep, kept.long()):  # a prefix: ones, then zeros
        assert row[:n].eq(1).all() and row[n:].eq(0).all()


def test_inpainting_removes_one_middle_span_of_ten_to_fifty_percent():
    keep = masks((0, 0, 1))
    removed = 100 - keep.sum(1)
    assert removed.min() >= 10 and removed.max() <= 50
    changes = (keep[:, 1:] != keep[:, :-1]).sum(1)
    assert changes.max() <= 2  # one contiguous hole
    assert (keep[:, 0] == 0).any() and (keep[:, -1] == 0).any()  # the hole can touch either end


def test_tasks_are_drawn_in_proportion_and_padding_is_never_kept():
    keep = masks((2, 1, 1), lengths=[60] * 400)
    assert keep[:, 60:].sum() == 0
    generation = (keep.sum(1) == 0).float().mean()
    assert 0.4 < generation < 0.6
    assert torch.equal(keep, masks((2, 1, 1), lengths=[60] * 400))  # reproducible with a seed


@pytest.mark.parametrize("probabilities", [(0, 0, 0), (-1, 1, 1)])
def test_bad_probabilities_are_rejected(probabilities):
    with pytest.raises(ValueError, match="masking probabilities"):
        masks(probabilities)
