"""The demo checkpoints judged on held-out music: do they make music that follows the prompt?

For every rendition of the corpus's test split (pieces never seen in training), the first caption is the prompt
and the first `--seconds` of the real audio the reference. Rows, all generated with the same prompts and seeds:

- **diffusion**: the shipped `LatentMusicPipeline` (`latentmusic/demo`), `--steps` DPM-Solver++ steps, guidance;
- **token LM**: the shipped `TokenMusicPipeline` (`latentmusic/demo-token-lm`), trained with the same budget;
- **… + beat grid**: a diffusion model trained with beat grids (`beat.enabled`) again, given each prompt's tempo as
  `bpm=` (the rhythm control; the row without it is the text alone);
- **untrained**: the diffusion pipeline with its U-Net and text encoder re-initialised (the trained autoencoder
  kept), the baseline the Fréchet distance must beat;
- **real**: the reference clips themselves (how often the estimators are right on real music), **real → VAE**
  and **real → codec**: them through the diffusion demo's autoencoder and the token demo's RVQ codec (the
  ceilings of what each branch can reach).

Columns: Fréchet distance to the reference clips (default offline embedding), tempo within ±8 % of the prompt's
BPM and octave errors, key and mode right (`attribute_accuracy`), the Spearman correlation of estimated with
asked-for tempo, the instrument family told apart (nearest family centroid of the real clips' mean embedding,
standardised; real clips are left out of their own centroid), and seconds of compute per clip.

    python benchmarks/demo.py                                  # the shipped checkpoints on data/demo's test split
    python benchmarks/demo.py --diffusion outputs/demo/diffusion/pipeline --token outputs/demo/token-lm/pipeline
    python benchmarks/demo.py --v1 /tmp/demo_v1/latentmusic/checkpoints/demo   # the shipped demo beside an earlier one
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import print_table, write_json  # noqa: E402

from latentmusic import LatentMusicPipeline, TokenMusicPipeline  # noqa: E402
from latentmusic.audio import load_audio, resample  # noqa: E402
from latentmusic.data.index import read_metadata  # noqa: E402
from latentmusic.evaluation import frechet_audio_distance  # noqa: E402
from latentmusic.evaluation.attributes import attribute_accuracy  # noqa: E402
from latentmusic.evaluation.embeddings import MusicFeatureEmbedding  # noqa: E402
from latentmusic.models import vae_utils  # noqa: E402

RATE = MusicFeatureEmbedding.sample_rate  # every clip is compared at 16 kHz


def reference_clips(corpus: Path, seconds: float, limit: int) -> tuple[list[torch.Tensor], list[dict]]:
    """The first `seconds` of each test-split rendition at least that long, with its metadata record."""
    clips, records = [], []
    for record in read_metadata(corpus, split="test"):
        audio, _ = load_audio(corpus / record["path"], sample_rate=RATE, channels=1)
        if audio.shape[-1] >= seconds * RATE:
            clips.append(audio[0, : int(seconds * RATE)])
            records.append(record)
        if len(clips) == limit:
            break
    if not clips:
        raise SystemExit(f"no test-split rendition of {corpus} is {seconds} s long")
    return clips, records


def untrained_copy(pipe: LatentMusicPipeline, seed: int = 0) -> LatentMusicPipeline:
    """The pipeline with freshly initialised U-Net and text encoder (same configs), the trained VAE kept."""
    torch.manual_seed(seed)
    unet = type(pipe.unet).from_config(pipe.unet.config)
    text_encoder = type(pipe.text_encoder)(pipe.text_encoder.config)
    copy = LatentMusicPipeline(vae=pipe.vae, text_encoder=text_encoder.eval(), tokenizer=pipe.tokenizer,
                               unet=unet.eval(), scheduler=pipe.scheduler)  # fmt: skip
    copy.set_progress_bar_config(disable=True)
    return copy


def generate(pipe, prompts: list[str], args, tempos: list[float] | None = None) -> tuple[list[torch.Tensor], float]:
    """One clip per prompt (seed `args.seed + i`), in batches; returns 16 kHz mono clips and seconds per clip.
    With `tempos` (one per prompt), a pipeline trained with beat grids gets them as `bpm=`."""
    clips, start = [], time.perf_counter()
    for first in range(0, len(prompts), args.batch):
        batch = prompts[first : first + args.batch]
        generators = [torch.Generator().manual_seed(args.seed + first + i) for i in range(len(batch))]
        options = dict(audio_length_in_s=args.seconds, guidance_scale=args.guidance, generator=generators)
        if isinstance(pipe, TokenMusicPipeline):
            options["top_k"] = args.top_k
        else:
            options["num_inference_steps"] = args.steps
        if tempos is not None:
            options["bpm"] = tempos[first : first + args.batch]
        with torch.inference_mode():
            audios = pipe(batch, output_type="pt", **options).audios
        for audio in audios:
            clips.append(resample_mono(audio, pipe.sample_rate)[: int(args.seconds * RATE)])
    return clips, (time.perf_counter() - start) / len(prompts)


def resample_mono(audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    return resample(audio.mean(0, keepdim=True).float(), sample_rate, RATE)[0]


def autoencode(vae, clip: torch.Tensor) -> torch.Tensor:
    """A 16 kHz reference clip through an autoencoder or codec (encode, posterior mode or codes, decode)."""
    rate = vae_utils.vae_sample_rate(vae)
    audio = resample(clip[None], RATE, rate)[None]
    return resample_mono(vae_utils.reconstruct(vae, audio)[0][0], rate)[: clip.shape[-1]]


def clip_vectors(clips: list[torch.Tensor]) -> np.ndarray:
    """One vector per clip: the mean of its window embeddings."""
    embedding = MusicFeatureEmbedding()
    return np.stack([embedding.embed_clip(clip.numpy()).mean(0) for clip in clips])


def family_accuracy(vectors: np.ndarray, families: list[str], reference: np.ndarray, reference_families: list[str],
                    leave_one_out: bool = False) -> float:  # fmt: skip
    """Share of clips whose nearest family centroid (of the standardised reference vectors) is their prompt's."""
    mean, std = reference.mean(0), reference.std(0) + 1e-8
    ref, vec = (reference - mean) / std, (vectors - mean) / std
    names = sorted(set(reference_families))
    labels = np.array(reference_families)
    right = 0
    for i, (vector, family) in enumerate(zip(vec, families)):
        distances = []
        for name in names:
            members = labels == name
            if leave_one_out:
                members[i] = False
            distances.append(np.linalg.norm(vector - ref[members].mean(0)) if members.any() else np.inf)
        right += names[int(np.argmin(distances))] == family
    return right / len(families)


