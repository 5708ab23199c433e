"""Autoencoder quality and speed on the corpus test split, for trained models side by side.

Each `--model NAME=FOLDER` is a folder written by `recipes/train_autoencoder.py` (an `AudioAutoencoder` or
diffusers' `AutoencoderOobleck`). On the first `--clip-seconds` of every test-split rendition (posterior mode,
no chunking) it reports SI-SDR, multi-resolution STFT distance and mel distance (as DAC reports them), and the
speed of encoding and decoding a `--speed-seconds` clip in × real time, and the wall time of one training step of
the recipe (best of `--repeats`, the models timed alternately so load on the machine hits them alike): a step
budget times `train_step_s` is the budget in CPU time.

    python benchmarks/autoencoder.py --data data/bench24k \
        --model latentmusic=outputs/bench-ae-small/autoencoder \
        --model oobleck=outputs/bench-ae-small-oobleck/autoencoder

`--built NAME=KIND` adds a model built from `--config` with random weights instead (KIND: `latentmusic`, `oobleck`, or
`same` for diffusers' `AutoencoderSAME`, Stable Audio 3's autoencoder, at the same rate, hop, latent width and about
the same size; see `_models.py`). Speed does not depend on the weights, so built models are timed (encode, decode,
training step) but not scored; with only built models no corpus is needed:

    python benchmarks/autoencoder.py --built latentmusic=latentmusic --built oobleck=oobleck --built same=same \
        --out benchmarks/results/autoencoder_speed.json

See docs/benchmarks.md for the training commands behind the published numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _models import build_autoencoder, build_oobleck, build_same, count_parameters  # noqa: E402
from _report import print_table, write_json  # noqa: E402

from latentmusic.data import AudioCaptionDataset  # noqa: E402
from latentmusic.evaluation.reconstruction import reconstruction_metrics  # noqa: E402
from latentmusic.models import vae_utils  # noqa: E402
from latentmusic.training.losses import AutoencoderLoss, AutoencoderLossWeights  # noqa: E402

BUILDERS = {"latentmusic": build_autoencoder, "oobleck": build_oobleck, "same": build_same}


def is_same(vae) -> bool:
    return type(vae).__name__ == "AutoencoderSAME"


def sample_rate_of(vae) -> int:
    # SAME names it as Oobleck does; vae_utils knows the classes a pipeline accepts, which SAME is not
    return vae.config.sampling_rate if is_same(vae) else vae_utils.vae_sample_rate(vae)


def encode(vae, audio: torch.Tensor, generator: torch.Generator | None = None):
    """`(latents, posterior)`: the posterior's mode (or a sample, with a generator); SAME's latents are
    deterministic (a soft-norm bottleneck, no posterior)."""
    if is_same(vae):
        return vae.encode(audio).latents, None
    posterior = vae.encode(audio).latent_dist
    return (posterior.mode() if generator is None else posterior.sample(generator)), posterior


def reconstruct(vae, audio: torch.Tensor, generator: torch.Generator | None = None):
    latents, posterior = encode(vae, audio, generator)
    return vae_utils.decode(vae, latents, audio.shape[-1]), posterior


def test_clips(root: str, sample_rate: int, channels: int, seconds: float, split: str, limit: int) -> torch.Tensor:
    clips = AudioCaptionDataset(
        root, sample_rate=sample_rate, channels=channels, segment_seconds=seconds, split=split, random_crop=False
    )
    if len(clips) == 0:
        raise SystemExit(f"{root} has no {split!r} clips; render a corpus first (latentmusic render-corpus)")
    return torch.stack([clips[i]["audio"] for i in range(min(limit, len(clips)))])


@torch.inference_mode()
def quality(vae, audio: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Metrics of every clip's reconstruction, averaged over clips (batched to bound memory)."""
    rows = []
    for batch in audio.split(batch_size):
        reconstruction, _ = reconstruct(vae, batch)
        rows.append((len(batch), reconstruction_metrics(batch, reconstruction, sample_rate_of(vae))))
    total = sum(n for n, _ in rows)
    return {key: sum(n * row[key] for n, row in rows) / total for key in rows[0][1]}


