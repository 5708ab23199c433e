"""The spectral encoder and decoder of `AudioAutoencoder` (`encoder_type="spectral"`, `decoder_type="spectral"`).

The encoder reads log-magnitude STFT frames and the decoder predicts a magnitude and a phase per bin that an
inverse STFT turns into audio (the Vocos head), with ConvNeXt blocks over frames in between. `strides[0]` is the
STFT hop (FFT size 4× the hop); the other strides down-sample STFT frames. Partials land on frequency bins instead
of having to be synthesised sample by sample, so pitch is learned in a fraction of the steps: the small-compute
choice (the demo checkpoint's).
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn


class ConvNeXtBlock(nn.Module):
    """Depthwise conv, per-frame LayerNorm, pointwise MLP, residual (ConvNeXt, as in Vocos).

    Args:
        channels: Width in and out.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 3 * channels), nn.GELU(), nn.Linear(3 * channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(self.depthwise(x).transpose(1, 2))).transpose(1, 2)


def _frame_strides(stride: int) -> dict:
    return dict(kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2))


def _blocks(width: int, count: int) -> list[nn.Module]:
    return [ConvNeXtBlock(width) for _ in range(count)]


def _check(width: int, blocks_per_level: int) -> None:
    if width < 1 or blocks_per_level < 0:
        raise ValueError(f"need width >= 1 and blocks_per_level >= 0, got {width} and {blocks_per_level}")


class SpectralEncoder(nn.Module):
    """Audio → log-magnitude STFT frames (hop `strides[0]`, FFT 4× the hop) → ConvNeXt blocks, with strided
    convolutions for the remaining `strides` → `out_channels` per latent frame.

    Args:
        audio_channels: 1 or 2.
        strides: STFT hop, then frame down-sampling factors.
        out_channels: Output channels (what the bottleneck takes).
        width: Channels of every level.
        blocks_per_level: ConvNeXt blocks per frame rate.
    """

    def __init__(
        self,
        audio_channels: int,
        strides: tuple[int, ...],
        out_channels: int,
        *,
        width: int = 512,
        blocks_per_level: int = 3,
    ) -> None:
        super().__init__()
        _check(width, blocks_per_level)
        self.hop, self.n_fft = strides[0], 4 * strides[0]
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        layers = [nn.Conv1d(audio_channels * (self.n_fft // 2 + 1), width, 7, padding=3)]
        for stride in strides[1:]:
            layers += [*_blocks(width, blocks_per_level), nn.Conv1d(width, width, **_frame_strides(stride))]
        layers += [*_blocks(width, blocks_per_level), nn.Conv1d(width, out_channels, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, samples = x.shape[0], x.shape[-1]
        # zero padding at the ends (not reflection), so that any length, even shorter than the FFT, is encoded
        # the STFT runs in float32, as the decoder's inverse does (no complex bfloat16/float16)
        spec = torch.stft(rearrange(x.float(), "b c s -> (b c) s"), self.n_fft, self.hop,
                          window=self.window.float(), pad_mode="constant",
                          return_complex=True)[..., : samples // self.hop]  # fmt: skip
        # the bins of every audio channel side by side as input channels
        features = rearrange(torch.log(spec.abs() + 1e-5), "(b c) f t -> b (c f) t", b=batch)
        return self.layers(features.to(x.dtype))


class SpectralDecoder(nn.Module):
    """Latents → ConvNeXt blocks, transposed convolutions up to the STFT frame rate → a log magnitude and a
    phase per bin → inverse STFT (the Vocos head).

    Args:
        audio_channels: 1 or 2.
        strides: The encoder's strides (STFT hop first).
        latent_channels: Channels of the latents.
        width: Channels of every level.
        blocks_per_level: ConvNeXt blocks per frame rate.
    """

    def __init__(
        self,
        audio_channels: int,
        strides: tuple[int, ...],
        latent_channels: int,
        *,
        width: int = 512,
        blocks_per_level: int = 3,
    ) -> None:
        super().__init__()
        _check(width, blocks_per_level)
        self.audio_channels, self.hop, self.n_fft = audio_channels, strides[0], 4 * strides[0]
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        layers = [nn.Conv1d(latent_channels, width, 7, padding=3)]
        for stride in reversed(strides[1:]):
            up = nn.ConvTranspose1d(width, width, **_frame_strides(stride), output_padding=stride % 2)
            layers += [*_blocks(width, blocks_per_level), up]
        bins = self.n_fft // 2 + 1
        layers += [*_blocks(width, blocks_per_level), nn.Conv1d(width, 2 * audio_channels * bins, 7, padding=3)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.layers(z)
        batch, frames = out.shape[0], out.shape[-1]
        # The inverse STFT runs in float32: complex bfloat16/float16 do not exist (torch.polar refuses them), and
        # the phase of a low-precision spectrum would be audibly coarse. The audio goes back in the input's dtype.
        log_magnitude, phase = rearrange(out.float(), "b (c two f) t -> two (b c) f t", c=self.audio_channels, two=2)
        spec = torch.polar(torch.exp(log_magnitude.clamp(max=8.0)), phase)
        spec = nn.functional.pad(spec, (0, 1))  # the frame centred on the end, so the output is `frames` hops long
        window = self.window.float()
        audio = torch.istft(spec, self.n_fft, self.hop, window=window, length=frames * self.hop)
        return rearrange(audio, "(b c) s -> b c s", b=batch).to(out.dtype)
