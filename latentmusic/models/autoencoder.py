"""`AudioAutoencoder`: the JEN-1-style continuous-latent audio autoencoder, composed of an encoder, a bottleneck and
a decoder chosen by config.

- Encoders and decoders: `"waveform"` (strided 1-D convolutions on samples with Snake activations, SoundStream /
  EnCodec / DAC lineage; `latentmusic.models.autoencoder_waveform`) or `"spectral"` (an STFT front end and a Vocos
  magnitude-and-phase head; `latentmusic.models.autoencoder_spectral`).
- Bottlenecks (`latentmusic.models.bottlenecks`): `"kl"` (a light diagonal-Gaussian VAE, the default), `"plain"`
  (deterministic) or `"rvq"` (residual vector quantization, `latentmusic.models.rvq`: the token LM's codec, with
  `encode_codes` / `decode_codes`).

The interface is diffusers' (`encode(x).latent_dist`, `decode(z).sample`), so diffusers' `AutoencoderOobleck` can
stand in its place in the pipeline.
"""

from __future__ import annotations

import inspect
import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import logging
from torch import nn

from .autoencoder_spectral import SpectralDecoder, SpectralEncoder
from .autoencoder_waveform import WaveformDecoder, WaveformEncoder
from .bottlenecks import BOTTLENECKS
from .config_checks import closest_names, strict_config
from .rvq import CodebookUsage

logger = logging.get_logger(__name__)

ENCODERS: dict[str, type[nn.Module]] = {"waveform": WaveformEncoder, "spectral": SpectralEncoder}
DECODERS: dict[str, type[nn.Module]] = {"waveform": WaveformDecoder, "spectral": SpectralDecoder}

# The flat config of before the composed model (one key per option of every part): old key -> new key in the
# `*_kwargs` of the part it belonged to. `architecture` chose encoder and decoder together, `bottleneck` the
# bottleneck; the options of the parts not chosen were saved too, and are dropped.
LEGACY_NETWORK_KEYS = {
    "waveform": {"base_channels": "base_channels", "max_channels": "max_channels", "activation": "activation"},
    "spectral": {"max_channels": "width", "blocks_per_level": "blocks_per_level"},
}
LEGACY_RVQ_KEYS = (
    "num_quantizers",
    "codebook_size",
    "codebook_dim",
    "quantizer_dropout",
    "commitment_weight",
    "codebook_decay",
    "threshold_ema_dead_code",
    "kmeans_init",
    "codebook_cosine_sim",
)
LEGACY_KEYS = frozenset(
    {"architecture", "bottleneck", "base_channels", "max_channels", "activation", "blocks_per_level", *LEGACY_RVQ_KEYS}
)


