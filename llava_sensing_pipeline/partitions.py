"""Partition keys for novel files and file discovery.

A partition key is ``<genre folder>/<escaped file stem>``. The escape is a reversible
percent-encoding of the characters Dagster's UI and CLI give a meaning to (``.`` ranges, ``,`` lists,
``[ ] *`` and quotes in the partition box, ``%`` itself, ``/`` inside a stem, control characters), so
``A039_Some_Do_Not....txt`` becomes ``Modernist_Novel/A039_Some_Do_Not%2E%2E%2E`` and two files can never
share a key. Only ``*.txt`` files are read, so the extension is not part of the key.

A key is the file's path relative to the input folder, so two corpora on one instance that hold the same relative
path share a partition (its ``novel_sources`` data version then changes with the folder, and the partition is redone
for the folder in use); files of different names never touch each other's partitions. Partitions are never deleted
implicitly: ``llava-sensing prune`` deletes those whose file is gone from the input folder.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DynamicPartitionsDefinition

PARTITIONS_NAME = "novel_files"
novel_partitions = DynamicPartitionsDefinition(name=PARTITIONS_NAME)

NOVEL_SUFFIX = ".txt"
ROOT_GENRE = "_root"
_UNSAFE = set('%.,[]*"\'|/\\:?#') | {chr(c) for c in range(32)} | {"\x7f"}


def _escape(part: str) -> str:
    if part == ROOT_GENRE:  # a folder really named "_root" must not collide with files at the top level
        return "%5F" + part[1:]
    return "".join(f"%{ord(ch):02X}" if ch in _UNSAFE else ch for ch in part)


def _unescape(part: str) -> str:
    out, i = [], 0
    while i < len(part):
        if part[i] == "%" and i + 3 <= len(part):
            out.append(chr(int(part[i + 1 : i + 3], 16)))
            i += 3
        else:
            out.append(part[i])
            i += 1
    return "".join(out)


def partition_key_for(relative_path: str | Path) -> str:
    """The partition key of a novel file, from its path relative to the input folder."""
    rel = Path(relative_path)
    if rel.suffix != NOVEL_SUFFIX:
        raise ValueError(f"{relative_path}: only {NOVEL_SUFFIX} files are novels")
    genre = "/".join(_escape(p) for p in rel.parent.parts) or ROOT_GENRE
    return f"{genre}/{_escape(rel.stem)}"


def relative_path_for(key: str) -> Path:
    """Inverse of :func:`partition_key_for`."""
    *genre_parts, stem = key.split("/")
    if not genre_parts:
        raise ValueError(f"not a novel partition key: {key!r}")
    parent = [] if genre_parts == [ROOT_GENRE] else [_unescape(p) for p in genre_parts]
    return Path(*parent, _unescape(stem) + NOVEL_SUFFIX)


def genre_of(key: str) -> str:
    """The genre folder of a partition key (``_root`` for files directly in the input folder)."""
    return _unescape(key.split("/", 1)[0])


@dataclass(frozen=True)
class NovelFile:
    key: str
    relative_path: str  # POSIX, relative to the input folder
    genre: str


def _is_file_or_broken_link(dirpath: str, name: str) -> bool:
    """A regular file (or a link to one), or a link to nothing (kept, so its partition fails naming it); not a
    FIFO, socket or device, which ``os.walk`` lists among the files and whose reading could block."""
    try:
        return stat.S_ISREG(os.stat(os.path.join(dirpath, name)).st_mode)
    except FileNotFoundError:
        return True


def discover_novels(input_dir: str | Path, max_files_per_genre: int | None = None) -> list[NovelFile]:
    """All ``*.txt`` files under ``input_dir``, sorted by path; optionally the first N of each genre folder.

    Folders are walked whatever their name (the ``.txt`` files in a folder named ``x.txt`` are novels of genre
    ``x.txt``); hidden files and folders are skipped, and so are entries that are not regular files (FIFOs,
    sockets)."""
    root = Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"input folder {root} does not exist: pass --input-dir with a folder that holds "
            "Modernist_Novel/ and Travel_Novel/ sub-folders of .txt files"
        )
    found: list[NovelFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(NOVEL_SUFFIX) and not name.startswith(".") and _is_file_or_broken_link(dirpath, name):
                rel = Path(dirpath, name).relative_to(root)
                key = partition_key_for(rel)
                found.append(NovelFile(key=key, relative_path=rel.as_posix(), genre=genre_of(key)))
    found.sort(key=lambda f: f.relative_path)
    if max_files_per_genre is None:
        return found
    taken: dict[str, int] = {}
    selected = []
    for f in found:
        if taken.get(f.genre, 0) < max_files_per_genre:
            taken[f.genre] = taken.get(f.genre, 0) + 1
            selected.append(f)
    return selected


def registered_keys(instance) -> list[str]:
    return list(instance.get_dynamic_partitions(PARTITIONS_NAME))


def latest_records(instance, asset_key: AssetKey, keys: Sequence[str], observations: bool = False) -> dict:
    """Partition key → the record of its latest materialization of ``asset_key`` (observation with
    ``observations``), for the ``keys`` that have one: two queries whatever the number of partitions."""
    event = DagsterEventType.ASSET_OBSERVATION if observations else DagsterEventType.ASSET_MATERIALIZATION
    ids = instance.get_latest_storage_id_by_partition(asset_key, event)
    wanted = [ids[k] for k in keys if k in ids]
    if not wanted:
        return {}
    fetch = instance.fetch_observations if observations else instance.fetch_materializations
    records = fetch(AssetRecordsFilter(asset_key=asset_key, storage_ids=wanted), limit=len(wanted)).records
    return {r.partition_key: r for r in records if r.partition_key is not None}


def selection_quotas(input_dir: str | Path, max_files: int | None, num_examples: int | None) -> dict[str, int]:
    """Each selected file's share of ``num_examples`` (see :func:`~llava_sensing_pipeline.generation.allocate_quotas`)."""
    from .generation import allocate_quotas

    return allocate_quotas([f.key for f in discover_novels(input_dir, max_files)], num_examples)
