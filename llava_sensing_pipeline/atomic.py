"""Writes to the output storage: a local folder (the default) or any fsspec URL (``s3://``, ``gs://``, ``memory://``).

- **Local paths** (a plain path or a ``file://`` URL) are written atomically: a temporary file beside the target,
  fsync, then a rename over it, so a crash never leaves a half-written file that looks complete.
- **Other protocols** are opened through `universal-pathlib <https://github.com/fsspec/universal_pathlib>`_ and each
  file is written whole in one ``open("wb")`` call: object stores (S3, GCS, Azure) make an object visible only once
  its upload completes, so a reader sees the old object or the new one, never a part. There is no rename and no
  folder to create. A protocol needs its fsspec package: ``pip install 'llava_sensing_pipeline[s3]'`` (s3fs) or
  ``[gcs]`` (gcsfs); credentials come from that package's usual environment variables or config files.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Union

import pandas as pd
import pyarrow.parquet as pq
from upath import UPath

StoragePath = Union[Path, UPath]
"""A local ``Path`` or a ``UPath`` on another fsspec filesystem (what :func:`storage_path` returns)."""

LOCAL_PROTOCOLS = ("", "file", "local")

_UMASK = os.umask(0)
os.umask(_UMASK)


def storage_path(location: str | os.PathLike) -> StoragePath:
    """A ``Path`` for a local path or ``file://`` URL, else a ``UPath`` for the URL (``s3://bucket/prefix`` …).

    Raises ImportError naming the location and the extra to install when the protocol's package is missing, and
    ValueError for a protocol fsspec does not know.
    """
    if isinstance(location, UPath):
        path = location
    elif isinstance(location, Path) or "://" not in str(location):
        return Path(location)
    else:
        try:
            path = UPath(str(location))
        except ValueError as exc:
            raise ValueError(f"{location}: {exc}; use a local folder or an fsspec URL such as s3://bucket/prefix, "
                             "gs://bucket/prefix or memory://name") from exc
    if path.protocol in LOCAL_PROTOCOLS:
        return Path(path.path)
    try:
        _ = path.fs  # instantiates the filesystem, so a missing package fails here, not mid-run
    except ImportError as exc:
        raise ImportError(f"{location}: {exc}. Install the package for {path.protocol}:// (for S3 and GCS: "
                          "pip install 'llava_sensing_pipeline[s3]' or '[gcs]'), or use a local folder") from exc
    return path


def is_remote(path: StoragePath) -> bool:
    """True for a path on a non-local fsspec filesystem (written whole per object, not by rename)."""
    return isinstance(path, UPath) and path.protocol not in LOCAL_PROTOCOLS


def display_location(path: StoragePath) -> str:
    """An absolute local path, or the URL of a remote one (for logs and metadata)."""
    return str(path) if is_remote(path) else str(Path(path).resolve())


def ensure_dir(path: StoragePath) -> None:
    """Creates a local folder and its parents; object stores have no folders, so nothing is done there."""
    if not is_remote(path):
        path.mkdir(parents=True, exist_ok=True)


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yields a temporary path in the (local) target's folder; renames it onto ``target`` if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are meant to be shared
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(data: bytes, target: str | os.PathLike) -> None:
    """Local: temporary file and rename. Remote: the whole object in one write."""
    target = storage_path(target)
    if is_remote(target):
        with target.open("wb") as fh:
            fh.write(data)
        return
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(text: str, target: str | os.PathLike) -> None:
    atomic_write_bytes(text.encode("utf-8"), target)


def dumps_json(obj: Any) -> str:
    """The dataset JSON style of the earlier system: UTF-8, indent 2, non-ASCII kept, trailing newline."""
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


def atomic_write_parquet(frame: pd.DataFrame, target: str | os.PathLike) -> None:
    target = storage_path(target)
    if is_remote(target):
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        atomic_write_bytes(buffer.getvalue(), target)
        return
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)


def read_parquet(path: str | os.PathLike) -> pd.DataFrame:
    """A Parquet file from a local path or any fsspec URL (one file read whole: ``pyarrow.parquet.ParquetFile``
    skips the dataset machinery of ``pandas.read_parquet``, 1.1 against 1.8 ms for a per-file table)."""
    path = storage_path(path)
    if not is_remote(path):
        return pq.ParquetFile(str(path)).read().to_pandas()
    with path.open("rb") as fh:
        return pq.ParquetFile(fh).read().to_pandas()
