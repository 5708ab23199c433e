"""The `latentmusic` command: `generate` (also continue, inpaint, remix, story), `evaluate`, `render-corpus`.

Each subcommand is a thin layer over the package's Python API; heavy imports happen inside the
subcommand so `latentmusic --help` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .checkpoints import DEFAULT_PIPELINE


class UsageError(ValueError):
    """A command-line argument that cannot work, found before anything is loaded."""


# options only the diffusion pipeline takes (the token LM samples codes: no steps, scheduler or masks)
DIFFUSION_ONLY = ("--steps", "--scheduler", "--inpaint", "--strength", "--melody", "--story", "--bpm")


def _generate(args: argparse.Namespace) -> int:
    import torch

    from .audio import save_audio
    from .pipelines.schedulers import is_flow_scheduler, make_scheduler

    # 1. Everything the arguments alone can tell, before the model loads (seconds to minutes)
    pipeline_cls, folder, model_index = _pipeline_class(args.model)
    token = pipeline_cls.__name__ == "TokenMusicPipeline"
    flow = _saved_scheduler_is_flow(folder, model_index)
    _check_generate_arguments(args, token, flow)
    outputs = _output_paths(Path(args.out), args.n)
    task = _task_arguments(args)

    # 2. Load and generate
    pipe = pipeline_cls.from_pretrained(folder)
    if args.lora:
        pipe.load_lora_weights(args.lora)
    if not token and pipe.trained_with_beat_grid and "bpm" not in task:  # the prompt's tempo, as the rhythm control
        written = prompt_bpm(args.prompt or "")
        if written is not None:
            task["bpm"] = written
            print(f"beats at {written:g} BPM, from the prompt (--bpm to set them)")
    guidance = args.guidance if args.guidance is not None else (3.0 if token else 4.0)
    options: dict = {"guidance_scale": guidance}
    if not token:
        options["num_inference_steps"] = args.steps or 25
        # DPM-Solver++ is the fast default of noise/v-prediction models; flow models keep their own sampler
        name = args.scheduler or (None if is_flow_scheduler(pipe.scheduler) else "dpm++")
        if name:
            pipe.scheduler = make_scheduler(name, pipe.scheduler)
    generator = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
    audios = pipe(
        args.prompt,
        negative_prompt=args.negative_prompt,
        audio_length_in_s=args.seconds,
        num_waveforms_per_prompt=args.n,
        generator=generator,
        output_type="pt",
        **options,
        **task,
    ).audios
    for path, audio in zip(outputs, audios):
        try:
            save_audio(path, audio, pipe.sample_rate)
        except RuntimeError as error:  # soundfile's LibsndfileError: the disk filled up, the folder went away
            raise OSError(f"could not write {path}: {error}") from None
        print(f"wrote {path} ({audio.shape[-1] / pipe.sample_rate:.1f} s)")
    return 0


def prompt_bpm(prompt: str) -> float | None:
    """The tempo a prompt writes as "<number> BPM" (any case), if it writes exactly one; else `None`."""
    import re

    found = re.findall(r"(\d+(?:\.\d+)?)\s*bpm\b", prompt, flags=re.IGNORECASE)
    return float(found[0]) if len(found) == 1 and float(found[0]) >= 1 else None


def _pipeline_class(model: str) -> tuple[type, str, dict]:
    """The pipeline class a `--model` folder or shipped name holds, its folder and its model_index.json."""
    import json

    from . import pipelines
    from .checkpoints import SHIPPED, resolve_pretrained

    folder = str(resolve_pretrained(model))
    index = Path(folder) / "model_index.json"
    if not index.is_file():
        where = "is not a folder" if not Path(folder).is_dir() else "has no model_index.json"
        raise UsageError(
            f"--model {model!r} {where}; pass a folder written by save_pretrained or a shipped checkpoint "
            f"({', '.join(sorted(SHIPPED))})"
        )
    try:
        model_index = json.loads(index.read_text())
    except json.JSONDecodeError as error:
        raise UsageError(f"--model {model!r}: {index} is not valid JSON ({error})") from None
    class_name = model_index.get("_class_name")
    if class_name not in pipelines.__all__:
        raise UsageError(f"--model {model!r} holds a {class_name}; this command runs {', '.join(pipelines.__all__)}")
    return getattr(pipelines, class_name), folder, model_index


class _NamesFormatter(argparse.HelpFormatter):
    """Help that wraps lines between words only, so that a name such as `flow-pingpong` stays whole."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _saved_scheduler_is_flow(folder: str, model_index: dict) -> bool:
    """Whether the saved pipeline's scheduler samples a flow-matching model, read from its class name and
    config (a DPM-Solver or UniPC scheduler is flow by its config), before the model loads."""
    import json

    from .pipelines.schedulers import is_flow_config

    class_name = str((model_index.get("scheduler") or [None, ""])[1])
    config_path = Path(folder) / "scheduler" / "scheduler_config.json"
    try:
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    except json.JSONDecodeError:
        config = {}  # from_pretrained reports a broken config when it loads it
    return is_flow_config(class_name, config)


