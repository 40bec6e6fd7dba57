"""Dagster sensors (the robot's virtual sensors are in :mod:`~llava_sensing_pipeline.sensor_synthesis`).

- ``novel_file_sensor`` lists the input folder: registers new files as partitions, records changed files' sha256 as
  ``novel_sources`` data versions, and requests runs of ``per_file_job`` for the partitions Dagster reports missing or
  stale (the same :func:`~llava_sensing_pipeline.planning.out_of_date` as the CLI), as ranges of at most
  ``PARTITIONS_PER_RUN`` files. A plan is requested once (its run key covers the files' versions and the code
  versions), so a file that fails is not retried every tick: fix it and the changed bytes bring a new run.
- ``export_automation_sensor`` evaluates the export's automation condition: the export follows every materialization
  of the examples, whoever launched it. What that condition cannot see, since no example changed, ``novel_file_sensor``
  requests itself: an export that covers a file deleted from the folder, or does not list a file that failed since
  (:func:`~llava_sensing_pipeline.planning.export_misses_files`), once nothing runs and the state held for two ticks.
- ``isolate_failed_partitions``: when a run over a range of partitions (a UI backfill, this sensor's runs) fails in
  some of them, re-runs each failed partition alone, so it shows as its own failed partition with its own error, and
  the others in ranges, so they are materialized. The CLI does the same itself.
"""

from __future__ import annotations

import hashlib
import json
import os

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from .assets import chunked_json_exports
from .assets.novels import PARTITIONS_PER_RUN
from .jobs import EXPORT_JOB, PER_FILE_JOB, export_job, per_file_job
from .partitions import discover_novels, registered_keys
from .planning import (
    PER_FILE_KEYS,
    RANGE_END,
    RANGE_START,
    contiguous_ranges,
    export_misses_files,
    failed_partitions,
    out_of_date,
    partition_states,
    recorded_source_versions,
    sync_sources,
)
from .settings import PipelineSettings

# How often the sensors look (seconds); ``LLAVA_SENSING_SENSOR_INTERVAL`` changes it (the tests use a few seconds).
INTERVAL_S = int(os.environ.get("LLAVA_SENSING_SENSOR_INTERVAL") or 30)



def range_request(keys: list[str], run_key: str | None = None, tags: dict[str, str] | None = None) -> RunRequest:
    """A run of ``per_file_job`` over ``keys`` (contiguous): one partition, or a range in one run."""
    if len(keys) == 1:
        return RunRequest(run_key=run_key, partition_key=keys[0], tags=tags or {}, job_name=PER_FILE_JOB)
    return RunRequest(run_key=run_key, tags={**(tags or {}), RANGE_START: keys[0], RANGE_END: keys[-1]},
                      job_name=PER_FILE_JOB)


@sensor(jobs=[per_file_job, export_job], minimum_interval_seconds=INTERVAL_S, default_status=DefaultSensorStatus.RUNNING)
def novel_file_sensor(context: SensorEvaluationContext, settings: PipelineSettings):
    """Registers and observes the files of the input folder and requests runs for what is missing or stale."""
    instance = context.instance
    files = discover_novels(settings.input_dir, settings.max_files)
    sync = sync_sources(instance, settings.input_dir, files)
    for key in sync.added:
        context.log.info(f"{key}: new file, registered as a partition")
    for key in sync.changed:
        if key not in sync.added:
            context.log.info(f"{key}: the file's bytes changed")
    keys = [f.key for f in files]
    states = partition_states(instance, keys)
    busy = {k for k, state in states.items() if state == "in_progress"}
    reasons = out_of_date(instance, context.repository_def.asset_graph, [k for k in keys if k not in busy])
    # nothing to materialize but files that failed (their runs were requested already): the export may miss them
    cursor, export = (export_request(context, keys, sorted(k for k in reasons if states[k] == "failed"))
                      if not [k for k in reasons if states[k] != "failed"] else (context.cursor, None))
    if not reasons:
        if export is not None or cursor != context.cursor:
            return SensorResult(run_requests=[export] if export else [], cursor=cursor)
        return SkipReason(f"all {len(keys)} file(s) up to date" + (f", {len(busy)} in progress" if busy else ""))
    graph = context.repository_def.asset_graph
    code = {k.to_user_string(): graph.get(k).code_version for k in PER_FILE_KEYS}
    versions = recorded_source_versions(instance, list(reasons))
    requests = []
    for batch in contiguous_ranges(registered_keys(instance), set(reasons), PARTITIONS_PER_RUN):
        plan = {"keys": batch, "sources": [versions.get(k) for k in batch], "code": code}
        run_key = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:20]
        requests.append(range_request(batch, run_key))
        context.log.info(f"requesting {batch[0]}" + (f" … {batch[-1]} ({len(batch)})" if len(batch) > 1 else "")
                         + f": {reasons[batch[0]]}")
    return SensorResult(run_requests=requests + ([export] if export else []), cursor=cursor)


