"""Evaluation: Fréchet distance, embeddings, attribute estimators and accuracy, CLAP score, `latentmusic evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from latentmusic.audio import load_audio
from latentmusic.cli import main
from latentmusic.data.index import read_metadata
from latentmusic.evaluation import (
    ClapEmbedding,
    EmbeddingStatistics,
    EncodecEmbedding,
    MusicFeatureEmbedding,
    attribute_accuracy,
    clap_score,
    compute_statistics,
    estimate_key,
    estimate_note_density,
    estimate_pitch_range,
    estimate_tempo,
    frechet_audio_distance,
    frechet_distance,
    key_relation,
    level_corrected_tempo,
    parse_key,
    shuffled_target_rates,
    spearman,
    tempo_match,
    tempo_summary,
)
from latentmusic.evaluation.attributes import essentia_available
from latentmusic.evaluation.audio_sets import load_clip
from latentmusic.evaluation.clap import clap_similarities
from latentmusic.evaluation.cli import RESULT_KEYS, evaluate
from latentmusic.evaluation.reconstruction import reconstruction_metrics

from .conftest import tiny_vae

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def tone(midi: float, seconds: float, sample_rate: int) -> np.ndarray:
    """A plucked harmonic tone (4 partials, exponential decay)."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    partials = sum(0.5**k * np.sin(2 * np.pi * f0 * (k + 1) * t) for k in range(4))
    return partials * np.exp(-3.0 * t)


def synth_music(seed: int, sample_rate: int, seconds: float = 7.0) -> tuple[np.ndarray, dict]:
    """A random melody in a random major key at a random tempo, the same signal at any sample rate."""
    rng = np.random.default_rng(seed)
    tonic = int(rng.integers(0, 12))
    bpm = int(rng.integers(80, 140))
    step = 60.0 / bpm / 2  # eighth notes
    audio = np.zeros(int(seconds * sample_rate))
    for i in range(int(seconds / step)):
        start = round(i * step * sample_rate)
        note = tone(60 + tonic + rng.choice(MAJOR_SCALE) + 12 * rng.integers(-1, 1), 2 * step, sample_rate)
        end = min(start + len(note), len(audio))
        audio[start:end] += note[: end - start]
    target = {"bpm": bpm, "tonic": PITCH_NAMES[tonic], "mode": "major", "captions": [f"a melody at {bpm} BPM"]}
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32), target


def write_set(folder, seeds, sample_rate: int, seconds: float = 7.0) -> list[dict]:
    """Write synthetic clips and their metadata.jsonl; returns the records."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for seed in seeds:
        audio, target = synth_music(seed, sample_rate, seconds)
        sf.write(folder / f"clip{seed}.wav", audio, sample_rate)
        records.append({"path": f"clip{seed}.wav", **target})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-to-character table, for a byte-level BPE vocabulary without merges."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


@pytest.fixture(scope="module")
def tiny_clap_dir(tmp_path_factory):
    """A random CLAP model, feature extractor and byte-level tokenizer, saved like a download."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    folder = tmp_path_factory.mktemp("tiny-clap")
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    vocab = {token: i for i, token in enumerate([*special, *bytes_to_unicode().values()])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = RobertaTokenizer(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))
    processor = ClapProcessor(feature_extractor=ClapFeatureExtractor(truncation="rand_trunc"), tokenizer=tokenizer)
    torch.manual_seed(0)
    text = dict(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    text.update(intermediate_size=32, max_position_embeddings=80, projection_dim=8)
    audio = dict(hidden_size=16, patch_embeds_hidden_size=8, depths=[1, 1], num_attention_heads=[1, 2])
    audio.update(window_size=8, spec_size=256, projection_dim=8)
    ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=8)).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_encodec_dir(tmp_path_factory):
    from transformers import EncodecConfig, EncodecModel

    folder = tmp_path_factory.mktemp("tiny-encodec")
    torch.manual_seed(0)
    config = EncodecConfig(sampling_rate=8000, hidden_size=8, num_filters=4, upsampling_ratios=[4, 2])
    config.update(dict(num_lstm_layers=1, codebook_size=16, codebook_dim=8, target_bandwidths=[1.0]))
    EncodecModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def synthetic_sets(tmp_path_factory):
    """Generated-like clips at 22.05 kHz with metadata, and reference clips of other melodies at 16 kHz."""
    root = tmp_path_factory.mktemp("sets")
    write_set(root / "generated", range(10), 22050)
    write_set(root / "reference", range(100, 110), 16000)
    return root