def _check_generate_arguments(args: argparse.Namespace, token: bool, flow: bool) -> None:
    """Refuse numbers and option combinations that cannot work, naming the option."""
    from .pipelines.checks import MAX_SECONDS
    from .pipelines.schedulers import SCHEDULERS, scheduler_names

    if args.story and args.prompt:
        raise UsageError("pass either a prompt or --story segments, not both")
    if not args.story and not args.prompt:
        raise UsageError("say what to generate: a prompt, or --story 'prompt A:8' 'prompt B:8'")
    if args.prompt is not None and not args.prompt.strip():
        raise UsageError("the prompt is empty; describe the music, e.g. 'a slow Bach chorale on a church organ'")
    if args.lora is not None:
        from .checkpoints import SHIPPED_LORAS, resolve_lora

        if not Path(resolve_lora(args.lora)).exists():
            shipped = f", or a shipped adapter ({', '.join(sorted(SHIPPED_LORAS))})" if SHIPPED_LORAS else ""
            raise UsageError(
                f"--lora {args.lora}: no such file or folder; pass the folder a LoRA run wrote (<output_dir>/lora) "
                f"or its .safetensors file{shipped}"
            )
    if token:
        used = [name for name in DIFFUSION_ONLY if getattr(args, name[2:]) is not None]
        if used:
            raise UsageError(f"{', '.join(used)} work with diffusion models; --model {args.model!r} is a token LM")
    if args.seconds is not None and not 0 < args.seconds <= MAX_SECONDS:
        raise UsageError(f"--seconds must be in (0, {MAX_SECONDS:g}], got {args.seconds}")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be a positive integer, got {args.steps}")
    if args.n < 1:
        raise UsageError(f"-n must be a positive integer, got {args.n}")
    if args.guidance is not None and not 0 <= args.guidance < float("inf"):
        raise UsageError(f"--guidance must be a finite number >= 0 (1 disables guidance), got {args.guidance}")
    if args.negative_prompt is not None and args.guidance is not None and args.guidance <= 1:
        raise UsageError(f"--negative-prompt acts through guidance; use --guidance > 1, got {args.guidance}")
    if args.bpm is not None and not 1 <= args.bpm < float("inf"):
        raise UsageError(f"--bpm is a tempo in quarter notes per minute, e.g. 120; got {args.bpm}")
    if args.strength is not None and not 0 <= args.strength <= 1:
        raise UsageError(f"--strength must be in [0, 1] (0 keeps --audio, 1 ignores it), got {args.strength}")
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise UsageError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.scheduler is not None and args.scheduler not in SCHEDULERS:
        raise UsageError(f"unknown scheduler {args.scheduler!r}; choose from {', '.join(SCHEDULERS)}")
    if args.scheduler is not None and args.scheduler not in scheduler_names(flow):
        kind, fitting = "flow-matching" if flow else "noise/v-prediction", ", ".join(scheduler_names(flow))
        raise UsageError(f"scheduler {args.scheduler!r} does not fit this {kind} model; choose from {fitting}")


def _output_paths(out: Path, n: int) -> list[Path]:
    """The files `generate` writes (`out`, or `out-0`, `out-1`, ... for -n > 1), checked writable up front."""
    import os

    from .audio import SUPPORTED_FORMATS

    if out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a folder; name a file in it, e.g. {out / 'out.wav'}")
    if out.suffix.lower() not in SUPPORTED_FORMATS:
        raise UsageError(
            f"--out {str(out)!r}: unsupported audio format {out.suffix or '(no suffix)'!r}; "
            f"end it in one of {', '.join(SUPPORTED_FORMATS)}"
        )
    paths = [out] if n == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(n)]
    for path in paths:
        if path.is_dir():
            raise UsageError(f"--out {str(path)!r} is a folder; name a file in it, e.g. {path / 'out.wav'}")
    parent = out.parent
    existing = next((p for p in [parent, *parent.parents] if p.exists()), Path("."))
    if not existing.is_dir():
        raise UsageError(f"--out {str(out)!r}: {existing} is a file, so nothing can be written under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {str(out)!r}: {existing} is not writable; choose another folder")
    if parent.is_dir():  # try it: permissions are not the only reason a file cannot be made
        for path in paths:
            existed = path.exists()
            try:
                with open(path, "ab"):
                    pass
            except OSError as error:
                raise UsageError(f"--out {str(path)!r} cannot be written ({error.strerror or error})") from None
            if not existed:
                path.unlink()
    return paths


