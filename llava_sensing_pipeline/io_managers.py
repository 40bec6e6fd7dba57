"""Parquet storage for per-partition DataFrames.

Each partition of each asset is one Parquet file, ``<base>/<asset>/<partition key>.parquet`` (the ``/`` in a key
becomes a sub-folder). A run may cover several partitions at once (the bulk path): the asset then returns, and
downstream assets receive, a ``dict[partition_key, DataFrame]``; a single-partition run passes a plain DataFrame.
Unpartitioned assets are stored as ``<base>/<asset>.parquet``.

``base_dir`` is a local folder (default ``data/storage``) or any fsspec URL (``s3://bucket/prefix``,
``gs://bucket/prefix``, ``memory://name``; see :mod:`~llava_sensing_pipeline.atomic`). Local writes go to a
temporary file that is renamed into place, so a crash never leaves a half-written file that looks complete; on an
object store each file is uploaded whole in one write, which the store makes visible atomically.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pandas as pd
from dagster import ConfigurableIOManager, InputContext, OutputContext

from .atomic import StoragePath, atomic_write_parquet, read_parquet, storage_path


class PartitionTables(dict):
    """Partition key → DataFrame: the output of a step that covers several partitions. The IO manager empties it
    once every table is written: Dagster's in-process execution keeps each step's output object until the run
    ends, which would hold a whole batch of tables in memory; downstream steps read the files."""


class PartitionedParquetIOManager(ConfigurableIOManager):
    """Stores asset outputs as Parquet files under ``base_dir`` (a local folder or an fsspec URL)."""

    base_dir: str = "data/storage"

    def _path(self, asset_path: list[str], partition_key: str | None) -> StoragePath:
        base = storage_path(self.base_dir).joinpath(*asset_path)
        return base.with_suffix(".parquet") if partition_key is None else base / f"{partition_key}.parquet"

    def handle_output(self, context: OutputContext, obj: pd.DataFrame | dict[str, pd.DataFrame]) -> None:
        asset_path = context.asset_key.path
        if not context.has_asset_partitions:
            atomic_write_parquet(obj, self._path(asset_path, None))
            return
        keys = list(context.asset_partition_keys)
        frames = obj if isinstance(obj, dict) else {keys[0]: obj}
        if len(keys) > 1 and not isinstance(obj, dict) or set(frames) != set(keys):
            raise TypeError(
                f"{context.asset_key.to_user_string()}: a run over partitions {keys} must return a dict with one "
                f"DataFrame per partition, got {type(obj).__name__} with keys {sorted(frames) if isinstance(obj, dict) else '-'}"
            )
        for key, frame in frames.items():
            atomic_write_parquet(frame, self._path(asset_path, key))
        if isinstance(obj, PartitionTables):
            obj.clear()

    def load_input(self, context: InputContext) -> pd.DataFrame | dict[str, pd.DataFrame]:
        asset_path = context.asset_key.path
        if not context.has_asset_partitions:
            return read_parquet(self._path(asset_path, None))
        keys = list(context.asset_partition_keys)
        allow_missing = bool((context.definition_metadata or {}).get("allow_missing_partitions"))
        paths = {}
        for key in keys:
            path = self._path(asset_path, key)
            if path.exists():
                paths[key] = path
            elif not allow_missing:
                raise FileNotFoundError(
                    f"{path} is missing: materialize partition {key!r} of {context.asset_key.to_user_string()} first"
                )
        downstream_multi = context.has_partition_key is False or allow_missing
        if len(keys) == 1 and not downstream_multi:
            return read_parquet(paths[keys[0]])
        return LazyPartitions(paths)


class LazyPartitions(Mapping[str, pd.DataFrame]):
    """Partition key → DataFrame, read from Parquet on access and not kept, so a step that reads many partitions
    (the export reads every file's examples) holds one partition in memory at a time, not the whole corpus."""

    def __init__(self, paths: Mapping[str, StoragePath]):
        self._paths = dict(paths)

    def __getitem__(self, key: str) -> pd.DataFrame:
        return read_parquet(self._paths[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, key: object) -> bool:
        return key in self._paths

    def without(self, keys) -> "LazyPartitions":
        """The same partitions less ``keys`` (nothing is read)."""
        drop = set(keys)
        return LazyPartitions({k: p for k, p in self._paths.items() if k not in drop})
