"""Specification of the training datasets: audio crops, captions, metadata validation, latent caches."""

import json
import math

import pytest
import torch
from torch.utils.data import DataLoader

from latentmusic.audio import load_audio, save_audio
from latentmusic.data import AudioCaptionDataset, LatentDataset, collate, read_metadata, write_latent_cache

RATE = 24000


def tone(seconds: float, sample_rate: int, channels: int = 1, frequency: float = 220.0) -> torch.Tensor:
    """A sine tone whose channels differ (a phase shift), so channel handling is visible."""
    time = torch.arange(round(seconds * sample_rate)) / sample_rate
    return torch.stack([0.5 * torch.sin(2 * math.pi * frequency * time + c) for c in range(channels)])


def write_folder(root, entries, name="metadata.jsonl"):
    """Write ``(path, seconds, sample_rate, channels, fields)`` entries as audio files plus an index."""
    lines = []
    for index, (path, seconds, sample_rate, channels, fields) in enumerate(entries):
        save_audio(root / path, tone(seconds, sample_rate, channels, 220.0 * (index + 1)), sample_rate)
        lines.append(json.dumps({"path": path, **fields}))
    (root / name).write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def corpus(tmp_path):
    """A small corpus folder: files at several rates and channel counts, two splits, two captions each."""
    entries = [
        ("train/low.flac", 2.0, 16000, 1, {"split": "train", "captions": ["a low tone", "a quiet sine"]}),
        ("train/mid.flac", 2.0, 44100, 2, {"split": "train", "captions": ["a middle tone", "a stereo sine"]}),
        ("train/high.flac", 2.0, 48000, 2, {"split": "train", "captions": ["a high tone", "a bright sine"]}),
        ("valid/short.flac", 0.25, RATE, 1, {"split": "valid", "captions": ["a short beep", "a blip"]}),
    ]
    return write_folder(tmp_path / "corpus", entries)


@pytest.fixture
def captioned(tmp_path):
    """Short clips at the dataset's rate, for tests that draw many captions and need no resampling."""
    entries = [(f"clip{i}.flac", 0.05, RATE, 1, {"captions": [f"clip {i}", f"take {i}"]}) for i in range(4)]
    return write_folder(tmp_path / "captioned", entries)