# Fréchet distance and statistics


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    var1, var2 = rng.uniform(0.5, 2, size=5), rng.uniform(0.5, 2, size=5)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, np.diag(var1), mu1, np.diag(var1)) == pytest.approx(0, abs=1e-9)
    # Singular (rank-deficient) covariances, as from fewer vectors than dimensions, still give a finite value.
    low_rank = np.cov(rng.normal(size=(3, 8)), rowvar=False)
    assert np.isfinite(frechet_distance(np.zeros(8), low_rank, np.ones(8), low_rank))
    with pytest.raises(ValueError, match="same embedding"):
        frechet_distance(mu1, np.diag(var1), mu2[:4], np.diag(var2[:4]))


def test_statistics_pool_exactly_and_round_trip_through_npz(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 6)) + 3, rng.normal(size=(50, 6)) * 2
    pooled = EmbeddingStatistics.from_embeddings(a, 3, "e").combine(EmbeddingStatistics.from_embeddings(b, 5, "e"))
    direct = EmbeddingStatistics.from_embeddings(np.concatenate([a, b]), 8, "e")
    np.testing.assert_allclose(pooled.mean, direct.mean, rtol=1e-12)
    np.testing.assert_allclose(pooled.cov, direct.cov, rtol=1e-10)
    assert (pooled.count, pooled.n_clips) == (80, 8)
    loaded = EmbeddingStatistics.load(pooled.save(tmp_path / "stats.npz"))
    assert (loaded.count, loaded.n_clips, loaded.embedding) == (80, 8, "e")
    np.testing.assert_array_equal(loaded.cov, pooled.cov)
    with pytest.raises(ValueError, match="different embeddings"):
        loaded.frechet_distance(EmbeddingStatistics.from_embeddings(a, 3, "other"))


def test_default_embedding_is_deterministic_finite_and_120_dimensional():
    embedding = MusicFeatureEmbedding()
    music, _ = synth_music(0, 16000, seconds=3.0)
    silence = np.zeros(16000, dtype=np.float32)
    vectors = embedding([music, silence])
    # 3 s in 1 s windows every 0.5 s: 5 windows (the last ends at the end); 1 s of silence: 1 window.
    assert vectors.shape == (6, embedding.dim) and embedding.dim == 120
    assert np.isfinite(vectors).all()
    np.testing.assert_array_equal(vectors, embedding([music, silence]))


def test_sets_at_different_sample_rates_are_resampled_not_refused(synthetic_sets):
    """The same melodies at 44.1 kHz (waveforms) and 22.05 kHz (files) are near-identical sets."""
    files = sorted((synthetic_sets / "generated").glob("*.wav"))
    at_44k = ([synth_music(seed, 44100)[0] for seed in range(10)], 44100)
    same = frechet_audio_distance(files, at_44k, progress=False)
    different = frechet_audio_distance(files, synthetic_sets / "reference", progress=False)
    assert same < 0.02 * different


def test_empty_or_missing_folders_are_explained(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    with pytest.raises(ValueError, match=r"no audio files \(.wav, .flac, .ogg\) found in .*empty"):
        frechet_audio_distance(tmp_path / "empty", tmp_path / "empty", progress=False)
    with pytest.raises(FileNotFoundError, match="audio folder not found"):
        compute_statistics(tmp_path / "missing", progress=False)
    with pytest.raises(ValueError, match="without a sample rate"):
        compute_statistics([np.zeros(16000, dtype=np.float32)], progress=False)


def test_too_few_clips_for_a_covariance_name_the_minimum():
    one_short_clip = ([synth_music(0, 16000, seconds=0.5)[0]], 16000)
    many = ([synth_music(seed, 16000)[0] for seed in range(3)], 16000)
    with pytest.raises(
        ValueError, match=r"1 embedding vector\(s\) \(from 1 clip\(s\)\); a covariance needs at least 2"
    ):
        frechet_audio_distance(one_short_clip, many, progress=False)


# Model embeddings from tiny local checkpoints


def test_clap_embedding_fad_and_clap_score_from_a_local_checkpoint(tiny_clap_dir):
    clap = ClapEmbedding(tiny_clap_dir)
    assert clap.sample_rate == 48000 and clap.name == f"clap:{tiny_clap_dir.name}"
    clips = [synth_music(seed, 16000, seconds=4.0)[0] for seed in range(6)]
    long_clip = np.tile(clips[0], 4)  # 16 s: a 10 s window and a 6 s one
    windows = clap([load_clip((c, 16000), clap.sample_rate) for c in (clips[0], long_clip)])
    assert windows.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(windows, axis=-1), 1.0, rtol=1e-5)
    with pytest.warns(UserWarning, match="only 3 embedding vectors for 8 dimensions"):
        fad = frechet_audio_distance((clips[:3], 16000), (clips[3:], 16000), embedding=clap, progress=False)
    assert np.isfinite(fad) and fad >= 0
    prompts = ["a calm melody", "a fast reel", "an organ chorale"]
    scores = clap_similarities((clips[:3], 16000), prompts, clap)
    audio = clap.embed_clips([load_clip((c, 16000), clap.sample_rate) for c in clips[:3]])
    np.testing.assert_allclose(scores, (audio * clap.embed_text(prompts)).sum(-1), rtol=1e-5)
    assert clap_score((clips[:3], 16000), prompts, tiny_clap_dir) == pytest.approx(scores.mean(), rel=1e-5)


