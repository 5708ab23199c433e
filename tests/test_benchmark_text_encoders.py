"""`benchmarks/text_encoders.py`'s pieces: the paraphraser covers the corpus's vocabulary of facts without its
words, unknown words are counted against a caption tokenizer, and held-out losses see the same noise whatever the
prompt and the batch."""

from __future__ import annotations

import torch

from latentmusic.data.captions import make_captions
from latentmusic.data.corpus import INSTRUMENTS
from latentmusic.training.objectives import make_training_scheduler
from latentmusic.training.tokenizer import build_caption_tokenizer

from .conftest import CAPTIONS, load_benchmark, make_tiny_pipe


def load_script():
    return load_benchmark("text_encoders")


def record(instrument, genre="chorale", bpm=125, tonic="F#", mode="major"):
    attributes = dict(composer="J. S. Bach", genre=genre, title="Jesu, meine Freude", key=f"{tonic} {mode}",
                      tonic=tonic, mode=mode, bpm=bpm, meter="4/4", instrument=instrument.name,
                      family=instrument.family)  # fmt: skip
    return {**attributes, "captions": make_captions(attributes)}


def test_paraphrases_keep_the_facts_in_other_words():
    bench = load_script()
    oboe = next(i for i in INSTRUMENTS if i.name == "oboe")
    assert bench.paraphrase(record(oboe)) == (
        "brisk Lutheran hymn by Johann Sebastian Bach for an oboist, F sharp bright major mode, 125 beats a minute"
    )
    assert bench.user_prompt(record(oboe, bpm=60, mode="minor")) == "a gentle, melancholy melody from an oboist"
    for instrument in INSTRUMENTS:  # every instrument the corpus renders has a paraphrase without its name
        example = record(instrument)
        words = bench.paraphrase(example).lower().split()
        assert instrument.name.split()[-1] not in words, example
    # against the tokenizer built from these captions, the paraphrases' new words are unknown and counted
    records = [record(i, genre=g) for i in INSTRUMENTS for g in bench.GENRES]
    tokenizer = build_caption_tokenizer([c for r in records for c in r["captions"]])
    fraction, unknown = bench.unknown_words(tokenizer, [bench.paraphrase(r) for r in records])
    assert {"oboist", "brisk", "lutheran", "sharp", "mode"} <= set(unknown) and "bach" not in unknown
    assert 0.3 < fraction < 1
    assert bench.unknown_words(tokenizer, [r["captions"][0] for r in records])[0] == 0


def test_window_losses_share_noise_across_prompts_and_batches():
    bench = load_script()
    pipe = make_tiny_pipe()
    scheduler = make_training_scheduler("v_prediction")
    windows = list(torch.randn(6, 4, 16, generator=torch.Generator().manual_seed(0)))
    seeds, prompts = list(range(6)), (CAPTIONS + CAPTIONS)[:6]
    rate = pipe.vae.config.sample_rate / pipe.vae.hop_length
    losses = bench.window_losses(pipe, scheduler, windows, prompts, seeds, rate, 16, batch_size=4)
    assert losses.shape == (6,) and (losses > 0).all()
    # one window at a time gives each window's loss again: its noise depends on its seed alone
    alone = bench.window_losses(pipe, scheduler, windows, prompts, seeds, rate, 16, batch_size=1)
    torch.testing.assert_close(alone, losses)
    # other prompts (same noise) change the loss: that difference is the benchmark's gap
    rolled = bench.window_losses(pipe, scheduler, windows, prompts[1:] + prompts[:1], seeds, rate, 16)
    assert not torch.allclose(rolled, losses)
