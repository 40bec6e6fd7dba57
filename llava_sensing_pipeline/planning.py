"""What is up to date, as Dagster sees it: the one notion every entry point uses (the CLI, ``novel_file_sensor``, the
refresh schedule, ``llava-sensing status``).

- **The files.** Each novel file is a partition of the external asset ``novel_sources``, whose data version is the
  file's sha256. :func:`sync_sources` registers new files as partitions and records an observation for each file
  whose bytes changed since the last one (nothing for an unchanged file, so a no-change run writes no event).
- **Up to date** means Dagster's stale status is FRESH for every per-file asset of the partition: materialized, no
  new code version (a code version covers the code *and* the settings of its stage, see
  :mod:`~llava_sensing_pipeline.versions`), no new data version upstream (a changed file, an upstream asset
  re-materialized with other output). :func:`out_of_date` reports the first asset of the chain that is missing or
  stale, with Dagster's cause: the same words the UI shows.
- **The export** is up to date when it was materialized with the current code version, after the last
  materialization of every ``generated_examples`` partition it covers, over the same files
  (:func:`export_out_of_date`); its automation condition asks the same of the daemon.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dagster import (
    AssetKey,
    AssetObservation,
    AssetPartitionStatus,
    DagsterEventType,
    DagsterInstance,
    DataProvenance,
    DataVersion,
    RunsFilter,
)

from .partitions import PARTITIONS_NAME, NovelFile, latest_records, registered_keys

SOURCE_KEY = AssetKey("novel_sources")
PER_FILE_KEYS = [AssetKey(name) for name in (
    "novel_files", "text_chunks", "environment_features", "sensor_records", "style_labels", "generated_examples")]
EXPORT_KEY = AssetKey("chunked_json_exports")
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"  # run tags
EXPORTED_PARTITIONS = "partitions"  # the export's metadata: the partition keys it covered
FAILED_PARTITIONS = "failed_partitions"  # a failed step's, and the export's, metadata: partition -> reason / keys
# The event tag Dagster records a data version under (an observation reported with it gives the asset that version).
DATA_VERSION_TAG = "dagster/data_version"


def data_version_of(entry) -> DataVersion | None:
    """The data version an event log entry records, if any."""
    value = (entry.tags or {}).get(DATA_VERSION_TAG)
    return None if value is None else DataVersion(value)


def provenance_of(entry) -> DataProvenance | None:
    """The provenance (code version, input data versions) a materialization records, if any."""
    return DataProvenance.from_tags(entry.tags or {})


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def recorded_source_versions(instance: DagsterInstance, keys: Sequence[str]) -> dict[str, str]:
    """Partition -> the data version of its latest ``novel_sources`` observation."""
    return {key: (r.event_log_entry.tags or {}).get(DATA_VERSION_TAG, "")
            for key, r in latest_records(instance, SOURCE_KEY, keys, observations=True).items()}


@dataclass
class SourceSync:
    added: list[str]
    changed: list[str]
    unreadable: dict[str, str]


def sync_sources(instance: DagsterInstance, root: str | Path, files: Sequence[NovelFile]) -> SourceSync:
    """Registers new files as partitions and records the sha256 of each file whose bytes changed as the data version
    of its ``novel_sources`` partition. Never deletes a partition (see :func:`prune_partitions`)."""
    root = Path(root)
    known = set(registered_keys(instance))
    added = [f.key for f in files if f.key not in known]
    if added:
        instance.add_dynamic_partitions(PARTITIONS_NAME, added)
    recorded = recorded_source_versions(instance, [f.key for f in files])
    changed, unreadable = [], {}
    for f in files:
        try:
            digest = file_sha256(root / f.relative_path)
        except OSError as exc:
            unreadable[f.key] = f"{type(exc).__name__}: {exc}"
            continue
        if recorded.get(f.key) != digest:
            instance.report_runless_asset_event(AssetObservation(
                asset_key=SOURCE_KEY, partition=f.key, tags={DATA_VERSION_TAG: digest},
                metadata={"path": f.relative_path, "sha256": digest}))
            changed.append(f.key)
    return SourceSync(added, changed, unreadable)


def prune_partitions(instance: DagsterInstance, present: set[str], keys: Sequence[str] | None = None) -> list[str]:
    """Deletes the partitions (among ``keys``, default all) whose file is not in ``present``; returns them."""
    gone = sorted(k for k in (keys if keys is not None else registered_keys(instance)) if k not in present)
    for key in gone:
        instance.delete_dynamic_partition(PARTITIONS_NAME, key)
    return gone


class OutOfDate(str):
    """Why a partition must be materialized again (Dagster's words); ``first`` is the position in
    :data:`PER_FILE_KEYS` of the first asset that is missing or stale (the ones before it are up to date)."""

    first: int

    def __new__(cls, text: str, first: int) -> "OutOfDate":
        value = super().__new__(cls, text)
        value.first = first
        return value


def _dep_updated(instance: DagsterInstance, provenance, dep: AssetKey, key: str, latest) -> bool:
    """Dagster's rule for a partitioned input (``CachingStaleStatusResolver._is_dep_updated``): the input has a
    record after the one the materialization read (its event pointer) whose data version differs from that one's."""
    cursor = provenance.input_storage_ids.get(dep)
    now = data_version_of(latest.event_log_entry)
    if cursor is None:
        return provenance.input_data_versions.get(dep) != now
    if latest.storage_id <= cursor:
        return False
    before = instance.get_latest_data_version_record(dep, dep == SOURCE_KEY, key, before_cursor=cursor + 1)
    return (data_version_of(before.event_log_entry) if before else None) != now


def out_of_date(instance: DagsterInstance, asset_graph, keys: Sequence[str]) -> dict[str, OutOfDate]:
    """Partition -> why it must be materialized again, for the ``keys`` whose per-file assets are not all fresh:
    the first asset of the chain that is missing or stale, in Dagster's words.

    Stale is Dagster's rule (``CachingStaleStatusResolver``, which the UI uses) on the provenance Dagster records
    with each materialization: a new code version, or an input updated since the materialization read it. The
    latest records are read in batches, a few queries for any number of partitions (the resolver reads them one
    partition and asset at a time, about 30 ms a pair); ``test_planning`` checks that both agree."""
    keys = list(keys)
    latest = {asset: latest_records(instance, asset, keys, observations=asset == SOURCE_KEY)
              for asset in [SOURCE_KEY, *PER_FILE_KEYS]}
    reasons: dict[str, OutOfDate] = {}
    for key in keys:
        for i, asset in enumerate(PER_FILE_KEYS):
            name = asset.to_user_string()
            record = latest[asset].get(key)
            if record is None:
                reasons[key] = OutOfDate(f"{name} missing", i)
                break
            provenance = provenance_of(record.event_log_entry)
            node = asset_graph.get(asset)
            causes = []
            if provenance is None:
                causes.append("has no recorded provenance")
            else:
                if node.code_version and provenance.code_version != node.code_version:
                    causes.append("has a new code version")
                for dep in sorted(node.parent_keys):
                    dep_record = latest.get(dep, {}).get(key)
                    if dep_record is not None and _dep_updated(instance, provenance, dep, key, dep_record):
                        causes.append(f"has a new dependency data version ({dep.to_user_string()})")
            if causes:
                reasons[key] = OutOfDate(f"{name} {'; '.join(causes)}", i)
                break
    return reasons


def partition_states(instance: DagsterInstance, keys: Sequence[str]) -> dict[str, str]:
    """Each partition's last state over the per-file assets (what the UI's partition bar shows): in_progress, then
    failed, then missing, then materialized, the worst one wins."""
    from .partitions import novel_partitions

    severity = {"materialized": 0, "missing": 1, "failed": 2, "in_progress": 3}
    names = {AssetPartitionStatus.MATERIALIZED: "materialized", AssetPartitionStatus.FAILED: "failed",
             AssetPartitionStatus.IN_PROGRESS: "in_progress", None: "missing"}
    per_asset = [instance.get_status_by_partition(a, list(keys), novel_partitions) or {} for a in PER_FILE_KEYS]
    return {key: max((names[s.get(key)] for s in per_asset), key=severity.__getitem__) for key in keys}


def contiguous_ranges(order: Sequence[str], targets: set[str], max_len: int) -> list[list[str]]:
    """``targets`` cut into runs of keys that are adjacent in ``order`` (the partition order Dagster uses for a
    range), each at most ``max_len`` long."""
    ranges: list[list[str]] = []
    current: list[str] = []
    for key in order:
        if key in targets and len(current) < max_len:
            current.append(key)
            continue
        if current:
            ranges.append(current)
        current = [key] if key in targets else []
    if current:
        ranges.append(current)
    return ranges


def failure_reasons(instance: DagsterInstance, keys: Sequence[str]) -> dict[str, str]:
    """Partition -> the error of its latest failed run (one run per partition, as failed partitions are re-run
    alone), for the ``keys`` that have one."""
    reasons = {}
    for key in keys:
        runs = instance.get_run_records(RunsFilter(tags={"dagster/partition": key}), limit=1)
        if not runs or not runs[0].dagster_run.is_failure:
            continue
        reasons[key] = run_failure_message(instance, runs[0].dagster_run.run_id)
    return reasons


def failed_partitions(instance: DagsterInstance, run_id: str) -> dict[str, str] | None:
    """Partition -> reason, from the metadata of the run's failed step (a step over several partitions names the
    ones that raised); None when the failure named no partition."""
    for record in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
        data = record.dagster_event.step_failure_data
        meta = data.user_failure_data.metadata if data and data.user_failure_data else {}
        if FAILED_PARTITIONS in meta:
            return dict(meta[FAILED_PARTITIONS].value)
        return None
    return None


def run_failure_message(instance: DagsterInstance, run_id: str) -> str:
    """The user's exception of a run's first failed step (not Dagster's wrapper), one line."""
    for record in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
        data = record.dagster_event.step_failure_data
        err = data.error if data else None
        if data and data.user_failure_data and data.user_failure_data.description:
            return data.user_failure_data.description.strip()
        while err is not None and err.cause is not None:
            err = err.cause
        return err.message.strip() if err else "step failed"
    return "run failed"


def _newer_examples(instance: DagsterInstance, keys: Sequence[str], export_id: int) -> list[str]:
    """The ``keys`` whose latest ``generated_examples`` materialization is newer than the export's (``export_id``)."""
    latest = instance.get_latest_storage_id_by_partition(AssetKey("generated_examples"),
                                                         DagsterEventType.ASSET_MATERIALIZATION)
    return [k for k in keys if latest.get(k, -1) > export_id]


@dataclass
class ExportMiss:
    """Why the export must be written again (``why``), and the export materialization it would correct."""

    why: str
    export_id: int


def export_misses_files(instance: DagsterInstance, keys: Sequence[str], failed: Sequence[str]) -> ExportMiss | None:
    """Why the export must be written again although no example changed since it was (which its automation condition
    does not see): it covers other files than ``keys`` (a file deleted, or a file added that failed), or lists other
    failed files than ``failed`` (a file that failed since). None when it matches, or when newer examples exist (the
    automation condition writes it then)."""
    records = instance.fetch_materializations(EXPORT_KEY, limit=1).records
    if not records:
        return None
    record = records[0]
    meta = record.asset_materialization.metadata
    covered, was_failed = meta.get(EXPORTED_PARTITIONS), meta.get(FAILED_PARTITIONS)
    if covered is None or was_failed is None or _newer_examples(instance, keys, record.storage_id):
        return None
    if sorted(covered.value) != sorted(keys):
        gone, new = sorted(set(covered.value) - set(keys)), sorted(set(keys) - set(covered.value))
        return ExportMiss(f"chunked_json_exports covers other files ({len(gone)} gone, {len(new)} new)",
                          record.storage_id)
    if sorted(was_failed.value) != sorted(failed):
        return ExportMiss("chunked_json_exports lists other failed files", record.storage_id)
    return None


def export_out_of_date(instance: DagsterInstance, asset_graph, keys: Sequence[str], failed: Sequence[str] = (),
                       output_dir: str | None = None, mode: str = "simple") -> str | None:
    """Why the export must be written again, or None when it is up to date for ``keys`` of which ``failed`` have no
    usable examples (and, given ``output_dir``, its files are still there)."""
    records = instance.fetch_materializations(EXPORT_KEY, limit=1).records
    if not records:
        return "chunked_json_exports missing"
    record = records[0]
    provenance = provenance_of(record.event_log_entry)
    if provenance is None or provenance.code_version != asset_graph.get(EXPORT_KEY).code_version:
        return "chunked_json_exports has a new code version (code or export settings changed)"
    meta = record.asset_materialization.metadata
    covered = meta.get(EXPORTED_PARTITIONS)
    if covered is None or sorted(covered.value) != sorted(keys):
        return "chunked_json_exports covers other files"
    was_failed = meta.get(FAILED_PARTITIONS)
    if was_failed is None or sorted(was_failed.value) != sorted(failed):
        return "chunked_json_exports lists other failed files"
    newer = _newer_examples(instance, keys, record.storage_id)
    if newer:
        return f"chunked_json_exports has {len(newer)} newer generated_examples partition(s)"
    if output_dir is not None:
        from .atomic import storage_path
        from .export import INDEX_NAME

        out = storage_path(output_dir)
        if not (out / "chunks" / INDEX_NAME).exists() or not (out / f"{mode}_dataset.json").exists():
            return f"the export's files are missing from {output_dir}"
    return None
