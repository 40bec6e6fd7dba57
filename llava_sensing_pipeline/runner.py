"""Materializing the graph for a set of novel files: plan what is stale, run it in batches, isolate failures, export.

This is what ``llava-sensing generate`` does, against a persistent ``DAGSTER_HOME`` so every run shows in the UI.

- **Incremental.** A partition is re-materialized only when it is missing or its fingerprint (file sha256, the
  per-file code versions, the per-file settings) differs from the one recorded on its last ``generated_examples``
  materialization. An unchanged re-run only re-writes the export; a new file costs one partition.
- **Bulk path.** Dagster costs about a second per run, so in ``simple`` mode stale partitions run as contiguous
  ranges of up to ``batch_size`` partitions per run (one run, one in-process step per asset). The LLM modes use one
  run per partition, for failure isolation and per-partition retries.
- **Failure isolation.** When a batch fails, the step's failure names the partitions that raised; they are re-run
  on their own (so each shows as a failed partition with its own error) and the rest of the batch is re-run in bulk.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    Definitions,
)

from .assets._partitioned import FAILED_PARTITIONS_KEY
from .jobs import EXPORT_JOB, PER_FILE_JOB
from .partitions import (
    NovelFile,
    discover_novels,
    latest_materializations,
    registered_keys,
    selection_quotas,
    sync_partitions,
)
from .atomic import storage_path
from .export import INDEX_NAME
from .settings import PipelineSettings, stable_hash
from .versions import CODE_VERSIONS, partition_fingerprint

QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
VERBOSE_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


@dataclass
class RunReport:
    selected: list[NovelFile]
    added: list[str]
    removed: list[str]
    stale: list[str]
    succeeded: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    runs: int = 0
    export_ok: bool = False
    export_error: str | None = None
    seconds: float = 0.0


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def latest_metadata(instance: DagsterInstance, asset: str, keys: Sequence[str]) -> dict[str, dict]:
    """The metadata of the latest materialization of each partition of ``asset`` (missing partitions left out)."""
    records = latest_materializations(instance, AssetKey(asset), keys)
    return {key: {k: v.value for k, v in r.asset_materialization.metadata.items()} for key, r in records.items()}


def expected_fingerprints(settings: PipelineSettings, files: Sequence[NovelFile], model: str) -> dict[str, str]:
    quotas = selection_quotas(settings.input_dir, settings.max_files, settings.num_examples)
    return {f.key: partition_fingerprint(file_sha256(Path(settings.input_dir) / f.relative_path),
                                         settings.fingerprint_fields(model, quotas.get(f.key, 0)))
            for f in files}


def stale_partitions(instance: DagsterInstance, expected: dict[str, str]) -> list[str]:
    """Keys whose examples are missing or were made from other bytes, code or settings than ``expected``."""
    recorded = latest_metadata(instance, "generated_examples", list(expected))
    return [k for k in expected if recorded.get(k, {}).get("fingerprint") != expected[k]]


def export_fingerprint(settings: PipelineSettings, partition_fingerprints: dict[str, str]) -> str:
    """What the export depends on: every selected partition's fingerprint, the export settings and code."""
    return stable_hash({
        "partitions": partition_fingerprints,
        "code": CODE_VERSIONS["chunked_json_exports"],
        "settings": {k: getattr(settings, k) for k in (
            "mode", "seed", "output_dir", "num_examples", "max_files", "export_chunk_size", "split_ratios",
            "near_duplicate_threshold")},
    })


