"""What the pipeline needs beyond text-to-music: audio to condition on, masks, windows and story segments.

The JEN-1 tasks all reduce to one mechanism: *known latents* (the encoded input audio) and a per-frame *keep
weight* in [0, 1] (1 = keep the known latent, 0 = generate). Continuation keeps a prefix, inpainting keeps
everything outside the masked ranges, long-form generation keeps the end of the previous window (fading out,
which crossfades the windows in latent space), and story mode is long-form generation whose windows take
their prompt from the segment they fall in.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..audio import check_audio, resample, to_channels
from .schedulers import is_flow_scheduler


def prepare_audio(
    audio: torch.Tensor | np.ndarray, sample_rate: int | None, target_rate: int, channels: int, batch: int
) -> torch.Tensor:
    """Conditioning audio as `(batch, channels, samples)` at the model's rate (resampled, channels converted).

    Args:
        audio: `(samples,)`, `(channels, samples)` or `(n, channels, samples)` with n = 1 or `batch`.
        sample_rate: Its sample rate.
        target_rate: The model's sample rate.
        channels: The model's channel count (mono is repeated to stereo, stereo averaged to mono).
        batch: Number of prompts the call generates for.
    """
    audio = torch.as_tensor(np.asarray(audio) if not isinstance(audio, torch.Tensor) else audio)
    items = list(audio) if audio.ndim == 3 else [audio]
    if len(items) not in (1, batch):
        raise ValueError(f"got audio for {len(items)} clips but {batch} prompts; pass one clip or one per prompt")
    rate = int(sample_rate)
    clips = []
    for item in items:
        clip = to_channels(check_audio(item).float(), channels)
        clips.append(resample(clip, rate, target_rate) if rate != target_rate else clip)
    stacked = torch.stack(clips)
    return stacked.expand(batch, -1, -1) if len(clips) == 1 else stacked


def regenerate_mask(mask: Sequence | torch.Tensor | np.ndarray, num_samples: int, sample_rate: int) -> torch.Tensor:
    """The samples to regenerate, as a `(num_samples,)` bool tensor.

    Args:
        mask: `(start_s, end_s)` ranges in seconds (a list of pairs, or one pair), or a per-sample mask of
            length `num_samples` (nonzero / True = regenerate).
        num_samples: Length of the audio.
        sample_rate: Its sample rate.
    """
    if isinstance(mask, (torch.Tensor, np.ndarray)):
        mask = torch.as_tensor(mask).flatten()
        if mask.numel() != num_samples:
            raise ValueError(
                f"a sample mask must have one value per audio sample ({num_samples}), got {mask.numel()}; "
                "or pass (start_s, end_s) ranges"
            )
        return mask != 0
    if not isinstance(mask, (list, tuple)):
        raise TypeError(
            f"mask must be (start_s, end_s) ranges or a per-sample tensor/array, got {type(mask).__name__}; "
            "e.g. [(3.0, 5.0)]"
        )
    ranges = [mask] if len(mask) == 2 and all(_is_number(v) for v in mask) else list(mask)
    if not ranges:
        raise ValueError("mask has no ranges; pass (start_s, end_s) pairs to regenerate, e.g. [(3.0, 5.0)]")
    duration = num_samples / sample_rate
    regenerate = torch.zeros(num_samples, dtype=torch.bool)
    for item in ranges:
        if not isinstance(item, (list, tuple)) or len(item) != 2 or not all(_is_number(v) for v in item):
            raise ValueError(f"mask range {item!r} is not a (start_s, end_s) pair of numbers, e.g. (3.0, 5.0)")
        start, end = item
        if not 0 <= start < end <= duration + 1e-6:
            raise ValueError(
                f"mask range ({start}, {end}) s is not inside the {duration:.2f} s audio; "
                "ranges need 0 <= start < end <= the audio's length"
            )
        regenerate[round(start * sample_rate) : round(end * sample_rate)] = True
    return regenerate


def keep_frames(regenerate: torch.Tensor, hop_length: int, num_frames: int) -> torch.Tensor:
    """Per-frame keep weights from a per-sample regenerate mask: a frame is kept only if none of its samples
    is regenerated (and it lies inside the audio), so kept frames carry only kept audio."""
    padded = torch.ones(num_frames * hop_length, dtype=torch.bool)
    length = min(len(regenerate), len(padded))
    padded[:length] = regenerate[:length]
    return (~padded.view(num_frames, hop_length).any(dim=1)).float()


def fade_out(context: int, fade: int) -> torch.Tensor:
    """Keep weights for a window's `context` frames carried over from the previous window: 1, then a linear
    fade to 0 over the last `fade` of them (the latent crossfade between windows)."""
    weights = torch.ones(context)
    if fade > 0:
        weights[context - fade :] = torch.linspace(1.0, 0.0, fade + 2)[1:-1]
    return weights


def add_noise_at(scheduler, original: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    """`original` noised to the level of `timestep` as the scheduler's samples are (flow or diffusion)."""
    timestep = timestep.reshape(1).to(original.device)
    if is_flow_scheduler(scheduler):
        return scheduler.scale_noise(original, timestep, noise)
    return scheduler.add_noise(original, noise, timestep)