@strict_config
class AudioAutoencoder(ModelMixin, ConfigMixin):
    r"""An audio autoencoder made of an encoder, a bottleneck and a decoder, each chosen by name.

    The config has the options every part shares at the top level (audio format, strides, latent width, latent
    scaling, chunking), and for each part a type and a dict of that type's own options: `encoder_type` +
    `encoder_kwargs`, `decoder_type` + `decoder_kwargs`, `bottleneck_type` + `bottleneck_kwargs`. A part's
    options are the keyword-only arguments of its class (listed below); unknown ones are an error naming the
    closest valid one, and the saved config holds all of them, defaults included. So an RVQ option cannot sit,
    unused, in the config of a KL autoencoder, and a new part brings its options without touching this class.

    Configs of the earlier flat format (`architecture`, `bottleneck`, `base_channels`, `num_quantizers`, ...)
    still load: `_convert_legacy_config` maps them, with a logged notice.

    Args:
        audio_channels (`int`, defaults to 1): 1 (mono) or 2 (stereo).
        sample_rate (`int`, defaults to 24000): The sample rate the model works at.
        strides (`tuple[int]`, defaults to `(2, 4, 5, 8)`): Down-sampling factors; their product is the hop
            length (samples per latent frame). For the spectral encoder/decoder `strides[0]` is the STFT hop
            (FFT size 4× the hop) and the others down-sample STFT frames.
        latent_channels (`int`, defaults to 32): Channels of the latent sequence.
        encoder_type (`str`, defaults to `"waveform"`): `"waveform"` or `"spectral"`.
        encoder_kwargs (`dict`, *optional*): The encoder's options. `waveform`: `base_channels` (32; width
            after the input convolution, doubling at every down-sampling step), `max_channels` (512; cap on the
            width), `activation` (`"snake"` or `"elu"`). `spectral`: `width` (512; channels of every level),
            `blocks_per_level` (3; ConvNeXt blocks per frame rate).
        decoder_type (`str`, *optional*): `"waveform"` or `"spectral"`; `None` is the encoder's type.
        decoder_kwargs (`dict`, *optional*): The decoder's options (as for the encoder); `None` mirrors the
            encoder's when both are of one type.
        bottleneck_type (`str`, defaults to `"kl"`): `"kl"` (diagonal Gaussian, sampled in training),
            `"plain"` (deterministic) or `"rvq"` (residual vector quantization: a codec for the token LM).
        bottleneck_kwargs (`dict`, *optional*): The bottleneck's options; `kl` and `plain` take none, `rvq`
            takes `num_quantizers` (8), `codebook_size` (1024), `codebook_dim` (None), `quantizer_dropout`
            (False), `commitment_weight` (1.0), `codebook_decay` (0.99), `threshold_ema_dead_code` (2.0),
            `kmeans_init` (True) and `codebook_cosine_sim` (False), documented in
            `latentmusic.models.rvq.ResidualVQBottleneck`.
        scaling_factor (`float`, defaults to 1.0), shift_factor (`float`, defaults to 0.0): The diffusion
            model sees `(z - shift_factor) * scaling_factor`; computed from data after training
            (`latentmusic.models.autoencoder.compute_latent_statistics`).
        chunk_size (`int`, defaults to 256), chunk_context (`int`, defaults to 32): Latent frames per
            window, and of context on each side, when chunking is enabled (`enable_chunking`).

    Example:
        ```py
        >>> codec = AudioAutoencoder(
        ...     sample_rate=16000, strides=(2, 4, 8), latent_channels=8,
        ...     encoder_kwargs={"base_channels": 8, "max_channels": 64},
        ...     bottleneck_type="rvq", bottleneck_kwargs={"num_quantizers": 4, "codebook_size": 64},
        ... )
        >>> codec.config.decoder_kwargs  # mirrored from the encoder
        {'base_channels': 8, 'max_channels': 64, 'activation': 'snake'}
        ```
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        audio_channels: int = 1,
        sample_rate: int = 24000,
        strides: tuple[int, ...] = (2, 4, 5, 8),
        latent_channels: int = 32,
        encoder_type: str = "waveform",
        encoder_kwargs: dict | None = None,
        decoder_type: str | None = None,
        decoder_kwargs: dict | None = None,
        bottleneck_type: str = "kl",
        bottleneck_kwargs: dict | None = None,
        scaling_factor: float = 1.0,
        shift_factor: float = 0.0,
        chunk_size: int = 256,
        chunk_context: int = 32,
    ) -> None:
        super().__init__()
        _check_config(audio_channels, strides, latent_channels, chunk_size, chunk_context)
        decoder_type = decoder_type or encoder_type
        if decoder_kwargs is None and decoder_type == encoder_type:
            decoder_kwargs = encoder_kwargs
        parts = dict(
            encoder_kwargs=_part_kwargs("encoder", ENCODERS, encoder_type, encoder_kwargs),
            decoder_kwargs=_part_kwargs("decoder", DECODERS, decoder_type, decoder_kwargs),
            bottleneck_kwargs=_part_kwargs("bottleneck", BOTTLENECKS, bottleneck_type, bottleneck_kwargs),
        )
        self.register_to_config(decoder_type=decoder_type, **parts)  # the saved config spells every option out
        self.use_chunking = False
        self.bottleneck = BOTTLENECKS[bottleneck_type](latent_channels, **parts["bottleneck_kwargs"])
        self.encoder = ENCODERS[encoder_type](
            audio_channels, strides, self.bottleneck.in_channels, **parts["encoder_kwargs"]
        )
        self.decoder = DECODERS[decoder_type](audio_channels, strides, latent_channels, **parts["decoder_kwargs"])

    @classmethod
    def _convert_legacy_config(cls, config: dict) -> dict:
        """Map a config of the flat format (before the composed model) to this one, logging what changed.

        Args:
            config: Constructor arguments or a loaded config; one without old keys is returned as it is.

        Returns:
            The config with `architecture`, `bottleneck` and the parts' options moved into `encoder_type`,
            `decoder_type`, `bottleneck_type` and their `*_kwargs` (options given in those win).
        """
        old_keys = sorted(LEGACY_KEYS & set(config))
        if not old_keys:
            return config
        new = {key: value for key, value in config.items() if key not in LEGACY_KEYS}
        old = {key: config[key] for key in old_keys}
        architecture = old.pop("architecture", None)
        kind = architecture or new.get("encoder_type", "waveform")
        network = {new_key: old[key] for key, new_key in LEGACY_NETWORK_KEYS.get(kind, {}).items() if key in old}
        for part in ("encoder", "decoder"):
            if architecture is not None:
                new.setdefault(f"{part}_type", architecture)
            given = new.get(f"{part}_kwargs")
            # a decoder without options of its own mirrors the encoder's (see __init__), old ones included
            if network and new.get(f"{part}_type", kind) == kind and (part == "encoder" or given is not None):
                new[f"{part}_kwargs"] = {**network, **(given or {})}
        new.setdefault("bottleneck_type", old.pop("bottleneck", "kl"))
        if new["bottleneck_type"] == "rvq":
            rvq = {key: old[key] for key in LEGACY_RVQ_KEYS if key in old}
            new["bottleneck_kwargs"] = {**rvq, **(new.get("bottleneck_kwargs") or {})}
        changed = {key: new[key] for key in new if key not in config or key.endswith("_kwargs")}
        logger.warning(
            f"AudioAutoencoder: config keys {', '.join(old_keys)} are the old flat format (deprecated), read as "
            f"{changed}; save_pretrained writes the new format (update your configs to it)"
        )
        return new

    def _fix_state_dict_keys_on_load(self, state_dict) -> None:
        """diffusers' hook for renamed weights: checkpoints of the flat format kept the RVQ under `quantizer.`."""
        super()._fix_state_dict_keys_on_load(state_dict)
        for key in [key for key in state_dict if key.startswith("quantizer.")]:
            state_dict["bottleneck." + key.removeprefix("quantizer.")] = state_dict.pop(key)

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame (the product of the strides)."""
        return math.prod(self.config.strides)

    @property
    def latent_rate(self) -> float:
        """Latent frames per second."""
        return self.config.sample_rate / self.hop_length

    @property
    def is_codec(self) -> bool:
        """Whether the bottleneck gives discrete codes (`rvq`): `encode_codes`, `decode_codes`, `codebook_usage`."""
        return self.bottleneck.is_codec

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
        latent frames. With the `rvq` bottleneck the distribution is a `latentmusic.models.rvq.QuantizedLatents`:
        its mode is the quantized latents, and it carries the codes and the commitment loss.

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
        posterior = self.bottleneck(self._chunked(x, self.encoder, self.hop_length, 1))
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

    # -- the codec interface (bottleneck_type="rvq") ----------------------------------------------------------

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
        return self.decode(self.bottleneck.decode(codes)).sample

    def codebook_usage(self, codes: torch.Tensor | None = None) -> CodebookUsage:
        """How well each quantizer uses its codebook: perplexity and fraction of dead codes.

        Args:
            codes: Codes `(batch, num_quantizers, frames)` to count; without them, the EMA usage counts the
                quantizer keeps during training are used (dead there means below `threshold_ema_dead_code`,
                i.e. due for replacement, or below 1e-3 when replacement is off).
        """
        self._require_quantizer("codebook_usage")
        return self.bottleneck.usage(codes)

    def _require_quantizer(self, method: str) -> None:
        if not self.is_codec:
            raise ValueError(
                f"{method} needs a quantized autoencoder, but this one has a continuous "
                f"{self.config.bottleneck_type!r} bottleneck; build it with bottleneck_type='rvq'"
            )


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


def _part_kwargs(part: str, registry: dict[str, type[nn.Module]], name: str, given: dict | None) -> dict:
    """All options of the part `registry[name]`: its keyword-only arguments' defaults, updated by `given`."""
    if name not in registry:
        raise ValueError(f"unknown {part}_type {name!r}; choose from {tuple(registry)}")
    options = {
        p.name: p.default for p in inspect.signature(registry[name]).parameters.values() if p.kind is p.KEYWORD_ONLY
    }
    given = dict(given or {})
    unknown = sorted(set(given) - set(options))
    if unknown:
        raise ValueError(
            f"{part}_kwargs got unknown options {closest_names(unknown, list(options))} for {part}_type={name!r}; "
            f"valid ones: {', '.join(options) or 'none'}"
        )
    return {**options, **given}


def _check_config(audio_channels, strides, latent_channels, chunk_size, chunk_context) -> None:
    if audio_channels not in (1, 2):
        raise ValueError(f"audio_channels must be 1 (mono) or 2 (stereo), got {audio_channels}")
    if not strides or any(int(s) < 1 for s in strides):
        raise ValueError(f"strides must be a non-empty list of positive integers, got {strides}")
    if latent_channels < 1:
        raise ValueError(f"latent_channels must be positive, got {latent_channels}")
    _check_chunks(chunk_size, chunk_context)
