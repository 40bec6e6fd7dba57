"""Partition keys for novel files, file discovery, and the sensor that registers new files.

A partition key is ``<genre folder>/<escaped file stem>``. The escape is a reversible
percent-encoding of the characters Dagster's UI and CLI give a meaning to (``.`` ranges, ``,`` lists,
``[ ] *`` and quotes in the partition box, ``%`` itself, ``/`` inside a stem, control characters), so
``A039_Some_Do_Not....txt`` becomes ``Modernist_Novel/A039_Some_Do_Not%2E%2E%2E`` and two files can never
share a key. Only ``*.txt`` files are read, so the extension is not part of the key.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DefaultSensorStatus,
    DynamicPartitionsDefinition,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from .settings import PipelineSettings

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


def latest_materializations(instance, asset_key: AssetKey, keys: Sequence[str]) -> dict:
    """Partition key → the record of its latest materialization of ``asset_key``, for the ``keys`` that have one."""
    ids = instance.get_latest_storage_id_by_partition(asset_key, DagsterEventType.ASSET_MATERIALIZATION)
    wanted = [ids[k] for k in keys if k in ids]
    if not wanted:
        return {}
    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=asset_key, storage_ids=wanted),
                                              limit=len(wanted)).records
    return {r.partition_key: r for r in records if r.partition_key is not None}


def sync_partitions(instance, files: list[NovelFile], all_present_keys: set[str]) -> tuple[list[str], list[str]]:
    """Registers ``files`` that are new as partitions and deletes partitions whose file is gone from the input folder.

    Returns ``(added, removed)``. ``all_present_keys`` is every file now in the folder (not only the selected ones),
    so a ``--max-files`` run never deletes the partitions it did not select.
    """
    known = set(registered_keys(instance))
    added = [f.key for f in files if f.key not in known]
    if added:
        instance.add_dynamic_partitions(PARTITIONS_NAME, added)
    removed = sorted(k for k in known if k not in all_present_keys)
    for key in removed:
        instance.delete_dynamic_partition(PARTITIONS_NAME, key)
    return added, removed


def _run_key(root: Path, f: NovelFile) -> str:
    st = (root / f.relative_path).stat()
    return f"{f.key}@{st.st_size}:{st.st_mtime_ns}"


@sensor(job_name="per_file_job", minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING)
def novel_file_sensor(context: SensorEvaluationContext, settings: PipelineSettings):
    """Lists the input folder: registers new files as partitions and requests a run for each new or changed file;
    partitions whose file was removed are deleted (and logged) so they never linger in exports."""
    root = Path(settings.input_dir)
    files = discover_novels(root)
    present = {f.key for f in files}
    known = set(context.instance.get_dynamic_partitions(PARTITIONS_NAME))
    new_keys = [f.key for f in files if f.key not in known]
    removed = sorted(known - present)
    for key in removed:
        context.log.warning(f"{key}: its file is gone from {root}; deleting the partition")
    return SensorResult(
        run_requests=[RunRequest(partition_key=f.key, run_key=_run_key(root, f)) for f in files],
        dynamic_partitions_requests=[
            *([novel_partitions.build_add_request(new_keys)] if new_keys else []),
            *([novel_partitions.build_delete_request(removed)] if removed else []),
        ],
    )


def selection_quotas(input_dir: str | Path, max_files: int | None, num_examples: int | None) -> dict[str, int]:
    """Each selected file's share of ``num_examples`` (see :func:`~llava_sensing_pipeline.generation.allocate_quotas`)."""
    from .generation import allocate_quotas

    return allocate_quotas([f.key for f in discover_novels(input_dir, max_files)], num_examples)
