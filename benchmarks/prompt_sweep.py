"""Change one attribute of the prompt and nothing else: does the generated music follow it?

The prompts are the corpus's own caption templates (`make_captions`) for a traditional reel, with only the tempo
changed over `--bpm` (written in digits, the first template, and as a word, the third) or only the key over
`--keys`, for each of `--instruments` and `--seeds`. Columns:

- **tempo slope**: how the onset rate follows the asked-for tempo, the slope of log onsets per second on log BPM
  within each instrument and seed (1: the notes keep their values and the music plays faster; 0: ignored), with
  the Spearman correlation of onset rate and BPM over all those clips;
- **key rank**: the asked-for key's rank among the 24 by chroma-profile correlation (1 best; 12.5 by chance).

`--pairs CORPUS` adds a **real pairs** row: the same slope on real minimal pairs of a corpus rendered with
`--tempo-variants` (one rendition and its tempo variant, the first `--seconds` of each), what music that follows
its tempo exactly scores on this measure.

    python benchmarks/prompt_sweep.py --models v3=latentmusic/demo v4=outputs/demo-ablation/tempo/pipeline \\
        --pairs data/demo-tempo
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import print_table, write_json  # noqa: E402

from latentmusic import LatentMusicPipeline  # noqa: E402
from latentmusic.audio import load_audio  # noqa: E402
from latentmusic.data.captions import make_captions  # noqa: E402
from latentmusic.data.index import read_metadata  # noqa: E402
from latentmusic.evaluation.attributes import estimate_note_density, key_correlations  # noqa: E402
from latentmusic.evaluation.scoring import parse_key, spearman  # noqa: E402

TEMPLATES = {"digits": 0, "word": 2}  # which make_captions phrasing states the tempo, and how


def prompt(instrument: str, bpm: int, key: str, template: int) -> str:
    """One of the corpus's caption phrasings for a traditional reel."""
    record = {"composer": "traditional", "genre": "reel", "title": "The Sweep", "key": key, "bpm": bpm,
              "meter": "4/4", "instrument": instrument, "family": "keyboard"}  # fmt: skip
    return make_captions(record)[template]


def within_group_slope(groups: dict[object, list[tuple[float, float]]]) -> float | None:
    """Least-squares slope of log y on log x, each group's means removed (a group: one instrument and seed)."""
    dx, dy = [], []
    for pairs in groups.values():
        x, y = np.log([p[0] for p in pairs]), np.log([max(p[1], 1e-3) for p in pairs])
        dx.append(x - x.mean())
        dy.append(y - y.mean())
    x, y = np.concatenate(dx), np.concatenate(dy)
    return float((x * y).sum() / (x * x).sum()) if (x * x).sum() > 0 else None


def generate(pipe: LatentMusicPipeline, prompts: list[str], seeds: list[int], args) -> list[np.ndarray]:
    clips = []
    for first in range(0, len(prompts), args.batch):
        batch, batch_seeds = prompts[first : first + args.batch], seeds[first : first + args.batch]
        generators = [torch.Generator().manual_seed(seed) for seed in batch_seeds]
        with torch.inference_mode():
            audios = pipe(batch, audio_length_in_s=args.seconds, guidance_scale=args.guidance,
                          num_inference_steps=args.steps, generator=generators, output_type="pt").audios  # fmt: skip
        clips += [audio.mean(0).numpy() for audio in audios]
    return clips


