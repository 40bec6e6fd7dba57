"""The refresh schedule: failed, missing or stale partitions, in ranges; the export follows by its automation."""

import json
import shutil
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DefaultScheduleStatus,
    build_schedule_context,
    evaluate_automation_conditions,
    instance_for_test,
)

from llava_sensing_pipeline.definitions import build_definitions
from llava_sensing_pipeline.jobs import EXPORT_JOB, PER_FILE_JOB
from llava_sensing_pipeline.partitions import discover_novels
from llava_sensing_pipeline.planning import RANGE_END, RANGE_START, sync_sources
from llava_sensing_pipeline.schedules import (
    CRON_ENV,
    DEFAULT_CRON,
    REFRESH_SCHEDULE,
    build_refresh_schedule,
    schedule_settings,
)

REPO = Path(__file__).resolve().parents[1]
EXPORT = AssetKey("chunked_json_exports")


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
    they can reopen (not an ephemeral one)."""
    corpus = tmp_path / "Novel"
    for rel in ("Modernist_Novel/A901_The_Glass_Weather.txt", "Modernist_Novel/A902_A_Room_Facing_North.txt",
                "Travel_Novel/B901_Salt_Roads.txt"):
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "Novel" / rel, corpus / rel)
    (corpus / "Travel_Novel" / "B900_Empty.txt").write_text("")
    defs = build_definitions({"LLAVA_SENSING_INPUT_DIR": str(corpus), "LLAVA_SENSING_OUTPUT_DIR": str(tmp_path / "out"),
                              "LLAVA_SENSING_NUM_EXAMPLES": "12", "LLAVA_SENSING_STORAGE_DIR": str(tmp_path / "storage"),
                              "LLAVA_SENSING_LLM_CACHE": str(tmp_path / "c.sqlite")})
    files = discover_novels(corpus)
    with instance_for_test() as instance:
        sync_sources(instance, corpus, files)
        yield defs, instance, [f.key for f in files], tmp_path


def tick(defs, instance):
    schedule = defs.get_repository_def().get_schedule_def(REFRESH_SCHEDULE)
    context = build_schedule_context(instance=instance, repository_def=defs.get_repository_def())
    return schedule.evaluate_tick(context)


def covered(request) -> tuple:
    return (request.partition_key,) if request.partition_key else (request.tags[RANGE_START], request.tags[RANGE_END])


def test_schedule_reruns_failed_missing_and_stale_partitions_and_the_export_follows(project):
    defs, instance, keys, tmp_path = project
    a901, a902, b900, b901 = keys
    job = defs.resolve_job_def(PER_FILE_JOB)
    assert job.execute_in_process(instance=instance, partition_key=a901).success
    assert not job.execute_in_process(instance=instance, partition_key=b900, raise_on_error=False).success
    first = evaluate_automation_conditions(defs=defs, instance=instance)  # the automation sensor's first tick
    # a902 and b901 were never run, b900 failed: one range run over the three (a901 is up to date)
    result = tick(defs, instance)
    assert [covered(r) for r in result.run_requests] == [(a902, b901)]
    request = result.run_requests[0]
    outcome = job.execute_in_process(instance=instance, tags=request.tags, raise_on_error=False)
    assert not outcome.success  # b900 is still empty: the range fails (isolate_failed_partitions splits it)
    for key in (a902, b901):
        assert job.execute_in_process(instance=instance, partition_key=key).success
    # only the still-failing file is left for the next tick
    assert [covered(r) for r in tick(defs, instance).run_requests] == [(b900,)]
    # the examples changed: the export's automation condition requests it, once
    automation = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert automation.get_num_requested(EXPORT) == 1
    export = defs.resolve_job_def(EXPORT_JOB).execute_in_process(instance=instance)
    assert export.success
    again = evaluate_automation_conditions(defs=defs, instance=instance, cursor=automation.cursor)
    assert again.get_num_requested(EXPORT) == 0
    index = json.loads((tmp_path / "out" / "chunks" / "chunks_index.json").read_text())
    assert [f["source_path"] for f in index["failed_files"]] == ["Travel_Novel/B900_Empty.txt"]
    assert "empty" in index["failed_files"][0]["reason"]
    assert {f["partition_key"] for f in index["files"]} == {a901, a902, b901}

    # the bad file fixed: the next tick redoes it alone, and the export follows again without it in failed_files
    shutil.copy(REPO / "Novel" / "Travel_Novel" / "B903_The_Lantern_Coast.txt",
                tmp_path / "Novel" / "Travel_Novel" / "B900_Empty.txt")
    sync_sources(instance, tmp_path / "Novel", discover_novels(tmp_path / "Novel"))
    [fix] = tick(defs, instance).run_requests
    assert covered(fix) == (b900,)
    assert job.execute_in_process(instance=instance, partition_key=b900).success
    assert tick(defs, instance).skip_message == "all 4 partition(s) up to date or in progress"
    automation = evaluate_automation_conditions(defs=defs, instance=instance, cursor=again.cursor)
    assert automation.get_num_requested(EXPORT) == 1
    assert defs.resolve_job_def(EXPORT_JOB).execute_in_process(instance=instance).success
    index = json.loads((tmp_path / "out" / "chunks" / "chunks_index.json").read_text())
    assert index["failed_files"] == [] and len(index["files"]) == 4
