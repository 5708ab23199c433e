"""Generation speed and memory: `LatentMusicPipeline` against diffusers' `StableAudioPipeline` at equal size.

Both pipelines are built from configs with random weights (speed does not depend on them): ours from the
recipe configs (`--config small` by default), Stable Audio's with the same text encoder, the `AutoencoderOobleck` of
`recipes/configs/autoencoder/<config>-oobleck.yaml` (same sample rate, hop and latent width, about as many
parameters) and a
`StableAudioDiTModel` whose depth makes it closest in parameters to our U-Net. Both sample with the same
scheduler (DPM-Solver++ on v-prediction) and classifier-free guidance, so the comparison is of the networks.

Speed is measured side by side in one process (calls interleaved, best of `--repeats`), reported as seconds of
audio made per second of compute, and as a ratio. Peak memory for a long clip is measured in a fresh
subprocess per pipeline: the process's peak RSS during generation, and that minus its RSS once the pipeline is
built (Linux: the peak is reset through /proc/self/clear_refs after building). The same is measured for our
long-form generation (windows of `--seconds`, each continuing the last) at each of `--long-form-seconds`: its
peak should not grow with the length (the output itself, a few MiB per minute, aside).

    python benchmarks/generation.py                       # small config, 10 s at 25 steps, 60 s for memory
    python benchmarks/generation.py --config tiny --seconds 4 --long-seconds 20 --repeats 1   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _models import build_latent_pipeline, build_stable_audio_pipeline, count_parameters  # noqa: E402
from _report import peak_rss_mib, print_table, reset_peak_rss, rss_mib, write_json  # noqa: E402

PROMPT = "a fast fiddle tune on flute at 132 BPM in D major"


def generate(pipe, kind: str, seconds: float, steps: int, guidance: float):
    generator = torch.Generator().manual_seed(0)
    if kind == "latentmusic":
        return pipe(
            PROMPT, audio_length_in_s=seconds, num_inference_steps=steps, guidance_scale=guidance, generator=generator
        ).audios
    return pipe(
        PROMPT, audio_end_in_s=seconds, num_inference_steps=steps, guidance_scale=guidance, generator=generator
    ).audios


def build(kind: str, config: str, seconds: float, window: float | None = None):
    ours = build_latent_pipeline(config, max_seconds=window or seconds)
    return ours if kind == "latentmusic" else build_stable_audio_pipeline(config, ours, seconds)


def denoiser(pipe):
    return pipe.unet if hasattr(pipe, "unet") else pipe.transformer


def speed_rows(args) -> list[dict]:
    pipes = {kind: build(kind, args.config, args.seconds) for kind in ("latentmusic", "stable_audio")}
    times: dict[str, list[float]] = {kind: [] for kind in pipes}
    with torch.inference_mode():
        for kind, pipe in pipes.items():  # warm-up
            generate(pipe, kind, args.seconds, args.steps, args.guidance)
        for _ in range(args.repeats):  # interleaved, so load on the machine hits both alike
            for kind, pipe in pipes.items():
                start = time.perf_counter()
                generate(pipe, kind, args.seconds, args.steps, args.guidance)
                times[kind].append(time.perf_counter() - start)
    rows = []
    for kind, pipe in pipes.items():
        best = min(times[kind])
        rows.append(
            {
                "pipeline": kind,
                "denoiser_params_M": count_parameters(denoiser(pipe)) / 1e6,
                "vae_params_M": count_parameters(pipe.vae) / 1e6,
                "seconds": args.seconds,
                "steps": args.steps,
                "wall_s": best,
                "audio_s_per_s": args.seconds / best,
            }
        )
    ours, theirs = rows
    ours["speedup"] = theirs["wall_s"] / ours["wall_s"]
    theirs["speedup"] = 1.0
    return rows


def measure_memory(kind: str, config: str, seconds: float, steps: int, guidance: float, window: float | None) -> dict:
    """Run in a fresh process: build the pipeline, then generate once; report RSS before and at the peak.
    With a `window` (ours only) the U-Net covers that many seconds and longer clips are made window by window."""
    pipe = build(kind, config, seconds, window)
    if kind == "latentmusic":
        pipe.vae.enable_chunking()  # bounded-memory decoding of long clips
    import gc

    gc.collect()
    built = rss_mib()
    if not reset_peak_rss():
        raise RuntimeError("peak memory needs Linux's /proc/self/clear_refs")
    with torch.inference_mode():
        generate(pipe, kind, seconds, steps, guidance)
    return {"built_rss_MiB": built, "peak_rss_MiB": peak_rss_mib()}


def memory_rows(args) -> list[dict]:
    """One clip of `--long-seconds` made in one window by both pipelines, then ours window by window (windows of
    `--seconds`) for each of `--long-form-seconds`: peak memory should not grow with the length."""
    runs = [(kind, args.long_seconds, None) for kind in ("latentmusic", "stable_audio")]
    runs += [("latentmusic", seconds, args.seconds) for seconds in args.long_form_seconds]
    rows = []
    for kind, seconds, window in runs:
        command = [
            sys.executable,
            __file__,
            "--_memory",
            kind,
            "--config",
            args.config,
            "--long-seconds",
            str(seconds),
            *(["--window", str(window)] if window else []),
            "--steps",
            str(args.long_steps),
            "--threads",
            str(args.threads),
        ]
        result = json.loads(
            subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
        )
        rows.append(
            {
                "pipeline": kind,
                "seconds": seconds,
                "window_s": window or seconds,
                "steps": args.long_steps,
                **result,
                "generation_MiB": result["peak_rss_MiB"] - result["built_rss_MiB"],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small", help="recipe config name (tiny, small, base)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long-seconds", type=float, default=60.0, help="clip length for the peak-memory run")
    parser.add_argument(
        "--long-steps",
        type=int,
        default=2,
        help="steps for the peak-memory run (memory per step does not grow with the step count)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared machine)")
    parser.add_argument("--out", default="benchmarks/results/generation.json")
    parser.add_argument(
        "--long-form-seconds", type=float, nargs="*", default=[60.0, 300.0], help="long-form lengths for memory"
    )
    parser.add_argument("--window", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--_memory", choices=["latentmusic", "stable_audio"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args._memory:
        print(
            json.dumps(measure_memory(args._memory, args.config, args.long_seconds, args.long_steps, 4.0, args.window))
        )
        return

    speed = speed_rows(args)
    print_table(speed)
    print()
    memory = memory_rows(args)
    print_table(memory)
    write_json(args.out, "generation", speed, memory=memory, config=args.config, threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
