"""Generation speed and memory: `LatentMusicPipeline` against diffusers' audio pipelines at equal size.

Every pipeline is built from configs with random weights (speed does not depend on them) and shares our text
encoder and tokenizer: ours from the recipe configs (`--config small` by default), and, sized to match,

- `StableAudioPipeline` (Stable Audio Open): the `AutoencoderOobleck` of
  `recipes/configs/autoencoder/<config>-oobleck.yaml` (same sample rate, hop and latent width, about as many
  parameters) and a `StableAudioDiTModel`, sampled with our scheduler (DPM-Solver++ on v-prediction);
- `StableAudio3Pipeline`: an `AutoencoderSAME` at the same rate, hop and latent width and a `StableAudio3DiTModel`,
  sampled with its flow-matching Euler scheduler;
- `AceStepPipeline` (ACE-Step 1.5): the Oobleck VAE, a minimal condition encoder and an
  `AceStepTransformer1DModel`, sampled with its flow-matching Euler scheduler;

each denoiser as wide as the U-Net's widest level, with the depth that brings it closest in parameters (see
`_models.py`). All generate the same length at the same step count with classifier-free guidance (one network
call on a batch of two per step), so the comparison is of the networks.

Speed is measured side by side in one process (calls interleaved, best of `--repeats`), reported as seconds of
audio made per second of compute, and as a ratio to Stable Audio's time. Peak memory for a long clip is measured
in a fresh subprocess per pipeline: the process's peak RSS during generation, and that minus its RSS once the
pipeline is built (Linux: the peak is reset through /proc/self/clear_refs after building). The same is measured for
our long-form generation (windows of `--seconds`, each continuing the last) at each of `--long-form-seconds`: its
peak should not grow with the length (the output itself, a few MiB per minute, aside).

    python benchmarks/generation.py                       # small config, 10 s at 25 steps, 60 s for memory
    python benchmarks/generation.py --config tiny --seconds 4 --long-seconds 20 --repeats 1   # a smoke run
    python benchmarks/generation.py --device cuda --config base   # on a GPU: absolute times; peak CUDA memory

With `--device cuda` every timed call ends with `torch.cuda.synchronize()`, and the memory runs report the peak
of the CUDA allocator (`torch.cuda.max_memory_allocated`) instead of RSS.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _models import (  # noqa: E402
    build_ace_step_pipeline,
    build_latent_pipeline,
    build_stable_audio3_pipeline,
    build_stable_audio_pipeline,
    count_parameters,
)
from _report import peak_rss_mib, print_table, reset_peak_rss, rss_mib, write_json  # noqa: E402

from latentmusic.models import vae_utils  # noqa: E402

PROMPT = "a fast fiddle tune on flute at 132 BPM in D major"
PIPELINES = ("latentmusic", "stable_audio", "stable_audio_3", "ace_step")


def generate(pipe, kind: str, seconds: float, steps: int, guidance: float):
    # each pipeline names the clip length its own way
    length = {
        "latentmusic": {"audio_length_in_s": seconds},
        "stable_audio": {"audio_end_in_s": seconds},
        "stable_audio_3": {"duration": seconds},
        "ace_step": {"audio_duration": seconds},
    }[kind]
    generator = torch.Generator().manual_seed(0)
    return pipe(PROMPT, **length, num_inference_steps=steps, guidance_scale=guidance, generator=generator).audios


def build(kind: str, config: str, seconds: float, window: float | None = None, device: str = "cpu"):
    ours = build_latent_pipeline(config, max_seconds=window or seconds)
    if kind == "latentmusic":
        return ours.to(device)
    if kind == "stable_audio":
        return build_stable_audio_pipeline(config, ours, seconds).to(device)
    peers = {"stable_audio_3": build_stable_audio3_pipeline, "ace_step": build_ace_step_pipeline}
    return peers[kind](config, ours).to(device)


def synchronize(device: str) -> None:
    """Wait for the device's queued work, so a timer read after it counts the work (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def denoiser(pipe):
    return pipe.unet if hasattr(pipe, "unet") else pipe.transformer


def conditioning_params(pipe) -> int:
    """Parameters besides the text encoder, denoiser and VAE that turn the prompt into conditioning (Stable Audio's
    projection model, SA3's duration embedder, ACE-Step's condition encoder)."""
    names = ("projection_model", "duration_embedder", "condition_encoder")
    return sum(count_parameters(getattr(pipe, name)) for name in names if getattr(pipe, name, None) is not None)


def latent_shape(pipe, seconds: float) -> tuple[int, int]:
    """(channels, frames) of the latents each pipeline denoises for a clip of `seconds`."""
    vae = pipe.vae
    if hasattr(vae, "downsampling_ratio"):  # AutoencoderSAME
        return vae.config.latent_dim, math.ceil(seconds * vae.config.sampling_rate / vae.downsampling_ratio)
    rate = vae.config.sampling_rate if hasattr(vae.config, "sampling_rate") else vae.config.sample_rate
    return vae_utils.vae_latent_channels(vae), math.ceil(seconds * rate / vae_utils.vae_hop_length(vae))


