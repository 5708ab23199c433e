"""Specification of the rendered corpus: real pieces rendered with FluidSynth, checked against their MIDI."""

import collections
import json
import os
import re
import shutil

import pytest
import soundfile as sf
from music21 import converter, meter, midi, pitch, tempo

from latentmusic.audio import load_audio
from latentmusic.data import AudioCaptionDataset
from latentmusic.data.captions import make_captions, short_instrument_name, tempo_word
from latentmusic.data.corpus import (
    COLLECTION_NAMES,
    COLLECTIONS,
    INSTRUMENTS,
    TEMPO_VARIANT_RATIO,
    TRANSPOSITIONS,
    choose_rendition,
    list_pieces,
    load_score,
    render_corpus,
    rendition_path,
    split_of,
    vary_tempo,
)
from latentmusic.data.rendering import INSTALL_HINT, SOUNDFONT_ENV, find_soundfont, render_piece, require_fluidsynth

RATE = 16000
MAX_SECONDS = 12.0
# One piece of each of the fast-to-parse collections (quartet files take seconds to parse), two renditions.
SETTINGS = dict(
    max_pieces=5,
    renditions_per_piece=2,
    collections=("bach", "palestrina", "ryans", "oneills", "essen"),
    sample_rate=RATE,
    max_seconds=MAX_SECONDS,
    keep_midi=True,
    progress=False,
)