ACTIVE = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
          DagsterRunStatus.CANCELING]


def export_request(context: SensorEvaluationContext, keys: list[str], failed: list[str]
                   ) -> tuple[str | None, RunRequest | None]:
    """The sensor's next cursor and a run of the export when it misses the folder's files or failures (see the
    module's docstring): only when no run is active and the same files and failures were seen on the previous tick
    (a file just changed has its run queued by then), once per state (its run key)."""
    miss = export_misses_files(context.instance, keys, failed)
    if miss is None or isolation_pending(context.instance):
        return context.cursor, None
    # the state: the files, the failures and the export they differ from (the same files may need it again later)
    state = hashlib.sha256(json.dumps([keys, failed, miss.export_id]).encode()).hexdigest()[:20]
    if context.instance.get_run_records(RunsFilter(statuses=ACTIVE), limit=1) or context.cursor != state:
        return state, None
    context.log.info(f"requesting the export: {miss.why}")
    return state, RunRequest(run_key=f"export:{state}", job_name=EXPORT_JOB)


def isolation_pending(instance) -> bool:
    """Whether the latest run of the per-file job is a failed range run that ``isolate_failed_partitions`` has not
    split yet (its re-runs would be newer): its whole range shows failed until then, which the export must not
    record."""
    records = instance.get_run_records(RunsFilter(job_name=PER_FILE_JOB), limit=1)
    if not records:
        return False
    run = records[0].dagster_run
    return run.is_failure and RANGE_START in run.tags and run.tags.get("llava_sensing/launched_by") != "cli"


export_automation_sensor = AutomationConditionSensorDefinition(
    "export_automation",
    target=AssetSelection.assets(chunked_json_exports),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=INTERVAL_S,
    description="Materializes chunked_json_exports once the examples changed and none is being materialized.",
)


@run_failure_sensor(request_job=per_file_job, default_status=DefaultSensorStatus.RUNNING,
                    monitor_all_code_locations=False, minimum_interval_seconds=INTERVAL_S)
def isolate_failed_partitions(context: RunFailureSensorContext):
    """A failed range run of the per-file assets: each failed partition alone, the rest in ranges."""
    run = context.dagster_run
    tags = run.tags
    if tags.get("llava_sensing/launched_by") == "cli" or RANGE_START not in tags or run.status != DagsterRunStatus.FAILURE:
        return SkipReason("not a failed range run of the per-file assets (the CLI isolates its own)")
    if run.job_name != PER_FILE_JOB and not (run.asset_selection or set()) & set(PER_FILE_KEYS):
        return SkipReason(f"{run.job_name} does not materialize the per-file assets")
    order = registered_keys(context.instance)
    start, end = order.index(tags[RANGE_START]), order.index(tags[RANGE_END])
    keys = order[start:end + 1]
    failed = failed_partitions(context.instance, run.run_id)
    if not failed:
        return SkipReason("the failure names no partition: re-execute the run from the UI")
    isolated = {"llava_sensing/isolated_from": run.run_id}
    for key in keys:
        if key in failed:
            yield range_request([key], run_key=f"{run.run_id}:{key}", tags=isolated)
    for batch in contiguous_ranges(order, set(keys) - set(failed), PARTITIONS_PER_RUN):
        yield range_request(batch, run_key=f"{run.run_id}:{batch[0]}", tags=isolated)