@dataclass
class Segment:
    """A stretch of the output with one prompt: frames `[start, end)` of the latent sequence."""

    prompt: int
    start: int
    end: int


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def parse_story(story: Sequence) -> tuple[list[str], list[float]]:
    """Split `[(prompt, seconds), ...]` (or `"prompt:seconds"` strings) into prompts and durations.

    Raises:
        ValueError: An item that is not a (prompt, seconds) pair or a "prompt:seconds" string, an empty prompt, or a
            duration that is not a positive finite number of seconds; the message names the item.
    """
    example = 'e.g. [("a calm chorale", 8), ("a fast reel", 8)] or ["a calm chorale:8", "a fast reel:8"]'
    if isinstance(story, str) or not isinstance(story, Sequence):
        raise TypeError(f"story must be a list of (prompt, seconds) segments, got {type(story).__name__}; {example}")
    if not story:
        raise ValueError(f"story is empty; pass (prompt, seconds) segments, {example}")
    prompts, seconds = [], []
    for index, item in enumerate(story):
        if isinstance(item, str):
            text, sep, length = item.rpartition(":")
            if not sep:
                raise ValueError(f"story segment {index} {item!r} is not 'prompt:seconds'; {example}")
            try:
                item = (text, float(length))
            except ValueError:
                raise ValueError(
                    f"story segment {index} {item!r}: {length.strip()!r} is not a number of seconds; {example}"
                ) from None
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise ValueError(f"story segment {index} {item!r} is not a (prompt, seconds) pair; {example}")
        text, length = item
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"story segment {index} {item!r} has no prompt; describe the music of that section")
        if not _is_number(length) or not length > 0:
            raise ValueError(
                f"story segment {index} {item!r} must last a positive, finite number of seconds, got {length!r}"
            )
        prompts.append(text)
        seconds.append(float(length))
    return prompts, seconds


@dataclass
class Window:
    """One denoising window of a long or story generation: `context` frames carried over from the previous
    window (kept, fading out) followed by `new` frames, starting at frame `start`, prompted by `prompt`."""

    prompt: int
    start: int
    context: int
    new: int

    @property
    def frames(self) -> int:
        return self.context + self.new


def plan_windows(segments: list[Segment], window: int, context: int, start: int = 0) -> list[Window]:
    """Cover frames `[start, segments[-1].end)` with windows of at most `window` frames, each beginning with up to
    `context` frames of what came before and never straddling two segments' new frames."""
    if not 0 <= context < window:
        raise ValueError(f"the overlap ({context} frames) must be shorter than the window ({window} frames)")
    plan, filled = [], start
    for segment in segments:
        while filled < segment.end:
            carried = min(context, filled)
            new = min(window - carried, segment.end - filled)
            plan.append(Window(segment.prompt, filled - carried, carried, new))
            filled += new
    return plan
