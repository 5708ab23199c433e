"""Copy the trained demo pipelines into the package, where `from_pretrained("latentmusic/demo")` finds them.

    python recipes/demo/export_demo.py     # after recipes/demo/train_demo.sh's training stages

Each pipeline is reloaded from its recipe's `save_pretrained` folder, given its default scheduler (diffusion:
DPM-Solver++ for a noise/v-prediction model, flow-matching Euler for a flow model; `--scheduler` to choose), and
saved as safetensors. Weights are stored in float16 when the float32 files, with the shipped checkpoints that are
not replaced, would pass the repository's 50 MB budget for shipped weights (they load back as float32); the script
refuses to write more. `--token ''` replaces only the diffusion demo, `--diffusion ''` only the token LM.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from latentmusic import LatentMusicPipeline, TokenMusicPipeline
from latentmusic.checkpoints import FOLDER, SHIPPED
from latentmusic.pipelines.schedulers import is_flow_scheduler, make_scheduler

BUDGET_MB = 50.0


def size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def weights_mb(pipe) -> float:
    return sum(p.numel() * 4 for _, c in pipe.components.items() if isinstance(c, torch.nn.Module)
               for p in c.parameters()) / 1e6  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--diffusion", default="outputs/demo/diffusion/pipeline", help="'' to keep the shipped one")
    parser.add_argument("--token", default="outputs/demo/token-lm/pipeline", help="'' to ship the diffusion demo only")
    parser.add_argument("--scheduler", default="", help="the diffusion demo's default scheduler ('' = by objective)")
    args = parser.parse_args()

    pipes = {}
    if args.diffusion:
        diffusion = LatentMusicPipeline.from_pretrained(args.diffusion)
        default = "flow-euler" if is_flow_scheduler(diffusion.scheduler) else "dpm++"
        diffusion.scheduler = make_scheduler(args.scheduler or default, diffusion.scheduler)
        pipes["latentmusic/demo"] = diffusion
    if args.token:
        pipes["latentmusic/demo-token-lm"] = TokenMusicPipeline.from_pretrained(args.token)
    kept = sum(
        size_mb(FOLDER / SHIPPED[name]) for name in SHIPPED if name not in pipes and (FOLDER / SHIPPED[name]).is_dir()
    )
    half = kept + sum(weights_mb(pipe) for pipe in pipes.values()) > BUDGET_MB * 0.95
    for name, pipe in pipes.items():
        folder = FOLDER / SHIPPED[name]
        shutil.rmtree(folder, ignore_errors=True)
        if half:
            pipe.to(torch.float16)
        pipe.save_pretrained(folder, safe_serialization=True)
        if half:  # transformers writes the stored dtype into config.json and would load float16 from it
            for config in folder.glob("*/config.json"):
                config.write_text(config.read_text().replace('"dtype": "float16"', '"dtype": "float32"'))
        print(f"{name}: {folder} ({size_mb(folder):.1f} MB{', float16' if half else ''})")
    total = size_mb(FOLDER)  # every shipped file
    if total > BUDGET_MB:
        raise SystemExit(f"the shipped checkpoints take {total:.1f} MB, over the {BUDGET_MB:.0f} MB budget")
    print(f"total {total:.1f} MB")


if __name__ == "__main__":
    main()
