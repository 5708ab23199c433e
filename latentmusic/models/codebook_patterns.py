"""MusicGen's codebook interleaving patterns: how K parallel codebook streams become one LM sequence.

A residual-VQ codec gives K codes per frame, `codes` of shape `(batch, K, frames)`. A token LM predicts
one sequence step at a time, all K streams of a step at once, so the pattern decides which code sits
at which step:

- `parallel`: step s holds frame s of every codebook (`frames` steps; the codebooks of a frame are
  predicted independently of each other).
- `delay` (MusicGen's default): codebook k is shifted right by k steps, so step s holds frame s - k of
  codebook k (`frames + K - 1` steps). Frame t of codebook k is predicted one step after frame t of
  codebook k - 1, so it is conditioned on all lower codebooks of its own frame.
- `flatten`: one codebook per step, step t * K + k holds frame t of codebook k (`frames * K` steps; exact
  autoregression, K times as many steps).

Positions of the sequence that hold no code (the start and end of `delay`, the other streams of
`flatten`) hold the special token, the LM's "empty" token (the codebook size, one past the last code).
`pattern.revert(pattern.build(codes, special)) == codes` exactly, for every pattern.
"""

from __future__ import annotations

import torch

PATTERNS = ("delay", "parallel", "flatten")


class CodebookPattern:
    """A layout of `(codebook, frame)` positions on `(codebook, step)` sequence positions.

    Subclasses define `steps` (where each code goes) and `sequence_length`; everything else follows.

    Args:
        num_codebooks: K, the number of codebook streams.
    """

    name = ""

    def __init__(self, num_codebooks: int) -> None:
        if num_codebooks < 1:
            raise ValueError(f"a codebook pattern needs at least one codebook, got num_codebooks={num_codebooks}")
        self.num_codebooks = num_codebooks

    def sequence_length(self, num_frames: int) -> int:
        """Sequence steps needed for `num_frames` frames.

        Args:
            num_frames: Codec frames.
        """
        raise NotImplementedError

    def steps(self, num_frames: int) -> torch.Tensor:
        """The sequence step that holds each code, a `(K, num_frames)` long tensor.

        Args:
            num_frames: Codec frames.
        """
        raise NotImplementedError

    def valid_mask(self, num_frames: int) -> torch.Tensor:
        """`(K, sequence_length)` bool tensor: True where the sequence holds a code, False for special tokens.

        Args:
            num_frames: Codec frames.
        """
        mask = torch.zeros(self.num_codebooks, self.sequence_length(num_frames), dtype=torch.bool)
        return mask.scatter_(1, self.steps(num_frames), True)

    def complete_frames(self, num_steps: int, num_frames: int) -> int:
        """How many leading frames have all their codes within the first `num_steps` steps.

        Args:
            num_steps: Steps generated so far.
            num_frames: Frames of the whole sequence.
        """
        done = (self.steps(num_frames) < num_steps).all(dim=0)
        return int(done.long().cumprod(0).sum())

    def build(self, codes: torch.Tensor, special_token: int) -> torch.Tensor:
        """Lay codes `(batch, K, frames)` out as an LM sequence `(batch, K, sequence_length)`.

        Args:
            codes: Codec codes, `(batch, K, frames)`.
            special_token: Token for the positions that hold no code.
        """
        self._check(codes, "codes")
        batch, _, frames = codes.shape
        steps = self.steps(frames).to(codes.device).expand(batch, -1, -1)
        sequence = codes.new_full((batch, self.num_codebooks, self.sequence_length(frames)), special_token)
        return sequence.scatter_(2, steps, codes)

    def revert(self, sequence: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Read the codes `(batch, K, num_frames)` back out of a sequence made by `build`.

        Args:
            sequence: LM sequence, `(batch, K, sequence_length(num_frames))`.
            num_frames: Frames the sequence holds.
        """
        self._check(sequence, "sequence")
        if sequence.shape[-1] != self.sequence_length(num_frames):
            raise ValueError(
                f"a {self.name} sequence of {num_frames} frames has {self.sequence_length(num_frames)} steps, "
                f"got {sequence.shape[-1]}; pass the frame count the sequence was built with"
            )
        steps = self.steps(num_frames).to(sequence.device).expand(sequence.shape[0], -1, -1)
        return sequence.gather(2, steps)

    def _check(self, tokens: torch.Tensor, name: str) -> None:
        if tokens.ndim != 3 or tokens.shape[1] != self.num_codebooks:
            raise ValueError(
                f"`{name}` must have shape (batch, {self.num_codebooks}, length) for this "
                f"{self.num_codebooks}-codebook pattern, got {tuple(tokens.shape)}"
            )


class ParallelPattern(CodebookPattern):
    """Step s holds frame s of every codebook."""

    name = "parallel"

    def sequence_length(self, num_frames: int) -> int:
        return num_frames

    def steps(self, num_frames: int) -> torch.Tensor:
        return torch.arange(num_frames).expand(self.num_codebooks, -1)


class DelayPattern(CodebookPattern):
    """Step s holds frame s - k of codebook k (MusicGen's default)."""

    name = "delay"

    def sequence_length(self, num_frames: int) -> int:
        return num_frames + self.num_codebooks - 1 if num_frames else 0

    def steps(self, num_frames: int) -> torch.Tensor:
        return torch.arange(num_frames)[None] + torch.arange(self.num_codebooks)[:, None]


class FlattenPattern(CodebookPattern):
    """Step t * K + k holds frame t of codebook k; the other streams of that step hold the special token."""

    name = "flatten"

    def sequence_length(self, num_frames: int) -> int:
        return num_frames * self.num_codebooks

    def steps(self, num_frames: int) -> torch.Tensor:
        return torch.arange(num_frames)[None] * self.num_codebooks + torch.arange(self.num_codebooks)[:, None]


_CLASSES = {cls.name: cls for cls in (DelayPattern, ParallelPattern, FlattenPattern)}


def get_pattern(name: str, num_codebooks: int) -> CodebookPattern:
    """The pattern called `name` for `num_codebooks` codebooks.

    Args:
        name: One of `"delay"`, `"parallel"`, `"flatten"`.
        num_codebooks: K, the number of codebook streams.
    """
    if name not in _CLASSES:
        raise ValueError(f"unknown codebook pattern {name!r}; choose from {PATTERNS}")
    return _CLASSES[name](num_codebooks)
