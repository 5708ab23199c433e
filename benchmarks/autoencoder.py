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

See docs/benchmarks.md for the training commands behind the published numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _models import count_parameters  # noqa: E402
from _report import print_table, write_json  # noqa: E402

from latentmusic.data import AudioCaptionDataset  # noqa: E402
from latentmusic.evaluation.reconstruction import reconstruction_metrics  # noqa: E402
from latentmusic.models import vae_utils  # noqa: E402
from latentmusic.training.losses import AutoencoderLoss, AutoencoderLossWeights  # noqa: E402


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
        reconstruction, _ = vae_utils.reconstruct(vae, batch)
        rows.append((len(batch), reconstruction_metrics(batch, reconstruction, vae_utils.vae_sample_rate(vae))))
    total = sum(n for n, _ in rows)
    return {key: sum(n * row[key] for n, row in rows) / total for key in rows[0][1]}


@torch.inference_mode()
def speed(vaes: dict, seconds: float, repeats: int) -> dict[str, dict[str, float]]:
    """× real time of encoding and of decoding one clip, best of `repeats`, models interleaved."""
    times = {name: {"encode": [], "decode": []} for name in vaes}
    inputs = {}
    for name, vae in vaes.items():
        samples = int(seconds * vae_utils.vae_sample_rate(vae))
        audio = torch.randn(1, vae_utils.vae_audio_channels(vae), samples, generator=torch.Generator().manual_seed(0))
        inputs[name] = (audio * 0.1, vae.encode(audio).latent_dist.mode())  # also the warm-up
        vae_utils.decode(vae, inputs[name][1], samples)
    for _ in range(repeats):
        for name, vae in vaes.items():
            audio, latents = inputs[name]
            start = time.perf_counter()
            vae.encode(audio).latent_dist.mode()
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
            rate = vae_utils.vae_sample_rate(vae)
            loss_fn = AutoencoderLoss(rate, AutoencoderLossWeights())
            audio = torch.randn(batch_size, vae_utils.vae_audio_channels(vae), int(seconds * rate)) * 0.1
            vae.train()
            start = time.perf_counter()
            reconstruction, posterior = vae_utils.reconstruct(vae, audio, torch.Generator().manual_seed(0))
            loss_fn(audio, reconstruction, posterior, None, None)["total"].backward()
            elapsed = time.perf_counter() - start
            vae.zero_grad(set_to_none=True)
            vae.eval()
            if attempt:
                times[name].append(elapsed)
    return {name: min(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=FOLDER", help="a trained model")
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

    vaes = {}
    for item in args.model:
        name, sep, folder = item.partition("=")
        if not sep:
            parser.error(f"--model {item!r} is not NAME=FOLDER")
        vaes[name] = vae_utils.load_vae(folder).eval()

    rows = []
    for name, vae in vaes.items():
        sample_rate, channels = vae_utils.vae_sample_rate(vae), vae_utils.vae_audio_channels(vae)
        audio = test_clips(args.data, sample_rate, channels, args.clip_seconds, args.split, args.max_clips)
        rows.append(
            {
                "model": name,
                "class": type(vae).__name__,
                "params_M": count_parameters(vae) / 1e6,
                "clips": len(audio),
                **quality(vae, audio, args.batch_size),
            }
        )
    for row, timing in zip(rows, speed(vaes, args.speed_seconds, args.repeats).values()):
        row.update(timing)
    for row, step in zip(rows, train_step_seconds(vaes, args.train_batch, args.train_seconds, args.repeats).values()):
        row["train_step_s"] = step
    print_table(rows)
    write_json(args.out, "autoencoder", rows, data=args.data, split=args.split, clip_seconds=args.clip_seconds)


if __name__ == "__main__":
    main()