def score(name: str, clips: list[torch.Tensor], records: list[dict], reference: list[torch.Tensor],
          reference_vectors: np.ndarray, seconds_per_clip: float | None, backend: str = "auto") -> dict:  # fmt: skip
    fd = frechet_audio_distance((clips, RATE), (reference, RATE), progress=False)
    attributes = attribute_accuracy((clips, RATE), records, backend=backend)
    summary = attributes["summary"]
    families = [r["family"] for r in records]
    is_real = name == "real"
    vectors = reference_vectors if is_real else clip_vectors(clips)
    return {
        "model": name,
        "fd": fd,
        "tempo_acc": summary["tempo_accuracy"],
        "tempo_octave": summary["tempo_octave_error_rate"],
        "tempo_metrical": summary["tempo_metrical_accuracy"],
        # the same estimates against the other prompts' targets: what a model that ignores the prompt scores
        "tempo_metrical_chance": summary["tempo_metrical_accuracy_chance"],
        "tempo_spearman": summary["tempo_spearman"],
        "tempo_level_spearman": summary["tempo_level_spearman"],
        "tempo_backend": attributes["backend"],
        "key_acc": summary["key_accuracy"],
        "key_chance": summary["key_accuracy_chance"],
        "mode_acc": summary["mode_accuracy"],
        "key_mirex": summary["key_mirex_score"],
        "family_acc": family_accuracy(vectors, families, reference_vectors, families, leave_one_out=is_real),
        "s_per_clip": seconds_per_clip,
        "clips": attributes["clips"],
    }


