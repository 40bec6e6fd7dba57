"""The code location the UI loads: checks, retry policies, run tags, schedule and sensors are wired as intended."""

import pandas as pd
from dagster import (
    AssetKey,
    Backoff,
    DagsterEventType,
    DagsterInstance,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    Jitter,
)

import llava_sensing_pipeline.assets.environment as environment_asset
from llava_sensing_pipeline.assets import ALL_ASSETS, assets_for, environment_features, generated_examples
from llava_sensing_pipeline.checks import EXPORT_CHECKS
from llava_sensing_pipeline.definitions import build_definitions, defs
from llava_sensing_pipeline.jobs import EXPORT_JOB, NO_RUN_RETRY_ON_STEP_FAILURE, PER_FILE_JOB
from llava_sensing_pipeline.llm import OllamaResource
from llava_sensing_pipeline.partitions import PARTITIONS_NAME, partition_key_for
from llava_sensing_pipeline.schedules import REFRESH_SCHEDULE
from llava_sensing_pipeline.settings import PipelineSettings

CHECKS = {("novel_files", "is_english_prose"): True, ("text_chunks", "chunks_are_clean"): True,
          ("environment_features", "labels_are_varied"): False,
          ("chunked_json_exports", "export_is_complete"): False, ("chunked_json_exports", "files_agree_with_index"): False,
          ("chunked_json_exports", "no_duplicate_books"): False}
"""(asset, check) -> blocking, in simple mode; the LLM modes add replies_usable to the steps that ask the model."""


def test_the_workspace_code_location_loads():
    Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert {a.key.to_user_string() for a in ALL_ASSETS} == {
        "novel_files", "text_chunks", "environment_features", "sensor_records", "style_labels", "generated_examples",
        "chunked_json_exports"}
    assert [s.name for s in repo.schedule_defs] == [REFRESH_SCHEDULE]
    assert {s.name: s.default_status for s in repo.sensor_defs} == {
        "novel_file_sensor": DefaultSensorStatus.RUNNING, "export_automation": DefaultSensorStatus.RUNNING,
        "isolate_failed_partitions": DefaultSensorStatus.RUNNING}
    graph = repo.asset_graph
    assert {k.to_user_string() for k in graph.external_asset_keys} == {"novel_sources"}
    assert graph.get(AssetKey("chunked_json_exports")).automation_condition is not None
    assert all(graph.get(AssetKey(name)).backfill_policy.max_partitions_per_run == 50 for name in (
        "novel_files", "text_chunks", "environment_features", "sensor_records", "style_labels", "generated_examples"))
    assert all(graph.get(key).code_version for key in graph.materializable_asset_keys)


def test_checks_are_attached_and_blocking_where_bad_data_would_spread():
    def found(mode):
        return {(spec.asset_key.to_user_string(), spec.name): spec.blocking
                for definition in [*assets_for(mode), *EXPORT_CHECKS] for spec in definition.check_specs}

    assert found("simple") == CHECKS
    assert found("hybrid") == {**CHECKS, ("environment_features", "replies_usable"): False}
    assert found("llm") == {**CHECKS, ("environment_features", "replies_usable"): False,
                            ("generated_examples", "replies_usable"): False}
    per_file = {k.name for k in defs.resolve_job_def(PER_FILE_JOB).asset_layer.asset_graph.asset_check_keys}
    export = {k.name for k in defs.resolve_job_def(EXPORT_JOB).asset_layer.asset_graph.asset_check_keys}
    assert per_file == {n for (a, n) in CHECKS if a != "chunked_json_exports"}
    assert export == {"export_is_complete", "files_agree_with_index", "no_duplicate_books"}


def test_llm_bound_assets_retry_with_backoff_and_runs_do_not_retry_on_top():
    for asset in (environment_features, generated_examples):
        policy = asset.op.retry_policy
        assert (policy.max_retries, policy.delay, policy.backoff, policy.jitter) == (
            2, 1, Backoff.EXPONENTIAL, Jitter.PLUS_MINUS)
    assert all(a.op.retry_policy is None for a in ALL_ASSETS if a not in (environment_features, generated_examples))
    for job in (PER_FILE_JOB, EXPORT_JOB):
        assert defs.resolve_job_def(job).run_tags.items() >= NO_RUN_RETRY_ON_STEP_FAILURE.items()


def test_a_step_that_fails_once_is_retried_and_the_run_succeeds(tmp_path, monkeypatch):
    corpus = tmp_path / "Novel" / "Travel_Novel"
    corpus.mkdir(parents=True)
    (corpus / "B1_Short.txt").write_text("The rain fell on the quay all night while we waited for the boat. " * 20)
    settings = PipelineSettings(input_dir=str(tmp_path / "Novel"), output_dir=str(tmp_path / "out"))
    local = build_definitions(settings=settings, storage_dir=str(tmp_path / "storage"),
                             llm=OllamaResource(cache_path=str(tmp_path / "c.db")))
    calls = []
    real = environment_asset.rule_features

    def flaky(chunks: pd.DataFrame) -> pd.DataFrame:
        calls.append(len(chunks))
        if len(calls) == 1:
            raise ConnectionError("injected: first attempt fails")
        return real(chunks)

    monkeypatch.setattr(environment_asset, "rule_features", flaky)
    instance = DagsterInstance.ephemeral()
    key = partition_key_for("Travel_Novel/B1_Short.txt")
    instance.add_dynamic_partitions(PARTITIONS_NAME, [key])
    result = local.resolve_job_def(PER_FILE_JOB).execute_in_process(instance=instance, partition_key=key)
    assert result.success and len(calls) == 2
    retried = [e.step_key for e in result.all_events if e.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert retried == ["environment_features"]
    assert result.dagster_run.tags["dagster/retry_on_asset_or_op_failure"] == "false"


def test_schedule_default_is_off(monkeypatch):
    monkeypatch.delenv("LLAVA_SENSING_REFRESH_CRON", raising=False)
    schedule = build_definitions().get_repository_def().get_schedule_def(REFRESH_SCHEDULE)
    assert schedule.default_status == DefaultScheduleStatus.STOPPED
