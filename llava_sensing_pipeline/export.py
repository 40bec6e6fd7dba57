"""The export: ``<mode>_dataset.json``, chunk files of ``chunk_size`` examples, ``chunks_index.json`` and Parquet.

Layout (kept from the earlier system, so its readers keep working)::

    <output>/<mode>_dataset.json                 JSON array of stage-1 examples
    <output>/<mode>_dataset.parquet              the same examples, one row each
    <output>/chunks/novel_dataset_chunk_NNN.json chunk_size examples each (1-based, 3 digits, 4 past 999)
    <output>/chunks/chunks_index.json            the index (schema of upstream-study §12.2, plus per-file figures)
    <output>/splits/{train,validation,test}.json the same examples split by novel (see ``curation``)

``<output>`` is a local folder or any fsspec URL (``s3://bucket/prefix``, ``gs://…``, ``memory://…``). Every file
is written atomically (locally by rename; on an object store as one whole object per write, see
:mod:`~llava_sensing_pipeline.atomic`); chunk files left from an earlier, larger run are deleted; the index is written
last. The index keeps its ``split_timestamp`` when nothing else in it changed, so an unchanged re-run leaves every
file byte-identical.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd

from .atomic import StoragePath, atomic_write_parquet, atomic_write_text, dumps_json, ensure_dir, storage_path
from .curation import Deduplicator
from .seeding import rng_for

CHUNK_PREFIX = "novel_dataset_chunk_"
CHUNK_FILE_RE = re.compile(rf"^{CHUNK_PREFIX}\d+\.json$")
INDEX_NAME = "chunks_index.json"
SPLITS_DIR = "splits"


SHORTFALL_CAUSES = {
    "no_usable_passages": "the file has no usable passage",
    "few_usable_passages": "the file has fewer usable passages than its quota",
    "duplicates_removed": "enough passages, but duplicates of other examples were removed",
}
"""Why a file exports fewer examples than its quota (``shortfall_cause`` in the index)."""


@dataclass
class FileReport:
    partition_key: str
    source_path: str
    quota: int
    candidates: int
    exported: int = 0
    duplicates: int = 0

    @property
    def shortfall(self) -> int:
        return max(0, self.quota - self.exported)

    @property
    def shortfall_cause(self) -> str | None:
        """One of :data:`SHORTFALL_CAUSES`, or None when the quota is met."""
        if not self.shortfall:
            return None
        if self.candidates == 0:
            return "no_usable_passages"
        return "few_usable_passages" if self.candidates < self.quota else "duplicates_removed"

    def shortfall_reason(self, usable_note: str = "") -> str:
        """The cause in words, with the counts (``usable_note``: what the file's passages were, see
        :func:`~llava_sensing_pipeline.assets.generation.usable_note`)."""
        cause = self.shortfall_cause
        if cause is None:
            return ""
        duplicates = f"{self.duplicates} of them duplicates of other examples" if self.duplicates else ""
        if cause == "duplicates_removed":
            return f"{self.duplicates} of its {self.candidates} candidates were duplicates of other examples"
        head = "no usable passage" if cause == "no_usable_passages" else f"only {self.candidates} candidates"
        details = "; ".join(part for part in (duplicates, usable_note) if part)
        return f"{head}: {details}" if details else head


@dataclass
class ExportResult:
    dataset_path: StoragePath
    parquet_path: StoragePath
    index_path: StoragePath
    chunk_paths: list[StoragePath]
    examples: list[dict]
    files: list[FileReport] = field(default_factory=list)
    removed_stale: list[str] = field(default_factory=list)
    split_paths: dict[str, StoragePath] = field(default_factory=dict)


def chunk_filename(number: int) -> str:
    return f"{CHUNK_PREFIX}{number:03d}.json"


def select_examples(
    frames: Mapping[str, pd.DataFrame],
    quotas: Mapping[str, int],
    source_paths: Mapping[str, str],
    dedup: Deduplicator | None = None,
) -> tuple[list[dict], list[FileReport]]:
    """The first ``quota`` examples of each file by ``selection_rank`` (files in sorted key order).

    With ``dedup``, an example whose target paragraph duplicates one taken before is skipped and the next one by
    rank is taken instead, so the quota is still met while the file has candidates left.
    """
    records, reports = [], []
    for key in sorted(quotas):
        frame = frames.get(key)
        if frame is None:
            continue
        report = FileReport(key, source_paths[key], quotas[key], len(frame))
        for raw in frame.sort_values("selection_rank", kind="stable")["record_json"]:
            if report.exported >= report.quota:
                break
            record = json.loads(raw)
            if dedup is not None and dedup.check(record["id"], record["target_paragraph"]):
                report.duplicates += 1
                continue
            records.append(record)
            report.exported += 1
        reports.append(report)
    return records, reports


def order_examples(records: Sequence[dict], global_seed: int) -> list[dict]:
    """Sorted by id, then shuffled with a seeded generator: a stable order that mixes novels across chunk files."""
    ordered = sorted(records, key=lambda r: r["id"])
    rng_for(global_seed, "export-order").shuffle(ordered)
    duplicates = len(ordered) - len({r["id"] for r in ordered})
    if duplicates:
        raise ValueError(f"{duplicates} duplicate example ids in the export: two files share a stem and chunk index")
    return ordered


def examples_frame(records: Sequence[dict]) -> pd.DataFrame:
    """Examples as a flat table (sensor values as columns, nested parts as JSON strings)."""
    rows = []
    for r in records:
        sd = r["sensor_data"]
        rows.append({
            "id": r["id"],
            "literary_style": r["literary_style"],
            "temperature": sd["temperature"],
            "humidity": sd["humidity"],
            "wind_direction": sd["wind_direction"],
            "imu": sd["imu"],
            "movement": sd["movement"],
            "scenario": sd["context"]["scenario"],
            "time": sd["context"]["time"],
            "weather": sd["context"]["weather"],
            "prompt": r["prompt"],
            "target_paragraph": r["target_paragraph"],
            "source_path": r["source_info"]["source_path"],
            "chunk_index": r["source_info"]["chunk_index"],
            "source_info": json.dumps(r["source_info"], ensure_ascii=False, sort_keys=True),
            "metadata": json.dumps(r["metadata"], ensure_ascii=False, sort_keys=True),
        })
    return pd.DataFrame(rows, columns=["id", "literary_style", "temperature", "humidity", "wind_direction", "imu",
                                       "movement", "scenario", "time", "weather", "prompt", "target_paragraph",
                                       "source_path", "chunk_index", "source_info", "metadata"])


def _write_if_changed(text: str, path: StoragePath) -> None:
    """Atomic write that leaves an identical file untouched (so mtimes and readers are undisturbed)."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    atomic_write_text(text, path)


