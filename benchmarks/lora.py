"""LoRA against full fine-tuning of the shipped demo's U-Net: what is trained, what is saved, how long a step takes.

For full fine-tuning and for a LoRA of each `--ranks` (on the default targets, the attention projections), one
training step is the recipe's: the U-Net's forward pass on a batch of noisy latents with their conditioning channels
(`--batch-size` windows of `--seconds`, the demo's 10-second training window), the v-prediction MSE, the backward
pass and an AdamW step over the trainable parameters. The text encoder is frozen in both (its hidden states are
computed once, outside the timing), so the comparison is of the U-Net alone. A step's time is the median of
`--steps` steps after two warm-up steps; the modes are interleaved so that machine noise affects all alike. The
saved sizes are of the files `save_pretrained` / `save_lora_weights` write in float32 (the shipped U-Net file is
float16; its float32 size is reported for a like-for-like ratio); `grad_adam_MiB` is what the trainable parameters
add in training (a float32 gradient and AdamW's two moments each; activations, the same for both, are not counted).

    OMP_NUM_THREADS=1 python benchmarks/lora.py                 # ranks 4, 8, 16; 10 s windows, batch 4
    OMP_NUM_THREADS=1 python benchmarks/lora.py --steps 3 --ranks 8 --seconds 2   # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from latentmusic import LatentMusicPipeline
from latentmusic.loaders import get_lora_layers, make_lora_config
from latentmusic.models import vae_utils
from latentmusic.pipelines.common import encode_text
from latentmusic.training.objectives import make_training_scheduler, noise_batch, weighted_mse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import print_table, write_json  # noqa: E402

CAPTIONS = ["a fast fiddle tune on flute at 132 BPM", "a slow Bach chorale played by a string ensemble at 60 BPM"]


def file_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 2**20


def training_state_mib(trainable: int) -> float:
    """Memory the trainable parameters add in training: a float32 gradient and AdamW's two moments each."""
    return 3 * 4 * trainable / 2**20


def make_step(unet, batch: dict[str, torch.Tensor], scheduler, seed: int):
    """One recipe step over `unet`'s trainable parameters, as a closure."""
    optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(seed)

    def step() -> None:
        noised = noise_batch(scheduler, batch["latents"], generator, 5.0)
        keep = batch["keep"]
        model_input = torch.cat([noised.noisy, keep, batch["latents"] * keep], dim=1)
        prediction = unet(model_input, noised.timesteps, batch["text"], batch["mask"]).sample
        loss = weighted_mse(prediction, noised, torch.ones_like(keep))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="latentmusic/demo")
    parser.add_argument("--ranks", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--output", default="benchmarks/results/lora.json")
    args = parser.parse_args()

    pipe = LatentMusicPipeline.from_pretrained(args.pipeline)
    base = pipe.unet.float().train()
    frames = round(args.seconds * vae_utils.vae_sample_rate(pipe.vae) / vae_utils.vae_hop_length(pipe.vae))
    channels = base.config.in_channels
    torch.manual_seed(0)
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(args.batch_size)]
    with torch.no_grad():
        text = encode_text(pipe.tokenizer, pipe.text_encoder, captions, torch.device("cpu"), 48)
    batch = {
        "latents": torch.randn(args.batch_size, channels, frames),
        "keep": torch.zeros(args.batch_size, 1, frames),  # plain generation: nothing kept
        "text": text.hidden_states,
        "mask": text.attention_mask,
    }
    scheduler = make_training_scheduler("v_prediction")

    total = sum(p.numel() for p in base.parameters())
    rows, steps, work = [], {}, Path(tempfile.mkdtemp())
    base.save_pretrained(work / "full")
    rows.append({"mode": "full", "trainable": total, "trainable_%": 100.0, "saved_MiB": file_mib(work / "full")})
    rows[0]["grad_adam_MiB"] = training_state_mib(total)
    steps["full"] = make_step(base, batch, scheduler, 0)
    for rank in args.ranks:
        unet = copy.deepcopy(base)
        unet.add_adapter(make_lora_config(unet, rank=rank))
        layers, metadata = get_lora_layers(unet)
        pipe.save_lora_weights(work / f"r{rank}", unet_lora_layers=layers, unet_lora_adapter_metadata=metadata)
        trainable = sum(p.numel() for p in unet.parameters() if p.requires_grad)
        rows.append(
            {
                "mode": f"lora r={rank}",
                "trainable": trainable,
                "trainable_%": 100 * trainable / total,
                "saved_MiB": file_mib(work / f"r{rank}"),
                "grad_adam_MiB": training_state_mib(trainable),
            }
        )
        steps[f"lora r={rank}"] = make_step(unet, batch, scheduler, 0)

    times: dict[str, list[float]] = {mode: [] for mode in steps}
    for i in range(args.steps + 2):
        for mode, step in steps.items():
            start = time.perf_counter()
            step()
            if i >= 2:  # warm-up
                times[mode].append(time.perf_counter() - start)
    full_time = statistics.median(times["full"])
    for row in rows:
        row["step_s"] = statistics.median(times[row["mode"]])
        row["step_vs_full"] = row["step_s"] / full_time
    print_table(rows)
    settings = {k: getattr(args, k) for k in ("pipeline", "seconds", "batch_size", "steps")}
    write_json(args.output, "lora", rows, settings={**settings, "frames": frames, "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
