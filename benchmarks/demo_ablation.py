"""Which training change makes the demo diffusion model use its text? Runs of the same budget compared side by side.

Each run is a `recipes/train_diffusion.py` output folder (same data, seed and number of steps; only the option under
test differs). Per run, two measures of whether the model listens to its prompt:

- **caption gap**: the held-out loss with captions shuffled between clips against the right captions (the recipe's
  own evaluation in `losses.jsonl`, the same noise for both), as a relative gap (shuffled / right − 1), averaged over
  the last `--last-evals` evaluations;
- **following**: the run's final pipeline generates the test split's first captions (as `benchmarks/demo.py`, seed
  *i* for clip *i*) and the clips are scored on key, mode, tempo and instrument family (`benchmarks/demo.py`'s
  `score`), at each classifier-free guidance scale of `--guidance`.

    python benchmarks/demo_ablation.py --runs v1=outputs/demo-ablation/v1 flow=outputs/demo-ablation/flow \
        --corpus data/demo --guidance 3 6
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import print_table, write_json  # noqa: E402
from demo import clip_vectors, generate, reference_clips, score  # noqa: E402

from latentmusic import LatentMusicPipeline  # noqa: E402
from latentmusic.training.media import LossHistory  # noqa: E402


def caption_gap(run: Path, last: int) -> dict[str, float]:
    """Steps, final held-out loss and the relative right-vs-shuffled caption gap of a run's `losses.jsonl`."""
    rows = LossHistory(run / "losses.jsonl").read()
    evaluations = [row for row in rows if "valid_loss_shuffled_captions" in row][-last:]
    if not evaluations:
        raise SystemExit(f"{run / 'losses.jsonl'} has no evaluation yet; train the run past run.eval_every")
    gaps = [row["valid_loss_shuffled_captions"] / row["valid_loss"] - 1 for row in evaluations]
    wall = run / "wall_seconds.txt"  # written by the driver script, if any
    return {
        "steps": int(max(row["step"] for row in rows)),
        "valid_loss": evaluations[-1]["valid_loss"],
        "valid_loss_shuffled": evaluations[-1]["valid_loss_shuffled_captions"],
        "caption_gap": sum(gaps) / len(gaps),
        "train_minutes": float(wall.read_text()) / 60 if wall.is_file() else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="NAME=FOLDER of each training run")
    parser.add_argument("--corpus", default="data/demo", help="the rendered corpus (its test split is used)")
    parser.add_argument("--clips", type=int, default=48, help="test renditions at most")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=25, help="sampling steps (each run's own default scheduler)")
    parser.add_argument("--guidance", type=float, nargs="+", default=[3.0], help="classifier-free guidance scales")
    parser.add_argument("--last-evals", type=int, default=2, help="evaluations the caption gap is averaged over")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=8, help="prompts per pipeline call")
    parser.add_argument("--tempo-backend", default="auto", choices=["auto", "essentia", "librosa"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/demo_v2_ablation.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = {}
    for item in args.runs:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"--runs takes NAME=FOLDER items, got {item!r}")
        runs[name] = Path(folder)

    reference, records = reference_clips(Path(args.corpus), args.seconds, args.clips)
    prompts = [r["captions"][0] for r in records]
    reference_vectors = clip_vectors(reference)
    rows = [
        {"run": "real", **score("real", reference, records, reference, reference_vectors, None, args.tempo_backend)}
    ]
    for name, folder in runs.items():
        gap = caption_gap(folder, args.last_evals)
        pipe = LatentMusicPipeline.from_pretrained(folder / "pipeline")
        pipe.set_progress_bar_config(disable=True)
        for guidance in args.guidance:
            options = SimpleNamespace(**{**vars(args), "guidance": guidance, "top_k": None})
            clips, seconds_per_clip = generate(pipe, prompts, options)
            scored = score(name, clips, records, reference, reference_vectors, seconds_per_clip, args.tempo_backend)
            rows.append({"run": name, "guidance": guidance, **gap, **scored})
            print(f"{name} at guidance {guidance}: done", flush=True)
    columns = ["run", "guidance", "steps", "train_minutes", "valid_loss", "caption_gap", "fd", "key_acc", "mode_acc",
               "tempo_acc", "tempo_metrical", "tempo_spearman", "family_acc"]  # fmt: skip
    print_table(rows, columns)
    write_json(args.out, "demo_v2_ablation", rows, prompts=prompts, runs={k: str(v) for k, v in runs.items()},
               command=" ".join(sys.argv), settings=vars(args))  # fmt: skip


if __name__ == "__main__":
    main()