def test_encodec_embedding_gives_encoder_frames_from_a_local_checkpoint(tiny_encodec_dir):
    encodec = EncodecEmbedding(tiny_encodec_dir)
    assert encodec.sample_rate == 8000
    frames = encodec([np.zeros(8000, dtype=np.float32), np.ones(4000, dtype=np.float32) * 0.1])
    assert frames.shape == (1000 + 500, 8)  # hop 4 * 2 = 8 samples
    clips = ([synth_music(seed, 16000, seconds=1.0)[0] for seed in range(4)], 16000)
    fad = frechet_audio_distance(clips, clips, embedding=f"encodec:{tiny_encodec_dir}", progress=False)
    assert fad == pytest.approx(0, abs=1e-6)


def test_a_missing_checkpoint_folder_says_how_to_get_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="hf download laion/clap-htsat-unfused"):
        ClapEmbedding(tmp_path / "nowhere")


# Attribute estimators and their scoring


def test_key_and_tempo_scoring_rules():
    assert parse_key("F# major") == (6, "major") == parse_key({"tonic": "Gb", "mode": "major"})
    assert parse_key({"key": "B- minor"}) == (10, "minor")
    c_major = (0, "major")
    assert [key_relation(c_major, k) for k in [(0, "major"), (7, "major"), (5, "major"), (9, "minor")]] == [
        "same",
        "fifth_above",
        "fifth_below",
        "relative",
    ]
    assert key_relation(c_major, (0, "minor")) == "parallel" and key_relation((9, "minor"), c_major) == "relative"
    assert [tempo_match(e, 100) for e in (104, 200, 51, 290, 34, 148, 68, 125)] == [
        "correct",
        "x2",
        "x0.5",
        "x3",
        "x1/3",
        "x1.5",
        "x2/3",
        "wrong",
    ]
    # brought back to the target's level: an x2 error halves, x1/3 triples, a wrong estimate is kept
    assert [level_corrected_tempo(e, 100) for e in (200, 34, 125)] == pytest.approx([100, 102, 125])
    with pytest.raises(ValueError, match="cannot read the key"):
        parse_key("H dorian")


def test_mirex_key_score_weighs_each_relation_of_the_estimate_to_its_target():
    """One clip scored against six targets placed around the key estimated for it: the MIREX weights are 1 (same),
    0.5 (the estimate a fifth above the target), 0.3 (relative), 0.2 (parallel), 0 (a fifth below, other)."""
    audio, _ = synth_music(0, 22050, seconds=4.0)
    estimate = estimate_key(audio, 22050, backend="librosa")
    tonic = PITCH_NAMES.index(estimate.tonic)
    other_mode = "minor" if estimate.mode == "major" else "major"
    relative = tonic + (-3 if estimate.mode == "major" else 3)  # the estimate is the target's relative key
    targets = [
        (tonic, estimate.mode),
        (tonic - 7, estimate.mode),  # the estimate a fifth above the target
        (relative, other_mode),
        (tonic, other_mode),
        (tonic + 7, estimate.mode),  # a fifth below: no MIREX credit
        (tonic + 1, estimate.mode),
    ]
    records = [{"key": f"{PITCH_NAMES[pc % 12]} {mode}"} for pc, mode in targets]
    results = attribute_accuracy(([audio] * len(records), 22050), records, backend="librosa")
    relations = [row["key_relation"] for row in results["clips"]]
    assert relations == ["same", "fifth_above", "relative", "parallel", "fifth_below", "other"]
    assert results["summary"]["key_mirex_score"] == pytest.approx((1.0 + 0.5 + 0.3 + 0.2) / 6)
    assert results["summary"]["key_accuracy"] == pytest.approx(1 / 6)


