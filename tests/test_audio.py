import math

import pytest
import soundfile as sf
import torch
import torchaudio

from latentmusic.audio import (
    SUPPORTED_FORMATS,
    check_audio,
    crop_or_pad,
    load_audio,
    mel_spectrogram,
    normalize_peak,
    resample,
    save_audio,
    to_channels,
)

SR = 16_000


def sine(freq: float, seconds: float = 1.0, sample_rate: int = SR, amplitude: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    return amplitude * torch.sin(2 * math.pi * freq * t)


def music(channels: int = 2, seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    """A few harmonics of 220 Hz plus a little noise, shape (channels, samples)."""
    generator = torch.Generator().manual_seed(seed)
    tone = sum(sine(220 * k, seconds, amplitude=0.3 / k) for k in (1, 2, 3))
    noise = 0.01 * torch.randn(channels, tone.shape[-1], generator=generator)
    return (tone + noise).clamp(-1, 1)


def on_grid(audio: torch.Tensor, bits: int) -> torch.Tensor:
    """Snap samples to the PCM grid so that an integer round trip is lossless."""
    scale = 2 ** (bits - 1)
    return (audio * scale).round().clamp(-scale, scale - 1) / scale


def peak_frequency(audio: torch.Tensor, sample_rate: int) -> float:
    spectrum = torch.fft.rfft(audio).abs()
    return spectrum.argmax().item() * sample_rate / audio.shape[-1]


def test_supported_formats():
    assert SUPPORTED_FORMATS == (".wav", ".flac", ".ogg")


@pytest.mark.parametrize(
    ("suffix", "subtype", "bits"),
    [(".wav", "PCM_16", 16), (".flac", "PCM_16", 16), (".wav", "PCM_24", 24), (".flac", "PCM_24", 24)],
)
def test_pcm_round_trip_is_bit_exact(tmp_path, suffix, subtype, bits):
    audio = on_grid(music(), bits)
    path = save_audio(tmp_path / "nested" / f"clip{suffix}", audio, SR, subtype=subtype)
    assert sf.info(path).subtype == subtype
    loaded, sample_rate = load_audio(path)
    assert sample_rate == SR
    assert loaded.dtype == torch.float32
    assert torch.equal(loaded, audio)


def test_default_subtype_is_pcm_16(tmp_path):
    assert sf.info(save_audio(tmp_path / "a.wav", music(), SR)).subtype == "PCM_16"
    assert sf.info(save_audio(tmp_path / "a.flac", music(), SR)).subtype == "PCM_16"


def test_float_wav_round_trip_is_exact(tmp_path):
    audio = music()
    loaded, _ = load_audio(save_audio(tmp_path / "a.wav", audio, SR, subtype="FLOAT"))
    assert torch.equal(loaded, audio)


def test_save_accepts_mono_numpy(tmp_path):
    audio = on_grid(music(channels=1)[0], 16)
    loaded, _ = load_audio(save_audio(tmp_path / "a.wav", audio.numpy(), SR))
    assert loaded.shape == (1, audio.shape[-1])
    assert torch.equal(loaded[0], audio)


def test_ogg_round_trip_is_close(tmp_path):
    audio = music(seconds=0.5)
    path = save_audio(tmp_path / "a.ogg", audio, SR)
    assert sf.info(path).subtype == "VORBIS"
    loaded, sample_rate = load_audio(path)
    assert sample_rate == SR
    loaded = crop_or_pad(loaded, audio.shape[-1])
    for original, decoded in zip(audio, loaded):
        assert torch.corrcoef(torch.stack([original, decoded]))[0, 1] > 0.9


def test_load_resamples_and_converts_channels(tmp_path):
    path = save_audio(tmp_path / "a.wav", sine(440).repeat(2, 1), SR, subtype="FLOAT")
    audio, sample_rate = load_audio(path, sample_rate=8_000, channels=1)
    assert sample_rate == 8_000
    assert audio.shape == (1, 8_000)
    assert peak_frequency(audio[0], 8_000) == pytest.approx(440, abs=1)

    stereo, _ = load_audio(save_audio(tmp_path / "mono.wav", sine(440), SR), channels=2)
    assert stereo.shape == (2, SR)
    assert torch.equal(stereo[0], stereo[1])


def test_resample_same_rate_is_identity():
    audio = music()
    assert resample(audio, SR, SR) is audio


def test_to_channels():
    stereo = music()
    assert torch.allclose(to_channels(stereo, 1), stereo.mean(0, keepdim=True))
    assert to_channels(stereo[:1], 3).shape == (3, stereo.shape[-1])
    assert to_channels(stereo, 2) is stereo


def test_crop_or_pad():
    audio = torch.arange(1.0, 11.0)
    assert torch.equal(crop_or_pad(audio, 4, offset=2), torch.tensor([3.0, 4.0, 5.0, 6.0]))
    assert torch.equal(crop_or_pad(audio, 12, offset=8), torch.tensor([9.0, 10.0] + [0.0] * 10))
    assert crop_or_pad(music(), 100).shape == (2, 100)


# Bad inputs: each error must name the problem and the fix.


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not found: .*nope\.wav"):
        load_audio(tmp_path / "nope.wav")


def test_load_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.touch()
    with pytest.raises(ValueError, match=r"could not decode .*empty\.wav.*is it an audio file\?"):
        load_audio(path)


def test_load_non_audio_file(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are not the samples you are looking for\n" * 20)
    with pytest.raises(ValueError, match=r"could not decode .*notes\.wav.*is it an audio file\?"):
        load_audio(path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "song.mp3"
    with pytest.raises(ValueError, match=r"unsupported audio format '\.mp3'.*\.wav, \.flac, \.ogg"):
        save_audio(path, music(), SR)
    assert not path.exists()
    path.write_bytes(b"ID3")
    with pytest.raises(ValueError, match=r"unsupported audio format '\.mp3'.*\.wav, \.flac, \.ogg"):
        load_audio(path)


def test_unsupported_subtype(tmp_path):
    with pytest.raises(ValueError, match=r"'FLOAT' is not supported for \.flac.*PCM_16, PCM_24"):
        save_audio(tmp_path / "a.flac", music(), SR, subtype="FLOAT")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_samples(tmp_path, bad):
    audio = music()
    audio[0, :3] = bad
    kind = "3 NaN and 0 Inf" if math.isnan(bad) else "0 NaN and 3 Inf"
    with pytest.raises(ValueError, match=rf"{kind} samples.*torch\.nan_to_num"):
        save_audio(tmp_path / "a.wav", audio, SR)
    assert not (tmp_path / "a.wav").exists()
    sf.write(tmp_path / "written-elsewhere.wav", audio.T.numpy(), SR, subtype="FLOAT")  # a float file can hold them
    with pytest.raises(ValueError, match=rf"written-elsewhere.wav contains {kind} samples"):
        load_audio(tmp_path / "written-elsewhere.wav")


def test_wrong_rank():
    with pytest.raises(ValueError, match=r"\(samples,\) or \(channels, samples\), got \(1, 2, 100\)"):
        check_audio(torch.zeros(1, 2, 100))


def test_empty_and_integer_audio():
    with pytest.raises(ValueError, match="is empty"):
        check_audio(torch.zeros(2, 0))
    with pytest.raises(ValueError, match=r"floating-point.*audio\.float\(\) / 32768"):
        check_audio(torch.zeros(100, dtype=torch.int16))


def test_bad_channel_conversion():
    with pytest.raises(ValueError, match=r"cannot convert 3-channel audio to 2 channels.*mono"):
        to_channels(music(channels=3), 2)


@pytest.mark.parametrize("sample_rate", [0, -44_100])
def test_bad_sample_rate(tmp_path, sample_rate):
    with pytest.raises(ValueError, match=r"sample_rate must be a positive number of Hz"):
        save_audio(tmp_path / "a.wav", music(), sample_rate)
    with pytest.raises(ValueError, match=r"target_sr must be a positive number of Hz"):
        resample(music(), SR, sample_rate)


# Normalisation.


def test_normalize_peak():
    out = normalize_peak(music(), peak_db=-6.0)
    assert out.abs().max().item() == pytest.approx(10 ** (-6 / 20), rel=1e-6)
    assert torch.equal(normalize_peak(torch.zeros(2, 100)), torch.zeros(2, 100))


# Mel spectrogram.


def test_mel_spectrogram_shape_and_band():
    n_fft, hop, n_mels, freq = 1024, 256, 80, 1000.0
    audio = sine(freq).repeat(2, 1)
    mel = mel_spectrogram(audio, SR, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
    assert mel.shape == (2, n_mels, SR // hop + 1)
    filterbank = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, 0.0, SR / 2, n_mels, SR)
    expected_band = filterbank[round(freq * n_fft / SR)].argmax().item()
    assert mel[0].mean(dim=-1).argmax().item() == expected_band
    assert mel.min() >= math.log(1e-5)
    assert torch.allclose(mel_spectrogram(audio, SR, log=False).clamp(min=1e-5).log(), mel)


def test_mel_spectrogram_rejects_too_short_audio():
    with pytest.raises(ValueError, match=r"too short for n_fft=1024.*crop_or_pad"):
        mel_spectrogram(torch.zeros(400), SR)
