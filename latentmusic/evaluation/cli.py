"""The ``latentmusic evaluate`` subcommand and :func:`evaluate`, its Python equivalent.

Compares a folder of generated clips with a reference folder (Fréchet distance in an embedding space)
and, given a ``metadata.jsonl`` for the generated clips, checks their tempo and key against the targets
and their CLAP score against the prompts; given an autoencoder, scores how well it reconstructs the
reference clips. The result is one JSON object (schema version
:data:`SCHEMA_VERSION`, keys :data:`RESULT_KEYS`; see ``docs/evaluation.md``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
RESULT_KEYS = (
    "schema_version",
    "generated",
    "reference",
    "embedding",
    "n_generated",
    "n_reference",
    "frechet_distance",
    "attributes",
    "clap_score",
    "reconstruction",
)


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` options to a parser.

    Args:
        parser: The (sub)parser to add them to.
    """
    parser.add_argument("--generated", required=True, help="folder of generated clips (searched recursively)")
    parser.add_argument("--reference", help="folder of reference clips, e.g. the corpus's test split")
    parser.add_argument(
        "--reference-stats",
        help="cache of the reference statistics (.npz): read if it exists (then --reference may be left out), "
        "else computed from --reference and written",
    )
    parser.add_argument(
        "--metadata",
        help="metadata.jsonl for the generated clips (paths relative to its folder): its bpm and key (or tonic "
        "and mode) are the attribute targets, its first caption the prompt for --clap",
    )
    parser.add_argument(
        "--embedding",
        default="default",
        help="embedding for the Fréchet distance: default (offline librosa features), clap:PATH or encodec:PATH "
        "(local checkpoint folders)",
    )
    parser.add_argument("--clap", help="local CLAP checkpoint folder for the CLAP score (needs --metadata)")
    parser.add_argument(
        "--autoencoder",
        help="autoencoder (its folder, a pipeline folder or a shipped name) whose reconstruction of the --reference "
        "clips to score: SI-SDR, multi-resolution STFT and mel distance",
    )
    parser.add_argument("--out", default="evaluation.json", help="JSON file to write the results to")
    parser.add_argument("--batch-size", type=int, default=8, help="clips embedded at once")
    parser.add_argument("--tempo-tolerance", type=float, default=0.08, help="relative tolerance of a right tempo")
    parser.add_argument(
        "--backend", default="auto", choices=("auto", "essentia", "librosa"), help="tempo and key estimators"
    )
    parser.add_argument("--device", default="cpu", help="torch device for the CLAP and EnCodec models")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _reference_statistics(
    reference: str | os.PathLike | None,
    reference_stats: str | os.PathLike | None,
    embedding: Any,
    batch_size: int,
    progress: bool,
) -> Any:
    from .frechet import EmbeddingStatistics, compute_statistics

    if reference_stats is not None and Path(reference_stats).is_file():
        stats = EmbeddingStatistics.load(reference_stats)
        if stats.embedding != embedding.name:
            raise ValueError(
                f"{reference_stats} holds statistics of the {stats.embedding!r} embedding, not {embedding.name!r}; "
                "delete it or pass another --reference-stats path"
            )
        return stats
    if reference is None:
        raise ValueError("give --reference (a folder of reference clips) or an existing --reference-stats file")
    stats = compute_statistics(reference, embedding, batch_size, progress, name="reference")
    if reference_stats is not None:
        stats.save(reference_stats)
    return stats


def _metadata_clips(metadata: str | os.PathLike) -> tuple[list[Path], list[dict[str, Any]]]:
    from ..data.index import read_metadata

    metadata = Path(metadata)
    folder = metadata if metadata.is_dir() else metadata.parent
    records = read_metadata(metadata)
    return [folder / record["path"] for record in records], records


def reconstruction_scores(
    autoencoder: str | os.PathLike, reference: str | os.PathLike, progress: bool = True
) -> dict[str, Any]:
    """Mean reconstruction metrics of an autoencoder over the clips of a folder (each clip whole).

    Args:
        autoencoder: Its folder, a pipeline folder or a shipped checkpoint's name (see
            :func:`~latentmusic.models.vae_utils.load_vae`).
        reference: Folder of clips (searched recursively); they are resampled to the autoencoder's rate.
        progress: Show a progress bar.

    Returns:
        ``autoencoder``, ``n_clips`` and the means of ``si_sdr`` (dB), ``mrstft`` and ``mel``.
    """
    import torch
    from tqdm.auto import tqdm

    from ..audio import load_audio
    from ..models import vae_utils
    from .audio_sets import list_audio_files
    from .reconstruction import reconstruction_metrics

    vae = vae_utils.load_vae(autoencoder).eval()
    rate, channels = vae_utils.vae_sample_rate(vae), vae_utils.vae_audio_channels(vae)
    rows = []
    for path in tqdm(list_audio_files(reference), desc="reconstruction", disable=not progress):
        audio, _ = load_audio(path, sample_rate=rate, channels=channels)
        with torch.inference_mode():
            estimate = vae_utils.reconstruct(vae, audio[None])[0]
        rows.append(reconstruction_metrics(audio[None], estimate, rate))
    means = {key: sum(row[key] for row in rows) / len(rows) for key in rows[0]}
    return {"autoencoder": str(autoencoder), "n_clips": len(rows), **means}


