"""Split a rendered corpus by instrument family into the folders `benchmarks/lora_shift.py` compares (docs/lora.md).

`<out>/<family>` holds the family's renditions: its valid and test renditions, and those of one piece in four
(by a hash of `piece_id`) of its train split, are held out (`split: valid`), the rest train. `<out>/others` holds
every other family's valid and test renditions (all `split: valid`), the control set. Audio files are symlinked.

    python benchmarks/lora_family_folders.py --render data/lora-render --family plucked --out data/lora-family
"""

from __future__ import annotations

import argparse
import json
import os
import zlib
from pathlib import Path

from latentmusic.data.index import read_metadata


def write_folder(records: list[dict], source: Path, folder: Path) -> None:
    for record in records:
        link = folder / record["path"]
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            os.symlink((source / record["path"]).resolve(), link)
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    train = sum(r["split"] == "train" for r in records)
    print(f"{folder}: {train} train, {len(records) - train} held out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--render", required=True, help="a folder written by recipes/data/render_corpus.py")
    parser.add_argument("--family", default="plucked")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    source, out = Path(args.render), Path(args.out)
    records = read_metadata(source, split=None)
    family = []
    for record in (r for r in records if r["family"] == args.family):
        held_out = record["split"] != "train" or zlib.crc32(record["piece_id"].encode()) % 4 == 0
        family.append({**record, "split": "valid" if held_out else "train"})
    others = [{**r, "split": "valid"} for r in records if r["family"] != args.family and r["split"] != "train"]
    write_folder(family, source, out / args.family)
    write_folder(others, source, out / "others")


if __name__ == "__main__":
    main()
