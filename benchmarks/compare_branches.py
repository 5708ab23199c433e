"""The two branches side by side: latent diffusion (`LatentMusicPipeline`) against the token LM (`TokenMusicPipeline`).

Both are trained by their recipes on the same rendered-corpus split with the same step budget, window and batch,
from the `tiny` configs (about 0.7 M-parameter U-Net and 0.6 M-parameter LM, each with a 2-layer T5 trained from
scratch), unless `--diffusion-pipeline DIR --token-pipeline DIR` give already trained pipelines. Then, in one run:

- speed: seconds of audio made per second of compute for `--seconds` (10 s) of audio, the two pipelines' calls
  interleaved, best of `--repeats` (diffusion: `--steps` DPM-Solver++ steps with guidance; LM: one step per
  codec frame, top-k sampling with guidance, KV cache);
- peak memory: a fresh subprocess per pipeline loads it, then generates `--seconds`; the peak RSS (VmHWM, reset
  after loading) and that minus the RSS once loaded;
- reconstruction of the first stage (autoencoder / codec) on test-split windows: SI-SDR, multi-resolution STFT
  and mel distances (`latentmusic.evaluation.reconstruction_metrics`);
- Fréchet distance (default offline embedding, `MusicFeatureEmbedding`) of generations for the test windows'
  captions to those windows, and tempo accuracy (±8 %) of the generations against the captions' BPM.

What the numbers mean at this scale: speed and memory are properties of the architectures at these sizes and are
meaningful (though absolute times depend on the machine: see `machine` in the JSON). By default the first stages
are *random* frozen networks (`--vae` / `--codec` take trained ones): a random encoder's latents and codes still
carry the audio's content, so the second stages can learn, but the decoders are untrained, so reconstruction and
everything judged on decoded audio (Fréchet distance, tempo accuracy) compare untrained decoders and a few hundred
steps of training on a few minutes of music, over a handful of test clips. They show the harness runs end to
end; they do not rank the branches. Rank them with trained autoencoders and far longer runs.

    python benchmarks/compare_branches.py                          # tiny configs, 300 steps, ~10 min on 2 cores
    python benchmarks/compare_branches.py --diffusion-pipeline A --token-pipeline B --corpus data/corpus
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import peak_rss_mib, print_table, reset_peak_rss, rss_mib, write_json  # noqa: E402

from latentmusic import AudioAutoencoder, LatentMusicPipeline, TokenMusicPipeline  # noqa: E402
from latentmusic.audio import load_audio  # noqa: E402
from latentmusic.data.index import read_metadata  # noqa: E402
from latentmusic.evaluation import frechet_audio_distance  # noqa: E402
from latentmusic.evaluation.attributes import attribute_accuracy  # noqa: E402
from latentmusic.evaluation.reconstruction import reconstruction_metrics  # noqa: E402
from latentmusic.models import compute_latent_statistics  # noqa: E402
from latentmusic.training.config import load_config  # noqa: E402
from latentmusic.training.diffusion import DiffusionTrainingConfig, train_diffusion  # noqa: E402
from latentmusic.training.token_lm import TokenLMTrainingConfig, train_token_lm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "configs"
PROMPT = "a fast fiddle tune on flute at 132 BPM in D major"
KINDS = ("diffusion", "token_lm")


def load_pipeline(kind: str, folder: str | Path):
    cls = LatentMusicPipeline if kind == "diffusion" else TokenMusicPipeline
    pipe = cls.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, kind: str, prompts: list[str], seconds: float, args, seed: int = 0) -> torch.Tensor:
    common = dict(audio_length_in_s=seconds, generator=torch.Generator().manual_seed(seed), output_type="pt")
    with torch.inference_mode():
        if kind == "diffusion":
            return pipe(prompts, num_inference_steps=args.steps, guidance_scale=args.guidance, **common).audios
        return pipe(prompts, top_k=args.top_k, guidance_scale=args.guidance, **common).audios


def count_parameters(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


# -- data and training ---------------------------------------------------------------------------------------


def ensure_corpus(args) -> Path:
    corpus = Path(args.corpus)
    if not (corpus / "metadata.jsonl").is_file():
        from latentmusic.data.corpus import render_corpus

        print(f"rendering {args.pieces} pieces into {corpus} ...", flush=True)
        render_corpus(corpus, max_pieces=args.pieces, collections=["bach", "ryans", "essen"], sample_rate=16000,
                      max_seconds=15, progress=False)  # fmt: skip
    return corpus


def first_stage(kind: str, corpus: Path, out: Path) -> Path:
    """A random frozen autoencoder (tiny.yaml, latent statistics measured) or RVQ codec (tiny-rvq.yaml)."""
    folder = out / ("vae" if kind == "diffusion" else "codec")
    if (folder / "config.json").is_file():
        return folder
    name = "tiny.yaml" if kind == "diffusion" else "tiny-rvq.yaml"
    torch.manual_seed(0)
    model = AudioAutoencoder(**OmegaConf.to_container(OmegaConf.load(CONFIGS / "autoencoder" / name).model)).eval()
    if kind == "diffusion":
        clips = [c[..., :32000] for c, _ in test_windows(corpus, 2.0, 8, split="train")]
        compute_latent_statistics(model, (clip[None] for clip in clips))
    model.save_pretrained(folder)
    return folder


def train(kind: str, corpus: Path, first: Path, out: Path, args) -> Path:
    overrides = [
        f"data.root={corpus}",
        f"data.segment_seconds={args.segment_seconds}",
        f"run.output_dir={out / kind}",
        f"run.max_steps={args.train_steps}",
        f"run.eval_every={args.train_steps}",
        "run.sample_every=0",
        f"run.checkpoint_every={args.train_steps}",
        "run.report_to=none",
        "run.progress_bar=false",
    ]
    start = time.perf_counter()
    if kind == "diffusion":
        diffusion = CONFIGS / "diffusion" / "tiny.yaml"
        config = load_config(DiffusionTrainingConfig, diffusion, [f"vae={first}", *overrides])
        folder = train_diffusion(config)
    else:
        config = load_config(TokenLMTrainingConfig, CONFIGS / "token_lm" / "tiny.yaml", [f"codec={first}", *overrides])
        folder = train_token_lm(config)
    print(f"trained {kind} in {time.perf_counter() - start:.0f} s", flush=True)
    return folder


def test_windows(corpus: Path, seconds: float, limit: int, split: str = "test") -> list[tuple[torch.Tensor, dict]]:
    """Non-overlapping windows of the split's clips, with their metadata records, at most `limit`."""
    windows = []
    for record in read_metadata(corpus, split=split):
        audio, _ = load_audio(corpus / record["path"], sample_rate=16000, channels=1)
        size = int(seconds * 16000)
        for start in range(0, audio.shape[-1] - size + 1, size):
            windows.append((audio[:, start : start + size], record))
            if len(windows) >= limit:
                return windows
    return windows