@torch.inference_mode()
def speed(vaes: dict, seconds: float, repeats: int) -> dict[str, dict[str, float]]:
    """× real time of encoding and of decoding one clip, best of `repeats`, models interleaved."""
    times = {name: {"encode": [], "decode": []} for name in vaes}
    inputs = {}
    for name, vae in vaes.items():
        samples = int(seconds * sample_rate_of(vae))
        audio = torch.randn(1, vae_utils.vae_audio_channels(vae), samples, generator=torch.Generator().manual_seed(0))
        inputs[name] = (audio * 0.1, encode(vae, audio)[0])  # also the warm-up
        vae_utils.decode(vae, inputs[name][1], samples)
    for _ in range(repeats):
        for name, vae in vaes.items():
            audio, latents = inputs[name]
            start = time.perf_counter()
            encode(vae, audio)
            middle = time.perf_counter()
            vae_utils.decode(vae, latents, audio.shape[-1])
            times[name]["encode"].append(middle - start)
            times[name]["decode"].append(time.perf_counter() - middle)
    return {name: {f"{k}_x_realtime": seconds / min(v) for k, v in t.items()} for name, t in times.items()}


def train_step_seconds(vaes: dict, batch_size: int, seconds: float, repeats: int) -> dict[str, float]:
    """Wall time of one generator training step of the autoencoder recipe (posterior sample, decode, the
    recipe's reconstruction losses, backward) on a `(batch_size, channels, seconds)` batch; best of `repeats`,
    models interleaved. Multiply by a step budget to compare budgets in CPU time."""
    times: dict[str, list[float]] = {name: [] for name in vaes}
    for attempt in range(repeats + 1):  # the first round warms up
        for name, vae in vaes.items():
            rate = sample_rate_of(vae)
            loss_fn = AutoencoderLoss(rate, AutoencoderLossWeights())
            audio = torch.randn(batch_size, vae_utils.vae_audio_channels(vae), int(seconds * rate)) * 0.1
            vae.train()
            start = time.perf_counter()
            reconstruction, posterior = reconstruct(vae, audio, torch.Generator().manual_seed(0))
            loss_fn(audio, reconstruction, posterior, None, None)["total"].backward()
            elapsed = time.perf_counter() - start
            vae.zero_grad(set_to_none=True)
            vae.eval()
            if attempt:
                times[name].append(elapsed)
    return {name: min(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=FOLDER", help="a trained model")
    parser.add_argument(
        "--built", action="append", default=[], metavar="NAME=KIND", help=f"built from --config: {', '.join(BUILDERS)}"
    )
    parser.add_argument("--config", default="small", help="recipe autoencoder config of --built models")
    parser.add_argument("--data", default="data/corpus", help="corpus folder with metadata.jsonl")
    parser.add_argument("--split", default="test")
    parser.add_argument("--clip-seconds", type=float, default=5.0)
    parser.add_argument("--max-clips", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--speed-seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-batch", type=int, default=8, help="batch of the training-step timing")
    parser.add_argument("--train-seconds", type=float, default=1.0, help="clip length of the training-step timing")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared machine)")
    parser.add_argument("--out", default="benchmarks/results/autoencoder.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if not args.model and not args.built:
        parser.error("give at least one --model NAME=FOLDER or --built NAME=KIND")
    vaes, built = {}, set()
    for item in args.model:
        name, sep, folder = item.partition("=")
        if not sep:
            parser.error(f"--model {item!r} is not NAME=FOLDER")
        vaes[name] = vae_utils.load_vae(folder).eval()
    for item in args.built:
        name, sep, kind = item.partition("=")
        if not sep or kind not in BUILDERS:
            parser.error(f"--built {item!r} is not NAME=KIND with KIND one of {', '.join(BUILDERS)}")
        torch.manual_seed(0)
        vaes[name] = BUILDERS[kind](args.config).eval()
        built.add(name)

    rows = []
    for name, vae in vaes.items():
        row = {"model": name, "class": type(vae).__name__, "params_M": count_parameters(vae) / 1e6}
        row["hop"] = vae.downsampling_ratio if is_same(vae) else vae_utils.vae_hop_length(vae)
        if name in built:  # random weights: timed, not scored
            rows.append(row)
            continue
        sample_rate, channels = sample_rate_of(vae), vae_utils.vae_audio_channels(vae)
        audio = test_clips(args.data, sample_rate, channels, args.clip_seconds, args.split, args.max_clips)
        rows.append({**row, "clips": len(audio), **quality(vae, audio, args.batch_size)})
    for row, timing in zip(rows, speed(vaes, args.speed_seconds, args.repeats).values()):
        row.update(timing)
    for row, step in zip(rows, train_step_seconds(vaes, args.train_batch, args.train_seconds, args.repeats).values()):
        row["train_step_s"] = step
    print_table(rows)
    write_json(
        args.out,
        "autoencoder",
        rows,
        data=args.data if args.model else None,
        split=args.split,
        clip_seconds=args.clip_seconds,
        config=args.config if args.built else None,
        threads=torch.get_num_threads(),
    )


if __name__ == "__main__":
    main()