def read_lines(metadata):
    return [json.loads(line) for line in metadata.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def fluidsynth():
    """Skip the rendering tests, with the reason, where FluidSynth or a soundfont is not installed."""
    try:
        require_fluidsynth()
        find_soundfont()
    except FileNotFoundError as error:
        pytest.skip(f"rendering needs FluidSynth and a General-MIDI soundfont: {error}")


@pytest.fixture(scope="module")
def rendered(fluidsynth, tmp_path_factory):
    """A corpus of 5 real pieces x 2 renditions at 16 kHz, cropped to 12 s, with the MIDI kept."""
    root = tmp_path_factory.mktemp("corpus")
    metadata = render_corpus(root, **SETTINGS)
    return root, metadata, read_lines(metadata)


def test_renders_every_rendition_with_a_sorted_index(rendered):
    root, metadata, records = rendered
    assert metadata == root / "metadata.jsonl"
    assert len(records) == 10
    assert [r["path"] for r in records] == sorted(r["path"] for r in records)
    assert {r["collection"] for r in records} == set(SETTINGS["collections"])
    assert len(AudioCaptionDataset(root, sample_rate=RATE, segment_seconds=2.0)) == 10


def test_audio_has_the_asked_format_and_is_not_silent(rendered):
    root, _, records = rendered
    for record in records:
        info = sf.info(root / record["path"])
        assert (info.format, info.samplerate, info.channels) == ("FLAC", RATE, 1)
        assert info.duration == pytest.approx(record["duration"], abs=1e-3)
        assert 2.0 < info.duration <= MAX_SECONDS
        assert (record["sample_rate"], record["channels"]) == (RATE, 1)
        audio, _ = load_audio(root / record["path"])
        assert audio.square().mean().sqrt() > 0.02, record["path"]
        assert audio.abs().max() == pytest.approx(10 ** (-1 / 20), abs=1e-3)  # peak-normalised to -1 dBFS


def test_attributes_agree_with_the_midi_that_was_played(rendered):
    root, _, records = rendered
    for record in records:
        midi_path = root / re.sub(r"\.flac$", ".mid", record["path"])
        score = converter.parse(midi_path)
        marks = list(score[tempo.MetronomeMark])
        assert marks and all(mark.number == pytest.approx(record["bpm"], abs=0.5) for mark in marks)
        # one tempo throughout (the score's own marks are replaced), and the felt beat is the metre's beat
        assert {mark.number for mark in marks} == {record["bpm"]}, record["path"]
        signature = score[meter.TimeSignature].first()
        assert record["beat_unit"] == signature.beatDuration.quarterLength, record["path"]
        assert record["beat_bpm"] == pytest.approx(record["bpm"] / record["beat_unit"], abs=0.01)
        # MIDI stores pitches without spelling, so the tonic is compared as a pitch class (Db == C#).
        key = score.analyze("key")
        assert key.mode == record["mode"], record["path"]
        assert key.tonic.pitchClass == pitch.Pitch(record["tonic"]).pitchClass, record["path"]
        midi_file = midi.MidiFile()
        midi_file.open(midi_path)
        midi_file.read()
        midi_file.close()
        events = [event for track in midi_file.tracks for event in track.events]
        programs = {e.data for e in events if e.type == midi.ChannelVoiceMessages.PROGRAM_CHANGE}
        assert programs == {record["program"]}


def test_attributes_are_well_formed(rendered):
    _, _, records = rendered
    by_program = {instrument.program: instrument for instrument in INSTRUMENTS}
    for record in records:
        instrument = by_program[record["program"]]
        assert (record["instrument"], record["family"]) == (instrument.name, instrument.family)
        assert record["key"] == f"{record['tonic']} {record['mode']}"
        assert record["mode"] in ("major", "minor")
        assert record["transposition"] in TRANSPOSITIONS
        assert re.fullmatch(r"\d+/\d+", record["meter"])
        assert record["path"] == rendition_path(record["piece_id"], record["rendition"], record["tempo_variant"])
        assert record["path"].startswith(record["split"] + "/") and record["split"] == split_of(record["piece_id"])
        assert record["title"] and record["composer"] and record["genre"]


def test_renditions_of_a_piece_vary_but_share_its_split(rendered):
    _, _, records = rendered
    by_piece = collections.defaultdict(list)
    for record in records:
        by_piece[record["piece_id"]].append(record)
    assert len(by_piece) == 5
    for renditions in by_piece.values():
        assert len({r["split"] for r in renditions}) == 1
        assert len({(r["program"], r["bpm"], r["transposition"]) for r in renditions}) == 2


def test_captions_name_the_instrument_and_the_tempo(rendered):
    _, _, records = rendered
    for record in records:
        assert 3 <= len(record["captions"]) <= 5
        assert record["captions"] == make_captions(record)
        for caption in record["captions"]:
            assert record["instrument"] in caption or short_instrument_name(record["instrument"]) in caption
            assert str(record["bpm"]) in caption or tempo_word(record["bpm"]) in caption
            assert record["key"] in caption


def test_rerun_skips_finished_work_and_keeps_the_index(rendered):
    root, metadata, _ = rendered
    before = metadata.read_bytes()
    mtimes = {path: path.stat().st_mtime_ns for path in root.rglob("*.flac")}
    render_corpus(root, **SETTINGS)
    assert metadata.read_bytes() == before
    assert {path: path.stat().st_mtime_ns for path in root.rglob("*.flac")} == mtimes


def test_interrupted_run_resumes_to_byte_identical_files(rendered, tmp_path):
    root, metadata, records = rendered
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    lost = records[3]["path"]
    (copy / lost).unlink()  # killed after appending its line: the line is kept, the file is gone
    with open(copy / "metadata.jsonl", "a", encoding="utf-8") as index:
        index.write('{"path": "train/half-written')  # killed while writing a line
    render_corpus(copy, **SETTINGS)
    assert (copy / "metadata.jsonl").read_bytes() == metadata.read_bytes()
    assert (copy / lost).read_bytes() == (root / lost).read_bytes()


def test_other_settings_in_the_same_folder_are_refused(rendered):
    root, _, _ = rendered
    with pytest.raises(ValueError, match="rendered with"):
        render_corpus(root, **{**SETTINGS, "sample_rate": 22050})


def test_tempo_variants_change_the_tempo_of_train_renditions_only(rendered, tmp_path):
    root, metadata, records = rendered
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    render_corpus(copy, **SETTINGS, tempo_variants=1)  # extends the corpus: only the variants are rendered
    extended = read_lines(copy / "metadata.jsonl")
    assert [r for r in extended if r["tempo_variant"] == 0] == records
    assert all((copy / r["path"]).read_bytes() == (root / r["path"]).read_bytes() for r in records)
    variants = [r for r in extended if r["tempo_variant"] == 1]
    originals = {(r["piece_id"], r["rendition"]): r for r in records}
    assert {key for key, r in originals.items() if r["split"] == "train"} == {
        (r["piece_id"], r["rendition"]) for r in variants
    }
    assert variants and len(variants) < len(records)  # this prefix has held-out pieces too
    ranges = {collection.name: collection.bpm for collection in COLLECTIONS}
    for variant in variants:
        original = originals[variant["piece_id"], variant["rendition"]]
        same = ("program", "transposition", "key", "meter", "beat_unit", "title")
        assert {k: variant[k] for k in same} == {k: original[k] for k in same}
        low, high = sorted((variant["bpm"], original["bpm"]))
        assert high >= TEMPO_VARIANT_RATIO * low
        assert ranges[variant["collection"]][0] <= variant["bpm"] <= ranges[variant["collection"]][1]
        assert variant["path"] == f"train/{variant['piece_id']}-r{variant['rendition']}-t1.flac"
        assert variant["captions"] == make_captions(variant) and str(variant["bpm"]) in variant["captions"][0]
        marks = converter.parse(copy / re.sub(r"\.flac$", ".mid", variant["path"]))[tempo.MetronomeMark]
        assert {mark.number for mark in marks} == {variant["bpm"]}


def test_tempo_variants_are_chosen_from_the_seed_and_keep_everything_else():
    rendition = choose_rendition("bach/bwv66.6", 0, seed=3, bpm_range=(60, 100))
    variants = [vary_tempo(rendition, "bach/bwv66.6", v, seed=3, bpm_range=(60, 100)) for v in range(1, 9)]
    assert variants[0] == vary_tempo(rendition, "bach/bwv66.6", 1, seed=3, bpm_range=(60, 100))
    assert len({v.bpm for v in variants}) > 2
    for number, variant in enumerate(variants, 1):
        assert (variant.index, variant.instrument, variant.transposition) == (
            0,
            rendition.instrument,
            rendition.transposition,
        )
        assert variant.tempo_variant == number
        assert max(variant.bpm, rendition.bpm) >= TEMPO_VARIANT_RATIO * min(variant.bpm, rendition.bpm)
    narrow = vary_tempo(rendition, "bach/bwv66.6", 1, seed=3, bpm_range=(rendition.bpm, rendition.bpm + 5))
    assert narrow.bpm == rendition.bpm + 5  # the end farthest from its tempo
    assert rendition_path("bach/bwv66.6", 2, 1).endswith("bwv66.6-r2-t1.flac")
    with pytest.raises(ValueError, match="numbered from 1"):
        vary_tempo(rendition, "bach/bwv66.6", 0, seed=3, bpm_range=(60, 100))


def test_render_piece_writes_stereo_at_any_rate(fluidsynth, tmp_path):
    piece = list_pieces(["essen"], max_pieces=1)[0]
    rendition = choose_rendition(piece.piece_id, 0)
    out = tmp_path / "deep" / "piece.flac"
    score = load_score(piece)
    attributes = render_piece(score, rendition, out, sample_rate=8000, channels=2, max_seconds=4.0)
    info = sf.info(out)
    assert (info.samplerate, info.channels, attributes["channels"]) == (8000, 2, 2)
    assert info.duration == pytest.approx(attributes["duration"], abs=1e-3) and info.duration <= 4.0
    assert (attributes["bpm"], attributes["program"]) == (rendition.bpm, rendition.instrument.program)
    assert list(tmp_path.rglob("*")) == [out.parent, out]  # nothing left behind but the FLAC


def test_splits_are_by_piece_over_the_whole_corpus():
    ids = [piece.piece_id for piece in list_pieces()]
    assert len(ids) == len(set(ids)) > 13000
    counts = collections.Counter(split_of(piece_id) for piece_id in ids)
    assert counts["train"] / len(ids) == pytest.approx(0.90, abs=0.01)
    assert counts["valid"] / len(ids) == pytest.approx(0.05, abs=0.01)
    assert counts["test"] / len(ids) == pytest.approx(0.05, abs=0.01)
    for piece_id in ids[:500]:
        assert {rendition_path(piece_id, i).split("/")[0] for i in range(4)} == {split_of(piece_id)}


def test_pieces_are_listed_deterministically_and_interleaved():
    first = list_pieces(max_pieces=16)
    assert first == list_pieces(max_pieces=16)
    assert [piece.collection for piece in first[:8]] == list(COLLECTION_NAMES)
    assert list_pieces(["essen"], max_pieces=3) == [p for p in list_pieces() if p.collection == "essen"][:3]
    with pytest.raises(ValueError, match="unknown collections"):
        list_pieces(["mahler"])


def test_renditions_depend_on_seed_piece_and_index_only():
    assert choose_rendition("bach/bwv66.6", 0, seed=1) == choose_rendition("bach/bwv66.6", 0, seed=1)
    choices = {choose_rendition("bach/bwv66.6", i, seed=s, bpm_range=(60, 100)) for i in range(10) for s in range(10)}
    assert len({c.instrument for c in choices}) >= 10
    assert all(60 <= c.bpm <= 100 and c.transposition in TRANSPOSITIONS for c in choices)


def test_tools_are_found_or_explained(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=re.escape(INSTALL_HINT)):
        require_fluidsynth()
    font = tmp_path / "font.sf2"
    font.write_bytes(b"")
    monkeypatch.setenv(SOUNDFONT_ENV, str(font))
    assert find_soundfont() == font
    monkeypatch.setenv(SOUNDFONT_ENV, os.fspath(tmp_path / "missing.sf2"))
    with pytest.raises(FileNotFoundError, match=SOUNDFONT_ENV):
        find_soundfont()


def test_captions_from_attributes():
    record = {
        "composer": "J. S. Bach",
        "genre": "chorale",
        "title": "Christ lag in Todesbanden (BWV 4.8)",
        "key": "G minor",
        "bpm": 72,
        "meter": "4/4",
        "instrument": "string ensemble",
        "family": "strings",
    }
    captions = make_captions(record)
    assert captions[0] == "a Bach chorale in G minor played by a string ensemble at 72 BPM"
    assert "slow G minor chorale on strings" in captions
    traditional = make_captions({**record, "composer": "traditional", "genre": "reel", "meter": None})
    assert traditional[1] == "string ensemble playing a traditional reel, G minor, 72 BPM"
    assert [tempo_word(bpm) for bpm in (79, 80, 119, 120)] == ["slow", "moderate", "moderate", "fast"]
