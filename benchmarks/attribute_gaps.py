"""Which words of the prompt does a trained diffusion model use? Held-out losses with one attribute changed.

For each saved `LatentMusicPipeline` and the training run it came from (its `config.yaml`: data, latent cache,
objective), the recipe's own validation (`training.validation.caption_gap_losses`) is run with the pipeline's
weights on the validation split: the denoising loss with the right captions, with captions of other clips
(shuffled), and with the key (a tritone away), the tempo (25 % off, no metrical level) or the instrument (another
family) changed in the caption and nothing else. The same crops and noise for every variant; `--repeats` noise
draws. A model that ignores a word loses nothing when it is changed: the relative gap
(changed / right − 1) is how much the model listens to that attribute, measured without generating or estimating
anything (the estimators of `benchmarks/demo.py` are blunt on a model that is still learning).

    python benchmarks/attribute_gaps.py --runs v2=outputs/demo-ablation/flow-pooled \
        --pipeline v2=latentmusic/checkpoints/demo --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import print_table, write_json  # noqa: E402

from latentmusic.training.config import load_config  # noqa: E402
from latentmusic.training.diffusion import DiffusionTrainer, DiffusionTrainingConfig  # noqa: E402
from latentmusic.training.validation import ATTRIBUTE_SWAPS  # noqa: E402

VARIANTS = {"shuffled": "valid_loss_shuffled_captions"} | {
    name: f"valid_loss_{name}_swapped" for name in ATTRIBUTE_SWAPS
}


def held_out_losses(
    config: Path, pipeline: Path | str, seed: int, batches: int, work: Path, overrides: tuple[str, ...] = ()
) -> dict[str, float]:
    """The validation losses (right, shuffled, each attribute changed) of a run's configuration (its data,
    latent cache, objective; `overrides` on top) with `pipeline`'s weights, noise seeded by `seed`."""
    overrides = (f"init_from={pipeline}", f"run.output_dir={work}", f"run.seed={seed}", f"valid_batches={batches}",
                 "run.report_to=none", "run.progress_bar=false", *overrides)  # fmt: skip
    trainer = DiffusionTrainer(load_config(DiffusionTrainingConfig, config, overrides))
    trainer.build()
    with torch.inference_mode():
        return trainer.evaluate()


def relative_gaps(losses: list[dict[str, float]]) -> dict[str, float | None]:
    """Mean and standard deviation over the repeats of each variant's relative gap to the right captions."""
    row: dict[str, float | None] = {"valid_loss": statistics.fmean(r["valid_loss"] for r in losses)}
    for name, key in VARIANTS.items():
        gaps = [r[key] / r["valid_loss"] - 1 for r in losses if key in r]
        row[f"{name}_gap"] = statistics.fmean(gaps) if gaps else None
        row[f"{name}_gap_std"] = statistics.stdev(gaps) if len(gaps) > 1 else None
    return row


def parse_pairs(items: list[str], flag: str) -> dict[str, Path]:
    pairs = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"{flag} takes NAME=FOLDER items, got {item!r}")
        pairs[name] = Path(folder)
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="NAME=RUN_FOLDER (with config.yaml) per model")
    parser.add_argument(
        "--pipeline", nargs="*", default=[], help="NAME=PIPELINE_FOLDER to use instead of RUN_FOLDER/pipeline"
    )
    parser.add_argument("--repeats", type=int, default=3, help="noise draws (run.seed 0, 1, ...)")
    parser.add_argument("--batches", type=int, default=4, help="validation batches per draw")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/attribute_gaps.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs, pipelines = parse_pairs(args.runs, "--runs"), parse_pairs(args.pipeline, "--pipeline")
    if unknown := sorted(set(pipelines) - set(runs)):
        raise SystemExit(f"--pipeline names {unknown} have no --runs entry; give each model NAME=RUN_FOLDER")

    rows = []
    for name, run in runs.items():
        pipeline = pipelines.get(name, run / "pipeline")
        with tempfile.TemporaryDirectory() as work:
            losses = [
                held_out_losses(run / "config.yaml", pipeline, seed, args.batches, Path(work))
                for seed in range(args.repeats)
            ]
        rows.append({"model": name, "pipeline": str(pipeline), **relative_gaps(losses)})
        print(f"{name}: {rows[-1]}")
    columns = ["model", "valid_loss"] + [f"{name}_gap" for name in VARIANTS]
    print_table(rows, columns)
    write_json(args.out, "attribute_gaps", rows, settings=vars(args))


if __name__ == "__main__":
    main()
