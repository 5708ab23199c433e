"""The command line of the corpus renderer: ``latentmusic render-corpus`` and ``recipes/data/render_corpus.py``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .corpus import COLLECTION_NAMES, SPLITS, render_corpus
from .index import read_metadata


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the renderer's options (shared by ``latentmusic render-corpus`` and ``recipes/data/render_corpus.py``).

    Args:
        parser: The parser to extend.
    """
    parser.add_argument("--out", default="data/corpus", help="corpus folder (default: data/corpus)")
    parser.add_argument("--max-pieces", type=int, default=None, help="render only the first N pieces (mixed)")
    parser.add_argument("--renditions-per-piece", type=int, default=1, help="instrument/tempo/key variants")
    parser.add_argument(
        "--tempo-variants", type=int, default=0, help="tempo-only variants of each train rendition (default: 0)"
    )
    parser.add_argument("--collections", nargs="+", choices=COLLECTION_NAMES, default=None, help="default: all")
    parser.add_argument("--sample-rate", type=int, default=24000, help="Hz (default: 24000)")
    parser.add_argument("--channels", type=int, choices=(1, 2), default=1, help="1 (mono) or 2 (stereo)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="crop longer pieces (default: 60)")
    parser.add_argument("--seed", type=int, default=0, help="varies the renditions")
    parser.add_argument("--workers", type=int, default=1, help="parallel rendering processes")


def render_corpus_from_args(args: argparse.Namespace) -> Path:
    """Run :func:`render_corpus` with parsed :func:`add_render_arguments` options and print a summary.

    Args:
        args: The parsed options.

    Returns:
        The path of ``metadata.jsonl``.
    """
    metadata = render_corpus(
        args.out,
        max_pieces=args.max_pieces,
        renditions_per_piece=args.renditions_per_piece,
        tempo_variants=args.tempo_variants,
        collections=args.collections,
        sample_rate=args.sample_rate,
        channels=args.channels,
        max_seconds=args.max_seconds,
        seed=args.seed,
        workers=args.workers,
    )
    records = read_metadata(metadata)
    hours = {split: sum(r["duration"] for r in records if r["split"] == split) / 3600 for split in SPLITS}
    print(f"{metadata}: {len(records)} renditions, " + ", ".join(f"{s} {h:.2f} h" for s, h in hours.items()))
    for record in records[:3]:
        print(f"  {record['path']}: {record['captions'][0]}")
    return metadata
