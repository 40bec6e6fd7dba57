"""The refresh schedule: re-runs every partition that is missing, failed or stale.

``refresh_missing_and_failed`` runs on ``$LLAVA_SENSING_REFRESH_CRON`` (default ``0 3 * * *``, in
``$LLAVA_SENSING_REFRESH_TIMEZONE``, default UTC). It is **off** unless that variable is set; either way it can be
turned on and off in the UI (Automation → Schedules). Each tick requests runs of ``per_file_job`` over ranges of the
registered partitions that are failed or that Dagster reports missing or stale (``planning.out_of_date``), skipping
partitions with a run in progress. The export follows by its automation condition (``export_automation``).
"""

import os
from collections.abc import Mapping

from dagster import DefaultScheduleStatus, ScheduleEvaluationContext, SkipReason, schedule

from .assets.novels import PARTITIONS_PER_RUN
from .jobs import PER_FILE_JOB, per_file_job
from .partitions import registered_keys
from .planning import contiguous_ranges, out_of_date, partition_states
from .sensors import range_request

REFRESH_SCHEDULE = "refresh_missing_and_failed"
CRON_ENV = "LLAVA_SENSING_REFRESH_CRON"
TIMEZONE_ENV = "LLAVA_SENSING_REFRESH_TIMEZONE"
DEFAULT_CRON = "0 3 * * *"


def schedule_settings(env: Mapping[str, str] | None = None) -> tuple[str, str, DefaultScheduleStatus]:
    """Cron, timezone and default status: running when ``$LLAVA_SENSING_REFRESH_CRON`` is set, else stopped."""
    env = os.environ if env is None else env
    cron = env.get(CRON_ENV, "").strip()
    status = DefaultScheduleStatus.RUNNING if cron else DefaultScheduleStatus.STOPPED
    return cron or DEFAULT_CRON, env.get(TIMEZONE_ENV, "").strip() or "UTC", status


def refresh_targets(instance, asset_graph, keys: list[str]) -> dict[str, str]:
    """Partition -> reason, for the partitions to re-run: failed, missing or stale; not those in progress."""
    states = partition_states(instance, keys)
    idle = [k for k in keys if states[k] != "in_progress"]
    reasons = out_of_date(instance, asset_graph, idle)
    reasons.update({k: "failed" for k in idle if states[k] == "failed"})
    return {k: reasons[k] for k in keys if k in reasons}


def build_refresh_schedule(env: Mapping[str, str] | None = None):
    """The refresh schedule with its cron, timezone and default status read from ``env`` (default ``os.environ``)."""
    cron, tz, status = schedule_settings(env)

    @schedule(name=REFRESH_SCHEDULE, cron_schedule=cron, execution_timezone=tz, job=per_file_job,
              default_status=status,
              description=f"Runs {PER_FILE_JOB} for every partition that is missing, failed or stale; the export "
                          "follows. Cron from $" + CRON_ENV + ".")
    def refresh_missing_and_failed(context: ScheduleEvaluationContext):
        order = registered_keys(context.instance)
        targets = refresh_targets(context.instance, context.repository_def.asset_graph, order)
        if not targets:
            return SkipReason(f"all {len(order)} partition(s) up to date or in progress")
        context.log.info(f"requesting {len(targets)} of {len(order)} partition(s): "
                         + ", ".join(f"{k} ({why})" for k, why in targets.items()))
        return [range_request(batch)  # no run key: each tick retries what failed
                for batch in contiguous_ranges(order, set(targets), PARTITIONS_PER_RUN)]

    return refresh_missing_and_failed