def test_pitch_range_and_note_density_of_known_notes():
    sample_rate = 16000
    notes = [57, 60, 64, 67, 72, 76]  # A3 .. E5, 0.5 s each: 2 notes per second
    audio = np.concatenate([tone(n, 0.5, sample_rate) for n in notes]).astype(np.float32)
    pitch = estimate_pitch_range(audio, sample_rate, percentiles=(2, 98))
    assert (pitch.low_note, pitch.high_note) == ("A3", "E5")
    assert pitch.voiced_fraction > 0.6
    assert estimate_note_density(audio, sample_rate) == pytest.approx(2.0, abs=0.34)


def click_track(bpm: float, seconds: float, sample_rate: int, accent_every: int = 0) -> np.ndarray:
    """Clicks at `bpm` (every `accent_every`-th one an octave lower and louder, as a bar's downbeat)."""
    clicks = np.zeros(int(sample_rate * seconds), dtype=np.float32)
    for i, start in enumerate(np.arange(0, seconds, 60 / bpm)):
        accent = accent_every and i % accent_every == 0
        click = tone(72 if accent else 84, 0.05, sample_rate) * (1.0 if accent else 0.5)
        begin = int(start * sample_rate)
        clicks[begin : begin + len(click)] = click[: len(clicks) - begin]
    return clicks


def test_tempo_of_a_click_track():
    sample_rate = 22050
    for backend in ("librosa", "essentia") if essentia_available() else ("librosa",):
        assert tempo_match(estimate_tempo(click_track(120, 10, sample_rate), sample_rate, backend), 120) == "correct"


def test_tempo_metric_counts_metrical_levels_apart_from_wrong_tempi():
    """Click tracks of known tempo, each scored against its own tempo and against twice, a third of and 4/3 of it:
    the metric must find the exact level, name the metrical-level errors, and call only the 4/3 target wrong."""
    sample_rate = 22050
    bpms = [96, 108, 120, 132]
    tracks = [click_track(bpm, 10, sample_rate, accent_every=3) for bpm in bpms]
    estimates = [estimate_tempo(track, sample_rate, "librosa") for track in tracks]
    rows = []
    for bpm, estimate in zip(bpms, estimates):
        for factor in (1, 2, 1 / 3, 4 / 3):
            target = bpm * factor
            rows.append({"target_bpm": target, "bpm": estimate, "tempo_match": tempo_match(estimate, target)})
            rows[-1]["level_bpm"] = level_corrected_tempo(estimate, target)
    assert [row["tempo_match"] for row in rows[:4]] == ["correct", "x0.5", "x3", "wrong"]
    exact = tempo_summary(rows[::4])
    assert exact["tempo_accuracy"] == 1.0 and exact["tempo_spearman"] == pytest.approx(1.0)
    summary = tempo_summary(rows)
    assert summary["n_tempo"] == 16 and summary["tempo_accuracy"] == 0.25
    assert summary["tempo_octave_errors"]["x0.5"] == summary["tempo_octave_errors"]["x3"] == 0.25
    assert summary["tempo_metrical_accuracy"] == 0.75 and summary["tempo_wrong_rate"] == 0.25
    levelled = tempo_summary([row for row in rows if row["tempo_match"] != "wrong"])
    # raw estimates barely follow targets spread over three metrical levels; brought back to the level they do
    assert levelled["tempo_spearman"] < 0.5 < 0.9 < levelled["tempo_level_spearman"]
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None