def decode_once(pipe, seconds: float, device: str = "cpu") -> float:
    """Wall time of decoding one clip's latents (the part of a call that is not the denoising loop)."""
    channels, frames = latent_shape(pipe, seconds)
    latents = torch.randn(1, channels, frames, generator=torch.Generator().manual_seed(0)).to(device)
    synchronize(device)
    start = time.perf_counter()
    pipe.vae.decode(latents)
    synchronize(device)
    return time.perf_counter() - start


def speed_rows(args) -> list[dict]:
    pipes = {kind: build(kind, args.config, args.seconds, device=args.device) for kind in args.pipelines}
    times: dict[str, list[float]] = {kind: [] for kind in pipes}
    decode_times: dict[str, list[float]] = {kind: [] for kind in pipes}
    with torch.inference_mode():
        for kind, pipe in pipes.items():  # warm-up
            generate(pipe, kind, args.seconds, args.steps, args.guidance)
        for _ in range(args.repeats):  # interleaved, so load on the machine hits all alike
            for kind, pipe in pipes.items():
                synchronize(args.device)
                start = time.perf_counter()
                generate(pipe, kind, args.seconds, args.steps, args.guidance)
                synchronize(args.device)
                times[kind].append(time.perf_counter() - start)
                decode_times[kind].append(decode_once(pipe, args.seconds, args.device))
    rows = []
    for kind, pipe in pipes.items():
        best = min(times[kind])
        rows.append(
            {
                "pipeline": kind,
                "denoiser": type(denoiser(pipe)).__name__,
                "denoiser_params_M": count_parameters(denoiser(pipe)) / 1e6,
                "vae": type(pipe.vae).__name__,
                "vae_params_M": count_parameters(pipe.vae) / 1e6,
                "conditioning_params_M": conditioning_params(pipe) / 1e6,
                "seconds": args.seconds,
                "steps": args.steps,
                "latent_shape": "x".join(map(str, latent_shape(pipe, args.seconds))),
                "wall_s": best,
                "vae_decode_s": min(decode_times[kind]),
                "audio_s_per_s": args.seconds / best,
            }
        )
    # the ratio to Stable Audio's time (or the first pipeline's, when it is not run): > 1 is faster
    baseline = next((row for row in rows if row["pipeline"] == "stable_audio"), rows[0])["wall_s"]
    for row in rows:
        row["speedup"] = baseline / row["wall_s"]
    return rows


def measure_memory(
    kind: str, config: str, seconds: float, steps: int, guidance: float, window: float | None, device: str = "cpu"
) -> dict:
    """Run in a fresh process: build the pipeline, then generate once; report RSS (on a GPU: the CUDA allocator's
    memory) before and at the peak. With a `window` (ours only) the U-Net covers that many seconds and longer clips
    are made window by window."""
    pipe = build(kind, config, seconds, window, device)
    if kind == "latentmusic":
        pipe.vae.enable_chunking()  # bounded-memory decoding of long clips
    import gc

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        built = torch.cuda.memory_allocated() / 2**20
        with torch.inference_mode():
            generate(pipe, kind, seconds, steps, guidance)
        peak = torch.cuda.max_memory_allocated() / 2**20
        return {"built_cuda_MiB": built, "peak_cuda_MiB": peak, "generation_MiB": peak - built}
    built = rss_mib()
    if not reset_peak_rss():
        raise RuntimeError("peak memory needs Linux's /proc/self/clear_refs")
    with torch.inference_mode():
        generate(pipe, kind, seconds, steps, guidance)
    peak = peak_rss_mib()
    return {"built_rss_MiB": built, "peak_rss_MiB": peak, "generation_MiB": peak - built}


def memory_rows(args) -> list[dict]:
    """One clip of `--long-seconds` made in one window by both pipelines, then ours window by window (windows of
    `--seconds`) for each of `--long-form-seconds`: peak memory should not grow with the length."""
    runs = [(kind, args.long_seconds, None) for kind in args.pipelines if kind in args.memory_pipelines]
    if "latentmusic" in args.pipelines:
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
            "--device",
            args.device,
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
    parser.add_argument(
        "--pipelines", nargs="+", choices=PIPELINES, default=list(PIPELINES), help="which to run (default: all)"
    )
    parser.add_argument(
        "--memory-pipelines",
        nargs="+",
        choices=PIPELINES,
        # SA3's SAME autoencoder builds a dense band mask of its sequence length squared: 60 s would take > 10 GB
        default=["latentmusic", "stable_audio", "ace_step"],
        help="which the peak-memory run measures (default: all but stable_audio_3)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for absolute GPU times and CUDA memory")
    parser.add_argument("--window", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--_memory", choices=PIPELINES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args._memory:
        print(
            json.dumps(
                measure_memory(
                    args._memory, args.config, args.long_seconds, args.long_steps, 4.0, args.window, args.device
                )
            )
        )
        return

    settings = dict(config=args.config, threads=torch.get_num_threads(), device=args.device)
    speed = speed_rows(args)
    print_table(speed)
    write_json(args.out, "generation", speed, memory=[], **settings)  # kept if the memory runs are cut short
    print()
    memory = memory_rows(args)
    print_table(memory)
    write_json(args.out, "generation", speed, memory=memory, **settings)


if __name__ == "__main__":
    main()
