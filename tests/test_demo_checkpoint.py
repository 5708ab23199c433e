"""The demo checkpoints that ship in the package (docs/model-card.md): they load by name and follow their prompts."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from latentmusic import LatentMusicPipeline, TokenMusicPipeline
from latentmusic.checkpoints import (
    DEFAULT_PIPELINE,
    FOLDER,
    SHIPPED,
    resolve_pretrained,
    shipped_path,
)
from latentmusic.cli import main
from latentmusic.data.index import read_metadata
from latentmusic.evaluation.attributes import estimate_note_density, estimate_tempo, key_correlations
from latentmusic.evaluation.scoring import tempo_match

from .conftest import load_benchmark

FAST = "a fast fiddle tune on flute at 132 BPM"


@pytest.fixture(scope="module")
def demo() -> LatentMusicPipeline:
    pipe = LatentMusicPipeline.from_pretrained("latentmusic/demo")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_names_resolve_to_shipped_folders_and_other_names_pass_through(tmp_path):
    for name in SHIPPED:
        assert (shipped_path(name) / "model_index.json").is_file()
    assert resolve_pretrained(DEFAULT_PIPELINE) == str(shipped_path(DEFAULT_PIPELINE))
    assert resolve_pretrained(str(tmp_path)) == str(tmp_path)
    with pytest.raises(KeyError, match="latentmusic/demo"):
        shipped_path("latentmusic/nope")


def test_the_shipped_weights_fit_the_budget_and_load_as_float32(demo):
    total = sum(f.stat().st_size for f in FOLDER.rglob("*") if f.is_file())
    assert total <= 50e6
    assert {p.dtype for m in (demo.unet, demo.vae, demo.text_encoder) for p in m.parameters()} == {torch.float32}
    assert demo.sample_rate == 16000


def envelope_variation(pipe, prompt: str, seeds: range, seconds: float = 6.0) -> np.ndarray:
    """Per seed: how much the loudness moves (std / mean of the frame RMS): high for struck or plucked notes that
    decay, low for sustained tones."""
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    audios = pipe([prompt] * len(seeds), audio_length_in_s=seconds, num_inference_steps=12, generator=generators,
                  output_type="np").audios  # fmt: skip
    assert np.isfinite(audios).all() and np.abs(audios).max(-1).min() > 1e-3  # not silence
    rms = np.stack([librosa.feature.rms(y=audio[0])[0] for audio in audios])
    return rms.std(-1) / rms.mean(-1)


@pytest.mark.slow
def test_struck_and_plucked_instruments_decay_where_bowed_and_organ_tones_sustain(demo):
    """The shipped model follows the instrument in its prompt: with the same starting noise, a reel asked of a
    marimba (struck) or a nylon-string guitar (plucked) has a more percussive loudness envelope than the same reel
    asked of a string ensemble or a church organ (sustained), for each of 8 seeds (a sign test: chance would give
    this once in 256 draws per pair), and by a wide margin on average. (A tempo only written in the prompt is
    not followed, 60 against 150 BPM leave the note density unchanged; the beat grid sets it: see the next test.
    Neither are the subtler pairs, flute against harp: see docs/model-card.md.)"""
    seeds = range(8)
    pairs = (("marimba", "string ensemble"), ("nylon-string guitar", "church organ"))
    for struck_instrument, sustained_instrument in pairs:
        struck = envelope_variation(demo, f"an Irish reel played by a {struck_instrument} at 120 BPM", seeds)
        sustained = envelope_variation(demo, f"an Irish reel played by a {sustained_instrument} at 120 BPM", seeds)
        assert (struck > sustained).all(), (struck_instrument, struck, sustained)
        assert struck.mean() > 1.5 * sustained.mean(), (struck_instrument, struck, sustained)


def test_the_cli_generates_with_the_demo_by_default(tmp_path, capsys):
    out = tmp_path / "clip.wav"
    assert main(["generate", FAST, "--seconds", "2", "--steps", "4", "--seed", "0", "--out", str(out)]) == 0
    audio, rate = sf.read(out)
    assert rate == 16000 and len(audio) == 32000 and np.abs(audio).max() > 1e-3


def test_the_token_branch_demo_loads_and_generates():
    pipe = TokenMusicPipeline.from_pretrained("latentmusic/demo-token-lm")
    pipe.set_progress_bar_config(disable=True)
    audio = pipe(FAST, audio_length_in_s=1.0, generator=torch.Generator().manual_seed(0), output_type="pt").audios
    assert audio.shape[-1] == 16000 and torch.isfinite(audio).all() and audio.abs().max() > 1e-3


def key_ranks(audios: np.ndarray, sample_rate: int, tonics: list[int]) -> list[int]:
    """Per clip: the rank (1 = best) of the asked-for major key among the 24 keys by `key_correlations` (the
    correlation of the clip's mean chroma with the rotated Temperley-Kostka-Payne profiles, as `estimate_key`'s
    librosa backend ranks them)."""
    ranks = []
    for audio, tonic in zip(audios, tonics):
        scores = key_correlations(audio[0], sample_rate)
        assert scores is not None, "a generated clip without pitch classes"
        ranks.append(int((scores > scores[tonic]).sum()) + 1)
    return ranks


@pytest.mark.slow
def test_the_beat_grid_sets_the_tempo(demo):
    """With `bpm=` (the beat-grid rhythm control the demo was trained with), the same reel asked at 72, 96 and 144
    BPM (4 seeds each) comes out at the asked tempo or a metrical level of it (within 8 %: measured 144, 96 and 144
    BPM for every seed), and its notes get denser as the tempo rises (measured 2.2, 3.0 and 3.8 onsets a second).
    Without the grid the estimates scatter (90 to 185 BPM for every asked tempo): the written tempo is not read."""
    assert demo.trained_with_beat_grid
    prompt = "a traditional Irish tune in D major played by a piano at {} BPM"
    density = {}
    for bpm in (72, 96, 144):
        generators = [torch.Generator().manual_seed(seed) for seed in range(4)]
        audios = demo([prompt.format(bpm)] * 4, audio_length_in_s=10.0, num_inference_steps=25, guidance_scale=3.0,
                      generator=generators, output_type="np", bpm=bpm).audios  # fmt: skip
        estimates = [estimate_tempo(audio[0], demo.sample_rate) for audio in audios]
        assert all(tempo_match(estimate, bpm) != "wrong" for estimate in estimates), (bpm, estimates)
        density[bpm] = np.mean([estimate_note_density(audio[0], demo.sample_rate) for audio in audios])
    assert density[72] < density[96] < density[144] and density[144] > 1.4 * density[72], density


@pytest.mark.slow
def test_generated_music_is_in_the_key_its_prompt_asks_for(demo):
    """The shipped model follows the key of its prompt: the same reel asked in C, E or Ab major (3 seeds each, the
    same seeds for every key) comes out with the asked-for key among the best-fitting few of 24 (a model that
    ignores the key has it at rank 12.5 on average, and no key can fit all three prompts' seeds at once)."""
    keys = {"C": 0, "E": 4, "Ab": 8}
    prompt = "a traditional Irish tune in {} major played by a piano at 110 BPM"
    prompts = [prompt.format(key) for key in keys for _ in range(3)]
    generators = [torch.Generator().manual_seed(1000 + i % 3) for i in range(len(prompts))]
    audios = demo(prompts, audio_length_in_s=10.0, num_inference_steps=25, guidance_scale=3.0, generator=generators,
                  output_type="np").audios  # fmt: skip
    ranks = key_ranks(audios, demo.sample_rate, [tonic for tonic in keys.values() for _ in range(3)])
    assert np.mean(ranks) <= 4, ranks
    assert all(np.mean(ranks[i : i + 3]) <= 6 for i in range(0, 9, 3)), ranks  # each key, not one key thrice


@pytest.mark.slow
def test_the_right_key_in_the_caption_explains_rendered_music_better_than_a_tritone_away(corpus_dir, tmp_path):
    """The shipped model reads the key of its prompt: on rendered pieces, its denoising loss (the same crops and
    noise) is lower with the caption's key right than a tritone away, and the model's own validation says so in
    every noise draw (`benchmarks/attribute_gaps.py`; chance is no gap). The pieces are the first of three of the
    demo's training collections, i.e. music it was trained on (though not at these crops' lengths); the held-out
    numbers are in docs/model-card.md (v3: key gap 5 %, v2 0.4 %)."""
    gaps = load_benchmark("attribute_gaps")
    # every rendition of the test corpus but one (the recipe wants a training split) as the validation split
    records = read_metadata(corpus_dir)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "metadata.jsonl").write_text(
        "".join(
            json.dumps({**r, "path": str(corpus_dir / r["path"]), "split": "valid" if i else "train"}) + "\n"
            for i, r in enumerate(records)
        )
    )
    overrides = (f"data.root={tmp_path / 'corpus'}", f"data.latent_cache={tmp_path / 'latents'}",
                 f"vae={shipped_path(DEFAULT_PIPELINE) / 'vae'}", "beat.enabled=true")  # fmt: skip
    config = "recipes/configs/demo/diffusion.yaml"
    draws = [gaps.held_out_losses(config, DEFAULT_PIPELINE, seed, 8, tmp_path / "run", overrides) for seed in range(3)]
    key_gaps = [d["valid_loss_key_swapped"] / d["valid_loss"] - 1 for d in draws]
    instrument_gaps = [d["valid_loss_instrument_swapped"] / d["valid_loss"] - 1 for d in draws]
    assert min(key_gaps) > 0, key_gaps
    assert min(instrument_gaps) > max(key_gaps), (instrument_gaps, key_gaps)  # the instrument still weighs most
