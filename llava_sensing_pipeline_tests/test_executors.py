import importlib.util

import pytest

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