def _task_arguments(args: argparse.Namespace) -> dict:
    """The pipeline arguments of --audio with --continue / --inpaint / --strength, of --story and --melody (the
    audio files are read here, before the model loads)."""
    from .audio import load_audio
    from .pipelines.tasks import parse_story

    edits = [
        name
        for name, used in (
            ("--continue", args.continue_),
            ("--inpaint", args.inpaint),
            ("--strength", args.strength is not None),
        )
        if used
    ]
    task: dict = {}
    if args.story:
        try:
            parse_story(args.story)
        except ValueError as error:
            raise UsageError(f"--story: {error}") from None
        task["story"] = args.story
    if args.melody is not None:
        melody, melody_rate = load_audio(args.melody)
        task.update(melody=melody, melody_sample_rate=melody_rate)
    if args.bpm is not None:
        task["bpm"] = args.bpm
    if args.audio is None:
        if edits:
            raise UsageError(f"{', '.join(edits)} act on input audio; pass it with --audio FILE")
        return task
    if len(edits) != 1 and not (set(edits) == {"--inpaint", "--strength"}):
        raise UsageError("say what to do with --audio: --continue (with --seconds), --inpaint START:END or --strength")
    if args.continue_ and args.seconds is None:
        raise UsageError("--continue generates up to --seconds; say how long the whole clip should be")
    mask = [_seconds_range(text) for text in args.inpaint] if args.inpaint else None
    audio, sample_rate = load_audio(args.audio)
    if args.continue_ and args.seconds <= audio.shape[-1] / sample_rate:
        raise UsageError(
            f"--continue: --seconds {args.seconds} is the whole clip's length and must be longer than --audio's "
            f"{audio.shape[-1] / sample_rate:.2f} s"
        )
    task.update(audio=audio, audio_sample_rate=sample_rate)
    if args.strength is not None:
        task["strength"] = args.strength
    if mask is not None:
        task["mask"] = mask
    return task


def _seconds_range(text: str) -> tuple[float, float]:
    start, sep, end = text.partition(":")
    try:
        return float(start), float(end)
    except ValueError:
        raise UsageError(f"--inpaint {text!r} is not START:END in seconds, e.g. 3.0:5.0") from None


def _render_corpus(args: argparse.Namespace) -> int:
    from .data.cli import render_corpus_from_args

    render_corpus_from_args(args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentmusic", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    from .pipelines.schedulers import SCHEDULERS

    gen = commands.add_parser("generate", help="generate music from a text prompt", formatter_class=_NamesFormatter)
    gen.add_argument("prompt", nargs="?", help="what to generate, e.g. 'a slow Bach chorale on a church organ'")
    gen.add_argument(
        "--model",
        default=DEFAULT_PIPELINE,
        help=f"pipeline folder (from save_pretrained) or a shipped checkpoint's name (default: {DEFAULT_PIPELINE})",
    )
    gen.add_argument("--seconds", type=float, default=None, help="clip length (default: the model's)")
    gen.add_argument("--steps", type=int, default=None, help="denoising steps (diffusion; default 25)")
    gen.add_argument(
        "--scheduler",
        default=None,
        metavar="NAME",
        help=f"diffusion sampler (default: dpm++; flow-matching models: their own): {', '.join(SCHEDULERS)}",
    )
    gen.add_argument(
        "--guidance", type=float, default=None, help="classifier-free guidance scale (default 4, token LM 3)"
    )
    gen.add_argument("--negative-prompt", default=None, help="what to steer away from")
    gen.add_argument(
        "--lora",
        default=None,
        help="a LoRA adapter to load: the folder a LoRA run wrote (<output_dir>/lora) or its .safetensors file (a "
        "guidance-distilled one samples with --guidance 1 --steps 8 --scheduler flow-unipc-shift2)",
    )
    gen.add_argument("--seed", type=int, default=None, help="random seed for reproducible output")
    gen.add_argument("-n", type=int, default=1, help="number of variations")
    gen.add_argument("--out", default="out.wav", help="output file (.wav, .flac or .ogg)")
    gen.add_argument("--audio", help="input audio for --continue, --inpaint or --strength (resampled if need be)")
    gen.add_argument("--continue", dest="continue_", action="store_true", help="continue --audio up to --seconds")
    gen.add_argument(
        "--inpaint", action="append", metavar="START:END", help="regenerate these seconds of --audio (repeatable)"
    )
    gen.add_argument("--strength", type=float, help="remix --audio: 0 keeps it, 1 ignores it")
    gen.add_argument("--melody", help="a recording whose tune to follow (models trained with melodies)")
    gen.add_argument(
        "--bpm", type=float, help="put the beats at this tempo, e.g. 120 (models trained with beat grids)"
    )
    gen.add_argument(
        "--story", nargs="+", metavar="PROMPT:SECONDS", help="one piece in sections, e.g. 'calm organ:8' 'fast reel:8'"
    )
    gen.set_defaults(func=_generate)

    from .data.cli import add_render_arguments

    render = commands.add_parser("render-corpus", help="render the music21 corpus to audio with captions")
    add_render_arguments(render)
    render.set_defaults(func=_render_corpus)

    from .evaluation.cli import add_evaluate_arguments, run_evaluate

    evaluate = commands.add_parser("evaluate", help="Fréchet distance, tempo/key accuracy and CLAP score of clips")
    add_evaluate_arguments(evaluate)
    evaluate.set_defaults(func=run_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as error:
        # a user's mistake (bad value, missing or unwritable file): one line, no traceback
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"latentmusic {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
