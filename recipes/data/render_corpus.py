"""Render the music21 corpus to FLAC files and a captioned metadata.jsonl (same as `latentmusic render-corpus`).

    python recipes/data/render_corpus.py --out data/corpus --max-pieces 20

Re-running the same command skips what is already rendered; see `latentmusic.data.corpus` for the options,
the output layout and the metadata schema.
"""

import argparse

from latentmusic.data.cli import add_render_arguments, render_corpus_from_args

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_render_arguments(parser)
    render_corpus_from_args(parser.parse_args())
