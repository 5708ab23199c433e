"""Codebook interleaving patterns: exact round trips, lengths, and what each step's context holds."""

from __future__ import annotations

import pytest
import torch

from latentmusic.models.codebook_patterns import PATTERNS, get_pattern

SPECIAL = 99


def random_codes(batch: int, codebooks: int, frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, SPECIAL, (batch, codebooks, frames), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", PATTERNS)
@pytest.mark.parametrize(("codebooks", "frames"), [(1, 1), (1, 7), (3, 1), (4, 6), (2, 0)])
def test_pattern_sequence_pattern_is_the_identity(name, codebooks, frames):
    pattern = get_pattern(name, codebooks)
    codes = random_codes(2, codebooks, frames)
    sequence = pattern.build(codes, SPECIAL)
    assert sequence.shape == (2, codebooks, pattern.sequence_length(frames))
    assert torch.equal(pattern.revert(sequence, frames), codes)
    # and sequence -> pattern -> sequence, for any sequence with special tokens where no code goes
    assert torch.equal(pattern.build(pattern.revert(sequence, frames), SPECIAL), sequence)


@pytest.mark.parametrize(
    ("name", "length"),
    [("parallel", lambda k, t: t), ("delay", lambda k, t: t + k - 1), ("flatten", lambda k, t: k * t)],
)
def test_sequence_lengths_and_special_tokens(name, length):
    pattern = get_pattern(name, 4)
    sequence = pattern.build(random_codes(1, 4, 5), SPECIAL)
    assert sequence.shape[-1] == pattern.sequence_length(5) == length(4, 5)
    valid = pattern.valid_mask(5)
    assert valid.sum() == 4 * 5  # every code has exactly one place
    assert (sequence[0][~valid] == SPECIAL).all() and (sequence[0][valid] != SPECIAL).all()


def test_delay_puts_frame_s_minus_k_of_codebook_k_at_step_s():
    pattern = get_pattern("delay", 3)
    frames = torch.arange(5).expand(1, 3, -1)  # each code is its frame index
    sequence = pattern.build(frames, SPECIAL)[0]
    for k in range(3):
        for s in range(sequence.shape[-1]):
            expected = s - k if 0 <= s - k < 5 else SPECIAL
            assert sequence[k, s] == expected


@pytest.mark.parametrize("codebooks", [2, 4])
def test_delay_context_holds_the_lower_codebooks_of_the_frame_and_nothing_later(codebooks):
    """Step s is predicted from steps < s. For the code (k, t): every lower codebook of frame t is in that
    context, and no code of codebook k or higher from frame t onwards is (no future token leaks in)."""
    frames = 6
    steps = get_pattern("delay", codebooks).steps(frames)  # steps[k, t]: where code (k, t) sits
    for k in range(codebooks):
        for t in range(frames):
            context = steps < steps[k, t]
            assert context[:k, t].all(), f"code ({k}, {t}) is predicted before a lower codebook of its frame"
            assert not context[k:, t:].any(), f"code ({k}, {t}) sees a code of its own or a higher codebook at >= t"


def test_parallel_and_flatten_contexts():
    frames, codebooks = 4, 3
    parallel = get_pattern("parallel", codebooks).steps(frames)
    flatten = get_pattern("flatten", codebooks).steps(frames)
    for k in range(codebooks):
        for t in range(frames):
            # parallel: all codebooks of a frame are predicted together, from earlier frames only
            assert ((parallel < parallel[k, t]) == (torch.arange(frames) < t)).all()
            # flatten: exact autoregression, (frame, codebook) in lexicographic order
            before = torch.tensor([[(t2, k2) < (t, k) for t2 in range(frames)] for k2 in range(codebooks)])
            assert torch.equal(flatten < flatten[k, t], before)


@pytest.mark.parametrize(("name", "steps", "complete"), [("delay", 5, 3), ("parallel", 2, 2), ("flatten", 7, 2)])
def test_complete_frames(name, steps, complete):
    assert get_pattern(name, 3).complete_frames(steps, 6) == complete
    assert get_pattern(name, 3).complete_frames(get_pattern(name, 3).sequence_length(6), 6) == 6


def test_bad_patterns_and_shapes_are_answered_clearly():
    with pytest.raises(ValueError, match="unknown codebook pattern 'zigzag'"):
        get_pattern("zigzag", 4)
    with pytest.raises(ValueError, match="at least one codebook"):
        get_pattern("delay", 0)
    pattern = get_pattern("delay", 4)
    with pytest.raises(ValueError, match=r"shape \(batch, 4, length\)"):
        pattern.build(random_codes(1, 3, 5), SPECIAL)
    with pytest.raises(ValueError, match="has 8 steps, got 9"):
        pattern.revert(torch.zeros(1, 4, 9, dtype=torch.long), 5)