def save_examples(generated: dict[str, list[torch.Tensor]], records: list[dict], folder: Path) -> None:
    """Spectrograms of the real clip and each model's clip for the fastest and slowest test prompts and two more
    of other instrument families."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latentmusic.training.media import spectrogram_figure

    by_tempo = sorted(range(len(records)), key=lambda i: records[i]["bpm"])
    chosen = [by_tempo[-1], by_tempo[0]]
    for i in by_tempo[len(by_tempo) // 3 :: max(1, len(by_tempo) // 3)]:
        if len(chosen) < 4 and records[i]["family"] not in {records[j]["family"] for j in chosen}:
            chosen.append(i)
    folder.mkdir(parents=True, exist_ok=True)
    for n, i in enumerate(chosen):
        audios = {name: clips[i] for name, clips in generated.items()}
        fig = spectrogram_figure(audios, RATE, title=records[i]["captions"][0])
        fig.savefig(folder / f"example-{n}.png", dpi=80)
        plt.close(fig)
        print(f"wrote {folder / f'example-{n}.png'}: {records[i]['captions'][0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--diffusion", default="latentmusic/demo", help="LatentMusicPipeline folder or name")
    parser.add_argument("--token", default="latentmusic/demo-token-lm", help="TokenMusicPipeline folder or name")
    parser.add_argument(
        "--v1",
        default="",
        help="an earlier diffusion demo's folder, scored in the same run as a 'diffusion v1' row (e.g. extracted "
        "with `git archive <commit> latentmusic/checkpoints/demo | tar -x -C /tmp/demo_v1`)",
    )
    parser.add_argument(
        "--earlier",
        action="append",
        default=[],
        metavar="LABEL=FOLDER",
        help="more diffusion demos scored in the same run, each as a 'diffusion LABEL' row (repeatable; e.g. "
        "`--earlier step2000=/tmp/demo_step2000` beside `--v1`)",
    )
    parser.add_argument("--corpus", default="data/demo", help="the rendered corpus (its test split is used)")
    parser.add_argument("--clips", type=int, default=48, help="test renditions at most")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=25, help="diffusion sampling steps")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--top-k", type=int, default=64, help="token LM top-k sampling")
    parser.add_argument("--batch", type=int, default=8, help="prompts per pipeline call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tempo-backend",
        default="auto",
        choices=["auto", "essentia", "librosa"],
        help="tempo/key estimator (auto: essentia when installed; it finds the rendered tempo more often, "
        "see docs/evaluation.md; demo v1 was scored with librosa)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared machine)")
    parser.add_argument("--out", default="benchmarks/results/demo.json")
    parser.add_argument("--figures", default="docs/model-card", help="spectrogram pictures of examples ('' for none)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    reference, records = reference_clips(Path(args.corpus), args.seconds, args.clips)
    prompts = [r["captions"][0] for r in records]
    print(f"{len(prompts)} test-split prompts, e.g. {prompts[0]!r}", flush=True)
    reference_vectors = clip_vectors(reference)
    diffusion = LatentMusicPipeline.from_pretrained(args.diffusion)
    diffusion.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        through_vae = [autoencode(diffusion.vae, clip) for clip in reference]
    rows = [
        score("real", reference, records, reference, reference_vectors, None, args.tempo_backend),
        score("real → VAE", through_vae, records, reference, reference_vectors, None, args.tempo_backend),
    ]
    candidates = [("diffusion", diffusion), ("untrained", untrained_copy(diffusion))]
    earlier = [("v1", args.v1)] if args.v1 else []
    for spec in args.earlier:
        label, sep, folder = spec.partition("=")
        if not (sep and label and folder):
            parser.error(f"--earlier takes LABEL=FOLDER, got {spec!r}; e.g. --earlier step2000=/tmp/demo_step2000")
        earlier.append((label, folder))
    for label, folder in reversed(earlier):  # after the shipped demo, in the order given
        pipe = LatentMusicPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        candidates.insert(1, (f"diffusion {label}", pipe))
    if args.token:
        token = TokenMusicPipeline.from_pretrained(args.token)
        token.set_progress_bar_config(disable=True)
        candidates.insert(1, ("token LM", token))
        with torch.inference_mode():
            through_codec = [autoencode(token.codec, clip) for clip in reference]
        rows.append(
            score("real → codec", through_codec, records, reference, reference_vectors, None, args.tempo_backend)
        )
    # a model trained with beat grids is scored twice: from the text alone, and with the prompt's tempo as bpm=
    gridded = [
        (f"{name} + beat grid", pipe)
        for name, pipe in candidates
        if isinstance(pipe, LatentMusicPipeline) and pipe.trained_with_beat_grid and name != "untrained"
    ]
    generated = {"real": reference}
    for name, pipe in candidates + gridded:
        tempos = [float(r["bpm"]) for r in records] if name.endswith(" + beat grid") else None
        generated[name], seconds_per_clip = generate(pipe, prompts, args, tempos)
        rows.append(
            score(name, generated[name], records, reference, reference_vectors, seconds_per_clip, args.tempo_backend)
        )
        print(f"{name}: done ({seconds_per_clip:.2f} s per clip)", flush=True)
    if args.figures:
        save_examples(generated, records, Path(args.figures))
    columns = ["model", "fd", "tempo_acc", "tempo_metrical", "tempo_metrical_chance", "tempo_level_spearman",
               "key_acc", "key_chance", "mode_acc", "key_mirex", "family_acc", "s_per_clip"]  # fmt: skip
    print_table(rows, columns)
    families = sorted({r["family"] for r in records})
    write_json(args.out, "demo", rows, prompts=prompts, families=families, chance_family=1 / len(families),
               settings=vars(args))  # fmt: skip


if __name__ == "__main__":
    main()
