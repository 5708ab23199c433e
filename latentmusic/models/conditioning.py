"""The U-Net's conditioning inputs: named channels concatenated after the noisy latents.

A U-Net trained for JEN-1's continuation and inpainting, or for melodies, sees more than its noisy latents. Its
config names those inputs, in the order they are concatenated, with their widths:

    conditioning_inputs = {"mask": 1, "known_latents": 32, "melody_chroma": 12, "beat_grid": 2}

- `mask` (1 channel): 1 on the latent frames whose clean latents are given, 0 where the model generates;
- `known_latents` (as many channels as the latents): the given clean (scaled) latents, zero where generated;
- `melody_chroma` (12 channels): the dominant pitch class per latent frame of a reference tune (one-hot), zeros
  without one;
- `beat_grid` (2 channels): the phase of a quarter-note pulse at a tempo, as cosine and sine per latent frame
  (`beat_grid`), zeros without one: a rhythm control that tells the U-Net where the beats fall, which a tempo
  written in the caption alone hardly does (docs/model-card.md).

This module is the one place that defines them: `conditioning_inputs` names them for a training run,
`build_conditioning` builds the tensor from them in training and in the pipeline alike, and
`legacy_conditioning_inputs` reads the unnamed `extra_in_channels` of configs saved before the names existed.

It also says what the U-Net's timing conditioning means (`timing_conditioning`), the same in training and
generation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from ..melody import PITCH_CLASSES

MASK = "mask"
KNOWN_LATENTS = "known_latents"
MELODY_CHROMA = "melody_chroma"
BEAT_GRID = "beat_grid"
CONDITIONING_NAMES = (MASK, KNOWN_LATENTS, MELODY_CHROMA, BEAT_GRID)
BEAT_CHANNELS = 2


def conditioning_width(name: str, latent_channels: int) -> int:
    """Channels of the conditioning input `name` for latents of `latent_channels` channels.

    Args:
        name: One of `CONDITIONING_NAMES`.
        latent_channels: Channels of the latents the U-Net denoises.

    Returns:
        Its number of channels.
    """
    widths = {MASK: 1, KNOWN_LATENTS: latent_channels, MELODY_CHROMA: PITCH_CLASSES, BEAT_GRID: BEAT_CHANNELS}
    if name not in widths:
        raise ValueError(f"unknown conditioning input {name!r}; choose from {CONDITIONING_NAMES}")
    return widths[name]


def conditioning_inputs(
    latent_channels: int, *, masking: bool = False, melody: bool = False, beat: bool = False
) -> dict[str, int]:
    """The conditioning inputs of a U-Net trained with JEN-1's masks, melodies and/or beat grids, in concatenation
    order.

    Args:
        latent_channels: Channels of the latents.
        masking: Continuation and inpainting training (the `mask` and `known_latents` inputs).
        melody: Melody conditioning (the `melody_chroma` input).
        beat: Beat-grid conditioning (the `beat_grid` input).

    Returns:
        Names and widths, e.g. `{"mask": 1, "known_latents": 32}`.
    """
    names = ([MASK, KNOWN_LATENTS] if masking else []) + ([MELODY_CHROMA] if melody else [])
    names += [BEAT_GRID] if beat else []
    return {name: conditioning_width(name, latent_channels) for name in names}


def ordered(inputs: Mapping[str, int]) -> dict[str, int]:
    """The inputs in the one order they are concatenated in: `CONDITIONING_NAMES`'s, whatever the mapping's own.
    (A saved config's keys come back sorted, as diffusers writes them, so a mapping's order cannot be trusted.)

    Args:
        inputs: Names and widths.

    Returns:
        The same names and widths, in concatenation order.
    """
    unknown = [name for name in inputs if name not in CONDITIONING_NAMES]
    if unknown:
        raise ValueError(f"unknown conditioning input {unknown[0]!r}; choose from {CONDITIONING_NAMES}")
    return {name: inputs[name] for name in CONDITIONING_NAMES if name in inputs}


def check_conditioning_inputs(inputs: Mapping[str, int], latent_channels: int) -> dict[str, int]:
    """Reject unknown names and wrong widths, naming the input, what was given and what it must be.

    Args:
        inputs: Names and widths from a U-Net config.
        latent_channels: Channels of the latents the U-Net denoises.

    Returns:
        The inputs as a plain dict, in their order.
    """
    if not isinstance(inputs, Mapping):
        raise TypeError(
            f"conditioning_inputs must map names to channel widths, e.g. {{'mask': 1, 'known_latents': "
            f"{latent_channels}}}, got {type(inputs).__name__}"
        )
    for name, width in inputs.items():
        expected = conditioning_width(name, latent_channels)
        if width != expected:
            raise ValueError(
                f"conditioning input {name!r} has {expected} channels for {latent_channels}-channel latents, "
                f"got {width}"
            )
    if (MASK in inputs) != (KNOWN_LATENTS in inputs):
        raise ValueError(
            f"conditioning inputs {MASK!r} and {KNOWN_LATENTS!r} come together (JEN-1's masked training), "
            f"got {list(inputs)}"
        )
    return ordered(inputs)


def legacy_conditioning_inputs(in_channels: int, extra_in_channels: int) -> dict[str, int]:
    """Name the unnamed `extra_in_channels` of a U-Net config saved before `conditioning_inputs` existed.

    Such a U-Net was trained with `[mask, known latents]` (1 + `in_channels` channels) and/or the 12 melody chroma
    channels after them, so its width tells which, unless the two readings coincide (11-channel latents).

    Args:
        in_channels: The U-Net's latent channels.
        extra_in_channels: The old config's extra input channels.

    Returns:
        The named inputs.
    """
    layouts = {
        0: conditioning_inputs(in_channels),
        in_channels + 1: conditioning_inputs(in_channels, masking=True),
        PITCH_CLASSES: conditioning_inputs(in_channels, melody=True),
        in_channels + 1 + PITCH_CLASSES: conditioning_inputs(in_channels, masking=True, melody=True),
    }
    if extra_in_channels not in layouts or (in_channels + 1 == PITCH_CLASSES == extra_in_channels):
        raise ValueError(
            f"the U-Net config has extra_in_channels={extra_in_channels} for {in_channels}-channel latents, which "
            f"names no known layout; replace it by conditioning_inputs naming them, e.g. "
            f"{conditioning_inputs(in_channels, masking=True)}"
        )
    return layouts[extra_in_channels]


def timing_conditioning(seconds_total: torch.Tensor) -> dict[str, torch.Tensor]:
    """The U-Net's `seconds_start` and `seconds_total` arguments for windows with `seconds_total` of real audio.

    One meaning, in training and in the pipeline: the timing conditioning describes the window being denoised.
    `seconds_total` is how many seconds of it are real audio (in training the unpadded length of the crop, in
    the pipeline the length asked for, or the window's in long-form generation); the frames after it are
    padding. `seconds_start` is always 0: a window is not told where it sits in a longer piece (long-form
    windows continue their context instead). Data sets report where a crop lies in its file separately
    (`crop_start_seconds`, `source_seconds`); those are not conditioning.

    Args:
        seconds_total: `(batch,)` seconds of real audio in each window.

    Returns:
        The U-Net's keyword arguments `seconds_start` and `seconds_total`.
    """
    return {"seconds_start": torch.zeros_like(seconds_total), "seconds_total": seconds_total}


def beat_grid(
    bpm: torch.Tensor | float, num_frames: int, latent_rate: float, start_seconds: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """The phase of a quarter-note pulse at `bpm` over `num_frames` latent frames, as its cosine and sine: (1, 0) on
    every beat. Beats fall at the times `t` (seconds from the start of the piece, where the rendered corpus puts
    the first note) at which `t * bpm / 60` is whole; frame `i` of the window lies at
    `t = start_seconds + i / latent_rate`.

    Args:
        bpm: `(batch,)` or one tempo in quarter notes per minute (positive).
        num_frames: Latent frames of the window.
        latent_rate: Latent frames per second.
        start_seconds: `(batch,)` or one time of the window's first frame in the piece (a training crop's start);
            0 puts a beat on the first frame.

    Returns:
        `(batch, 2, num_frames)` float32.
    """
    bpm = torch.as_tensor(bpm, dtype=torch.float64).reshape(-1)
    if not bool(torch.isfinite(bpm).all()) or bool((bpm <= 0).any()):
        raise ValueError(f"a beat grid needs positive, finite tempos in BPM, got {bpm.tolist()}")
    start = torch.as_tensor(start_seconds, dtype=torch.float64).reshape(-1)
    times = start[:, None] + torch.arange(num_frames, dtype=torch.float64)[None] / latent_rate
    beats = torch.remainder(times * bpm[:, None] / 60.0, 1.0)  # in [0, 1): the fraction of a beat since the last
    phase = 2 * math.pi * beats
    return torch.stack([phase.cos(), phase.sin()], dim=1).float()


def build_conditioning(
    inputs: Mapping[str, int],
    latents: torch.Tensor,
    *,
    keep: torch.Tensor | None = None,
    known: torch.Tensor | None = None,
    melody: torch.Tensor | None = None,
    beat: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """The conditioning channels to concatenate after `latents`, in their one order (`ordered`).

    Args:
        inputs: The U-Net's `conditioning_inputs`.
        latents: The noisy latents `(batch, latent_channels, frames)` they go with (for shape, dtype, device).
        keep: `(1 or batch, 1, frames)` weights, positive where `known` is given; `None`: nothing is given.
        known: Clean scaled latents `(batch, latent_channels, frames)`, used where `keep` is positive.
        melody: `(1 or batch, 12, frames)` chromagram; `None`: no melody (zeros).
        beat: `(1 or batch, 2, frames)` beat grid (`beat_grid`); `None`: none (zeros).

    Returns:
        `(batch, sum of widths, frames)`, or `None` for a U-Net without conditioning inputs.
    """
    batch, frames = latents.shape[0], latents.shape[-1]
    mask = torch.zeros_like(latents[:, :1]) if keep is None else (keep > 0).to(latents.dtype).expand(batch, 1, -1)
    parts = []
    for name in ordered(inputs):
        if name == MASK:
            parts.append(mask)
        elif name == KNOWN_LATENTS:
            parts.append(torch.zeros_like(latents) if known is None or keep is None else known * mask)
        elif name == MELODY_CHROMA:
            chroma = latents.new_zeros(1, PITCH_CLASSES, frames) if melody is None else melody.to(latents)
            parts.append(chroma.expand(batch, -1, -1))
        else:  # BEAT_GRID (`ordered` refuses unknown names)
            grid = latents.new_zeros(1, BEAT_CHANNELS, frames) if beat is None else beat.to(latents)
            parts.append(grid.expand(batch, -1, -1))
    return torch.cat(parts, dim=1) if parts else None
