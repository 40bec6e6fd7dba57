"""The refresh schedule and the export sensor: which partitions a tick re-runs, and when the export is refreshed."""

import json
import shutil
from pathlib import Path

import pytest
from dagster import (
    AssetPartitionStatus,
    DagsterRun,
    DagsterRunStatus,
    DefaultScheduleStatus,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)

from llava_sensing_pipeline.definitions import build_definitions
from llava_sensing_pipeline.jobs import EXPORT_JOB, PER_FILE_JOB
from llava_sensing_pipeline.ollama_resource import OllamaResource
from llava_sensing_pipeline.partitions import PARTITIONS_NAME, discover_novels
from llava_sensing_pipeline.schedules import (
    CRON_ENV,
    DEFAULT_CRON,
    REFRESH_SCHEDULE,
    SCHEDULE_TAG,
    build_refresh_schedule,
    combine_states,
    export_after_per_file_runs,
    refresh_targets,
    schedule_settings,
)
from llava_sensing_pipeline.settings import PipelineSettings

REPO = Path(__file__).resolve().parents[1]
M, F, P = AssetPartitionStatus.MATERIALIZED, AssetPartitionStatus.FAILED, AssetPartitionStatus.IN_PROGRESS


def test_a_partition_takes_its_worst_state_over_the_assets():
    keys = ["a", "b", "c", "d", "e"]
    per_asset = [{"a": M, "b": M, "c": M, "d": F, "e": M}, {"a": M, "b": None, "c": F, "d": P}]
    states = combine_states(per_asset, keys)
    assert states == {"a": "materialized", "b": "missing", "c": "failed", "d": "in_progress", "e": "missing"}
    assert refresh_targets(states) == ["b", "c", "e"]
    assert combine_states([], ["a"]) == {"a": "missing"}


def test_schedule_is_off_unless_its_cron_variable_is_set():
    assert schedule_settings({}) == (DEFAULT_CRON, "UTC", DefaultScheduleStatus.STOPPED)
    assert schedule_settings({CRON_ENV: "*/30 * * * *", "LLAVA_SENSING_REFRESH_TIMEZONE": "Europe/Berlin"}) == (
        "*/30 * * * *", "Europe/Berlin", DefaultScheduleStatus.RUNNING)
    schedule = build_refresh_schedule({CRON_ENV: "15 2 * * 1"})
    assert schedule.cron_schedule == "15 2 * * 1" and schedule.default_status == DefaultScheduleStatus.RUNNING
    assert schedule.job_name == PER_FILE_JOB and schedule.name == REFRESH_SCHEDULE
    assert build_refresh_schedule({}).default_status == DefaultScheduleStatus.STOPPED


@pytest.fixture
def project(tmp_path):
    """Three sample novels and an empty one (fails), registered on a temporary instance: schedule contexts need one
    they can reopen (not an ephemeral one); its one-file event log makes each run about twice as fast."""
    corpus = tmp_path / "Novel"
    for rel in ("Modernist_Novel/A901_The_Glass_Weather.txt", "Modernist_Novel/A902_A_Room_Facing_North.txt",
                "Travel_Novel/B901_Salt_Roads.txt"):
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "Novel" / rel, corpus / rel)
    (corpus / "Travel_Novel" / "B900_Empty.txt").write_text("")
    settings = PipelineSettings(input_dir=str(corpus), output_dir=str(tmp_path / "out"), num_examples=12)
    defs = build_definitions(settings, str(tmp_path / "storage"), OllamaResource(cache_path=str(tmp_path / "c.sqlite")))
    keys = [f.key for f in discover_novels(corpus)]
    event_log = {"module": "dagster._core.storage.event_log", "class": "ConsolidatedSqliteEventLogStorage",
                 "config": {"base_dir": str(tmp_path / "events")}}
    with instance_for_test(overrides={"event_log_storage": event_log}) as instance:
        instance.add_dynamic_partitions(PARTITIONS_NAME, keys)
        yield defs, instance, keys, tmp_path


def tick(defs, instance):
    schedule = defs.get_repository_def().get_schedule_def(REFRESH_SCHEDULE)
    context = build_schedule_context(instance=instance, repository_def=defs.get_repository_def())
    return schedule.evaluate_tick(context)


def sense(defs, instance, cursor=None):
    context = build_sensor_context(instance=instance, cursor=cursor, repository_def=defs.get_repository_def())
    return export_after_per_file_runs.evaluate_tick(context)


def test_schedule_reruns_missing_and_failed_partitions_then_the_sensor_refreshes_the_export(project):
    defs, instance, keys, tmp_path = project
    a901, a902, b900, b901 = keys
    job = defs.resolve_job_def(PER_FILE_JOB)
    assert job.execute_in_process(instance=instance, partition_key=a901).success
    assert not job.execute_in_process(instance=instance, partition_key=b900, raise_on_error=False).success
    # a902 and b901 were never run; b900 failed
    result = tick(defs, instance)
    assert [r.partition_key for r in result.run_requests] == [a902, b900, b901]
    assert [r.run_key for r in result.run_requests] == [a902, b900, b901]

    # nothing watched has run yet: the export sensor waits
    assert "no per-file run finished" in sense(defs, instance).skip_message
    # the daemon launches the requests, tagged with the schedule; while one is running the sensor waits
    running = DagsterRun(job_name=PER_FILE_JOB, status=DagsterRunStatus.STARTED, tags={SCHEDULE_TAG: REFRESH_SCHEDULE})
    instance.add_run(running)
    assert sense(defs, instance).skip_message == "waiting for 1 per-file run(s) to finish"
    instance.delete_run(running.run_id)
    outcomes = {r.partition_key: job.execute_in_process(instance=instance, partition_key=r.partition_key,
                                                        tags={**r.tags, SCHEDULE_TAG: REFRESH_SCHEDULE},
                                                        raise_on_error=False).success
                for r in result.run_requests}
    assert outcomes == {a902: True, b900: False, b901: True}

    # only the still-failing file is left for the next tick
    assert [r.partition_key for r in tick(defs, instance).run_requests] == [b900]

    # all watched runs are done: one export request, then nothing until another run finishes
    sensed = sense(defs, instance)
    assert export_after_per_file_runs.job_name == EXPORT_JOB and sensed.cursor
    assert [r.run_key.startswith("export-after-") for r in sensed.run_requests] == [True]
    assert sense(defs, instance, cursor=sensed.cursor).skip_message.startswith("no per-file run finished")
    # a run the CLI made (no schedule or sensor tag) does not trigger the sensor
    instance.add_run(DagsterRun(job_name=PER_FILE_JOB, status=DagsterRunStatus.SUCCESS))
    assert sense(defs, instance, cursor=sensed.cursor).skip_message.startswith("no per-file run finished")

    export = defs.resolve_job_def(EXPORT_JOB).execute_in_process(instance=instance, tags=sensed.run_requests[0].tags)
    assert export.success
    index = json.loads((tmp_path / "out" / "chunks" / "chunks_index.json").read_text())
    assert [f["source_path"] for f in index["failed_files"]] == ["Travel_Novel/B900_Empty.txt"]
    assert {f["partition_key"] for f in index["files"]} == {a901, a902, b901}

    # once the bad file is gone (and the new-file sensor deleted its partition), a tick has nothing to do
    (tmp_path / "Novel" / "Travel_Novel" / "B900_Empty.txt").unlink()
    instance.delete_dynamic_partition(PARTITIONS_NAME, b900)
    assert tick(defs, instance).skip_message == "all 3 partition(s) materialized"
