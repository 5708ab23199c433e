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


def _generate(args: argparse.Namespace) -> int:
    import torch

    from .audio import load_audio, save_audio
    from .pipelines import LatentMusicPipeline
    from .pipelines.schedulers import make_scheduler

    pipe = LatentMusicPipeline.from_pretrained(args.model)
    if args.scheduler:
        pipe.scheduler = make_scheduler(args.scheduler, pipe.scheduler)
    generator = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
    task = _task_arguments(args, load_audio)
    audios = pipe(
        args.prompt,
        negative_prompt=args.negative_prompt,
        audio_length_in_s=args.seconds,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        num_waveforms_per_prompt=args.n,
        generator=generator,
        output_type="pt",
        **task,
    ).audios
    out = Path(args.out)
    for i, audio in enumerate(audios):
        path = out if len(audios) == 1 else out.with_name(f"{out.stem}-{i}{out.suffix}")
        save_audio(path, audio, pipe.sample_rate)
        print(f"wrote {path} ({audio.shape[-1] / pipe.sample_rate:.1f} s)")
    return 0


def _task_arguments(args: argparse.Namespace, load_audio) -> dict:
    """The pipeline arguments of --audio with --continue / --inpaint / --strength, and of --story."""
    edits = [
        name
        for name, used in (
            ("--continue", args.continue_),
            ("--inpaint", args.inpaint),
            ("--strength", args.strength is not None),
        )
        if used
    ]
    if args.story and args.prompt:
        raise ValueError("pass either a prompt or --story segments, not both")
    if not args.story and not args.prompt:
        raise ValueError("say what to generate: a prompt, or --story 'prompt A:8' 'prompt B:8'")
    task: dict = {"story": args.story} if args.story else {}
    if args.melody is not None:
        melody, melody_rate = load_audio(args.melody)
        task.update(melody=melody, melody_sample_rate=melody_rate)
    if args.audio is None:
        if edits:
            raise ValueError(f"{', '.join(edits)} act on input audio; pass it with --audio FILE")
        return task
    if len(edits) != 1 and not (set(edits) == {"--inpaint", "--strength"}):
        raise ValueError("say what to do with --audio: --continue (with --seconds), --inpaint START:END or --strength")
    audio, sample_rate = load_audio(args.audio)
    task.update(audio=audio, audio_sample_rate=sample_rate, strength=args.strength)
    if args.inpaint:
        task["mask"] = [_seconds_range(text) for text in args.inpaint]
    return task


def _seconds_range(text: str) -> tuple[float, float]:
    start, sep, end = text.partition(":")
    try:
        return float(start), float(end)
    except ValueError:
        raise ValueError(f"--inpaint {text!r} is not START:END in seconds, e.g. 3.0:5.0") from None


def _render_corpus(args: argparse.Namespace) -> int:
    from .data.corpus import render_corpus_from_args

    render_corpus_from_args(args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentmusic", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="generate music from a text prompt")
    gen.add_argument("prompt", nargs="?", help="what to generate, e.g. 'a slow Bach chorale on a church organ'")
    gen.add_argument(
        "--model",
        default=DEFAULT_PIPELINE,
        help=f"pipeline folder (from save_pretrained) or a shipped checkpoint's name (default: {DEFAULT_PIPELINE})",
    )
    gen.add_argument("--seconds", type=float, default=None, help="clip length (default: the model's)")
    gen.add_argument("--steps", type=int, default=25, help="denoising steps")
    gen.add_argument("--scheduler", default="dpm++", help="scheduler name (see latentmusic.pipelines.schedulers)")
    gen.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale")
    gen.add_argument("--negative-prompt", default=None, help="what to steer away from")
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
        "--story", nargs="+", metavar="PROMPT:SECONDS", help="one piece in sections, e.g. 'calm organ:8' 'fast reel:8'"
    )
    gen.set_defaults(func=_generate)

    from .data.corpus import add_render_arguments

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
    except (ValueError, FileNotFoundError) as error:
        print(f"latentmusic {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
