"""Does the rendered audio carry the tempo its label states? The tempo metric on real rendered clips, per collection.

Renders (or reuses) a sample of the corpus with its MIDI kept, then for every clip checks the MIDI (one tempo, equal
to the label's ``bpm`` in quarter notes per minute) and estimates the tempo of the audio with each backend of
`latentmusic.evaluation.attributes`. Per collection and per metre it reports the exact-level rate (within ±8 % of the
quarter-note label), the metrical-level rate (right up to x2, x1/2, x3, x1/3, x1.5, x2/3), each error, the rate
against the felt beat (``beat_bpm``: the dotted quarter of 6/8, the half note of 2/2), and the Spearman correlation
of estimates and labels, raw and after the metrical-level correction.

    python benchmarks/tempo_truth.py      # renders 20 pieces of each song collection (30 s), analyses 15 s of each
    python benchmarks/tempo_truth.py --corpus data/corpus --max-clips 200   # an already rendered corpus
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import print_table, write_json  # noqa: E402

from latentmusic.audio import load_audio  # noqa: E402
from latentmusic.data.corpus import METADATA_FILE, render_corpus  # noqa: E402
from latentmusic.data.index import read_metadata  # noqa: E402
from latentmusic.data.rendering import beat_quarters  # noqa: E402
from latentmusic.evaluation.attributes import ANALYSIS_RATES, essentia_available, estimate_tempo  # noqa: E402
from latentmusic.evaluation.scoring import level_corrected_tempo, tempo_match, tempo_summary  # noqa: E402

COLLECTIONS = ("bach", "palestrina", "ryans", "oneills", "essen")


def midi_tempi(path: Path) -> set[float]:
    """The tempi (quarter notes per minute) of a MIDI file's set-tempo events."""
    from music21 import midi

    file = midi.MidiFile()
    file.open(str(path))
    file.read()
    file.close()
    events = [e for track in file.tracks for e in track.events if e.type == midi.MetaEvents.SET_TEMPO]
    return {round(60e6 / int.from_bytes(e.data, "big"), 2) for e in events}


def clip_rows(root: Path, records: list[dict], backends: list[str], seconds: float, tolerance: float) -> list[dict]:
    rows = []
    for record in records:
        midi = (root / record["path"]).with_suffix(".mid")
        row = {key: record.get(key) for key in ("path", "collection", "meter", "bpm", "beat_unit", "beat_bpm")}
        row["midi_tempi"] = sorted(midi_tempi(midi)) if midi.is_file() else None
        for backend in backends:
            audio, rate = load_audio(root / record["path"], sample_rate=ANALYSIS_RATES[backend], channels=1)
            bpm = estimate_tempo(audio[..., : int(seconds * rate)], rate, backend)
            row[backend] = {
                "target_bpm": float(record["bpm"]),
                "bpm": bpm,
                "tempo_match": tempo_match(bpm, record["bpm"], tolerance),
                "level_bpm": level_corrected_tempo(bpm, record["bpm"], tolerance),
                "beat_match": tempo_match(bpm, record["beat_bpm"], tolerance) if record.get("beat_bpm") else None,
            }
        rows.append(row)
        print(record["path"], {b: round(row[b]["bpm"], 1) for b in backends}, record["bpm"], flush=True)
    return rows


def summarise(rows: list[dict], backends: list[str], group: str) -> list[dict]:
    groups = collections.defaultdict(list)
    for row in rows:
        groups[row[group]].append(row)
        groups["all"].append(row)
    table = []
    for name, members in sorted(groups.items(), key=lambda item: (item[0] == "all", str(item[0]))):
        for backend in backends:
            summary = tempo_summary([row[backend] for row in members])
            errors = {k: v for k, v in summary["tempo_octave_errors"].items() if v}
            table.append(
                {
                    group: name,
                    "backend": backend,
                    "clips": len(members),
                    "midi_one_tempo_eq_label": sum(r["midi_tempi"] == [float(r["bpm"])] for r in members),
                    "exact": summary["tempo_accuracy"],
                    "metrical": summary["tempo_metrical_accuracy"],
                    "wrong": summary["tempo_wrong_rate"],
                    "errors": " ".join(f"{k}:{v:.2f}" for k, v in errors.items()),
                    "beat_exact": summary["beat_accuracy"],
                    "spearman": summary["tempo_spearman"],
                    "level_spearman": summary["tempo_level_spearman"],
                }
            )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="outputs/tempo-truth-corpus", help="corpus folder (rendered if empty)")
    parser.add_argument("--pieces", type=int, default=100, help="pieces to render, interleaving the collections")
    parser.add_argument("--collections", nargs="+", default=list(COLLECTIONS))
    parser.add_argument("--max-seconds", type=float, default=30.0, help="crop of the rendered pieces")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of each clip analysed")
    parser.add_argument("--max-clips", type=int, default=None)
    parser.add_argument("--tolerance", type=float, default=0.08)
    parser.add_argument("--out", default="benchmarks/results/tempo_truth.json")
    args = parser.parse_args()

    root = Path(args.corpus)
    if not (root / METADATA_FILE).is_file():
        render_corpus(
            root, max_pieces=args.pieces, collections=args.collections, max_seconds=args.max_seconds, keep_midi=True
        )
    records = read_metadata(root / METADATA_FILE)
    records = [r for r in records if r["collection"] in args.collections][: args.max_clips]
    for record in records:  # a corpus rendered before the metadata named the beat
        if "beat_unit" not in record:
            from music21 import meter

            signature = meter.TimeSignature(record["meter"]) if record["meter"] else None
            record["beat_unit"] = beat_quarters(signature)
            record["beat_bpm"] = round(record["bpm"] / record["beat_unit"], 2)
    backends = ["essentia", "librosa"] if essentia_available() else ["librosa"]
    rows = clip_rows(root, records, backends, args.seconds, args.tolerance)
    by_collection = summarise(rows, backends, "collection")
    by_meter = summarise(rows, backends, "meter")
    print_table(by_collection)
    print()
    print_table(by_meter)
    write_json(
        args.out, "tempo_truth", by_collection, by_meter=by_meter, clips=rows, corpus=str(root), seconds=args.seconds
    )


if __name__ == "__main__":
    main()