class _EncodedRecords:
    """Each example encoded once as an item of an indented JSON array, for the dataset, its chunk files and the
    splits, which hold the same examples: ``array(part)`` is exactly ``dumps_json(list(part))``."""

    def __init__(self, records: Sequence[dict]):
        self._items = {id(r): self._item(r) for r in records}

    @staticmethod
    def _item(record: dict) -> str:
        return "  " + json.dumps(record, ensure_ascii=False, indent=2).replace("\n", "\n  ")

    def array(self, part: Sequence[dict]) -> str:
        if not part:
            return "[]\n"
        items = [self._items.get(id(r)) or self._item(r) for r in part]
        return "[\n" + ",\n".join(items) + "\n]\n"


def write_export(
    records: Sequence[dict],
    output_dir: str | StoragePath,
    mode: str,
    chunk_size: int,
    index_extra: Mapping | None = None,
    splits: Mapping[str, Sequence[dict]] | None = None,
) -> ExportResult:
    """Writes the dataset, its chunk files, the Parquet copy, the ``splits`` files (name -> examples) and the index;
    removes stale chunk files. ``output_dir`` is a local folder or an fsspec URL."""
    if chunk_size < 1:
        raise ValueError(f"--chunk-size must be at least 1 (examples per chunk file), got {chunk_size}")
    out = storage_path(output_dir)
    chunks_dir = out / "chunks"
    ensure_dir(chunks_dir)
    dataset_path = out / f"{mode}_dataset.json"
    parquet_path = out / f"{mode}_dataset.parquet"
    records = list(records)
    encoded = _EncodedRecords(records)
    _write_if_changed(encoded.array(records), dataset_path)
    atomic_write_parquet(examples_frame(records), parquet_path)

    entries, chunk_paths = [], []
    for number, start in enumerate(range(0, len(records), chunk_size), start=1):
        part = records[start : start + chunk_size]
        name = chunk_filename(number)
        path = chunks_dir / name
        _write_if_changed(encoded.array(part), path)
        chunk_paths.append(path)
        entries.append({"chunk_number": number, "filename": name, "start_index": start,
                        "end_index": start + len(part), "size": len(part), "file_path": str(path)})
    keep = {p.name for p in chunk_paths}
    present = chunks_dir.iterdir() if chunks_dir.exists() else []
    removed = sorted(p.name for p in present if CHUNK_FILE_RE.match(p.name) and p.name not in keep)
    for name in removed:
        (chunks_dir / name).unlink()
    split_paths = {}
    for name, part in (splits or {}).items():
        split_paths[name] = out / SPLITS_DIR / f"{name}.json"
        ensure_dir(split_paths[name].parent)
        _write_if_changed(encoded.array(list(part)), split_paths[name])

    index = {
        "original_file": str(dataset_path),
        "total_examples": len(records),
        "chunk_size": chunk_size,
        "total_chunks": len(entries),
        "chunks": entries,
        "mode": mode,
        "parquet_file": str(parquet_path),
        **dict(index_extra or {}),
    }
    index_path = chunks_dir / INDEX_NAME
    index["split_timestamp"] = _previous_timestamp_if_same(index_path, index) or datetime.now(timezone.utc).isoformat(
        timespec="seconds")
    _write_if_changed(dumps_json(index), index_path)
    return ExportResult(dataset_path, parquet_path, index_path, chunk_paths, records, removed_stale=removed,
                        split_paths=split_paths)


def _previous_timestamp_if_same(index_path: StoragePath, index: Mapping) -> str | None:
    try:
        previous = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    stamp = previous.pop("split_timestamp", None)
    return stamp if json.loads(json.dumps(index)) == previous else None
