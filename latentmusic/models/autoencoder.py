"""`AudioAutoencoder`: the JEN-1-style continuous-latent waveform autoencoder.

A 1-D convolutional encoder/decoder on raw audio in the SoundStream/EnCodec/DAC lineage (strided
convolutions with dilated residual units, Snake activations, weight norm), with a continuous bottleneck
and no quantisation: a light diagonal-Gaussian (KL) bottleneck by default, or a plain deterministic
one. The interface is diffusers' (`encode(x).latent_dist`, `decode(z).sample`), so diffusers'
`AutoencoderOobleck` can stand in its place in the pipeline.

With `bottleneck="rvq"` the same network is a neural codec for the token LM: a residual vector
quantizer (`vector-quantize-pytorch`'s `ResidualVQ`: EMA codebooks, k-means init, dead-code expiry,
quantizer dropout) turns each latent frame into `num_quantizers` codes (`encode_codes` / `decode_codes`).

With `architecture="spectral"` the encoder reads log-magnitude STFT frames and the decoder predicts a
magnitude and phase per bin that an inverse STFT turns into audio (the Vocos head), with ConvNeXt blocks
over frames in between. Partials land on frequency bins instead of having to be synthesised sample by
sample, so pitch is learned in a fraction of the steps: the small-compute choice (the demo checkpoint's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .config_checks import strict_config

BOTTLENECKS = ("kl", "plain", "rvq")
ARCHITECTURES = ("waveform", "spectral")
ACTIVATIONS = ("snake", "elu")


class Snake(nn.Module):
    """x + sin²(αx)/α with a learnable α per channel (periodic inductive bias for audio, from BigVGAN/DAC)."""

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


class ConvNeXtBlock(nn.Module):
    """Depthwise conv, per-frame LayerNorm, pointwise MLP, residual (ConvNeXt, as in Vocos)."""

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


class SpectralEncoder(nn.Module):
    """Audio → log-magnitude STFT frames (hop `strides[0]`, FFT 4× the hop) → ConvNeXt blocks, with strided
    convolutions for the remaining `strides` → latent moments."""

    def __init__(self, audio_channels: int, strides, width: int, blocks: int, out_channels: int) -> None:
        super().__init__()
        self.hop, self.n_fft = strides[0], 4 * strides[0]
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        layers = [nn.Conv1d(audio_channels * (self.n_fft // 2 + 1), width, 7, padding=3)]
        for stride in strides[1:]:
            layers += [*_blocks(width, blocks), nn.Conv1d(width, width, **_frame_strides(stride))]
        layers += [*_blocks(width, blocks), nn.Conv1d(width, out_channels, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, samples = x.shape
        # zero padding at the ends (not reflection), so that any length, even shorter than the FFT, is encoded
        # the STFT runs in float32, as the decoder's inverse does (no complex bfloat16/float16)
        spec = torch.stft(x.float().reshape(batch * channels, samples), self.n_fft, self.hop,
                          window=self.window.float(), pad_mode="constant",
                          return_complex=True)[..., : samples // self.hop]  # fmt: skip
        features = torch.log(spec.abs() + 1e-5).reshape(batch, -1, spec.shape[-1])
        return self.layers(features.to(x.dtype))


class SpectralDecoder(nn.Module):
    """Latents → ConvNeXt blocks, transposed convolutions up to the STFT frame rate → a log magnitude and a
    phase per bin → inverse STFT (the Vocos head)."""

    def __init__(self, audio_channels: int, strides, width: int, blocks: int, latent_channels: int) -> None:
        super().__init__()
        self.audio_channels, self.hop, self.n_fft = audio_channels, strides[0], 4 * strides[0]
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        layers = [nn.Conv1d(latent_channels, width, 7, padding=3)]
        for stride in reversed(strides[1:]):
            up = nn.ConvTranspose1d(width, width, **_frame_strides(stride), output_padding=stride % 2)
            layers += [*_blocks(width, blocks), up]
        bins = self.n_fft // 2 + 1
        layers += [*_blocks(width, blocks), nn.Conv1d(width, 2 * audio_channels * bins, 7, padding=3)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.layers(z)
        batch, frames = out.shape[0], out.shape[-1]
        # The inverse STFT runs in float32: complex bfloat16/float16 do not exist (torch.polar refuses them), and
        # the phase of a low-precision spectrum would be audibly coarse. The audio goes back in the input's dtype.
        log_magnitude, phase = out.float().reshape(batch * self.audio_channels, 2, -1, frames).unbind(1)
        spec = torch.polar(torch.exp(log_magnitude.clamp(max=8.0)), phase)
        spec = nn.functional.pad(spec, (0, 1))  # the frame centred on the end, so the output is `frames` hops long
        window = self.window.float()
        audio = torch.istft(spec, self.n_fft, self.hop, window=window, length=frames * self.hop)
        return audio.reshape(batch, self.audio_channels, -1).to(out.dtype)


@strict_config
class AudioAutoencoder(ModelMixin, ConfigMixin):
    r"""A continuous-latent waveform autoencoder (JEN-1 style).

    Args:
        audio_channels (`int`, defaults to 1): 1 (mono) or 2 (stereo).
        sample_rate (`int`, defaults to 24000): The sample rate the model works at.
        base_channels (`int`, defaults to 32): Width after the input convolution; doubles at every
            down-sampling step (up to `max_channels`).
        max_channels (`int`, defaults to 512): Cap on the width.
        strides (`tuple[int]`, defaults to `(2, 4, 5, 8)`): Down-sampling factors; their product is the
            hop length (samples per latent frame).
        latent_channels (`int`, defaults to 32): Channels of the latent sequence.
        bottleneck (`str`, defaults to `"kl"`): `"kl"` (diagonal Gaussian, sampled in training),
            `"plain"` (deterministic) or `"rvq"` (residual vector quantization: a codec for the token LM).
        activation (`str`, defaults to `"snake"`): `"snake"` or `"elu"`.
        scaling_factor (`float`, defaults to 1.0), shift_factor (`float`, defaults to 0.0): The diffusion
            model sees `(z - shift_factor) * scaling_factor`; computed from data after training
            (`latentmusic.models.autoencoder.compute_latent_statistics`).
        chunk_size (`int`, defaults to 256), chunk_context (`int`, defaults to 32): Latent frames per
            window, and of context on each side, when chunking is enabled (`enable_chunking`).
        num_quantizers (`int`, defaults to 8): `rvq` only: codebooks per frame (K).
        codebook_size (`int`, defaults to 1024): `rvq` only: codes per codebook.
        codebook_dim (`int`, *optional*): `rvq` only: dimension the codes are looked up in (a learned
            projection from and back to `latent_channels`); `None` looks up in `latent_channels` itself.
        quantizer_dropout (`bool`, defaults to `False`): `rvq` only: in training, quantize each batch with
            a random number of quantizers (SoundStream), so that the first k codebooks alone decode well.
        commitment_weight (`float`, defaults to 1.0): `rvq` only: weight of the commitment loss (in
            `encode(x).latent_dist.commitment_loss` during training).
        codebook_decay (`float`, defaults to 0.99): `rvq` only: EMA decay of the codebook updates.
        threshold_ema_dead_code (`float`, defaults to 2.0): `rvq` only: codes whose EMA usage count falls
            below this are replaced by random encoder outputs in training; 0 disables.
        kmeans_init (`bool`, defaults to `True`): `rvq` only: initialise each codebook by k-means on the
            first batch it sees.
        codebook_cosine_sim (`bool`, defaults to `False`): `rvq` only: l2-normalised codes and inputs, matched by
            cosine similarity (ViT-VQGAN / improved VQGAN), which keeps more codes in use; best with a small
            `codebook_dim`.
        architecture (`str`, defaults to `"waveform"`): `"waveform"` (strided convolutions on samples, above) or
            `"spectral"`: `strides[0]` is then the hop of an STFT (FFT size 4× the hop) whose log magnitudes the
            encoder reads and whose magnitude and phase the decoder predicts for an inverse STFT; the other
            strides down-sample STFT frames. All levels are `max_channels` wide (`base_channels` and
            `activation` are unused).
        blocks_per_level (`int`, defaults to 3): `spectral` only: ConvNeXt blocks per frame rate, in each half.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        audio_channels: int = 1,
        sample_rate: int = 24000,
        base_channels: int = 32,
        max_channels: int = 512,
        strides: tuple[int, ...] = (2, 4, 5, 8),
        latent_channels: int = 32,
        bottleneck: str = "kl",
        activation: str = "snake",
        scaling_factor: float = 1.0,
        shift_factor: float = 0.0,
        chunk_size: int = 256,
        chunk_context: int = 32,
        num_quantizers: int = 8,
        codebook_size: int = 1024,
        codebook_dim: int | None = None,
        quantizer_dropout: bool = False,
        commitment_weight: float = 1.0,
        codebook_decay: float = 0.99,
        threshold_ema_dead_code: float = 2.0,
        kmeans_init: bool = True,
        codebook_cosine_sim: bool = False,
        architecture: str = "waveform",
        blocks_per_level: int = 3,
    ) -> None:
        super().__init__()
        _check_config(
            audio_channels, strides, latent_channels, bottleneck, activation, architecture, chunk_size, chunk_context
        )
        if bottleneck == "rvq":
            self.quantizer = ResidualQuantizer(
                latent_channels,
                num_quantizers,
                codebook_size,
                codebook_dim,
                quantizer_dropout,
                commitment_weight,
                codebook_decay,
                threshold_ema_dead_code,
                kmeans_init,
                codebook_cosine_sim,
            )
        moments = 2 * latent_channels if bottleneck == "kl" else latent_channels
        self.use_chunking = False
        if architecture == "spectral":
            self.encoder = SpectralEncoder(audio_channels, strides, max_channels, blocks_per_level, moments)
            self.decoder = SpectralDecoder(audio_channels, strides, max_channels, blocks_per_level, latent_channels)
            return
        widths = [min(base_channels * 2**i, max_channels) for i in range(len(strides) + 1)]
        self.encoder = nn.Sequential(
            _conv(audio_channels, widths[0], 7),
            *[_down(widths[i], widths[i + 1], s, activation) for i, s in enumerate(strides)],
            _activation(activation, widths[-1]),
            _conv(widths[-1], moments, 3),
        )
        self.decoder = nn.Sequential(
            _conv(latent_channels, widths[-1], 7),
            *[_up(widths[i + 1], widths[i], s, activation) for i, s in reversed(list(enumerate(strides)))],
            _activation(activation, widths[0]),
            _conv(widths[0], audio_channels, 7),
            nn.Tanh(),
        )

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame (the product of the strides)."""
        return math.prod(self.config.strides)

    @property
    def latent_rate(self) -> float:
        """Latent frames per second."""
        return self.config.sample_rate / self.hop_length

    # -- chunking ----------------------------------------------------------------------------------------

    def enable_chunking(self, chunk_size: int | None = None, context: int | None = None) -> None:
        """Encode and decode long inputs window by window, so memory is bounded by the window, not the input.

        Each window is processed with `context` extra latent frames of its neighbours on both sides, and
        only its own part of the output is kept (overlap-save). When the context covers the network's
        receptive field the result equals unchunked processing; with less it is close, and there are no
        crossfades or seams to hear either way.

        Args:
            chunk_size: Latent frames per window (the config's `chunk_size` by default).
            context: Latent frames of context on each side (the config's `chunk_context` by default).
        """
        size = chunk_size or self.config.chunk_size
        context = self.config.chunk_context if context is None else context
        _check_chunks(size, context)
        self.register_to_config(chunk_size=size, chunk_context=context)
        self.use_chunking = True

    def disable_chunking(self) -> None:
        self.use_chunking = False

    def _chunked(self, x: torch.Tensor, fn, in_hop: int, out_hop: int) -> torch.Tensor:
        """Apply `fn` window by window along the last axis (`in_hop` input / `out_hop` output steps a frame)."""
        frames = x.shape[-1] // in_hop
        size, context = self.config.chunk_size, self.config.chunk_context
        if not self.use_chunking or frames <= size:
            return fn(x)
        pieces = []
        for start in range(0, frames, size):
            low, high = max(0, start - context), min(frames, start + size + context)
            out = fn(x[..., low * in_hop : high * in_hop])
            pieces.append(out[..., (start - low) * out_hop : (min(start + size, frames) - low) * out_hop])
        return torch.cat(pieces, dim=-1)

    # -- the diffusers interface -------------------------------------------------------------------------

    def encode(
        self, x: torch.Tensor, return_dict: bool = True, *, sample_rate: int | None = None
    ) -> AutoencoderKLOutput | tuple:
        """Encode audio `(batch, audio_channels, samples)` into a latent distribution.

        The input is zero-padded to a multiple of `hop_length`, so there are `ceil(samples / hop_length)`
        latent frames. With the `rvq` bottleneck the distribution is a `QuantizedLatents`: its mode is the
        quantized latents, and it carries the codes and the commitment loss.

        Args:
            x: Audio, `(batch, audio_channels, samples)`.
            return_dict: Return an `AutoencoderKLOutput` instead of a tuple.
            sample_rate: The audio's sample rate, if known: a rate other than the model's is an error (the
                model would hear every pitch and tempo shifted).
        """
        _check_audio_input(x, self.config.audio_channels)
        if sample_rate is not None and sample_rate != self.config.sample_rate:
            raise ValueError(
                f"audio at {sample_rate} Hz, but this autoencoder works at {self.config.sample_rate} Hz; resample "
                f"it first: latentmusic.audio.resample(audio, {sample_rate}, {self.config.sample_rate})"
            )
        pad = -x.shape[-1] % self.hop_length
        x = nn.functional.pad(x, (0, pad))
        moments = self._chunked(x, self.encoder, self.hop_length, 1)
        if self.config.bottleneck == "rvq":
            posterior = self.quantizer(moments)
        elif self.config.bottleneck == "kl":
            posterior = DiagonalGaussianDistribution(moments)
        else:
            posterior = DiagonalGaussianDistribution(
                torch.cat([moments, torch.zeros_like(moments)], 1), deterministic=True
            )
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple:
        """Decode latents `(batch, latent_channels, frames)` into `frames * hop_length` samples of audio."""
        if z.ndim != 3 or z.shape[1] != self.config.latent_channels:
            raise ValueError(
                f"latents must have shape (batch, {self.config.latent_channels}, frames) for this autoencoder, "
                f"got {tuple(z.shape)}; were they made by another autoencoder?"
            )
        audio = self._chunked(z, self.decoder, 1, self.hop_length)
        return DecoderOutput(sample=audio) if return_dict else (audio,)

    def forward(
        self,
        sample: torch.Tensor,
        sample_posterior: bool = False,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        *,
        sample_rate: int | None = None,
    ) -> DecoderOutput | tuple:
        """Reconstruct audio; the output has exactly the input's length (`sample_rate` is checked as in `encode`)."""
        posterior = self.encode(sample, sample_rate=sample_rate).latent_dist
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        audio = self.decode(z).sample[..., : sample.shape[-1]]
        return DecoderOutput(sample=audio) if return_dict else (audio,)

    # -- the codec interface (bottleneck="rvq") ----------------------------------------------------------

    def encode_codes(self, audio: torch.Tensor) -> torch.Tensor:
        """Encode audio `(batch, audio_channels, samples)` into codes `(batch, num_quantizers, frames)`.

        Args:
            audio: Audio, `(batch, audio_channels, samples)`; zero-padded to whole frames.
        """
        self._require_quantizer("encode_codes")
        return self.encode(audio).latent_dist.codes

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode codes `(batch, k, frames)` into audio `(batch, audio_channels, frames * hop_length)`.

        The first `k <= num_quantizers` codebooks are used; code -1 marks a dropped quantizer. Fewer
        codebooks give a coarser reconstruction (best with a model trained with `quantizer_dropout`).

        Args:
            codes: Codes from `encode_codes` (or a token LM), `(batch, k, frames)`.
        """
        self._require_quantizer("decode_codes")
        return self.decode(self.quantizer.decode(codes)).sample

    def codebook_usage(self, codes: torch.Tensor | None = None) -> CodebookUsage:
        """How well each quantizer uses its codebook: perplexity and fraction of dead codes.

        Args:
            codes: Codes `(batch, num_quantizers, frames)` to count; without them, the EMA usage counts the
                quantizer keeps during training are used (dead there means below `threshold_ema_dead_code`,
                i.e. due for replacement, or below 1e-3 when replacement is off).
        """
        self._require_quantizer("codebook_usage")
        return self.quantizer.usage(codes)

    def _require_quantizer(self, method: str) -> None:
        if self.config.bottleneck != "rvq":
            raise ValueError(
                f"{method} needs a quantized autoencoder, but this one has a continuous "
                f"{self.config.bottleneck!r} bottleneck; build it with bottleneck='rvq'"
            )


class QuantizedLatents(DiagonalGaussianDistribution):
    """The `latent_dist` of an `rvq` autoencoder: a point mass on the quantized latents.

    `mode()` and `sample()` both give the quantized latents (with straight-through gradients in
    training), so code written for the continuous bottlenecks works unchanged; the KL term is zero.

    Args:
        latents: Quantized latents, `(batch, latent_channels, frames)`.
        codes: Their codes, `(batch, num_quantizers, frames)` (-1 where quantizer dropout left a codebook out).
        commitment_loss: Sum over quantizers of the weighted commitment loss (zero in eval mode).
    """

    def __init__(self, latents: torch.Tensor, codes: torch.Tensor, commitment_loss: torch.Tensor) -> None:
        super().__init__(torch.cat([latents, torch.zeros_like(latents)], 1), deterministic=True)
        self.codes = codes
        self.commitment_loss = commitment_loss


@dataclass
class CodebookUsage:
    """Codebook usage per quantizer.

    Args:
        perplexity: `(num_quantizers,)`: exp of the entropy of the code distribution, from 1 (one code
            used) to `codebook_size` (all codes equally used).
        dead_fraction: `(num_quantizers,)`: fraction of codes unused (or, from EMA counts, due for replacement).
    """

    perplexity: torch.Tensor
    dead_fraction: torch.Tensor

    def as_logs(self, prefix: str = "codebook") -> dict[str, float]:
        """Flat `{"<prefix>/perplexity_q0": ..., "<prefix>/dead_fraction_q0": ...}` for a training logger.

        Args:
            prefix: Prefix of every key.
        """
        logs = {}
        for name in ("perplexity", "dead_fraction"):
            for k, value in enumerate(getattr(self, name).tolist()):
                logs[f"{prefix}/{name}_q{k}"] = value
        return logs


class ResidualQuantizer(nn.Module):
    """`vector_quantize_pytorch.ResidualVQ` on channel-first latents, with code lookup and usage stats.

    Args:
        dim: Channels of the latents.
        num_quantizers: Codebooks (K).
        codebook_size: Codes per codebook.
        codebook_dim: Lookup dimension (projections in and out), or `None` for `dim`.
        quantizer_dropout: Random number of quantizers per training batch.
        commitment_weight: Weight of the commitment loss.
        codebook_decay: EMA decay of the codebooks.
        threshold_ema_dead_code: EMA count below which a code is replaced in training (0: never).
        kmeans_init: K-means initialisation of the codebooks on the first batch.
        cosine_sim: Match l2-normalised inputs to l2-normalised codes by cosine similarity.
    """

    def __init__(
        self,
        dim: int,
        num_quantizers: int,
        codebook_size: int,
        codebook_dim: int | None,
        quantizer_dropout: bool,
        commitment_weight: float,
        codebook_decay: float,
        threshold_ema_dead_code: float,
        kmeans_init: bool,
        cosine_sim: bool = False,
    ) -> None:
        super().__init__()
        _check_quantizer_config(num_quantizers, codebook_size, codebook_dim, commitment_weight, codebook_decay)
        try:
            from vector_quantize_pytorch import ResidualVQ
        except ImportError as error:
            raise ImportError(
                "bottleneck='rvq' needs vector-quantize-pytorch; install it with `pip install vector-quantize-pytorch`"
            ) from error
        self.rvq = ResidualVQ(
            dim=dim,
            num_quantizers=num_quantizers,
            codebook_size=codebook_size,
            codebook_dim=codebook_dim,
            quantize_dropout=quantizer_dropout,
            commitment_weight=commitment_weight,
            decay=codebook_decay,
            threshold_ema_dead_code=threshold_ema_dead_code,
            kmeans_init=kmeans_init,
            use_cosine_sim=cosine_sim,
        )
        self.threshold_ema_dead_code = threshold_ema_dead_code

    def forward(self, latents: torch.Tensor) -> QuantizedLatents:
        """Quantize latents `(batch, dim, frames)`.

        Args:
            latents: Encoder output, `(batch, dim, frames)`.
        """
        quantized, codes, losses = self.rvq(latents.transpose(1, 2))
        return QuantizedLatents(quantized.transpose(1, 2).to(latents.dtype), codes.transpose(1, 2), losses.sum())

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantized latents `(batch, dim, frames)` from the codes of the first k quantizers.

        Args:
            codes: `(batch, k, frames)` long, k <= num_quantizers; -1 leaves a quantizer out.
        """
        codebooks = self.rvq.codebooks  # (num_quantizers, codebook_size, lookup dim)
        if codes.ndim != 3 or not 1 <= codes.shape[1] <= len(codebooks):
            raise ValueError(
                f"codes must have shape (batch, k, frames) with 1 <= k <= {len(codebooks)} quantizers, "
                f"got {tuple(codes.shape)}"
            )
        if codes.dtype not in (torch.int32, torch.int64) or codes.max() >= codebooks.shape[1] or codes.min() < -1:
            raise ValueError(
                f"codes must be integers in [0, {codebooks.shape[1]}) (or -1 for a dropped quantizer), got "
                f"{codes.dtype} in [{codes.min().item()}, {codes.max().item()}]; were they made by another codec?"
            )
        quantized = codebooks.new_zeros(codes.shape[0], codes.shape[2], codebooks.shape[2])
        for codebook, layer_codes in zip(codebooks, codes.unbind(1)):
            kept = (layer_codes >= 0).unsqueeze(-1)
            quantized = quantized + codebook[layer_codes.clamp_min(0)] * kept
        return self.rvq.project_out(quantized).transpose(1, 2)

    @torch.no_grad()
    def usage(self, codes: torch.Tensor | None = None) -> CodebookUsage:
        """Perplexity and dead-code fraction per quantizer, from `codes` or the EMA counts.

        Args:
            codes: `(batch, num_quantizers, frames)` to count, or `None` for the EMA counts.
        """
        size = self.rvq.codebook_size
        if codes is None:
            counts = torch.stack([layer._codebook.cluster_size[0] for layer in self.rvq.layers]).float()
            dead = counts < (self.threshold_ema_dead_code or 1e-3)
        else:
            rows = codes.transpose(0, 1).reshape(codes.shape[1], -1)
            counts = torch.stack([torch.bincount(row[row >= 0], minlength=size) for row in rows]).float()
            dead = counts == 0
        probs = counts / counts.sum(-1, keepdim=True).clamp_min(1e-12)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
        return CodebookUsage(perplexity=entropy.exp(), dead_fraction=dead.float().mean(-1))


@torch.no_grad()
def compute_latent_statistics(vae: AudioAutoencoder, batches, use_shift: bool = False) -> tuple[float, float]:
    """Measure the latents' mean and standard deviation over audio batches and store the scaling in the config.

    After this, `(z - shift_factor) * scaling_factor` has unit variance (and zero mean when `use_shift`), as
    the diffusion model expects; `save_pretrained` keeps both values.
    """
    total = total_sq = count = 0.0
    for audio in batches:
        z = vae.encode(audio.to(vae.device, vae.dtype)).latent_dist.mode().double()
        total, total_sq, count = total + z.sum().item(), total_sq + z.pow(2).sum().item(), count + z.numel()
    if count == 0:
        raise ValueError("no audio was given to compute latent statistics from")
    mean = total / count
    shift = mean if use_shift else 0.0
    std = math.sqrt(max(total_sq / count - 2 * shift * mean + shift**2, 1e-12))
    vae.register_to_config(scaling_factor=1.0 / std, shift_factor=shift)
    return 1.0 / std, shift


def _check_audio_input(x: torch.Tensor, channels: int) -> None:
    if x.ndim != 3:
        raise ValueError(
            f"audio must have shape (batch, channels, samples), got {tuple(x.shape)}; add x[None] for one clip"
        )
    if x.shape[1] != channels:
        raise ValueError(
            f"got {x.shape[1]}-channel audio but this autoencoder was configured for audio_channels={channels}; "
            "convert with latentmusic.audio.to_channels"
        )
    if not torch.isfinite(x).all():
        raise ValueError(
            f"audio contains {int((~torch.isfinite(x)).sum())} NaN/Inf samples; "
            "clean it (torch.nan_to_num) or check its source"
        )


def _check_chunks(size: int, context: int) -> None:
    if size < 1 or context < 0:
        raise ValueError(f"chunking needs chunk_size >= 1 and context >= 0 latent frames, got {size} and {context}")


def _check_quantizer_config(num_quantizers, codebook_size, codebook_dim, commitment_weight, codebook_decay) -> None:
    if num_quantizers < 1 or codebook_size < 2:
        raise ValueError(
            f"bottleneck='rvq' needs num_quantizers >= 1 and codebook_size >= 2, "
            f"got {num_quantizers} and {codebook_size}"
        )
    if codebook_dim is not None and codebook_dim < 1:
        raise ValueError(f"codebook_dim must be positive (or None for latent_channels), got {codebook_dim}")
    if commitment_weight < 0 or not 0 <= codebook_decay < 1:
        raise ValueError(
            f"need commitment_weight >= 0 and 0 <= codebook_decay < 1, got {commitment_weight} and {codebook_decay}"
        )


def _check_config(
    audio_channels, strides, latent_channels, bottleneck, activation, architecture, chunk_size, chunk_context
) -> None:
    if audio_channels not in (1, 2):
        raise ValueError(f"audio_channels must be 1 (mono) or 2 (stereo), got {audio_channels}")
    if not strides or any(int(s) < 1 for s in strides):
        raise ValueError(f"strides must be a non-empty list of positive integers, got {strides}")
    if latent_channels < 1:
        raise ValueError(f"latent_channels must be positive, got {latent_channels}")
    if bottleneck not in BOTTLENECKS:
        raise ValueError(f"unknown bottleneck {bottleneck!r}; choose from {BOTTLENECKS}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {ACTIVATIONS}")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose from {ARCHITECTURES}")
    _check_chunks(chunk_size, chunk_context)