def test_chance_levels_score_the_estimates_against_the_other_clips_targets():
    # a "model" that always plays 120 BPM in C major, asked for 60, 120, 240 and 100 BPM and four keys
    targets = [(60, "C major"), (120, "G major"), (240, "C major"), (100, "A minor")]
    rows = [{"bpm": 120.0, "target_bpm": t, "key": "C major", "target_key": k} for t, k in targets]
    chance = shuffled_target_rates(rows)
    # it is right once (120) and at another metrical level twice (60, 240) whatever it is asked: its accuracy is
    # its chance level, as it is for the key (C major asked for twice in four)
    assert chance["tempo_accuracy_chance"] == pytest.approx(1 / 4)
    assert chance["tempo_metrical_accuracy_chance"] == pytest.approx(3 / 4)
    assert chance["key_accuracy_chance"] == pytest.approx(2 / 4)
    summary = tempo_summary([{**r, "tempo_match": tempo_match(r["bpm"], r["target_bpm"])} for r in rows])
    assert summary["tempo_metrical_accuracy"] == chance["tempo_metrical_accuracy_chance"]
    # a model that follows: every clip right, against the others' targets mostly wrong
    following = [{"bpm": float(t), "target_bpm": t, "key": k, "target_key": k} for t, k in targets]
    chance = shuffled_target_rates(following)
    assert chance["tempo_accuracy_chance"] == 0 and chance["key_accuracy_chance"] == pytest.approx(2 / 12)
    assert shuffled_target_rates(following[:1]) == dict.fromkeys(chance)


# `latentmusic evaluate`

SUMMARY_KEYS = {
    "n_clips",
    "n_tempo",
    "tempo_accuracy",
    "tempo_octave_error_rate",
    "tempo_octave_errors",
    "tempo_metrical_accuracy",
    "tempo_wrong_rate",
    "tempo_spearman",
    "tempo_level_spearman",
    "n_beat",
    "beat_accuracy",
    "n_key",
    "key_accuracy",
    "mode_accuracy",
    "key_close_rate",
    "key_mirex_score",
    "key_relations",
    "tempo_accuracy_chance",
    "tempo_metrical_accuracy_chance",
    "key_accuracy_chance",
}
CLIP_KEYS = {"clip", "target_bpm", "bpm", "tempo_ratio", "tempo_match", "level_bpm", "target_beat_bpm", "beat_match"}
CLIP_KEYS |= {"target_key", "key", "key_strength"}


def test_cli_writes_the_documented_schema_and_reuses_cached_reference_statistics(
    synthetic_sets, tiny_clap_dir, tiny_encodec_dir, tmp_path, capsys
):
    generated, reference, cache = synthetic_sets / "generated", synthetic_sets / "reference", tmp_path / "ref.npz"
    args = ["evaluate", "--generated", str(generated), "--metadata", str(generated / "metadata.jsonl")]
    args += ["--reference-stats", str(cache), "--no-progress", "--backend", "librosa"]
    assert (
        main([*args, "--reference", str(reference), "--clap", str(tiny_clap_dir), "--out", str(tmp_path / "a.json")])
        == 0
    )
    results = json.loads((tmp_path / "a.json").read_text())
    assert (
        set(results)
        == set(RESULT_KEYS)
        == {
            "schema_version",
            "generated",
            "reference",
            "embedding",
            "n_generated",
            "n_reference",
            "frechet_distance",
            "attributes",
            "clap_score",
            "reconstruction",
        }
    )
    assert (
        results["schema_version"] == 1
        and results["reconstruction"] is None
        and results["embedding"] == "music-features-v1"
    )
    assert (results["n_generated"], results["n_reference"]) == (10, 10)
    assert results["frechet_distance"] > 0 and -1 <= results["clap_score"] <= 1
    attributes = results["attributes"]
    assert set(attributes) == {"backend", "key_profile", "tempo_tolerance", "summary", "clips"}
    assert set(attributes["summary"]) == SUMMARY_KEYS and attributes["summary"]["n_clips"] == 10
    assert set(attributes["summary"]["tempo_octave_errors"]) == {"x2", "x0.5", "x3", "x1/3", "x1.5", "x2/3"}
    assert all(set(row) == CLIP_KEYS | {"key_relation"} for row in attributes["clips"])
    assert cache.is_file()

    # The cache stands in for --reference; another embedding refuses it.
    assert main([*args, "--out", str(tmp_path / "b.json")]) == 0
    cached = json.loads((tmp_path / "b.json").read_text())
    assert cached["frechet_distance"] == pytest.approx(results["frechet_distance"], rel=1e-9)
    assert cached["n_reference"] == 10 and cached["clap_score"] is None
    assert main([*args, "--embedding", f"encodec:{tiny_encodec_dir}", "--out", str(tmp_path / "c.json")]) == 2
    assert "holds statistics of the 'music-features-v1' embedding" in capsys.readouterr().err