def sweep(name: str, pipe: LatentMusicPipeline, args) -> dict:
    row: dict = {"model": name}
    for phrasing, template in TEMPLATES.items():
        cases = [(i, s, b) for i in args.instruments for s in args.seeds for b in args.bpm]
        prompts = [prompt(i, b, "D major", template) for i, _, b in cases]
        clips = generate(pipe, prompts, [s for _, s, _ in cases], args)
        onsets = [estimate_note_density(clip, pipe.sample_rate) for clip in clips]
        groups = defaultdict(list)
        for (instrument, seed, bpm), rate in zip(cases, onsets):
            groups[instrument, seed].append((bpm, rate))
        row[f"slope_{phrasing}"] = within_group_slope(groups)
        row[f"spearman_{phrasing}"] = spearman([b for *_, b in cases], onsets)
        row[f"onsets_{phrasing}"] = {
            b: float(np.mean([r for (*_, x), r in zip(cases, onsets) if x == b])) for b in args.bpm
        }
    cases = [(i, k) for i in args.instruments for k in args.keys]
    clips = generate(pipe, [prompt(i, 108, k, 0) for i, k in cases], [args.seeds[0]] * len(cases), args)
    ranks = []
    for (_, key), clip in zip(cases, clips):
        correlations = key_correlations(clip, pipe.sample_rate)
        tonic, mode = parse_key(key)
        index = tonic + (12 if mode == "minor" else 0)  # key_correlations lists the major keys, then the minor
        ranks.append(int((correlations > correlations[index]).sum()) + 1 if correlations is not None else 12.5)
    row["key_rank"] = float(np.mean(ranks))
    row["prompts"] = {p: prompt("piano", args.bpm[0], "D major", t) for p, t in TEMPLATES.items()}
    return row


def real_pairs(corpus: Path, seconds: float, count: int) -> dict:
    """The slope on real minimal pairs: a train rendition and its first tempo variant."""
    records = read_metadata(corpus, split="train")
    originals = {(r["piece_id"], r["rendition"]): r for r in records if not r.get("tempo_variant")}
    pairs = [(originals[r["piece_id"], r["rendition"]], r) for r in records if r.get("tempo_variant") == 1]
    pairs = [pair for pair in pairs if min(p["duration"] for p in pair) >= seconds][:count]
    if not pairs:
        raise SystemExit(f"{corpus} has no tempo-variant pairs {seconds} s long (render it with --tempo-variants)")
    groups, bpms, rates = {}, [], []
    for original, variant in pairs:
        points = []
        for record in (original, variant):
            audio, rate = load_audio(corpus / record["path"])
            onsets = estimate_note_density(audio[:, : int(seconds * rate)], rate)
            points.append((record["bpm"], onsets))
            bpms.append(record["bpm"])
            rates.append(onsets)
        groups[original["path"]] = points
    slope = within_group_slope(groups)
    return {"model": f"real pairs ({len(pairs)})", "slope_digits": slope, "slope_word": slope,
            "spearman_digits": spearman(bpms, rates), "spearman_word": spearman(bpms, rates)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["demo=latentmusic/demo"], metavar="NAME=FOLDER")
    parser.add_argument("--bpm", type=int, nargs="+", default=[72, 96, 120, 144])
    parser.add_argument("--keys", nargs="+", default=["C major", "E major", "Ab major", "A minor"])
    parser.add_argument("--instruments", nargs="+", default=["piano", "flute", "violin"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=8, help="prompts per pipeline call")
    parser.add_argument("--pairs", default="", help="a corpus rendered with --tempo-variants ('' for none)")
    parser.add_argument("--pair-count", type=int, default=48, help="real minimal pairs at most")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/prompt_sweep.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for spec in args.models:
        name, sep, folder = spec.partition("=")
        if not (sep and name and folder):
            parser.error(f"--models takes NAME=FOLDER, got {spec!r}; e.g. --models v3=latentmusic/demo")
        pipe = LatentMusicPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        rows.append(sweep(name, pipe, args))
        print(f"{name}: done", flush=True)
    if args.pairs:
        rows.append(real_pairs(Path(args.pairs), args.seconds, args.pair_count))
    print_table(rows, ["model", "slope_digits", "spearman_digits", "slope_word", "spearman_word", "key_rank"])
    write_json(args.out, "prompt_sweep", rows, settings=vars(args))


if __name__ == "__main__":
    main()
