#!/usr/bin/env python
"""Draw the label-evaluation sample: 340 corpus chunks for independent annotators, with no labels.

The passages are chunks exactly as the pipeline cuts them (``read_novel`` then ``chunk_text`` with the
default settings 500/200/1000), drawn from every ``*.txt`` novel of the corpus (listed and sorted as
``discover_novels`` lists them). The draw is stratified by book: 340 over 14 books is 24 each with the
4 remaining passages going to 4 books picked at random, so every book gives 24 or 25. Each book's
passages are then split into ``dev`` (may be used to tune the analyzer) and ``heldout`` (never used
for tuning), 40 % / 60 % overall (136 / 204), stratified by book.

Nothing here runs the analyzer: the output holds no label of any kind.

Writes, under ``llava_sensing_pipeline_tests/data/label_eval/``:

* ``passages.json``: a JSON list (UTF-8, indent 1) of ``{id, source_path, chunk_index, char_start,
  char_end, split, text}``; ``id`` is ``<file stem>_<chunk_index>``, ``source_path`` is
  ``<genre folder>/<file name>`` and ``[char_start, char_end)`` is the chunk's span of the novel's
  body text (``read_novel(...).text``).
* ``batches/part1.jsonl`` and ``batches/part2.jsonl``: the first and second half of ``passages.json``
  (by position), one ``{"id": ..., "text": ...}`` per line, for the annotators.

Order: the list is in annotation order, not book order. Each book's passages are dealt half to
part 1 and half to part 2 (dev and heldout each halved), and each part is then shuffled; the list is
part 1 followed by part 2. So each half holds 11 to 13 passages of every book and exactly half of each
split (68 dev and 102 heldout), and an annotator never reads a book's passages one after another in book order.

Randomness: every draw uses only ``random.Random(...).random()``, whose sequence for a given seed
Python guarantees across versions (unlike ``sample``/``shuffle``), with one stream per purpose and
book seeded by a string such as ``"20261130:draw:A001_The_Awakening"``. The same corpus therefore
always gives the same bytes. When the corpus holds ``MANIFEST.tsv``, each file's sha256 is checked
against it first, so a changed corpus is refused instead of silently giving a different sample.

Usage (from the repository root)::

    PYTHONPATH=$PWD python scripts/build_label_eval_sample.py [--corpus DIR] [--out DIR] [--check]

``--check`` rebuilds in memory and exits 1 when the files on disk differ (nothing is written).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = (REPO_ROOT / ".." / "shared" / "corpus").resolve()
DEFAULT_OUT = REPO_ROOT / "llava_sensing_pipeline_tests" / "data" / "label_eval"

SEED = 20261130
SAMPLE_SIZE = 340  # even, so the two batches are equal halves
DEV_SHARE = 0.4
SPLITS = ("dev", "heldout")
BATCH_NAMES = ("part1", "part2")


class SampleError(RuntimeError):
    """The corpus cannot be sampled; the message says why and what to do."""


@dataclass(frozen=True)
class Book:
    source_path: str  # "<genre>/<file>.txt"
    stem: str
    chunks: list  # TextChunk


def _rng(purpose: str, name: str = "") -> random.Random:
    return random.Random(f"{SEED}:{purpose}:{name}")


def _random_order(items: list, rng: random.Random) -> list:
    """``items`` in a random order drawn with ``rng.random()`` only (stable across Python versions)."""
    keys = [rng.random() for _ in items]
    return [items[i] for i in sorted(range(len(items)), key=keys.__getitem__)]


def _largest_remainder(total: int, quotas: dict[str, float], purpose: str) -> dict[str, int]:
    """Integer shares of ``total`` close to ``quotas`` (which sum to ``total``); remainders decide who
    gets the leftover units, exact ties broken in a seeded random order."""
    counts = {name: int(q + 1e-9) for name, q in quotas.items()}
    left = total - sum(counts.values())
    tie_order = _random_order(sorted(quotas), _rng(purpose))
    rank = {name: i for i, name in enumerate(tie_order)}
    by_remainder = sorted(quotas, key=lambda name: (-(round(quotas[name] - counts[name], 9)), rank[name]))
    for name in by_remainder[:left]:
        counts[name] += 1
    return counts


def check_manifest(corpus: Path, books: list[str]) -> None:
    """Refuse when ``MANIFEST.tsv`` exists and does not list exactly these files with these sha256."""
    manifest = corpus / "MANIFEST.tsv"
    if not manifest.is_file():
        return
    with manifest.open(encoding="utf-8", newline="") as handle:
        expected = {f"{row['genre']}/{row['file']}": row["sha256"] for row in csv.DictReader(handle, delimiter="\t")}
    if sorted(expected) != sorted(books):
        missing = sorted(set(expected) - set(books))
        extra = sorted(set(books) - set(expected))
        raise SampleError(f"corpus {corpus} does not match its MANIFEST.tsv (missing: {missing or 'none'}, "
                          f"not in the manifest: {extra or 'none'}); restore the corpus before sampling")
    for rel in books:
        digest = hashlib.sha256((corpus / rel).read_bytes()).hexdigest()
        if digest != expected[rel]:
            raise SampleError(f"{corpus / rel} has sha256 {digest}, MANIFEST.tsv says {expected[rel]}; "
                              "restore the file before sampling (the sample is defined on the manifest's corpus)")


def load_books(corpus: Path) -> list[Book]:
    """Every novel of the corpus, in ``discover_novels`` order, cut as the pipeline cuts it."""
    from llava_sensing_pipeline.partitions import discover_novels
    from llava_sensing_pipeline.settings import PipelineSettings
    from llava_sensing_pipeline.text import chunk_text, read_novel

    if not corpus.is_dir():
        raise SampleError(f"corpus folder {corpus} does not exist; pass --corpus with the folder that holds "
                          "Modernist_Novel/ and Travel_Novel/ (the shared corpus, normally ../shared/corpus)")
    files = discover_novels(corpus)
    if not files:
        raise SampleError(f"corpus folder {corpus} holds no .txt novels; pass --corpus with the shared corpus")
    check_manifest(corpus, [f.relative_path for f in files])
    settings = PipelineSettings()
    books = []
    for f in files:
        novel = read_novel(corpus / f.relative_path)
        chunks = chunk_text(novel.text, settings.chunk_chars, settings.min_chunk_chars, settings.max_chunk_chars)
        books.append(Book(f.relative_path, Path(f.relative_path).stem, chunks))
    return books


def draw(books: list[Book]) -> list[dict]:
    """The sample as ``passages.json`` rows, in annotation order (part 1, then part 2)."""
    if SAMPLE_SIZE < len(books):
        raise SampleError(f"{len(books)} books are more than the {SAMPLE_SIZE} passages to draw")
    stems = [b.stem for b in books]
    if len(set(stems)) != len(stems):
        raise SampleError("two corpus files share a file stem, so passage ids would clash; rename one")
    per_book = _largest_remainder(SAMPLE_SIZE, {b.stem: SAMPLE_SIZE / len(books) for b in books}, "books")
    dev_per_book = _largest_remainder(round(SAMPLE_SIZE * DEV_SHARE),
                                      {b.stem: per_book[b.stem] * DEV_SHARE for b in books}, "dev")
    groups: list[list[dict]] = []  # one per book and split, each in a random order
    for book in books:
        k = per_book[book.stem]
        if k > len(book.chunks):
            raise SampleError(f"{book.source_path} has {len(book.chunks)} chunks, fewer than the {k} to draw")
        chosen = sorted(_random_order(list(range(len(book.chunks))), _rng("draw", book.stem))[:k])
        dev = set(_random_order(chosen, _rng("split", book.stem))[: dev_per_book[book.stem]])
        rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
        for i in chosen:
            c = book.chunks[i]
            split = "dev" if i in dev else "heldout"
            rows[split].append({
                "id": f"{book.stem}_{c.index}", "source_path": book.source_path, "chunk_index": c.index,
                "char_start": c.char_start, "char_end": c.char_end, "split": split, "text": c.text,
            })
        groups.extend(_random_order(rows[split], _rng("deal", f"{book.stem}:{split}")) for split in SPLITS)
    # Each group is halved between the parts. Of a split's groups with an odd count, a random half give
    # their extra passage to part 1 and the rest to part 2 (they are even in number, since each split's
    # total is even), so the parts hold equal numbers of each split and differ by at most one passage per
    # book and split.
    extra_to_first: set[int] = set()
    for split in SPLITS:
        odd = [n for n, g in enumerate(groups) if len(g) % 2 and g[0]["split"] == split]
        if len(odd) % 2:
            raise SampleError(f"the {split} split has an odd size, so it cannot be halved between the batches")
        extra_to_first.update(_random_order(odd, _rng("odd", split))[: len(odd) // 2])
    parts: tuple[list[dict], list[dict]] = ([], [])
    for n, group in enumerate(groups):
        first = len(group) // 2 + (n in extra_to_first)
        parts[0].extend(group[:first])
        parts[1].extend(group[first:])
    return [row for n, part in enumerate(parts) for row in _random_order(part, _rng("order", BATCH_NAMES[n]))]


def render(rows: list[dict]) -> dict[str, bytes]:
    """File contents by path relative to the output folder."""
    files = {"passages.json": (json.dumps(rows, ensure_ascii=False, indent=1) + "\n").encode("utf-8")}
    half = (len(rows) + 1) // 2
    for name, part in zip(BATCH_NAMES, (rows[:half], rows[half:])):
        lines = [json.dumps({"id": r["id"], "text": r["text"]}, ensure_ascii=False) for r in part]
        files[f"batches/{name}.jsonl"] = ("\n".join(lines) + "\n").encode("utf-8")
    return files


def summary(rows: list[dict]) -> str:
    lines = [f"{len(rows)} passages, seed {SEED}"]
    half = (len(rows) + 1) // 2
    books = sorted({r["source_path"] for r in rows})
    lines.append(f"{'book':60} {'all':>4} {'dev':>4} {'held':>4} {'p1':>4} {'p2':>4}")
    for book in books:
        mine = [(n, r) for n, r in enumerate(rows) if r["source_path"] == book]
        lines.append(f"{book:60} {len(mine):4} {sum(r['split'] == 'dev' for _, r in mine):4} "
                     f"{sum(r['split'] == 'heldout' for _, r in mine):4} {sum(n < half for n, _ in mine):4} "
                     f"{sum(n >= half for n, _ in mine):4}")
    for split in SPLITS:
        lines.append(f"{split}: {sum(r['split'] == split for r in rows)} "
                     f"(part1 {sum(r['split'] == split for r in rows[:half])}, "
                     f"part2 {sum(r['split'] == split for r in rows[half:])})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                        help=f"folder with Modernist_Novel/ and Travel_Novel/ (default: {DEFAULT_CORPUS})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--check", action="store_true", help="compare with the files on disk instead of writing")
    args = parser.parse_args(argv)
    try:
        rows = draw(load_books(args.corpus.resolve()))
    except SampleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files = render(rows)
    out = args.out
    if args.check:
        stale = [rel for rel, data in files.items() if not (out / rel).is_file() or (out / rel).read_bytes() != data]
        if stale:
            print(f"out of date in {out}: {', '.join(stale)}; rerun without --check", file=sys.stderr)
            return 1
        print(f"{out}: up to date")
        return 0
    for rel, data in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(summary(rows))
    print(f"wrote {', '.join(sorted(files))} under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
