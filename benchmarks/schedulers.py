"""Quality against speed of each diffusers scheduler that fits a trained `LatentMusicPipeline`.

For each scheduler of `latentmusic.pipelines.schedulers` that fits the model's objective (the noise/v-prediction
ones, or the flow-matching ones) and each step count, the same prompts (captions of the corpus's test split) are
generated with the same seeds and scored with

* the Fréchet distance (default offline embedding, `music-features-v1`) to the test split's audio, whose
  statistics are computed once and cached;
* the tempo accuracy against the prompts' BPM (`attribute_accuracy`, ±8 %);
* the wall time per clip (the prompts are generated as one batch; torch threads 1 by default) and the number of
  U-Net evaluations per call (two-evaluation samplers such as Heun and KDPM2 need about twice as many).

The real test audio, cropped to the same length, is scored the same way as a reference row: it is the best a
sampler can do with this few clips (the Fréchet distance of a small set is biased upwards).

Without `--pipeline`, a model is built once and cached under `--work` (default `outputs/bench-schedulers/`):
a small corpus is rendered (skipped when `--data` already holds a `metadata.jsonl`), a random tiny autoencoder gets
its latent statistics measured on it, and the tiny diffusion recipe is trained on it for `--train-steps` steps.
A rerun reuses the corpus, the model and the reference statistics (delete the folder to start afresh).

    python benchmarks/schedulers.py                                  # build the tiny model, 5/10/25/50 steps
    python benchmarks/schedulers.py --pipeline outputs/demo/pipeline --data data/corpus --clips 16
    python benchmarks/schedulers.py --steps 5 10 --clips 4 --schedulers ddim dpm++ unipc   # a quick look
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import print_table, write_json  # noqa: E402

from latentmusic import AudioAutoencoder, LatentMusicPipeline  # noqa: E402
from latentmusic.data import AudioCaptionDataset  # noqa: E402
from latentmusic.data.index import read_metadata  # noqa: E402
from latentmusic.evaluation import (  # noqa: E402
    EmbeddingStatistics,
    attribute_accuracy,
    compute_statistics,
    frechet_audio_distance,
    make_embedding,
)
from latentmusic.models import compute_latent_statistics  # noqa: E402
from latentmusic.pipelines.schedulers import is_flow_scheduler, make_scheduler, scheduler_names  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DIFFUSION_CONFIG = REPO / "recipes/configs/diffusion/tiny.yaml"
# the corpus the script renders when --data has none: ~110 pieces in 2 renditions each, so that the test split
# (5 % of the pieces, chosen by a hash of the piece id) holds 10 clips
CORPUS = dict(
    max_pieces=110, renditions_per_piece=2, collections=["bach", "ryans", "essen"], sample_rate=16000, max_seconds=15
)


# --------------------------------------------------------------------------------------------- the model


def ensure_corpus(root: Path) -> Path:
    """Render the benchmark corpus into `root` unless it already holds a `metadata.jsonl`."""
    if (root / "metadata.jsonl").is_file():
        print(f"corpus: reusing {root}")
        return root
    from latentmusic.data.corpus import render_corpus

    print(f"corpus: rendering {CORPUS['max_pieces']} pieces to {root} (needs FluidSynth and a soundfont)")
    render_corpus(root, workers=2, **CORPUS)
    return root


def ensure_autoencoder(folder: Path, corpus: Path) -> Path:
    """A frozen random tiny autoencoder with latent statistics measured on the corpus (as in the recipe's test):
    the diffusion model only needs latents that carry the audio's content, which a random conv encoder's do."""
    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    waveform = dict(base_channels=8, max_channels=64)
    vae = AudioAutoencoder(sample_rate=16000, strides=(2, 4, 8), latent_channels=8, encoder_kwargs=waveform)
    clips = AudioCaptionDataset(corpus, sample_rate=16000, segment_seconds=4.0, split="train")
    compute_latent_statistics(vae.eval(), (clips[i]["audio"][None] for i in range(min(16, len(clips)))))
    vae.save_pretrained(folder)
    return folder


def trained_steps(output: Path) -> int:
    """The last step logged in a training run's `losses.jsonl` (0 if none)."""
    losses = output / "losses.jsonl"
    lines = losses.read_text().splitlines() if losses.is_file() else []
    return json.loads(lines[-1])["step"] if lines else 0


def build_pipeline(work: Path, corpus: Path, train_steps: int, seconds: float) -> Path:
    """Train (once) the tiny diffusion recipe on the corpus and return its pipeline folder.

    A run trained for fewer steps than asked is resumed from its last checkpoint up to `train_steps`.
    """
    output = work / "diffusion"
    folder = output / "pipeline"
    if (folder / "model_index.json").is_file() and trained_steps(output) >= train_steps:
        print(f"model: reusing {folder} ({trained_steps(output)} steps; delete {output} to retrain)")
        return folder
    from latentmusic.training.config import load_config
    from latentmusic.training.diffusion import DiffusionTrainingConfig, train_diffusion

    vae = ensure_autoencoder(work / "vae", corpus)
    config = load_config(
        DiffusionTrainingConfig,
        DIFFUSION_CONFIG,
        [
            f"vae={vae}",
            f"data.root={corpus}",
            f"data.segment_seconds={seconds}",  # the U-Net's window covers the benchmark's clips
            f"run.output_dir={output}",
            f"run.max_steps={train_steps}",
            f"run.eval_every={max(train_steps // 4, 1)}",
            "run.sample_every=0",
            f"run.checkpoint_every={train_steps}",
            "run.report_to=none",
            "run.progress_bar=false",
        ],
    )
    print(f"model: training the tiny diffusion recipe for {train_steps} steps in {output}")
    start = time.perf_counter()
    folder = train_diffusion(config)
    print(f"model: trained in {time.perf_counter() - start:.0f} s")
    return folder


# --------------------------------------------------------------------------------------------- prompts and reference


def prompt_set(corpus: Path, n: int) -> list[tuple[str, dict[str, Any]]]:
    """`n` (caption, record) pairs from the test split: each record's first caption, then its second, and so on."""
    records = read_metadata(corpus, split="test")
    pairs = []
    for i in range(n):
        record = records[i % len(records)]
        captions = record["captions"]
        pairs.append((captions[(i // len(records)) % len(captions)], record))
    return pairs


def reference_statistics(corpus: Path, cache_dir: Path) -> EmbeddingStatistics:
    """Default-embedding statistics of all test-split audio, cached in `cache_dir` (keyed by corpus and files)."""
    embedding = make_embedding(None)
    files = sorted(str(corpus / record["path"]) for record in read_metadata(corpus, split="test"))
    key = hashlib.sha1("\n".join([str(corpus.resolve()), *files]).encode()).hexdigest()[:10]
    path = cache_dir / f"reference-test-{embedding.name}-{key}.npz"
    if path.is_file():
        stats = EmbeddingStatistics.load(path)
        if stats.embedding == embedding.name:
            print(f"reference: reusing {path}")
            return stats
    stats = compute_statistics(files, embedding, progress=False, name="test split")
    stats.save(path)
    print(f"reference: {len(files)} test clips, {stats.count} embedding vectors, cached in {path}")
    return stats


def reference_crops(corpus: Path, pairs: list[tuple[str, dict[str, Any]]], seconds: float, rate: int) -> list:
    """The prompts' own test audio, cropped to the generated length: what a perfect sampler would give."""
    from latentmusic.evaluation.audio_sets import load_clip

    crops = [load_clip(corpus / record["path"], rate)[: int(seconds * rate)] for _, record in pairs]
    return crops


# --------------------------------------------------------------------------------------------- the benchmark


def score(audios: list[np.ndarray], rate: int, pairs, reference: EmbeddingStatistics) -> dict[str, float]:
    """Fréchet distance to the reference statistics and tempo accuracy against the prompts' BPM."""
    with warnings.catch_warnings():  # a few short clips give fewer vectors than dimensions: expected here
        warnings.filterwarnings("ignore", message=".*embedding vectors for.*")
        fd = frechet_audio_distance((audios, rate), reference, progress=False)
    tempo = attribute_accuracy((audios, rate), [{"bpm": record["bpm"]} for _, record in pairs])["summary"]
    return {"fd": fd, "tempo_acc": tempo["tempo_accuracy"], "tempo_octave_err": tempo["tempo_octave_error_rate"]}


def generate(pipe: LatentMusicPipeline, pairs, seconds: float, steps: int, guidance: float, seed: int) -> list:
    generators = [torch.Generator().manual_seed(seed + i) for i in range(len(pairs))]
    with torch.inference_mode():
        audios = pipe(
            [caption for caption, _ in pairs],
            audio_length_in_s=seconds,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generators,
        ).audios
    return [audio.mean(axis=0) for audio in audios]


def run_benchmark(pipe: LatentMusicPipeline, args, pairs, reference: EmbeddingStatistics) -> list[dict[str, Any]]:
    rate = pipe.sample_rate
    base = pipe.scheduler
    names = scheduler_names(flow=is_flow_scheduler(base))
    if args.schedulers:
        unknown = sorted(set(args.schedulers) - set(names))
        if unknown:
            raise SystemExit(f"--schedulers: {unknown} do not fit this model; choose from {', '.join(names)}")
        names = [name for name in names if name in args.schedulers]

    calls = [0]
    pipe.unet.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))

    crops = reference_crops(Path(args.data), pairs, args.seconds, rate)
    rows = [
        {"scheduler": "test audio", "steps": 0, "nfe": 0, "s_per_clip": 0.0, **score(crops, rate, pairs, reference)}
    ]
    print_table(rows)

    pipe.scheduler = make_scheduler(names[0], base)
    generate(pipe, pairs[:1], args.seconds, 2, args.guidance, args.seed)  # warm-up
    for name in names:
        for steps in args.steps:
            pipe.scheduler = make_scheduler(name, base)
            calls[0] = 0
            start = time.perf_counter()
            try:
                audios = generate(pipe, pairs, args.seconds, steps, args.guidance, args.seed)
            except Exception as error:  # one scheduler failing must not lose the others' numbers
                print(f"{name} at {steps} steps failed: {error!r}")
                rows.append({"scheduler": name, "steps": steps, "error": repr(error)})
                continue
            wall = time.perf_counter() - start
            row = {"scheduler": name, "steps": steps, "nfe": calls[0], "s_per_clip": wall / len(pairs)}
            row.update(score(audios, rate, pairs, reference))
            rows.append(row)
            print(" | ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    pipe.scheduler = base
    return rows


def few_step_rows(
    pipe: LatentMusicPipeline, args, pairs, reference, rows: list[dict[str, Any]], label: str = ""
) -> list[dict]:
    """`--no-cfg-steps` rows: each scheduler at those step counts without classifier-free guidance (one U-Net
    evaluation per step instead of two), with its Fréchet distance relative to the same scheduler's largest
    `--steps` count with guidance (`fd_vs_most_steps`: 1.10 = 10 % worse). `label` names what was loaded into the
    pipeline for these rows (e.g. a distilled LoRA); the guided rows they are compared with are the plain model's."""
    rate, base, extra = pipe.sample_rate, pipe.scheduler, []
    calls = [0]
    hook = pipe.unet.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    names = list(dict.fromkeys(row["scheduler"] for row in rows if row["steps"] and "fd" in row))
    for name in names:
        most = max((row for row in rows if row["scheduler"] == name and "fd" in row), key=lambda row: row["steps"])
        for steps in args.no_cfg_steps:
            pipe.scheduler = make_scheduler(name, base)
            calls[0] = 0
            start = time.perf_counter()
            audios = generate(pipe, pairs, args.seconds, steps, 1.0, args.seed)
            row = {"scheduler": f"{name}{label}", "steps": steps, "guidance": 1.0, "nfe": calls[0]}
            row["s_per_clip"] = (time.perf_counter() - start) / len(pairs)
            row.update(score(audios, rate, pairs, reference))
            row["fd_vs_most_steps"] = row["fd"] / most["fd"]
            row["compared_with"] = f"{name}, {most['steps']} steps, guidance {args.guidance:g}"
            extra.append(row)
            print(" | ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    hook.remove()
    pipe.scheduler = base
    return extra


def best_per_budget(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lowest-FD scheduler at each step count (ties: the faster one), with guidance (no `--no-cfg-steps` rows)."""
    rows = [row for row in rows if "fd_vs_most_steps" not in row]
    best = []
    for steps in sorted({row["steps"] for row in rows if row["steps"] and "fd" in row}):
        candidates = [row for row in rows if row["steps"] == steps and "fd" in row]
        winner = min(candidates, key=lambda row: (row["fd"], row["s_per_clip"]))
        best.append(
            {"steps": steps, "scheduler": winner["scheduler"], "fd": winner["fd"], "s_per_clip": winner["s_per_clip"]}
        )
    return best


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """FD against time per clip, one line per scheduler (a point per step count, fewest steps leftmost).

    The test audio's own FD (the floor for this many clips) is far below a small model's and would squash the
    lines, so it is given in the title rather than drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in rows if "fd_vs_most_steps" not in row]  # the guided runs only
    fig, ax = plt.subplots(figsize=(9, 5), dpi=100)
    names = [name for name in dict.fromkeys(row["scheduler"] for row in rows) if name != "test audio"]
    cmap = plt.get_cmap("tab10")
    markers, styles = "osD^v<>ph*XP8", ["-", "--", ":"]
    for i, name in enumerate(names):
        points = sorted(
            (row["s_per_clip"], row["fd"], row["steps"]) for row in rows if row["scheduler"] == name and "fd" in row
        )
        if not points:
            continue
        xs, ys, _ = zip(*points)
        style = dict(marker=markers[i % len(markers)], linestyle=styles[(i // 10) % len(styles)], color=cmap(i % 10))
        ax.plot(xs, ys, label=name, linewidth=1.3, markersize=5, **style)
    floor = [row["fd"] for row in rows if row["scheduler"] == "test audio"]
    if floor:
        title += f"; the test audio itself: FD {floor[0]:.4g}"
    ax.set_xscale("log")
    ax.set_xlabel("wall time per clip (s, log scale); points: the step counts, fewest leftmost")
    ax.set_ylabel("Fréchet distance to the test split (lower is better)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="scheduler", title_fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def plot_title(folder: str | Path, settings: dict[str, Any]) -> str:
    name = "tiny CPU-trained model" if not settings.get("pipeline_given") else str(folder)
    return f"{name}: {settings['clips']} clips of {settings['seconds']:g} s, guidance {settings['guidance']:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", help="folder of a trained LatentMusicPipeline (default: build the tiny one)")
    parser.add_argument(
        "--data", help="corpus folder with metadata.jsonl (default: <work>/corpus, rendered if absent)"
    )
    parser.add_argument("--work", default="outputs/bench-schedulers", help="cache folder: corpus, model, statistics")
    parser.add_argument("--train-steps", type=int, default=800, help="training steps of the tiny model")
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 25, 50], help="sampling step counts")
    parser.add_argument("--schedulers", nargs="+", help="scheduler names (default: all that fit the model)")
    parser.add_argument("--clips", type=int, default=8, help="prompts (test-split captions), one clip each")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each clip")
    parser.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale")
    parser.add_argument(
        "--no-cfg-steps",
        type=int,
        nargs="*",
        default=[],
        help="also these step counts without guidance, each compared with its scheduler's largest --steps count",
    )
    parser.add_argument(
        "--distilled-lora",
        default="",
        help="a guidance-distilled LoRA of --pipeline (diffusion.distill_guidance_scale): its --no-cfg-steps rows "
        "without guidance, compared with the plain model's guided ones",
    )
    parser.add_argument("--seed", type=int, default=0, help="clip i uses seed + i")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared machine)")
    parser.add_argument("--out", default="benchmarks/results/schedulers.json")
    parser.add_argument("--plot", default="docs/benchmarks/schedulers.png")
    parser.add_argument("--replot", action="store_true", help="only redraw the plot from the JSON of --out")
    args = parser.parse_args()
    if args.replot:
        result = json.loads(Path(args.out).read_text())
        settings = result["settings"]
        plot(result["rows"], Path(args.plot), plot_title(settings["pipeline"], settings))
        return
    if args.clips < 2 or min(args.steps) < 1 or args.seconds <= 0:
        parser.error("need --clips >= 2, --steps >= 1 and --seconds > 0")
    if args.distilled_lora and not args.no_cfg_steps:
        parser.error("--distilled-lora adds unguided rows at the --no-cfg-steps counts; give them, e.g. 8")
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    args.data = str(ensure_corpus(Path(args.data or work / "corpus")))
    if args.pipeline and not (Path(args.pipeline) / "model_index.json").is_file():
        raise SystemExit(f"--pipeline {args.pipeline}: no model_index.json there; pass a saved LatentMusicPipeline")

    total = time.perf_counter()
    folder = Path(args.pipeline or build_pipeline(work, Path(args.data), args.train_steps, args.seconds))
    pipe = LatentMusicPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    if pipe.max_audio_length_in_s and args.seconds > pipe.max_audio_length_in_s + 1e-6:
        print(f"note: {args.seconds} s is longer than the U-Net's {pipe.max_audio_length_in_s} s window: long-form")
    pairs = prompt_set(Path(args.data), args.clips)
    reference = reference_statistics(Path(args.data), work)

    rows = run_benchmark(pipe, args, pairs, reference)
    for row in rows:
        row.setdefault("guidance", args.guidance if row["steps"] else None)
    if args.no_cfg_steps:
        rows += few_step_rows(pipe, args, pairs, reference, rows)
    if args.distilled_lora:  # the same unguided rows with a guidance-distilled adapter, against the plain guided ones
        pipe.load_lora_weights(args.distilled_lora, adapter_name="distilled")
        guided = [row for row in rows if "fd_vs_most_steps" not in row]
        rows += few_step_rows(pipe, args, pairs, reference, guided, label=" + distilled LoRA")
    columns = ["scheduler", "steps", "guidance", "nfe", "s_per_clip", "fd", "tempo_acc", "tempo_octave_err"]
    if args.no_cfg_steps:
        columns.append("fd_vs_most_steps")

    print()
    print_table(rows, columns)
    best = best_per_budget(rows)
    print("\nlowest FD at each step count:")
    print_table(best)
    elapsed = time.perf_counter() - total
    settings = {k: v for k, v in vars(args).items() if k not in {"out", "plot", "replot"}}
    settings["pipeline"], settings["pipeline_given"] = str(folder), bool(args.pipeline)
    write_json(
        args.out,
        "schedulers",
        rows,
        settings=settings,
        best_per_steps=best,
        runtime_s=elapsed,
        embedding=reference.embedding,
        reference_clips=reference.n_clips,
    )
    plot(rows, Path(args.plot), plot_title(folder, settings))
    print(f"total {elapsed:.0f} s")


if __name__ == "__main__":
    main()