@pytest.mark.parametrize("channels", [1, 2])
def test_crops_have_exact_length_at_the_requested_rate_and_channels(corpus, channels):
    dataset = AudioCaptionDataset(corpus, sample_rate=RATE, segment_seconds=0.5, channels=channels, split="train")
    for item in dataset:
        assert item["audio"].dtype == torch.float32
        assert item["audio"].shape == (channels, RATE // 2)
        assert item["padding_mask"].all()
        assert item["source_seconds"] == pytest.approx(2.0)


@pytest.mark.parametrize("index", [0, 1, 2], ids=["16k-mono", "44.1k-stereo", "48k-stereo"])
def test_crop_equals_the_same_span_of_the_whole_resampled_file(corpus, index):
    dataset = AudioCaptionDataset(corpus, sample_rate=RATE, segment_seconds=0.5, split="train", seed=3)
    item = dataset[index]
    whole, _ = load_audio(corpus / item["metadata"]["path"], sample_rate=RATE, channels=1)
    start = round(item["crop_start_seconds"] * RATE)
    assert start > 0 and item["crop_start_seconds"] * RATE == pytest.approx(start)
    torch.testing.assert_close(item["audio"], whole[:, start : start + RATE // 2], atol=1e-5, rtol=0)


def test_short_file_is_zero_padded_and_the_padding_masked(corpus):
    dataset = AudioCaptionDataset(corpus, sample_rate=RATE, segment_seconds=0.5, split="valid")
    item = dataset[0]
    real = round(0.25 * RATE)
    assert item["audio"].shape == (1, RATE // 2)
    assert item["padding_mask"][:real].all() and not item["padding_mask"][real:].any()
    assert item["audio"][:, real:].abs().max() == 0 and item["audio"][:, :real].abs().max() > 0.4
    assert item["crop_start_seconds"] == 0 and item["source_seconds"] == pytest.approx(0.25)


def test_fixed_crops_start_at_zero_in_every_epoch(corpus):
    dataset = AudioCaptionDataset(corpus, sample_rate=RATE, segment_seconds=0.5, random_crop=False)
    first = [item["audio"] for item in dataset]
    dataset.set_epoch(5)
    assert all(item["crop_start_seconds"] == 0 for item in dataset)
    for before, item in zip(first, dataset):
        assert torch.equal(before, item["audio"])


def crop_starts(dataset):
    return [dataset[index]["crop_start_seconds"] for index in range(len(dataset))]


def test_random_crops_are_reproducible_for_a_seed_and_differ_across_epochs_and_seeds(corpus):
    def make(seed):
        return AudioCaptionDataset(corpus, sample_rate=RATE, segment_seconds=0.5, split="train", seed=seed)

    dataset, same_seed = make(0), make(0)
    epoch_0 = crop_starts(dataset)
    assert epoch_0 == crop_starts(same_seed)
    dataset.set_epoch(1)
    assert crop_starts(dataset) != epoch_0
    dataset.set_epoch(0)
    assert crop_starts(dataset) == epoch_0
    assert crop_starts(make(1)) != epoch_0


def test_set_epoch_reaches_persistent_dataloader_workers(corpus):
    dataset = AudioCaptionDataset(corpus, sample_rate=RATE, segment_seconds=0.5, split="train")
    loader = DataLoader(dataset, batch_size=None, num_workers=1, persistent_workers=True)
    for epoch in range(2):
        dataset.set_epoch(epoch)
        assert [item["crop_start_seconds"] for item in loader] == crop_starts(dataset)


def test_whole_files_when_segment_seconds_is_none(corpus):
    dataset = AudioCaptionDataset(corpus, sample_rate=RATE, channels=2)
    lengths = [item["audio"].shape for item in dataset]
    assert lengths == [(2, 2 * RATE)] * 3 + [(2, RATE // 4)]


def test_transform_is_applied_to_each_crop(corpus):
    dataset = AudioCaptionDataset(corpus, sample_rate=RATE, segment_seconds=0.5, transform=torch.zeros_like)
    assert not dataset[0]["audio"].any() and dataset[0]["padding_mask"].all()


def test_dataloader_collates_a_batch_of_two(corpus):
    dataset = AudioCaptionDataset(corpus, sample_rate=RATE, segment_seconds=0.5)
    batch = next(iter(DataLoader(dataset, batch_size=2, collate_fn=collate)))
    assert batch["audio"].shape == (2, 1, RATE // 2) and batch["padding_mask"].shape == (2, RATE // 2)
    assert batch["crop_start_seconds"].shape == (2,) and batch["source_seconds"].tolist() == pytest.approx([2.0, 2.0])
    assert len(batch["caption"]) == 2 and all(isinstance(caption, str) for caption in batch["caption"])
    assert [meta["path"] for meta in batch["metadata"]] == ["train/low.flac", "train/mid.flac"]
    json.dumps(batch["metadata"])


def test_collate_pads_whole_files_to_the_longest(corpus):
    dataset = AudioCaptionDataset(corpus, sample_rate=RATE, split="valid")
    batch = collate([dataset[0], AudioCaptionDataset(corpus, sample_rate=RATE)[0]])
    assert batch["audio"].shape == (2, 1, 2 * RATE)
    assert batch["padding_mask"].sum(dim=1).tolist() == [RATE // 4, 2 * RATE]


def captions_over_epochs(dataset, epochs):
    captions = []
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        captions += [dataset[index]["caption"] for index in range(len(dataset))]
    return captions


def test_caption_dropout_matches_the_requested_rate(captioned):
    dataset = AudioCaptionDataset(captioned, sample_rate=RATE, segment_seconds=0.01, caption_dropout=0.3)
    captions = captions_over_epochs(dataset, 150)
    assert sum(caption == "" for caption in captions) / len(captions) == pytest.approx(0.3, abs=0.05)


def test_no_caption_dropout_never_gives_an_empty_caption(captioned):
    dataset = AudioCaptionDataset(captioned, sample_rate=RATE, segment_seconds=0.01)
    assert all(captions_over_epochs(dataset, 20))


def test_drop_caption_can_be_overridden(captioned):
    class GenericPrompt(AudioCaptionDataset):
        def drop_caption(self, caption, rng):
            return "music"

    assert GenericPrompt(captioned, sample_rate=RATE, segment_seconds=0.01)[0]["caption"] == "music"


def test_caption_choice_first_always_takes_the_first_caption(captioned):
    dataset = AudioCaptionDataset(captioned, sample_rate=RATE, segment_seconds=0.01, caption_choice="first")
    first = [record["captions"][0] for record in dataset.records]
    assert captions_over_epochs(dataset, 5) == first * 5


def test_caption_choice_random_uses_every_caption(captioned):
    dataset = AudioCaptionDataset(captioned, sample_rate=RATE, segment_seconds=0.01)
    assert set(captions_over_epochs(dataset, 20)) == {c for r in dataset.records for c in r["captions"]}


def test_split_selects_records(corpus):
    assert [r["path"] for r in read_metadata(corpus, split="valid")] == ["valid/short.flac"]
    assert len(read_metadata(corpus / "metadata.jsonl")) == 4
    assert len(AudioCaptionDataset(corpus, sample_rate=RATE, split="train")) == 3
    with pytest.raises(ValueError, match="'test'.*'train', 'valid'"):
        read_metadata(corpus, split="test")


def test_user_folder_with_a_caption_string_and_no_splits(tmp_path):
    entries = [
        ("song.wav", 1.0, 22050, 2, {"caption": "my own recording", "artist": "me"}),
        ("nested/other.flac", 1.0, 22050, 1, {"text": "another take"}),
    ]
    root = write_folder(tmp_path, entries)
    dataset = AudioCaptionDataset(root, sample_rate=RATE, segment_seconds=0.5, caption_choice="first")
    assert [item["caption"] for item in dataset] == ["my own recording", "another take"]
    assert dataset[0]["metadata"]["artist"] == "me" and dataset[0]["audio"].shape == (1, RATE // 2)


def test_a_plain_folder_with_txt_captions_needs_no_index(tmp_path):
    """Audio files as they come (mixed rates and channels, spaces in names, subfolders) with a .txt caption beside
    each; one line per caption. Without splits, one file in 20 (at least one) is held out, the same every time."""
    for i, (rate, channels) in enumerate([(44100, 2), (16000, 1), (22050, 2), (48000, 1)] * 6):
        path = tmp_path / ("live" if i % 2 else "studio") / f"take {i}.wav"
        save_audio(path, tone(0.3, rate, channels, 200.0 + 30 * i), rate)
        path.with_suffix(".txt").write_text(f"take {i} on piano\n\nsolo piano, take {i}\n")
    (tmp_path / ".hidden").mkdir()
    save_audio(tmp_path / ".hidden" / "ignored.wav", tone(0.1, RATE), RATE)  # hidden folders are skipped
    records = read_metadata(tmp_path)
    assert len(records) == 24 and records[0]["captions"] == ["take 1 on piano", "solo piano, take 1"]
    valid = [r["path"] for r in records if r["split"] == "valid"]
    assert len(valid) == 1 and valid == [r["path"] for r in read_metadata(tmp_path, split="valid")]
    dataset = AudioCaptionDataset(tmp_path, sample_rate=RATE, segment_seconds=0.25, channels=2, split="train")
    assert len(dataset) == 23
    assert all(item["audio"].shape == (2, RATE // 4) and item["audio"].abs().max() > 0.1 for item in dataset)


def test_a_metadata_csv_is_read_like_the_jsonl(tmp_path):
    save_audio(tmp_path / "clips" / "a.flac", tone(0.3, 16000), 16000)
    save_audio(tmp_path / "clips" / "b.wav", tone(0.3, 44100, 2), 44100)
    (tmp_path / "metadata.csv").write_text(
        'file_name,caption,artist\nclips/a.flac,"a calm tone, low",me\nclips/b.wav,a stereo tone,\n'
    )
    records = read_metadata(tmp_path)
    assert [(r["path"], r["captions"], r.get("artist")) for r in records] == [
        ("clips/a.flac", ["a calm tone, low"], "me"),
        ("clips/b.wav", ["a stereo tone"], None),
    ]
    (tmp_path / "metadata.csv").write_text("file_name,caption\nclips/a.flac,a tone\nclips/b.wav,\n")
    with pytest.raises(ValueError, match=r"metadata.csv, line 3: no caption"):
        read_metadata(tmp_path)
    (tmp_path / "metadata.csv").write_text("name,caption\nclips/a.flac,a tone\n")
    with pytest.raises(ValueError, match=r"metadata.csv: the header row must name a 'path'"):
        read_metadata(tmp_path)


def test_a_folder_without_audio_or_with_uncaptioned_files_is_refused_naming_them(tmp_path):
    with pytest.raises(ValueError, match=r"holds no audio files .* and no metadata.jsonl or metadata.csv"):
        read_metadata(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"data folder .*nowhere does not exist"):
        read_metadata(tmp_path / "nowhere")
    for name in ("a", "b", "c"):
        save_audio(tmp_path / f"{name}.wav", tone(0.1, RATE), RATE)
    (tmp_path / "a.txt").write_text("a tone\n")
    with pytest.raises(ValueError, match=r"2 of 3 audio files in .* have no caption: b.wav, c.wav"):
        read_metadata(tmp_path)
    (tmp_path / "b.txt").write_text("\n")
    (tmp_path / "c.txt").write_text("a tone\n")
    with pytest.raises(ValueError, match=r"b.txt is empty"):
        read_metadata(tmp_path)
    for name in ("b", "c"):
        (tmp_path / f"{name}.wav").unlink()
    with pytest.raises(ValueError, match=r"has only 1 file; training holds one file out"):
        read_metadata(tmp_path)


GOOD_LINE = json.dumps({"path": "a.flac", "caption": "a tone"})


@pytest.mark.parametrize(
    ("broken_line", "error", "message"),
    [
        ('{"path": "a.flac", "caption": "a tone"', ValueError, "invalid JSON"),
        ('["a.flac", "a tone"]', ValueError, "expected a JSON object"),
        ('{"caption": "a tone"}', ValueError, '"path" is missing'),
        ('{"path": "a.flac", "captions": []}', ValueError, "non-empty list"),
        ('{"path": "a.flac", "captions": ["a tone", ""]}', ValueError, "non-empty list"),
        ('{"path": "a.flac", "caption": " "}', ValueError, "non-empty string"),
        ('{"path": "a.flac"}', ValueError, "no caption"),
        ('{"path": "missing.flac", "caption": "a tone"}', FileNotFoundError, "'missing.flac' not found"),
    ],
    ids=[
        "bad-json",
        "not-object",
        "no-path",
        "empty-captions",
        "empty-caption-item",
        "blank-caption",
        "no-caption",
        "missing-file",
    ],
)
def test_broken_metadata_line_raises_naming_file_and_line(tmp_path, broken_line, error, message):
    save_audio(tmp_path / "a.flac", tone(0.1, RATE), RATE)
    # The blank line is allowed and still counts: the broken line is line 4.
    (tmp_path / "metadata.jsonl").write_text(f"{GOOD_LINE}\n\n{GOOD_LINE}\n{broken_line}\n")
    with pytest.raises(error, match=message) as raised:
        read_metadata(tmp_path)
    assert "metadata.jsonl, line 4:" in str(raised.value)


# Latent caches


def latent_records(lengths, channels=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for index, frames in enumerate(lengths):
        metadata = {"path": f"train/clip{index}.flac", "split": "train", "captions": [f"clip {index}"]}
        yield metadata, torch.randn(channels, frames, generator=generator)


def test_latent_crops_equal_the_stored_slice(tmp_path):
    stored = list(latent_records([40, 25, 6]))
    assert write_latent_cache(tmp_path, stored, latent_rate=10.0, scaling_factor=0.5) == 3
    dataset = LatentDataset(tmp_path, segment_frames=8, split="train", channels={"latents": 4}, seed=1)
    assert (dataset.latent_rate, dataset.scaling_factor, dataset.channels) == (10.0, 0.5, {"latents": 4})
    for (metadata, latents), item in zip(stored, dataset):
        start = round(item["crop_start_seconds"] * 10)
        assert item["metadata"]["source_path"] == metadata["path"] and item["caption"] == metadata["captions"][0]
        assert item["source_seconds"] == latents.shape[1] / 10
        real = min(8, latents.shape[1])
        assert torch.equal(item["latents"][:, :real], latents[:, start : start + 8])
        assert item["padding_mask"].sum() == real and not item["latents"][:, real:].any()
    assert {round(item["crop_start_seconds"] * 10) for item in dataset} != {0}


def test_latent_crops_are_fixed_or_reproducibly_random(tmp_path):
    write_latent_cache(tmp_path, latent_records([40, 40]), latent_rate=10.0)
    fixed = LatentDataset(tmp_path, segment_frames=8, random_crop=False)
    assert [item["crop_start_seconds"] for item in fixed] == [0, 0]
    dataset = LatentDataset(tmp_path, segment_frames=8, caption_dropout=1.0)
    epoch_0 = crop_starts(dataset)
    assert epoch_0 == crop_starts(LatentDataset(tmp_path, segment_frames=8))
    dataset.set_epoch(1)
    assert crop_starts(dataset) != epoch_0 and dataset[0]["caption"] == ""


def test_beat_aligned_crops_start_on_a_beat_of_the_records_tempo(tmp_path):
    # 10 frames per second: a quarter note is 5 frames at 120 BPM and 7.5 at 80 (starts round to 0, 8, 15, 22, ...)
    records = [
        ({**metadata, "bpm": bpm}, latents) for (metadata, latents), bpm in zip(latent_records([60, 60]), (120, 80))
    ]
    write_latent_cache(tmp_path, records, latent_rate=10.0)
    aligned = LatentDataset(tmp_path, segment_frames=8, beat_aligned=True)
    starts = {0: set(), 1: set()}
    for epoch in range(40):
        aligned.set_epoch(epoch)
        for index in (0, 1):
            item = aligned[index]
            starts[index].add(round(item["crop_start_seconds"] * 10))
            stored = records[index][1]
            start = round(item["crop_start_seconds"] * 10)
            assert torch.equal(item["latents"], stored[:, start : start + 8])
    assert starts[0] <= set(range(0, 53, 5)) and len(starts[0]) > 5
    assert starts[1] <= {round(k * 7.5) for k in range(8)} and len(starts[1]) > 4
    assert (max(starts[0]), max(starts[1])) == (50, 45)  # up to the last beat that leaves a full crop
    fixed = LatentDataset(tmp_path, segment_frames=8, beat_aligned=True, random_crop=False)
    assert [item["crop_start_seconds"] for item in fixed] == [0, 0]
    unaligned = {
        round(LatentDataset(tmp_path, segment_frames=8, seed=s)[0]["crop_start_seconds"] * 10) for s in range(40)
    }
    assert unaligned - set(range(0, 53, 5))  # without it, crops start anywhere


def test_beat_aligned_crops_need_a_tempo(tmp_path):
    write_latent_cache(tmp_path, latent_records([20]), latent_rate=10.0)
    with pytest.raises(ValueError, match="need each record's tempo as a positive 'bpm'"):
        LatentDataset(tmp_path, segment_frames=8, beat_aligned=True)


def test_latent_batches_collate(tmp_path):
    write_latent_cache(tmp_path, latent_records([40, 6], channels=3), latent_rate=10.0)
    batch = collate([LatentDataset(tmp_path)[index] for index in range(2)])
    assert batch["latents"].shape == (2, 3, 40) and batch["padding_mask"].sum(dim=1).tolist() == [40, 6]


def test_rerunning_the_cache_skips_entries_already_present(tmp_path):
    write_latent_cache(tmp_path, latent_records([12, 12]), latent_rate=10.0)
    before = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*.safetensors")}

    def never_encode():
        raise AssertionError("a present entry must not be encoded again")

    metadata = [meta for meta, _ in latent_records([12, 12, 12])]
    new = torch.ones(4, 12)
    records = [(metadata[0], never_encode), (metadata[1], never_encode), (metadata[2], lambda: new)]
    assert write_latent_cache(tmp_path, records, latent_rate=10.0) == 1
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in before.items())
    assert torch.equal(LatentDataset(tmp_path, segment_frames=12)[2]["latents"], new)


def test_interrupted_cache_run_keeps_an_index_of_the_complete_files(tmp_path):
    def failing_records():
        yield from latent_records([12])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_latent_cache(tmp_path, failing_records(), latent_rate=10.0)
    assert len(LatentDataset(tmp_path)) == 1 and not list(tmp_path.rglob("*.tmp"))


def test_absolute_source_paths_stay_inside_the_cache(tmp_path):
    metadata = {"path": str(tmp_path / "elsewhere" / "song.wav"), "caption": "a song"}
    write_latent_cache(tmp_path / "cache", [(metadata, torch.zeros(2, 5))], latent_rate=10.0)
    assert LatentDataset(tmp_path / "cache")[0]["metadata"]["path"].startswith("external/")


def test_latents_with_another_channel_count_are_rejected(tmp_path):
    write_latent_cache(tmp_path, latent_records([12], channels=4), latent_rate=10.0)
    with pytest.raises(ValueError, match=r"have channels \{'latents': 3\} but the cache .* holds \{'latents': 4\}"):
        write_latent_cache(tmp_path, latent_records([12, 12], channels=3), latent_rate=10.0)
    with pytest.raises(ValueError, match=r"holds \{'latents': 4\} but 'latents' with 8 channels was asked for"):
        LatentDataset(tmp_path, channels={"latents": 8})
    with pytest.raises(ValueError, match=r"but 'codes' with 8 channels was asked for"):
        LatentDataset(tmp_path, channels={"codes": 8})


def test_named_tensors_keep_their_names_and_integer_codes_stay_integers(tmp_path):
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2**30, (3, 20), generator=generator)  # beyond float32's exact integers (2**24)
    chroma = torch.rand(12, 20, generator=generator)
    record = {"path": "train/a.flac", "caption": "a", "split": "train"}
    write_latent_cache(tmp_path, [(record, {"codes": codes, "melody_chroma": chroma})], latent_rate=10.0)
    dataset = LatentDataset(tmp_path, segment_frames=8, random_crop=False, channels={"codes": 3})
    item = dataset[0]
    assert dataset.channels == {"codes": 3, "melody_chroma": 12} and "latents" not in item
    assert item["codes"].dtype == torch.int64 and torch.equal(item["codes"], codes[:, :8])
    assert torch.equal(item["melody_chroma"], chroma[:, :8])
    with pytest.raises(ValueError, match=r"differ in length"):
        write_latent_cache(tmp_path / "b", [(record, {"codes": codes, "melody_chroma": chroma[:, :5]})], 10.0)


def test_index_line_with_another_channel_count_raises_naming_the_line(tmp_path):
    write_latent_cache(tmp_path, latent_records([12, 12]), latent_rate=10.0)
    index = tmp_path / "latents.jsonl"
    lines = index.read_text().splitlines()
    lines[1] = json.dumps({**json.loads(lines[1]), "channels": {"latents": 3}})
    index.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"latents.jsonl, line 2: holds \{'latents': 3\}"):
        LatentDataset(tmp_path)


def test_missing_latent_file_raises_naming_the_line(tmp_path):
    write_latent_cache(tmp_path, latent_records([12, 12]), latent_rate=10.0)
    (tmp_path / "train" / "clip1.flac.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"latents.jsonl, line 2: file 'train/clip1.flac.safetensors'"):
        LatentDataset(tmp_path)


def test_cache_refuses_another_latent_rate(tmp_path):
    write_latent_cache(tmp_path, latent_records([12]), latent_rate=10.0)
    with pytest.raises(ValueError, match="latent_rate=10.0"):
        write_latent_cache(tmp_path, latent_records([12]), latent_rate=20.0)