def test_reconstruction_scores_an_autoencoder_on_the_reference_clips(synthetic_sets, tmp_path):
    """`--autoencoder` reports the recipe's reconstruction metrics over the reference clips (resampled to the
    model's rate), exactly as computed clip by clip; it needs `--reference`."""
    torch.manual_seed(0)
    vae = tiny_vae()
    vae.save_pretrained(tmp_path / "vae")
    reference = synthetic_sets / "reference"
    args = ["evaluate", "--generated", str(synthetic_sets / "generated"), "--no-progress"]
    args += ["--autoencoder", str(tmp_path / "vae"), "--out", str(tmp_path / "r.json")]
    assert main([*args, "--reference", str(reference)]) == 0
    scores = json.loads((tmp_path / "r.json").read_text())["reconstruction"]
    expected = []
    for path in sorted(reference.glob("*.wav")):
        audio, _ = load_audio(path, sample_rate=8000, channels=1)
        with torch.no_grad():
            expected.append(reconstruction_metrics(audio[None], vae.eval()(audio[None]).sample, 8000))
    assert scores["n_clips"] == len(expected) == 10
    for key in ("si_sdr", "mrstft", "mel"):
        assert scores[key] == pytest.approx(np.mean([row[key] for row in expected]), rel=1e-5), key
    assert scores["si_sdr"] < 0 and scores["mrstft"] > 0  # an untrained model is far from its input
    with pytest.raises(ValueError, match="--autoencoder reconstructs the --reference clips"):
        evaluate(synthetic_sets / "generated", reference_stats=tmp_path / "none.npz", autoencoder=tmp_path / "vae")


# On the rendered corpus: real music with known tempo and key


@pytest.mark.slow
def test_frechet_distance_is_zero_to_itself_and_grows_with_degradation(corpus_dir):
    embedding = MusicFeatureEmbedding()
    records = read_metadata(corpus_dir)
    clips = [load_clip(corpus_dir / r["path"], embedding.sample_rate) for r in records[:20]]
    reference, others = clips[:10], clips[10:]

    def stats(audios):
        return EmbeddingStatistics.from_embeddings(embedding(audios), len(audios), embedding.name)

    ref = stats(reference)
    between_pieces = ref.frechet_distance(stats(others))
    assert ref.frechet_distance(ref) < 1e-6 * between_pieces
    rng = np.random.default_rng(0)
    noisy = []
    for snr_db in (30, 20, 10, 0):
        scale = [np.sqrt(np.mean(c**2) / 10 ** (snr_db / 10)) for c in reference]
        degraded = [c + s * rng.standard_normal(c.shape).astype(np.float32) for c, s in zip(reference, scale)]
        noisy.append(ref.frechet_distance(stats(degraded)))
    low_passed = []
    for cutoff in (4000, 2000, 1000, 500):
        sos = scipy.signal.butter(8, cutoff, fs=embedding.sample_rate, output="sos")
        low_passed.append(ref.frechet_distance(stats([scipy.signal.sosfiltfilt(sos, c) for c in reference])))
    assert all(a < b for a, b in zip(noisy, noisy[1:])), noisy
    assert all(a < b for a, b in zip(low_passed, low_passed[1:])), low_passed
    assert noisy[-1] > between_pieces and low_passed[-1] > between_pieces


@pytest.mark.slow
def test_tempo_and_key_are_recovered_on_the_rendered_corpus(corpus_dir):
    """Measured on the 30-clip corpus: tempo 70 % (librosa) / 77 % (essentia) within 8 %, 90 % / 97 %
    counting octave errors; key 77 % / 80 % exact, mode 90 % / 90 %, same-fifth-relative 93 % / 97 %."""
    records = read_metadata(corpus_dir)
    results = attribute_accuracy([corpus_dir / r["path"] for r in records], records)
    summary = results["summary"]
    assert summary["n_tempo"] == summary["n_key"] == len(records) >= 25
    assert summary["tempo_accuracy"] >= 0.55
    assert summary["tempo_accuracy"] + summary["tempo_octave_error_rate"] >= 0.8
    assert summary["key_accuracy"] >= 0.6
    assert summary["mode_accuracy"] >= 0.75
    assert summary["key_close_rate"] >= 0.8
