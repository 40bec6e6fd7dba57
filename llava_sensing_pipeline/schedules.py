"""The refresh schedule (missing and failed partitions of the per-file job) and the sensor that then refreshes the
export.

- ``refresh_missing_and_failed`` runs on ``$LLAVA_SENSING_REFRESH_CRON`` (default ``0 3 * * *``, in
  ``$LLAVA_SENSING_REFRESH_TIMEZONE``, default UTC). It is **off** unless that variable is set; either way it can be
  turned on and off in the UI (Automation → Schedules). Each tick requests one run of ``per_file_job`` for every
  registered partition that has never been fully materialized or whose latest attempt failed, skipping partitions
  with a run in progress. Dagster schedules cannot launch a backfill, so these are plain partitioned runs, queued by
  the instance's run queue like a backfill's.
- ``export_after_per_file_runs`` (on by default; it does nothing until such runs exist) watches the per-file runs
  launched by that schedule and by ``novel_file_sensor``. Once none of them is queued or running and one finished
  since its last request, it requests one ``export_job`` run, so the export is refreshed once per wave of runs,
  with failed files reported in the index instead of blocking it. Runs of the CLI are not watched: it writes its
  own export with its own flags.
"""

import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

from dagster import (
    AssetPartitionStatus,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    schedule,
    sensor,
)

from .assets import PER_FILE_ASSETS
from .jobs import PER_FILE_JOB, export_job, per_file_job
from .partitions import PARTITIONS_NAME, novel_file_sensor, novel_partitions

REFRESH_SCHEDULE = "refresh_missing_and_failed"
CRON_ENV = "LLAVA_SENSING_REFRESH_CRON"
TIMEZONE_ENV = "LLAVA_SENSING_REFRESH_TIMEZONE"
DEFAULT_CRON = "0 3 * * *"
SCHEDULE_TAG = "dagster/schedule_name"
SENSOR_TAG = "dagster/sensor_name"
UNFINISHED = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
              DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]

# how bad a partition's state is; a partition takes the worst state over the per-file assets
_SEVERITY = {"materialized": 0, "missing": 1, "failed": 2, "in_progress": 3}
_STATE = {AssetPartitionStatus.MATERIALIZED: "materialized", AssetPartitionStatus.FAILED: "failed",
          AssetPartitionStatus.IN_PROGRESS: "in_progress", None: "missing"}


def combine_states(per_asset: Sequence[Mapping[str, AssetPartitionStatus | None]], keys: Sequence[str]) -> dict[str, str]:
    """Each partition's worst state over the assets: in_progress, then failed, then missing, then materialized."""
    states = {}
    for key in keys:
        names = [_STATE[statuses.get(key)] for statuses in per_asset] or ["missing"]
        states[key] = max(names, key=_SEVERITY.__getitem__)
    return states


def refresh_targets(states: Mapping[str, str]) -> list[str]:
    """The partitions to re-run: missing or failed (not in progress), in partition order."""
    return [key for key, state in states.items() if state in ("missing", "failed")]


def partition_states(instance, keys: Sequence[str]) -> dict[str, str]:
    """The state of each partition over the per-file assets, from Dagster's partition status (what the UI shows)."""
    per_asset = [instance.get_status_by_partition(a.key, keys, novel_partitions) or {} for a in PER_FILE_ASSETS]
    return combine_states(per_asset, keys)


def schedule_settings(env: Mapping[str, str] | None = None) -> tuple[str, str, DefaultScheduleStatus]:
    """Cron, timezone and default status: running when ``$LLAVA_SENSING_REFRESH_CRON`` is set, else stopped."""
    env = os.environ if env is None else env
    cron = env.get(CRON_ENV, "").strip()
    status = DefaultScheduleStatus.RUNNING if cron else DefaultScheduleStatus.STOPPED
    return cron or DEFAULT_CRON, env.get(TIMEZONE_ENV, "").strip() or "UTC", status


def build_refresh_schedule(env: Mapping[str, str] | None = None):
    """The refresh schedule with its cron, timezone and default status read from ``env`` (default ``os.environ``)."""
    cron, tz, status = schedule_settings(env)

    @schedule(name=REFRESH_SCHEDULE, cron_schedule=cron, execution_timezone=tz, job=per_file_job,
              default_status=status,
              description=f"Runs {PER_FILE_JOB} for every partition that is missing or failed; "
                          "export_after_per_file_runs then refreshes the export. Cron from $" + CRON_ENV + ".")
    def refresh_missing_and_failed(context: ScheduleEvaluationContext):
        keys = list(context.instance.get_dynamic_partitions(PARTITIONS_NAME))
        states = partition_states(context.instance, keys)
        targets = refresh_targets(states)
        if not targets:
            busy = sum(1 for s in states.values() if s == "in_progress")
            return SkipReason(f"all {len(keys)} partition(s) materialized" + (f" or in progress ({busy})" if busy else ""))
        context.log.info(f"requesting {len(targets)} of {len(keys)} partition(s): "
                         + ", ".join(f"{k} ({states[k]})" for k in targets))
        return [RunRequest(partition_key=key, run_key=key) for key in targets]

    return refresh_missing_and_failed


def _watched_runs(instance, statuses, updated_after: datetime | None = None):
    records = []
    for tags in ({SCHEDULE_TAG: REFRESH_SCHEDULE}, {SENSOR_TAG: novel_file_sensor.name}):
        records.extend(instance.get_run_records(RunsFilter(job_name=PER_FILE_JOB, tags=tags, statuses=statuses,
                                                           updated_after=updated_after)))
    return records


@sensor(job=export_job, minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING,
        description="Refreshes the export once the per-file runs of the refresh schedule or the new-file sensor "
                    "have all finished.")
def export_after_per_file_runs(context: SensorEvaluationContext):
    pending = _watched_runs(context.instance, UNFINISHED)
    if pending:
        return SkipReason(f"waiting for {len(pending)} per-file run(s) to finish")
    since = datetime.fromtimestamp(float(context.cursor), timezone.utc) if context.cursor else None
    finished = [r for r in _watched_runs(context.instance, FINISHED, since)
                if since is None or r.update_timestamp > since]
    if not finished:
        return SkipReason("no per-file run finished since the last export request")
    latest = max(finished, key=lambda r: r.update_timestamp)
    context.update_cursor(str(latest.update_timestamp.timestamp()))
    ok = sum(1 for r in finished if r.dagster_run.status == DagsterRunStatus.SUCCESS)
    context.log.info(f"{len(finished)} per-file run(s) finished ({ok} succeeded): refreshing the export")
    return RunRequest(run_key=f"export-after-{latest.dagster_run.run_id}")