# -- measurements --------------------------------------------------------------------------------------------


def speed(pipes: dict, args) -> dict[str, float]:
    times: dict[str, list[float]] = {kind: [] for kind in pipes}
    for kind, pipe in pipes.items():  # warm-up
        generate(pipe, kind, [PROMPT], 1.0, args)
    for _ in range(args.repeats):  # interleaved, so load on the machine hits both alike
        for kind, pipe in pipes.items():
            start = time.perf_counter()
            generate(pipe, kind, [PROMPT], args.seconds, args)
            times[kind].append(time.perf_counter() - start)
    return {kind: args.seconds / min(t) for kind, t in times.items()}


def measure_memory(kind: str, folder: str, args) -> dict[str, float]:
    """In a fresh process: load the pipeline, then generate once; RSS once loaded and at the peak."""
    pipe = load_pipeline(kind, folder)
    gc.collect()
    built = rss_mib()
    if not reset_peak_rss():
        raise RuntimeError("peak memory needs Linux's /proc/self/clear_refs")
    generate(pipe, kind, [PROMPT], args.seconds, args)
    return {"built_rss_MiB": built, "peak_rss_MiB": peak_rss_mib()}


def memory(kind: str, folder: Path, args) -> dict[str, float]:
    command = [sys.executable, __file__, "--_memory", kind, "--_folder", str(folder), "--seconds", str(args.seconds),
               "--steps", str(args.steps), "--top-k", str(args.top_k), "--threads", str(args.threads)]  # fmt: skip
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(output.splitlines()[-1])
    return {**result, "generation_MiB": result["peak_rss_MiB"] - result["built_rss_MiB"]}


def reconstruction(pipe, kind: str, windows: list) -> dict[str, float]:
    audio = torch.stack([w for w, _ in windows])
    with torch.inference_mode():
        if kind == "diffusion":
            estimate = pipe.vae(audio).sample
        else:
            estimate = pipe.codec.decode_codes(pipe.codec.encode_codes(audio))
    return reconstruction_metrics(audio, estimate[..., : audio.shape[-1]], 16000)