def evaluate(
    generated: str | os.PathLike,
    reference: str | os.PathLike | None = None,
    reference_stats: str | os.PathLike | None = None,
    metadata: str | os.PathLike | None = None,
    embedding: str = "default",
    clap: str | os.PathLike | None = None,
    batch_size: int = 8,
    tempo_tolerance: float = 0.08,
    backend: str = "auto",
    device: str = "cpu",
    progress: bool = True,
    autoencoder: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Evaluate a folder of generated clips (what ``latentmusic evaluate`` runs).

    Args:
        generated: Folder of generated clips (searched recursively).
        reference: Folder of reference clips; may be ``None`` when ``reference_stats`` exists.
        reference_stats: ``.npz`` cache of the reference statistics: read if it exists, else written.
        metadata: ``metadata.jsonl`` of the generated clips (paths relative to its folder) with targets
            (``bpm``, ``key`` or ``tonic`` + ``mode``) and captions; ``None`` skips attributes and CLAP score.
        embedding: ``"default"``, ``"clap:PATH"`` or ``"encodec:PATH"`` (see
            :func:`~latentmusic.evaluation.embeddings.make_embedding`).
        clap: CLAP checkpoint folder for the CLAP score (needs ``metadata``); ``None`` skips it.
        batch_size: Clips embedded at once.
        tempo_tolerance: Relative tolerance of a right tempo.
        backend: Tempo and key estimators: ``"auto"``, ``"essentia"`` or ``"librosa"``.
        device: Torch device for the CLAP and EnCodec models.
        progress: Show progress bars.
        autoencoder: An autoencoder whose reconstruction of the ``reference`` clips to score
            (:func:`reconstruction_scores`); ``None`` skips it.

    Returns:
        The results, with exactly the keys :data:`RESULT_KEYS` (``attributes``, ``clap_score`` and
        ``reconstruction`` are ``None`` when skipped).

    Raises:
        ValueError: If an input is missing, empty or inconsistent (the message says which and how to fix it).
        FileNotFoundError: If a folder or file does not exist.
    """
    from .attributes import attribute_accuracy
    from .clap import clap_score
    from .embeddings import make_embedding
    from .frechet import compute_statistics

    if clap is not None and metadata is None:
        raise ValueError("the CLAP score needs each clip's prompt: give --metadata with captions along with --clap")
    if autoencoder is not None and reference is None:
        raise ValueError("--autoencoder reconstructs the --reference clips: give --reference (a folder of audio)")
    model = make_embedding(embedding, device=device)
    generated_stats = compute_statistics(generated, model, batch_size, progress, name="generated")
    generated_stats.check_enough("generated")
    reference_stats_ = _reference_statistics(reference, reference_stats, model, batch_size, progress)
    reference_stats_.check_enough("reference")
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "generated": str(generated),
        "reference": str(reference if reference is not None else reference_stats),
        "embedding": model.name,
        "n_generated": generated_stats.n_clips,
        "n_reference": reference_stats_.n_clips,
        "frechet_distance": generated_stats.frechet_distance(reference_stats_),
        "attributes": None,
        "clap_score": None,
        "reconstruction": None,
    }
    if metadata is not None:
        paths, records = _metadata_clips(metadata)
        results["attributes"] = attribute_accuracy(
            paths, records, tempo_tolerance=tempo_tolerance, backend=backend, progress=progress
        )
        if clap is not None:
            prompts = [record["captions"][0] for record in records]
            results["clap_score"] = clap_score(paths, prompts, clap, batch_size=batch_size)
    if autoencoder is not None:
        results["reconstruction"] = reconstruction_scores(autoencoder, reference, progress)
    return results


def _print_summary(results: dict[str, Any]) -> None:
    print(
        f"Fréchet distance ({results['embedding']}): {results['frechet_distance']:.4g} "
        f"({results['n_generated']} generated vs {results['n_reference']} reference clips)"
    )
    if results["attributes"] is not None:
        summary = results["attributes"]["summary"]
        tempo = ("tempo_accuracy", "tempo_octave_error_rate", "tempo_metrical_accuracy", "tempo_spearman")
        for name in (*tempo, "key_accuracy", "mode_accuracy"):
            if summary[name] is not None:
                print(f"{name}: {summary[name]:.3f}")
    if results["clap_score"] is not None:
        print(f"CLAP score: {results['clap_score']:.4f}")
    if results["reconstruction"] is not None:
        rec = results["reconstruction"]
        print(f"reconstruction: SI-SDR {rec['si_sdr']:.2f} dB, MR-STFT {rec['mrstft']:.3f}, mel {rec['mel']:.3f}")


def run_evaluate(args: argparse.Namespace) -> int:
    """Run ``latentmusic evaluate`` with parsed arguments and write the JSON results.

    Args:
        args: Namespace from a parser set up by :func:`add_evaluate_arguments`.

    Returns:
        The exit status, 0.
    """
    results = evaluate(
        args.generated,
        reference=args.reference,
        reference_stats=args.reference_stats,
        metadata=args.metadata,
        embedding=args.embedding,
        clap=args.clap,
        batch_size=args.batch_size,
        tempo_tolerance=args.tempo_tolerance,
        backend=args.backend,
        device=args.device,
        progress=not args.no_progress,
        autoencoder=args.autoencoder,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    _print_summary(results)
    print(f"wrote {out}")
    return 0
