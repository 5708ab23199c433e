"""Does a LoRA move a pipeline's outputs toward the data it was trained on? Fréchet distance before and after.

The base pipeline and the same pipeline with the LoRA loaded generate one clip per prompt with the same seeds;
the prompts are the first captions of the LoRA folder's held-out renditions (valid and test splits), cycled to
`--clips` clips. Each set's Fréchet distance (the offline `music-features-v1` embedding of
`latentmusic.evaluation.embeddings`) is taken to those held-out renditions, which the LoRA never trained on, and, with
`--other`, to the held-out renditions of another folder: a LoRA that moves outputs toward its own data (rather than
making them better music in general) lowers the first distance more than the second.

    OMP_NUM_THREADS=1 python benchmarks/lora_shift.py --lora outputs/lora-brass/lora --corpus data/brass
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from latentmusic import LatentMusicPipeline
from latentmusic.data.index import read_metadata
from latentmusic.evaluation.frechet import frechet_audio_distance

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import print_table, write_json  # noqa: E402
from demo import RATE, generate  # noqa: E402


def held_out_records(corpus: Path) -> list[dict]:
    """The folder's valid- and test-split records."""
    records = [r for r in read_metadata(corpus, split=None) if r.get("split") in ("valid", "test")]
    if not records:
        raise SystemExit(f"{corpus} has no valid or test renditions to compare with")
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="latentmusic/demo", help="the pipeline the LoRA was trained on")
    parser.add_argument("--lora", required=True, help="the LoRA's folder (<run.output_dir>/lora)")
    parser.add_argument("--corpus", required=True, help="the folder the LoRA was trained on")
    parser.add_argument(
        "--other",
        default="",
        help="a folder of other music: the same clips' distance to its held-out clips, as a control",
    )
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/lora_shift.json")
    args = parser.parse_args()

    held_out = held_out_records(Path(args.corpus))
    prompts = [held_out[i % len(held_out)]["captions"][0] for i in range(args.clips)]
    reference = [Path(args.corpus) / r["path"] for r in held_out]
    other = [Path(args.other) / r["path"] for r in held_out_records(Path(args.other))] if args.other else []

    pipe = LatentMusicPipeline.from_pretrained(args.base)
    pipe.set_progress_bar_config(disable=True)
    rows = []
    for name in ("base", "base + LoRA"):
        if name != "base":
            pipe.load_lora_weights(args.lora)
        clips, seconds_per_clip = generate(pipe, prompts, args)
        distance = frechet_audio_distance(([c.numpy() for c in clips], RATE), reference, progress=False)
        row = {"pipeline": name, "fd_to_held_out": distance}
        if other:
            row["fd_to_other"] = frechet_audio_distance(([c.numpy() for c in clips], RATE), other, progress=False)
        rows.append({**row, "s_per_clip": seconds_per_clip})
    print_table(rows)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"}
    write_json(args.out, "lora_shift", rows, settings={**settings, "reference_clips": len(reference)})


if __name__ == "__main__":
    main()