def quality(pipe, kind: str, windows: list, args) -> dict[str, float]:
    prompts = [record["captions"][0] for _, record in windows]
    generated = [generate(pipe, kind, [p], args.window_seconds, args, seed=i)[0] for i, p in enumerate(prompts)]
    reference = [w for w, _ in windows]
    fad = frechet_audio_distance((generated, 16000), (reference, 16000), progress=False)
    tempo = attribute_accuracy((generated, 16000), [{"bpm": r["bpm"]} for _, r in windows])["summary"]
    return {"fad": fad, "tempo_accuracy": tempo["tempo_accuracy"]}


def plot(rows: list[dict], path: str | Path) -> Path:
    """Bars of speed, generation memory and Fréchet distance per branch, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("audio_s_per_s", "audio s per s (higher is faster)"),
        ("generation_MiB", "generation memory (MiB)"),
        ("fad", "Fréchet distance (lower is better)"),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(10, 3))
    for ax, (key, title) in zip(axes, panels):
        ax.bar([row["branch"] for row in rows], [row[key] for row in rows], color=["tab:blue", "tab:orange"])
        ax.set_title(title, fontsize=9)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    print(f"wrote {path}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="outputs/compare-branches/corpus", help="rendered here if missing")
    parser.add_argument("--pieces", type=int, default=60, help="pieces to render when the corpus is missing")
    parser.add_argument("--work-dir", default="outputs/compare-branches")
    parser.add_argument("--diffusion-pipeline", help="a trained LatentMusicPipeline folder (skips training)")
    parser.add_argument("--token-pipeline", help="a trained TokenMusicPipeline folder (skips training)")
    parser.add_argument("--vae", help="a trained autoencoder for the diffusion branch (default: a random one)")
    parser.add_argument("--codec", help="a trained RVQ codec for the token branch (default: a random one)")
    parser.add_argument("--train-steps", type=int, default=300, help="the step budget of each branch")
    parser.add_argument("--segment-seconds", type=float, default=1.0, help="training window of both branches")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length for speed and memory")
    parser.add_argument("--window-seconds", type=float, default=1.0, help="test windows and generations for FAD")
    parser.add_argument("--test-windows", type=int, default=8)
    parser.add_argument("--steps", type=int, default=25, help="diffusion sampling steps")
    parser.add_argument("--top-k", type=int, default=32, help="token LM top-k sampling")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared machine)")
    parser.add_argument("--out", default="benchmarks/results/compare_branches.json")
    parser.add_argument("--plot", default="docs/benchmarks/compare_branches.png", help="picture of the table")
    parser.add_argument("--_memory", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--_folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args._memory:
        print(json.dumps(measure_memory(args._memory, args._folder, args)))
        return

    work = Path(args.work_dir)
    corpus = ensure_corpus(args)
    folders = {"diffusion": args.diffusion_pipeline, "token_lm": args.token_pipeline}
    firsts = {"diffusion": args.vae, "token_lm": args.codec}
    for kind in KINDS:
        if not folders[kind]:
            first = Path(firsts[kind]) if firsts[kind] else first_stage(kind, corpus, work)
            folders[kind] = train(kind, corpus, first, work, args)
    pipes = {kind: load_pipeline(kind, folders[kind]) for kind in KINDS}
    windows = test_windows(corpus, args.window_seconds, args.test_windows)
    if len(windows) < 2:
        raise SystemExit(f"{corpus} has fewer than 2 test windows; render more pieces (--pieces)")

    rates = speed(pipes, args)
    rows = []
    for kind, pipe in pipes.items():
        model = pipe.unet if kind == "diffusion" else pipe.lm
        first = pipe.vae if kind == "diffusion" else pipe.codec
        row = {"branch": kind, "model_params_M": count_parameters(model), "first_stage_params_M":
               count_parameters(first), "audio_s_per_s": rates[kind]}  # fmt: skip
        row.update(memory(kind, folders[kind], args))
        row.update(reconstruction(pipe, kind, windows))
        row.update(quality(pipe, kind, windows, args))
        rows.append(row)
    print_table(rows)
    plot(rows, args.plot)
    write_json(args.out, "compare_branches", rows, pipelines={k: str(v) for k, v in folders.items()},
               corpus=str(corpus), train_steps=args.train_steps, seconds=args.seconds,
               test_windows=len(windows), threads=torch.get_num_threads())  # fmt: skip


if __name__ == "__main__":
    main()
