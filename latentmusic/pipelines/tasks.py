"""What the pipeline needs beyond text-to-music: audio to condition on, masks, windows and story segments.

The JEN-1 tasks all reduce to one mechanism: *known latents* (the encoded input audio) and a per-frame *keep
weight* in [0, 1] (1 = keep the known latent, 0 = generate). Continuation keeps a prefix, inpainting keeps
everything outside the masked ranges, long-form generation keeps the end of the previous window (fading out,
which crossfades the windows in latent space), and story mode is long-form generation whose windows take
their prompt from the segment they fall in.

`GenerationTask.build` reads a pipeline call's arguments into one validated task object before any model work,
so the rest of the call asks the task what to do (`task.kind`, `task.is_windowed`) instead of re-deriving it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.utils import logging
from einops import rearrange

from ..audio import check_audio, resample, to_channels
from .checks import MAX_SECONDS, check_audio_argument, check_real
from .common import frames_for_samples, samples_for_seconds
from .schedulers import is_flow_scheduler

logger = logging.get_logger(__name__)

TASK_KINDS = ("text-to-music", "continuation", "inpainting", "audio-to-audio", "long-form", "story")


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
    return (~rearrange(padded, "(frames hop) -> frames hop", hop=hop_length).any(dim=1)).float()


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
    if is_flow_scheduler(scheduler) and hasattr(scheduler, "scale_noise"):  # FlowMatch*; the flow multistep
        return scheduler.scale_noise(original, timestep, noise)  # solvers' add_noise is (1 - σ) x + σ ε already
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


@dataclass(frozen=True)
class GenerationTask:
    """What one pipeline call does, read from its arguments and validated before any model work.

    Attributes:
        kind: One of `TASK_KINDS`: `"text-to-music"`, `"continuation"` (`audio` is a prefix), `"inpainting"`
            (`audio` with `mask`), `"audio-to-audio"` (`audio` with `strength`), `"long-form"` (longer than the
            U-Net's window; may continue a prefix) or `"story"` (segments with their own prompts).
        prompt: The prompt argument (for a story, its first segment's prompt).
        audio_length_in_s: Length of each output clip in seconds.
        segment_prompts: A story's prompts, one per segment; `None` otherwise.
        segment_seconds: Each segment's length; one segment covering the clip when there is no story.
        audio: The input audio as passed (`None` without).
        audio_sample_rate: Its sample rate.
        audio_seconds: Its length in seconds.
        strength: Audio-to-audio strength, if any.
        mask: What to regenerate when inpainting, if any.
        window_overlap_in_s: Context between long-form windows (`None`: a quarter window).
    """

    kind: str
    prompt: str | list[str] | None
    audio_length_in_s: float
    segment_prompts: list[str] | None = None
    segment_seconds: tuple[float, ...] = ()
    audio: Any = None
    audio_sample_rate: int | None = None
    audio_seconds: float | None = None
    strength: float | None = None
    mask: Any = None
    window_overlap_in_s: float | None = None

    @property
    def is_windowed(self) -> bool:
        """Generated window by window (long-form and story) rather than in one denoising loop."""
        return self.kind in ("long-form", "story")

    @property
    def keeps_prefix(self) -> bool:
        """The input audio is a prefix to continue (continuation, or a long-form piece with `audio=`)."""
        return self.audio is not None and self.strength is None and self.mask is None

    @classmethod
    def build(
        cls,
        *,
        prompt: str | list[str] | None,
        story: Sequence | None,
        audio_length_in_s: float | None,
        audio: Any,
        audio_sample_rate: int | None,
        strength: float | None,
        mask: Any,
        window_overlap_in_s: float | None,
        has_prompt_embeds: bool,
        has_latents: bool,
        num_prompts: int,
        sample_rate: int,
        hop_length: int,
        max_audio_length_in_s: float | None,
    ) -> GenerationTask:
        """Read a call's arguments into a task, raising a `ValueError` that names the argument for bad input.

        Args:
            prompt: The call's `prompt`.
            story: The call's `story` segments.
            audio_length_in_s: The asked length (`None`: the input audio's, or the U-Net's window, or 10 s).
            audio: The call's input audio.
            audio_sample_rate: Its sample rate.
            strength: The call's audio-to-audio strength.
            mask: The call's inpainting mask.
            window_overlap_in_s: Context between long-form windows.
            has_prompt_embeds: `prompt_embeds` were given.
            has_latents: Starting `latents` were given.
            num_prompts: Prompts in the call (to match the input audio's batch).
            sample_rate: The model's sample rate.
            hop_length: Audio samples per latent frame.
            max_audio_length_in_s: The U-Net's window (`None`: unbounded).

        Returns:
            The validated task.
        """
        segment_prompts = None
        if story is not None:
            if prompt is not None or has_prompt_embeds:
                raise ValueError("pass either `story` segments or `prompt`/`prompt_embeds`, not both")
            segment_prompts, seconds = parse_story(story)
            if audio_length_in_s is not None and abs(audio_length_in_s - sum(seconds)) > 1e-6:
                raise ValueError(
                    f"audio_length_in_s={audio_length_in_s} differs from the story's {sum(seconds)} s; leave it unset"
                )
            audio_length_in_s, prompt = sum(seconds), segment_prompts[0]
        audio_seconds = None
        if audio is not None:
            audio_seconds = check_audio_argument(audio, audio_sample_rate, "audio", "audio_sample_rate", num_prompts)
            if audio_length_in_s is None:
                if mask is None and strength is None:
                    raise ValueError(
                        f"continuation: pass audio_length_in_s longer than the prefix ({audio_seconds:.2f} s); "
                        "or pass `mask=` (inpainting) or `strength=` (audio-to-audio)"
                    )
                audio_length_in_s = audio_seconds
        elif audio_sample_rate is not None:
            raise ValueError("audio_sample_rate is the rate of `audio`; pass the audio too, or leave it out")
        if audio_length_in_s is None:
            audio_length_in_s = max_audio_length_in_s or 10.0
        check_real(audio_length_in_s, "audio_length_in_s", minimum=0.0, maximum=MAX_SECONDS, exclusive_minimum=True)
        long = max_audio_length_in_s is not None and audio_length_in_s > max_audio_length_in_s + 1e-6
        if story is not None:
            kind = "story"
        elif long:
            kind = "long-form"
        elif audio is None:
            kind = "text-to-music"
        elif mask is not None:
            kind = "inpainting"
        elif strength is not None:
            kind = "audio-to-audio"
        else:
            kind = "continuation"
        task = cls(
            kind=kind,
            prompt=prompt,
            audio_length_in_s=audio_length_in_s,
            segment_prompts=segment_prompts,
            segment_seconds=tuple(seconds) if story is not None else (audio_length_in_s,),
            audio=audio,
            audio_sample_rate=audio_sample_rate,
            audio_seconds=audio_seconds,
            strength=strength,
            mask=mask,
            window_overlap_in_s=window_overlap_in_s,
        )
        task._check(has_latents, sample_rate, hop_length, max_audio_length_in_s)
        return task

    def _check(
        self, has_latents: bool, sample_rate: int, hop_length: int, max_audio_length_in_s: float | None
    ) -> None:
        """The checks that need the whole task: lengths against the input audio and the window, story segments."""
        audio_seconds, length = self.audio_seconds, self.audio_length_in_s
        if self.window_overlap_in_s is not None:
            window = max_audio_length_in_s or length
            if not self.is_windowed:
                logger.warning(
                    f"window_overlap_in_s={self.window_overlap_in_s} has no effect: {length} s fits in one "
                    f"{window} s window (it acts on long-form and story generation)"
                )
            check_real(self.window_overlap_in_s, "window_overlap_in_s", minimum=0.0)
            if self.window_overlap_in_s >= window:
                raise ValueError(
                    f"window_overlap_in_s={self.window_overlap_in_s} must be shorter than the U-Net's {window} s "
                    "window"
                )
        if audio_seconds is None and (self.strength is not None or self.mask is not None):
            raise ValueError("`strength` and `mask` act on input audio; pass it as `audio=`")
        if self.strength is not None:
            check_real(self.strength, "strength", minimum=0.0, maximum=1.0, hint="0 keeps the input, 1 ignores it")
        if self.mask is not None and audio_seconds is not None:
            regenerate_mask(self.mask, samples_for_seconds(audio_seconds, sample_rate), sample_rate)
        if self.keeps_prefix:
            if length <= audio_seconds:
                raise ValueError(
                    f"continuation: the prefix ({audio_seconds:.2f} s) must be shorter than audio_length_in_s "
                    f"({length} s); ask for a longer clip, or pass `mask=` or `strength=` to edit it"
                )
        elif audio_seconds is not None and abs(length - audio_seconds) > 1e-3:
            raise ValueError(
                f"inpainting and audio-to-audio keep the input's length ({audio_seconds:.2f} s); "
                f"leave audio_length_in_s unset (got {length})"
            )
        if self.is_windowed and (self.mask is not None or self.strength is not None or has_latents):
            raise ValueError(
                f"`mask`, `strength` and `latents` work within one window of at most {max_audio_length_in_s} s "
                "(no story); long-form generation and story mode take a prompt or segments and, optionally, a prefix"
            )
        if self.kind == "story":
            # a segment that ends in the same latent frame as the one before would have no frames: its prompt unused
            ends = [
                frames_for_samples(samples_for_seconds(end, sample_rate), hop_length)
                for end in np.cumsum(self.segment_seconds)
            ]
            for index, (start, end) in enumerate(zip([0, *ends], ends)):
                if end <= start:
                    raise ValueError(
                        f"story segment {index} ({self.segment_prompts[index]!r}, {self.segment_seconds[index]} s) is "
                        f"shorter than one latent frame ({hop_length / sample_rate:.3f} s), so its prompt would never "
                        "be heard; make it longer"
                    )
