#!/usr/bin/env python
"""Draw a fresh label-evaluation round: corpus chunks not in any earlier round, for independent annotators.

Chunks are cut as the pipeline cuts them (``scripts/build_label_eval_sample.load_books``). ``--size`` passages
are spread over the books as evenly as possible, each book's passages drawn at random (seeded by
``<seed>:draw:<book stem>``) among its chunks that no earlier round (``--exclude`` files) holds. Annotators get
opaque ids (``r<round>-NNN``) in a random order, so neither the book nor the position is shown; the mapping to
chunk ids stays in ``passages.json``. Nothing here runs the analyzer.

Usage::

    PYTHONPATH=$PWD python scripts/draw_label_eval_round.py --round 3 --seed 20261202 --size 300 \\
        --exclude llava_sensing_pipeline_tests/data/label_eval/passages.json \\
        --exclude llava_sensing_pipeline_tests/data/label_eval/round2/passages.json --out /tmp/round3
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_label_eval_sample import DEFAULT_CORPUS, load_books  # noqa: E402
from build_label_eval_sample import _random_order as ordered  # noqa: E402  (random() only: stable across Pythons)


def draw(books, size: int, seed: int, excluded: set[str], round_no: int) -> list[dict]:
    base, extra = divmod(size, len(books))
    lucky = set(ordered([b.stem for b in books], random.Random(f"{seed}:books"))[:extra])
    rows = []
    for book in books:
        k = base + (book.stem in lucky)
        free = [c for c in book.chunks if f"{book.stem}_{c.index}" not in excluded]
        for c in sorted(ordered(free, random.Random(f"{seed}:draw:{book.stem}"))[:k], key=lambda c: c.index):
            rows.append({"id": f"{book.stem}_{c.index}", "source_path": book.source_path, "chunk_index": c.index,
                         "char_start": c.char_start, "char_end": c.char_end, "text": c.text})
    rows = ordered(rows, random.Random(f"{seed}:order"))
    for n, row in enumerate(rows, 1):
        row["opaque_id"] = f"r{round_no}-{n:03d}"
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--round", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--exclude", type=Path, action="append", default=[])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    excluded = {row["id"] for path in args.exclude for row in json.loads(path.read_text(encoding="utf-8"))}
    rows = draw(load_books(args.corpus.resolve()), args.size, args.seed, excluded, args.round)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "passages.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    half = (len(rows) + 1) // 2
    for name, part in (("part1", rows[:half]), ("part2", rows[half:])):
        lines = [json.dumps({"id": r["opaque_id"], "text": r["text"]}, ensure_ascii=False) for r in part]
        (args.out / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(rows)} passages from {len({r['source_path'] for r in rows})} books, none of {len(excluded)} "
          f"excluded; wrote passages.json, part1.jsonl, part2.jsonl under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