def export_is_current(output_dir: str, mode: str, fingerprint: str) -> bool:
    """True when the export in ``output_dir`` was written from exactly this state (its index says so)."""
    out = storage_path(output_dir)
    try:
        index = json.loads((out / "chunks" / INDEX_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return index.get("export_fingerprint") == fingerprint and (out / f"{mode}_dataset.json").exists()


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


def _failed_partitions(result) -> dict[str, str] | None:
    """Partition → reason from the failed step's metadata; None when the failure named no partition."""
    for event in result.all_events:
        if event.event_type == DagsterEventType.STEP_FAILURE:
            data = event.step_failure_data
            meta = data.user_failure_data.metadata if data and data.user_failure_data else {}
            if FAILED_PARTITIONS_KEY in meta:
                return dict(meta[FAILED_PARTITIONS_KEY].value)
            return None
    return None


def _failure_message(result) -> str:
    for event in result.all_events:
        if event.event_type == DagsterEventType.STEP_FAILURE and event.step_failure_data:
            err = event.step_failure_data.error
            while err is not None and err.cause is not None:  # the user's exception, not Dagster's wrapper
                err = err.cause
            return err.message.strip() if err else "step failed"
    return "run failed"


@contextmanager
def planned_events_per_range() -> Iterator[None]:
    """Within: a range run logs one "materialization planned" event per asset for its whole range instead of one
    per asset and partition (Dagster's ``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS``; 6 events fewer per
    file). Dagster then does not mark the range's partitions failed when the run fails; the runner does not rely
    on that: it re-runs a failed batch's failed partitions alone, in ordinary runs that mark them failed."""
    previous = os.environ.get(_SUBSET_PLANNED_EVENTS)
    os.environ[_SUBSET_PLANNED_EVENTS] = "true"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(_SUBSET_PLANNED_EVENTS, None)
        else:
            os.environ[_SUBSET_PLANNED_EVENTS] = previous


_SUBSET_PLANNED_EVENTS = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


class Runner:
    """Runs the per-file job and the export for one CLI invocation."""

    def __init__(self, defs: Definitions, instance: DagsterInstance, settings: PipelineSettings,
                 batch_size: int, verbose: bool = False, echo: Callable[[str], None] = print):
        self.job = defs.resolve_job_def(PER_FILE_JOB)
        self.export = defs.resolve_job_def(EXPORT_JOB)
        self.instance = instance
        self.settings = settings
        self.batch_size = max(1, batch_size)
        self.run_config = VERBOSE_LOGS if verbose else QUIET_LOGS
        self.echo = echo
        self.model = defs.resources["ollama"].model

    def _run(self, keys: list[str]):
        if len(keys) == 1:
            return self.job.execute_in_process(instance=self.instance, partition_key=keys[0],
                                               run_config=self.run_config, raise_on_error=False)
        tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
        with planned_events_per_range():
            return self.job.execute_in_process(instance=self.instance, tags=tags, run_config=self.run_config,
                                               raise_on_error=False)

    def _materialize(self, keys: list[str], report: RunReport) -> None:
        """Runs ``keys`` (contiguous) in one run; on failure isolates the failed partitions and retries the rest."""
        report.runs += 1
        result = self._run(keys)
        if result.success:
            report.succeeded.extend(keys)
            return
        failed = _failed_partitions(result)
        if len(keys) == 1:
            report.failures[keys[0]] = (failed or {}).get(keys[0]) or _failure_message(result)
            return
        suspects = list(failed) if failed else keys
        for key in suspects:  # alone, so each failure is recorded against its own partition
            self._materialize([key], report)
        rest = [k for k in keys if k not in set(suspects)]
        order = self.order
        for part in contiguous_ranges(order, set(rest), self.batch_size):
            self._materialize(part, report)

    def run(self, files: list[NovelFile], all_present: set[str], force: bool = False,
            only: list[str] | None = None) -> RunReport:
        """Materializes what is stale among ``files`` (all of them with ``force``, or exactly ``only``), then
        exports ``files``."""
        started = time.monotonic()
        added, removed = sync_partitions(self.instance, files, all_present)
        for key in removed:
            self.echo(f"removed: {key} (its file is gone; partition deleted, not exported)")
        expected = expected_fingerprints(self.settings, files, self.model)
        if only is not None:
            stale = list(only)
        elif force:
            stale = [f.key for f in files]
        else:
            stale = stale_partitions(self.instance, expected)
        report = RunReport(selected=files, added=added, removed=removed, stale=stale)
        self.order = registered_keys(self.instance)
        batches = contiguous_ranges(self.order, set(stale), self.batch_size)
        done = 0
        for batch in batches:
            before = len(report.failures)
            self._materialize(batch, report)
            done += len(batch)
            status = "ok" if len(report.failures) == before else f"{len(report.failures) - before} failed"
            label = batch[0] if len(batch) == 1 else f"{batch[0]} … {batch[-1]}"
            self.echo(f"[{done}/{len(stale)}] {label}: {status}")
        if len(report.failures) == len(files):
            report.export_error = "every selected file failed; no dataset was written"
            report.seconds = time.monotonic() - started
            return report
        fingerprint = export_fingerprint(self.settings, expected)
        if not stale and not removed and export_is_current(self.settings.output_dir, self.settings.mode, fingerprint):
            self.echo("export: up to date (nothing it depends on changed)")
            report.export_ok = True
            report.seconds = time.monotonic() - started
            return report
        export_config = {"ops": {"chunked_json_exports": {"config": {
            "partition_keys": [f.key for f in files], "failure_reasons": report.failures,
            "fingerprint": "" if report.failures else fingerprint}}}}
        result = self.export.execute_in_process(instance=self.instance, raise_on_error=False,
                                                run_config={**self.run_config, **export_config})
        report.runs += 1
        report.export_ok = result.success
        if not result.success:
            report.export_error = _failure_message(result)
        report.seconds = time.monotonic() - started
        return report


def select_files(settings: PipelineSettings) -> tuple[list[NovelFile], set[str]]:
    """The files this run covers (``max_files`` per genre, sorted) and every file present in the input folder."""
    everything = discover_novels(settings.input_dir)
    selected = discover_novels(settings.input_dir, settings.max_files) if settings.max_files else everything
    return selected, {f.key for f in everything}
