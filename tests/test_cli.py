"""The `latentmusic` command line: generate from a saved pipeline, and clear errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

from latentmusic import LatentMusicPipeline, TokenMusicPipeline
from latentmusic.cli import main, prompt_bpm
from latentmusic.data import cli as data_cli
from latentmusic.pipelines.schedulers import SCHEDULERS

from .conftest import make_tiny_pipe
from .test_pipeline_token_music import make_tiny_token_pipe


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipe")
    make_tiny_pipe().save_pretrained(folder)
    return folder


def generate(pipeline_dir, out, *extra):
    args = ["generate", "a slow Bach chorale", "--model", str(pipeline_dir), "--seconds", "0.5", "--steps", "3"]
    return main([*args, "--out", str(out), *extra])


def test_generate_writes_the_asked_length_and_a_seed_reproduces(pipeline_dir, tmp_path, capsys):
    assert generate(pipeline_dir, tmp_path / "a.wav", "--seed", "1") == 0
    assert generate(pipeline_dir, tmp_path / "b.wav", "--seed", "1") == 0
    a, rate = sf.read(tmp_path / "a.wav")
    b, _ = sf.read(tmp_path / "b.wav")
    assert rate == 8000 and len(a) == 4000 and (a == b).all() and abs(a).max() > 0
    assert "wrote" in capsys.readouterr().out


def test_generate_variations_and_schedulers(pipeline_dir, tmp_path):
    assert generate(pipeline_dir, tmp_path / "v.flac", "-n", "2", "--scheduler", "euler", "--seed", "0") == 0
    first, second = sf.read(tmp_path / "v-0.flac")[0], sf.read(tmp_path / "v-1.flac")[0]
    assert len(first) == len(second) == 4000 and not (first == second).all()


def test_bad_input_is_an_error_message_not_a_traceback(pipeline_dir, tmp_path, capsys):
    assert generate(pipeline_dir, tmp_path / "x.wav", "--scheduler", "warp") == 2
    assert "unknown scheduler 'warp'" in capsys.readouterr().err
    assert generate(pipeline_dir, tmp_path / "x.wav", "--seconds", "-1") == 2
    assert "--seconds must be in (0, 3600], got -1.0" in capsys.readouterr().err
    assert generate(pipeline_dir, tmp_path / "x.mp3") == 2
    assert "unsupported audio format '.mp3'" in capsys.readouterr().err


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the pipeline loads: argument errors must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model loaded before the arguments were checked")

    monkeypatch.setattr(LatentMusicPipeline, "from_pretrained", refuse)
    monkeypatch.setattr(TokenMusicPipeline, "from_pretrained", refuse)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--scheduler", "flow-euler"], "does not fit this noise/v-prediction model"),
        (["--seconds", "nan"], "--seconds must be in"),
        (["--seconds", "1e9"], "--seconds must be in"),
        (["--steps", "0"], "--steps must be a positive integer, got 0"),
        (["-n", "0"], "-n must be a positive integer, got 0"),
        (["--guidance", "nan"], "--guidance must be a finite number >= 0"),
        (["--guidance", "-2"], "--guidance must be a finite number >= 0"),
        (["--guidance", "1", "--negative-prompt", "noise"], "use --guidance > 1"),
        (["--seed", "-1"], "--seed must be a non-negative integer"),
        (["--audio", "MISSING.wav", "--continue", "--seconds", "1"], "audio file not found"),
        (["--audio", "NOT_AUDIO.wav", "--strength", "0.5"], "could not decode"),
        (["--audio", "PREFIX", "--continue"], "must be longer than --audio's 0.50 s"),
        (["--audio", "PREFIX", "--strength", "2"], "--strength must be in [0, 1]"),
        (["--melody", "MISSING.wav"], "audio file not found"),
        (["--bpm", "0"], "--bpm is a tempo in quarter notes per minute"),
        (["--bpm", "nan"], "--bpm is a tempo in quarter notes per minute"),
        (["--out", "x.mp3"], "unsupported audio format '.mp3'"),
        (["--out", "FOLDER"], "is a folder"),
        (["--out", "UNDER_A_FILE"], "is a file, so nothing can be written under it"),
        (["--out", "READ_ONLY"], "is not writable"),
        (["--out", "/proc/latentmusic.wav"], "cannot be written"),  # a folder no one can make files in
        (["--model", "NO_SUCH_FOLDER"], "is not a folder; pass a folder written by save_pretrained"),
        (["--model", "FOLDER"], "has no model_index.json"),
        (["--lora", "no-such-lora"], "--lora no-such-lora: no such file or folder"),
    ],
)
def test_argument_errors_come_before_the_model_loads(
    pipeline_dir, prefix_file, tmp_path, capsys, no_model_load, extra, message
):
    (tmp_path / "not-audio.wav").write_text("hello")
    (tmp_path / "a-file").write_text("")
    (tmp_path / "folder").mkdir()
    (tmp_path / "read-only").mkdir(mode=0o500)
    names = {
        "MISSING.wav": tmp_path / "missing.wav",
        "NOT_AUDIO.wav": tmp_path / "not-audio.wav",
        "PREFIX": prefix_file,
        "FOLDER": tmp_path / "folder",
        "UNDER_A_FILE": tmp_path / "a-file" / "out.wav",
        "READ_ONLY": tmp_path / "read-only" / "out.wav",
        "NO_SUCH_FOLDER": tmp_path / "nowhere",
    }
    if "READ_ONLY" in extra and os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    if any(e.startswith("/proc/") for e in extra) and not os.path.isdir("/proc"):
        pytest.skip("no /proc here")
    extra = [str(names.get(e, e)) for e in extra]
    assert generate(pipeline_dir, tmp_path / "x.wav", *extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("story", "message"),
    [
        (["calm organ:abc"], "'abc' is not a number of seconds"),
        (["calm organ"], "is not 'prompt:seconds'"),
        (["calm organ:-2"], "positive, finite number of seconds"),
        ([":4"], "has no prompt"),
    ],
)
def test_bad_story_segments_are_named(pipeline_dir, tmp_path, capsys, no_model_load, story, message):
    args = ["generate", "--model", str(pipeline_dir), "--story", *story, "--out", str(tmp_path / "s.wav")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--story: story segment 0" in err and message in err


def test_generate_help_lists_every_scheduler(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(name in help_text for name in SCHEDULERS)


def test_a_token_lm_pipeline_generates_and_refuses_diffusion_options(tmp_path, capsys):
    folder = tmp_path / "token-pipe"
    make_tiny_token_pipe().save_pretrained(folder)
    args = ["generate", "a folk song", "--model", str(folder), "--seconds", "0.05", "--seed", "0"]
    assert main([*args, "--out", str(tmp_path / "t.wav")]) == 0
    audio, rate = sf.read(tmp_path / "t.wav")
    assert rate == 8000 and len(audio) == 400 and abs(audio).max() > 0
    assert main([*args, "--steps", "10", "--out", str(tmp_path / "u.wav")]) == 2
    assert "--steps work with diffusion models" in capsys.readouterr().err


@pytest.fixture(scope="module")
def prefix_file(pipeline_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("prefix") / "prefix.wav"
    assert generate(pipeline_dir, path, "--seed", "0") == 0
    return path


def test_continue_inpaint_remix_and_story(pipeline_dir, tmp_path, capsys):
    assert generate(pipeline_dir, tmp_path / "prefix.wav", "--seed", "0") == 0  # 0.5 s to work on
    prefix = str(tmp_path / "prefix.wav")
    assert generate(pipeline_dir, tmp_path / "c.wav", "--audio", prefix, "--continue", "--seconds", "1.0") == 0
    assert len(sf.read(tmp_path / "c.wav")[0]) == 8000
    args = ["generate", "a folk song", "--model", str(pipeline_dir), "--steps", "3", "--audio", prefix]
    assert main([*args, "--inpaint", "0.1:0.3", "--out", str(tmp_path / "i.wav")]) == 0
    assert main([*args, "--strength", "0.5", "--out", str(tmp_path / "s.wav")]) == 0
    original, inpainted = sf.read(prefix)[0], sf.read(tmp_path / "i.wav")[0]
    assert len(inpainted) == len(original) == len(sf.read(tmp_path / "s.wav")[0])
    story = ["generate", "--model", str(pipeline_dir), "--steps", "3", "--story", "a calm chorale:0.5", "a reel:0.75"]
    assert main([*story, "--out", str(tmp_path / "story.wav")]) == 0
    assert len(sf.read(tmp_path / "story.wav")[0]) == 10000


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--continue"], "act on input audio"),
        (["--inpaint", "0:1"], "act on input audio"),
        (["--audio", "PREFIX"], "say what to do with --audio"),
        (["--audio", "PREFIX", "--inpaint", "zero:one"], "is not START:END"),
        (["--story", "a:1"], "either a prompt or --story"),
    ],
)
def test_task_options_are_checked(pipeline_dir, tmp_path, capsys, extra, message):
    assert generate(pipeline_dir, tmp_path / "prefix.wav") == 0
    extra = [str(tmp_path / "prefix.wav") if e == "PREFIX" else e for e in extra]
    assert generate(pipeline_dir, tmp_path / "x.wav", *extra) == 2
    assert message in capsys.readouterr().err


def test_melody_option_reaches_the_pipeline(tmp_path, capsys):
    folder = tmp_path / "melody-pipe"
    make_tiny_pipe(melody=True).save_pretrained(folder)
    assert generate(folder, tmp_path / "ref.wav", "--seed", "0") == 0
    assert generate(folder, tmp_path / "m.wav", "--melody", str(tmp_path / "ref.wav")) == 0
    assert generate(make_tiny_pipe_dir(tmp_path), tmp_path / "x.wav", "--melody", str(tmp_path / "ref.wav")) == 2
    assert "not trained with melodies" in capsys.readouterr().err


def test_bpm_option_reaches_the_pipeline(tmp_path, capsys):
    folder = tmp_path / "beat-pipe"
    make_tiny_pipe(beat=True).save_pretrained(folder)
    assert generate(folder, tmp_path / "a.wav", "--seed", "0", "--bpm", "120") == 0
    assert generate(folder, tmp_path / "b.wav", "--seed", "0", "--bpm", "80") == 0
    a, b = (sf.read(tmp_path / name)[0] for name in ("a.wav", "b.wav"))
    assert not np.allclose(a, b)  # the grid changed the clip
    assert generate(make_tiny_pipe_dir(tmp_path), tmp_path / "x.wav", "--bpm", "120") == 2
    assert "not trained with beat grids" in capsys.readouterr().err
    # a model with beat grids takes the prompt's written tempo when --bpm is not given
    assert main(["generate", "a reel at 120 BPM", "--model", str(folder), "--seconds", "1", "--steps", "2",
                 "--seed", "0", "--out", str(tmp_path / "c.wav")]) == 0  # fmt: skip
    assert "beats at 120 BPM, from the prompt" in capsys.readouterr().out
    assert main(["generate", "a reel at 120 BPM", "--model", str(folder), "--seconds", "1", "--steps", "2",
                 "--seed", "0", "--bpm", "120", "--out", str(tmp_path / "d.wav")]) == 0  # fmt: skip
    np.testing.assert_array_equal(sf.read(tmp_path / "c.wav")[0], sf.read(tmp_path / "d.wav")[0])
    assert [prompt_bpm(p) for p in ("at 96 bpm", "at 96 BPM and 120 BPM", "a slow chorale", "at 0 BPM")] == [
        96.0,
        None,
        None,
        None,
    ]


def make_tiny_pipe_dir(tmp_path):
    folder = tmp_path / "plain-pipe"
    make_tiny_pipe().save_pretrained(folder)
    return folder


def test_render_corpus_prints_hours_per_split_and_the_first_captions(tmp_path, monkeypatch, capsys):
    """The summary is read back from the index the renderer wrote (the renderer itself is tested in test_corpus)."""
    records = [
        {"path": "a.wav", "split": "train", "duration": 5400.0, "captions": ["a Bach chorale on organ"]},
        {"path": "b.wav", "split": "train", "duration": 1800.0, "captions": ["an Irish reel on fiddle", "a reel"]},
        {"path": "c.wav", "split": "valid", "duration": 900.0, "captions": ["a Palestrina mass for choir"]},
    ]
    for record in records:
        sf.write(tmp_path / record["path"], np.zeros(80), 8000)
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")  # a blank line
    seen = {}

    def fake_render(out, **settings):
        seen.update(out=out, **settings)
        return tmp_path / "metadata.jsonl"

    monkeypatch.setattr(data_cli, "render_corpus", fake_render)
    assert main(["render-corpus", "--out", str(tmp_path), "--max-pieces", "3"]) == 0
    assert seen["out"] == str(tmp_path) and seen["max_pieces"] == 3
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{tmp_path / 'metadata.jsonl'}: 3 renditions, train 2.00 h, valid 0.25 h, test 0.00 h"
    assert lines[1:] == [
        "  a.wav: a Bach chorale on organ",
        "  b.wav: an Irish reel on fiddle",
        "  c.wav: a Palestrina mass for choir",
    ]
