"""The `latentmusic` command line: generate from a saved pipeline, and clear errors."""

from __future__ import annotations

import pytest
import soundfile as sf

from latentmusic.cli import main

from .conftest import make_tiny_pipe


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
    assert "audio_length_in_s must be in (0, 3600]" in capsys.readouterr().err
    assert generate(pipeline_dir, tmp_path / "x.mp3") == 2
    assert "unsupported audio format" in capsys.readouterr().err


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
    make_tiny_pipe(extra_in_channels=12).save_pretrained(folder)
    assert generate(folder, tmp_path / "ref.wav", "--seed", "0") == 0
    assert generate(folder, tmp_path / "m.wav", "--melody", str(tmp_path / "ref.wav")) == 0
    assert generate(make_tiny_pipe_dir(tmp_path), tmp_path / "x.wav", "--melody", str(tmp_path / "ref.wav")) == 2
    assert "not trained with melodies" in capsys.readouterr().err


def make_tiny_pipe_dir(tmp_path):
    folder = tmp_path / "plain-pipe"
    make_tiny_pipe().save_pretrained(folder)
    return folder
