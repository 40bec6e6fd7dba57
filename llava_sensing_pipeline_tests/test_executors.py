import importlib.util

import pytest
from dagster import AssetKey

from llava_sensing_pipeline.definitions import build_definitions
from llava_sensing_pipeline.executors import EXECUTORS, executor_from_env
from llava_sensing_pipeline.jobs import EXPORT_JOB, PER_FILE_JOB
from llava_sensing_pipeline_tests.support.needs import require

EXPECTED = {"in_process": "in_process", "multiprocess": "multiprocess", "k8s": "k8s", "celery": "celery"}


@pytest.mark.parametrize("name", EXECUTORS)
def test_definitions_load_with_each_executor(name, monkeypatch):
    if name in ("k8s", "celery"):  # the scale extra, which the test extra includes
        require(importlib.util.find_spec(f"dagster_{name}"), f"dagster-{name} is not installed: pip install -e .[test]")
    monkeypatch.setenv("LLAVA_SENSING_EXECUTOR", name)
    monkeypatch.setenv("LLAVA_SENSING_CELERY_BROKER", "redis://127.0.0.1:6379/0")
    executor = executor_from_env()
    assert EXPECTED[name] in executor.name
    defs = build_definitions()
    for job in (PER_FILE_JOB, EXPORT_JOB):
        assert defs.resolve_job_def(job).executor_def.name == executor.name


def test_default_is_in_process():
    assert executor_from_env({}).name == "in_process"


def test_unknown_executor_is_a_clear_error():
    with pytest.raises(ValueError, match="not one of"):
        executor_from_env({"LLAVA_SENSING_EXECUTOR": "spark"})


def test_celery_config_comes_from_the_environment():
    from llava_sensing_pipeline.executors import celery_config

    with pytest.raises(ValueError, match="LLAVA_SENSING_CELERY_BROKER"):
        celery_config({})
    config = celery_config({"LLAVA_SENSING_CELERY_BROKER": "redis://broker:6379/0",
                            "LLAVA_SENSING_CELERY_VISIBILITY_TIMEOUT": "30"})
    assert config["broker"] == config["backend"] == "redis://broker:6379/0"  # results beside the tasks
    source = config["config_source"]
    assert source["task_acks_late"] and source["task_reject_on_worker_lost"]  # a lost worker's step is redelivered
    assert source["broker_transport_options"]["visibility_timeout"] == 30
    assert celery_config({"LLAVA_SENSING_CELERY_BROKER": "pyamqp://guest@rabbit//"})["backend"] == "rpc://"
    assert celery_config({"LLAVA_SENSING_CELERY_BROKER": "redis://b/0",
                          "LLAVA_SENSING_CELERY_BACKEND": "redis://r/1"})["backend"] == "redis://r/1"


def test_celery_runs_poll_their_steps_four_times_a_second():
    require(importlib.util.find_spec("dagster_celery"), "dagster-celery is not installed: pip install -e .[test]")
    from dagster_celery import core_execution_loop

    executor_from_env({"LLAVA_SENSING_EXECUTOR": "celery", "LLAVA_SENSING_CELERY_BROKER": "redis://b:6379/0"})
    assert core_execution_loop.TICK_SECONDS == 0.25  # dagster-celery's 1 s, after every step of a run's chain


def test_the_workers_app_is_configured_like_the_executor(monkeypatch):
    """``celery -A llava_sensing_pipeline.celery_app worker`` listens where the executor sends, acks the same way."""
    require(importlib.util.find_spec("dagster_celery"), "dagster-celery is not installed: pip install -e .[test]")
    import importlib as il
    import sys

    monkeypatch.setenv("LLAVA_SENSING_CELERY_BROKER", "redis://broker:6379/3")
    monkeypatch.setenv("LLAVA_SENSING_CELERY_VISIBILITY_TIMEOUT", "45")
    sys.modules.pop("llava_sensing_pipeline.celery_app", None)
    app = il.import_module("llava_sensing_pipeline.celery_app").app
    assert app.conf.broker_url == "redis://broker:6379/3" and app.conf.result_backend == "redis://broker:6379/3"
    assert app.conf.task_acks_late and app.conf.broker_transport_options["visibility_timeout"] == 45
    assert "execute_plan" in app.tasks
    assert [q.name for q in app.conf.task_queues] == ["dagster"]


def test_job_env_carries_the_settings_to_workers(monkeypatch, tmp_path):
    """Workers rebuild the job from the launching process's variables, not their own."""
    import json

    from llava_sensing_pipeline.definitions import job_env, job_from_env

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    env = json.loads(job_env({"LLAVA_SENSING_SEED": "7", "LLAVA_SENSING_STORAGE_DIR": "rel/storage",
                              "OLLAMA_HOSTS": "http://gpu:11434", "UNRELATED": "x"}))
    assert env["LLAVA_SENSING_SEED"] == "7" and env["OLLAMA_HOSTS"] == "http://gpu:11434" and "UNRELATED" not in env
    assert env["LLAVA_SENSING_STORAGE_DIR"] == str(tmp_path / "rel" / "storage")  # absolute: same for every worker
    assert env["LLAVA_SENSING_LLM_CACHE"] == str(tmp_path / "data" / "cache" / "llm_responses.sqlite")
    assert env["_quotas"] == "default"  # with --num-examples, a hash of the quotas of the files now selected

    def sensor_version(job):  # depends on the seed
        return job.asset_layer.asset_graph.get(AssetKey("sensor_records")).code_version

    monkeypatch.setenv("LLAVA_SENSING_SEED", "1")  # the worker's own value loses to the run's
    assert sensor_version(job_from_env("per_file_job", json.dumps(env))) != sensor_version(job_from_env("per_file_job"))
    monkeypatch.setenv("LLAVA_SENSING_SEED", "7")
    assert sensor_version(job_from_env("per_file_job", json.dumps(env))) == sensor_version(job_from_env("per_file_job"))
