"""The held-out caption gaps: shuffled captions, and one attribute of the caption changed at a time."""

from __future__ import annotations

import pytest
import torch

from latentmusic.data.captions import make_captions
from latentmusic.training.validation import (
    ATTRIBUTE_SWAPS,
    attribute_swapped_captions,
    caption_gap_losses,
)

BASE = {"composer": "J. S. Bach", "genre": "chorale", "title": "Nun danket", "meter": "4/4"}
RECORDS = [
    {**BASE, "key": "C major", "bpm": 90, "instrument": "oboe", "family": "woodwind"},
    {**BASE, "key": "G# minor", "bpm": 132, "instrument": "cello", "family": "strings"},
    {**BASE, "key": "F# major", "bpm": 70, "instrument": "clarinet", "family": "woodwind"},
]


def first_captions(records):
    return [make_captions(record)[0] for record in records]


def test_each_swap_changes_only_its_attribute_far_from_the_truth():
    captions = first_captions(RECORDS)
    keys = attribute_swapped_captions(captions, RECORDS, ATTRIBUTE_SWAPS["key"])
    # a tritone away, same mode, spelled as the corpus spells keys
    assert keys == [c.replace(old, new) for c, old, new in zip(captions, ["C major", "G# minor", "F# major"],
                                                                  ["F# major", "D minor", "C major"])]  # fmt: skip
    tempos = attribute_swapped_captions(captions, RECORDS, ATTRIBUTE_SWAPS["tempo"])
    assert tempos == [c.replace(f"at {old} BPM", f"at {new} BPM") for c, old, new in zip(captions, [90, 132, 70],
                                                                                       [112, 106, 88])]  # fmt: skip
    # the next clip of another family: the oboe becomes the cello, the cello the clarinet, the clarinet the cello
    instruments = attribute_swapped_captions(captions, RECORDS, ATTRIBUTE_SWAPS["instrument"])
    assert instruments == [
        captions[0].replace("an oboe", "a cello"),
        captions[1].replace("a cello", "a clarinet"),
        captions[2].replace("a clarinet", "a cello"),
    ]
    # the same template as the caption it replaces, not always the first
    second = [make_captions(record)[3] for record in RECORDS]
    assert attribute_swapped_captions(second, RECORDS, ATTRIBUTE_SWAPS["key"])[0].endswith(", F# major")


def test_captions_not_made_from_the_records_are_not_swapped():
    captions = first_captions(RECORDS)
    assert attribute_swapped_captions(["my own words", *captions[1:]], RECORDS, ATTRIBUTE_SWAPS["key"]) is None
    assert attribute_swapped_captions(["", *captions[1:]], RECORDS, ATTRIBUTE_SWAPS["key"]) is None  # dropped
    bare = [{"caption": c} for c in captions]
    assert attribute_swapped_captions(captions, bare, ATTRIBUTE_SWAPS["key"]) is None
    one_family = [{**r, "family": "woodwind"} for r in RECORDS]
    assert attribute_swapped_captions(first_captions(one_family), one_family, ATTRIBUTE_SWAPS["instrument"]) is None


class Captioned(torch.utils.data.Dataset):
    def __init__(self, records):
        self.records = records

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        return {"caption": make_captions(self.records[i])[0], "metadata": self.records[i]}


def test_caption_gap_losses_reports_each_attribute_it_can_change():
    # a "model" that only knows the instruments: its loss is the share of captions naming the wrong one
    records = [{**r, "title": f"piece {i}"} for i, r in enumerate(RECORDS)]
    truth = {r["title"]: r["instrument"] for r in records}

    def loss(batch, captions, i):
        wrong = [truth[record["title"]] not in caption for record, caption in zip(batch["metadata"], captions)]
        return torch.tensor(sum(wrong) / len(wrong))

    result = caption_gap_losses(loss, Captioned(records), batch_size=3, max_batches=1)
    assert result["valid_loss"] == 0 and result["valid_loss_key_swapped"] == 0
    assert result["valid_loss_tempo_swapped"] == 0
    assert result["valid_loss_instrument_swapped"] == 1 and result["valid_loss_shuffled_captions"] == 1

    # captions of another corpus: only the right and shuffled losses
    own = [{"caption": f"clip {i}", "metadata": {"title": f"piece {i}"}} for i in range(3)]
    result = caption_gap_losses(lambda b, c, i: torch.tensor(1.0), own, batch_size=3, max_batches=1)
    assert set(result) == {"valid_loss", "valid_loss_shuffled_captions"}


@pytest.mark.parametrize("bpm,expected", [(60, 75), (99, 124), (100, 80), (150, 120)])
def test_tempo_swap_is_no_metrical_level_of_the_truth(bpm, expected):
    new = ATTRIBUTE_SWAPS["tempo"]({"bpm": bpm}, [])["bpm"]
    assert new == expected
    assert all(abs(new / (bpm * level) - 1) > 0.15 for level in (1, 2, 0.5, 1.5, 2 / 3, 3, 1 / 3))
