"""Patch-based discriminators at several resolutions, for the autoencoder's adversarial objective.

Two families, as in EnCodec/DAC and HiFi-GAN: multi-resolution complex-STFT discriminators judge
time-frequency patches at several window sizes; multi-period discriminators judge the waveform folded by
several prime periods. Each returns its patch logits and the feature maps used for feature matching.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

Judgement = tuple[torch.Tensor, list[torch.Tensor]]  # (patch logits, feature maps)


def _conv2d(in_channels: int, out_channels: int, kernel: tuple[int, int], stride: tuple[int, int]) -> nn.Module:
    padding = (kernel[0] // 2, kernel[1] // 2)
    return weight_norm(nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding))


class _PatchStack(nn.Module):
    """Conv2d layers with LeakyReLU, then a 1-channel conv giving one logit per patch."""

    def __init__(self, in_channels: int, channels: int, layers: list[tuple[tuple[int, int], tuple[int, int]]]):
        super().__init__()
        widths = [in_channels] + [channels] * len(layers)
        self.convs = nn.ModuleList(_conv2d(widths[i], widths[i + 1], k, s) for i, (k, s) in enumerate(layers))
        self.out = _conv2d(channels, 1, (3, 3), (1, 1))

    def forward(self, x: torch.Tensor) -> Judgement:
        features = []
        for conv in self.convs:
            x = nn.functional.leaky_relu(conv(x), 0.1)
            features.append(x)
        return self.out(x), features


class STFTDiscriminator(nn.Module):
    """Judges the complex STFT (real and imaginary parts as channels) at one window size."""

    def __init__(self, audio_channels: int, n_fft: int, channels: int) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        layers = [((3, 9), (1, 1)), ((3, 9), (1, 2)), ((3, 9), (1, 2)), ((3, 9), (1, 2)), ((3, 3), (1, 1))]
        self.stack = _PatchStack(2 * audio_channels, channels, layers)

    def forward(self, audio: torch.Tensor) -> Judgement:
        spec = torch.stft(
            rearrange(audio, "b c s -> (b c) s"),
            self.n_fft,
            hop_length=self.n_fft // 4,
            window=self.window,
            return_complex=True,
        )
        # real and imaginary parts of every audio channel as image channels, over time × frequency
        spec = rearrange(torch.view_as_real(spec), "(b c) f t two -> b (c two) t f", b=audio.shape[0])
        return self.stack(spec)


class PeriodDiscriminator(nn.Module):
    """Judges the waveform folded into rows of `period` samples (HiFi-GAN)."""

    def __init__(self, audio_channels: int, period: int, channels: int) -> None:
        super().__init__()
        self.period = period
        layers = [((5, 1), (3, 1))] * 4 + [((5, 1), (1, 1))]
        self.stack = _PatchStack(audio_channels, channels, layers)

    def forward(self, audio: torch.Tensor) -> Judgement:
        pad = -audio.shape[-1] % self.period
        audio = nn.functional.pad(audio, (0, pad), mode="reflect" if pad < audio.shape[-1] else "constant")
        return self.stack(rearrange(audio, "b c (t p) -> b c t p", p=self.period))


class MultiDiscriminator(ModelMixin, ConfigMixin):
    """Multi-resolution STFT and multi-period discriminators, judged together.

    Args:
        audio_channels: 1 or 2.
        stft_windows: STFT sizes of the multi-resolution discriminators (empty to disable).
        periods: Periods of the multi-period discriminators (empty to disable).
        channels: Width of every discriminator's conv layers.
    """

    @register_to_config
    def __init__(
        self,
        audio_channels: int = 1,
        stft_windows: tuple[int, ...] = (2048, 1024, 512),
        periods: tuple[int, ...] = (2, 3, 5, 7, 11),
        channels: int = 32,
    ) -> None:
        super().__init__()
        if not stft_windows and not periods:
            raise ValueError("MultiDiscriminator needs at least one STFT window or one period")
        self.discriminators = nn.ModuleList(
            [STFTDiscriminator(audio_channels, n, channels) for n in stft_windows]
            + [PeriodDiscriminator(audio_channels, p, channels) for p in periods]
        )

    def forward(self, audio: torch.Tensor) -> list[Judgement]:
        return [discriminator(audio) for discriminator in self.discriminators]
