"""The waveform encoder and decoder of `AudioAutoencoder` (`encoder_type="waveform"`, `decoder_type="waveform"`).

1-D convolutions on raw samples in the SoundStream/EnCodec/DAC lineage: strided convolutions with dilated
residual units, Snake activations and weight norm. The width doubles at every down-sampling step, from
`base_channels` up to `max_channels`; the decoder mirrors the encoder.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

ACTIVATIONS = ("snake", "elu")


class Snake(nn.Module):
    """x + sin²(αx)/α with a learnable α per channel (periodic inductive bias for audio, from BigVGAN/DAC).

    Args:
        channels: Channels of the input (one α each).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.sin(self.alpha * x).pow(2) / (self.alpha + 1e-9)


def _activation(name: str, channels: int) -> nn.Module:
    return Snake(channels) if name == "snake" else nn.ELU()


def _conv(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> nn.Module:
    padding = (kernel_size - 1) * dilation // 2
    return weight_norm(nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, padding=padding))


class ResidualUnit(nn.Module):
    """Activation, dilated convolution (kernel 7), activation, 1×1 convolution, plus the input.

    Args:
        channels: Width in and out.
        dilation: Dilation of the kernel-7 convolution.
        activation: `"snake"` or `"elu"`.
    """

    def __init__(self, channels: int, dilation: int, activation: str) -> None:
        super().__init__()
        self.block = nn.Sequential(
            _activation(activation, channels),
            _conv(channels, channels, 7, dilation),
            _activation(activation, channels),
            _conv(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def _residual_units(channels: int, activation: str) -> list[nn.Module]:
    return [ResidualUnit(channels, dilation, activation) for dilation in (1, 3, 9)]


def _down(in_channels: int, out_channels: int, stride: int, activation: str) -> nn.Module:
    conv = nn.Conv1d(in_channels, out_channels, 2 * stride, stride=stride, padding=math.ceil(stride / 2))
    return nn.Sequential(
        *_residual_units(in_channels, activation), _activation(activation, in_channels), weight_norm(conv)
    )


def _up(in_channels: int, out_channels: int, stride: int, activation: str) -> nn.Module:
    conv = nn.ConvTranspose1d(
        in_channels, out_channels, 2 * stride, stride=stride, padding=math.ceil(stride / 2), output_padding=stride % 2
    )
    return nn.Sequential(
        _activation(activation, in_channels), weight_norm(conv), *_residual_units(out_channels, activation)
    )


def _widths(strides, base_channels: int, max_channels: int) -> list[int]:
    return [min(base_channels * 2**i, max_channels) for i in range(len(strides) + 1)]


def _check(base_channels: int, max_channels: int, activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {ACTIVATIONS}")
    if base_channels < 1 or max_channels < 1:
        raise ValueError(f"base_channels and max_channels must be positive, got {base_channels} and {max_channels}")


# Both are `nn.Sequential` subclasses (not a module holding one) so that their parameter names, and with them
# every saved checkpoint's state dict keys, are those of the plain `nn.Sequential` they replace.


class WaveformEncoder(nn.Sequential):
    """Audio `(batch, audio_channels, samples)` → `(batch, out_channels, samples / prod(strides))`.

    Args:
        audio_channels: 1 or 2.
        strides: Down-sampling factors.
        out_channels: Output channels (what the bottleneck takes).
        base_channels: Width after the input convolution; doubles at every down-sampling step.
        max_channels: Cap on the width.
        activation: `"snake"` or `"elu"`.
    """

    def __init__(
        self,
        audio_channels: int,
        strides: tuple[int, ...],
        out_channels: int,
        *,
        base_channels: int = 32,
        max_channels: int = 512,
        activation: str = "snake",
    ) -> None:
        _check(base_channels, max_channels, activation)
        widths = _widths(strides, base_channels, max_channels)
        super().__init__(
            _conv(audio_channels, widths[0], 7),
            *[_down(widths[i], widths[i + 1], s, activation) for i, s in enumerate(strides)],
            _activation(activation, widths[-1]),
            _conv(widths[-1], out_channels, 3),
        )


class WaveformDecoder(nn.Sequential):
    """Latents `(batch, latent_channels, frames)` → audio `(batch, audio_channels, frames * prod(strides))` in
    [-1, 1] (a final tanh).

    Args:
        audio_channels: 1 or 2.
        strides: The encoder's down-sampling factors (applied in reverse as up-sampling).
        latent_channels: Channels of the latents.
        base_channels: Width before the output convolution (the encoder's first width).
        max_channels: Cap on the width.
        activation: `"snake"` or `"elu"`.
    """

    def __init__(
        self,
        audio_channels: int,
        strides: tuple[int, ...],
        latent_channels: int,
        *,
        base_channels: int = 32,
        max_channels: int = 512,
        activation: str = "snake",
    ) -> None:
        _check(base_channels, max_channels, activation)
        widths = _widths(strides, base_channels, max_channels)
        super().__init__(
            _conv(latent_channels, widths[-1], 7),
            *[_up(widths[i + 1], widths[i], s, activation) for i, s in reversed(list(enumerate(strides)))],
            _activation(activation, widths[0]),
            _conv(widths[0], audio_channels, 7),
            nn.Tanh(),
        )
