"""Tests that need something from outside the repository never skip silently in CI (``CI`` set): they fail."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llava_sensing_pipeline_tests.support.needs import CORPUS_ENV, in_ci, require

REPO = Path(__file__).resolve().parents[1]
CORPUS_TESTS = [
    "llava_sensing_pipeline_tests/test_environment.py::test_real_corpus_chunks_are_labelled_with_vocabulary_values",
    "llava_sensing_pipeline_tests/test_style.py::test_inference_agrees_with_folders_on_most_corpus_chunks",
    "llava_sensing_pipeline_tests/test_text.py::test_real_corpus_chunks_are_clean",
]


@pytest.mark.parametrize(("value", "ci"), [("true", True), ("1", True), ("yes", True), ("", False), ("0", False),
                                           ("false", False), (None, False)])
def test_in_ci_reads_the_ci_variable(monkeypatch, value, ci):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert in_ci() is ci


def test_require_skips_outside_ci_and_fails_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    require(True, "present")  # nothing happens
    with pytest.raises(pytest.skip.Exception, match="chromium is missing"):
        require(False, "chromium is missing")
    monkeypatch.setenv("CI", "true")
    require(True, "present")
    with pytest.raises(pytest.fail.Exception, match="chromium is missing"):
        require(False, "chromium is missing")


def run_pytest(env_changes: dict, *tests: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **env_changes}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)


def test_corpus_tests_fail_in_ci_without_the_corpus_and_skip_outside(tmp_path):
    missing = {CORPUS_ENV: str(tmp_path / "no-corpus")}
    ci = run_pytest({**missing, "CI": "true"}, *CORPUS_TESTS)
    assert ci.returncode == 1, ci.stdout[-3000:]
    assert f"{len(CORPUS_TESTS)} failed" in ci.stdout and "the shared corpus is missing" in ci.stdout
    local = run_pytest({**missing, "CI": ""}, *CORPUS_TESTS)
    assert local.returncode == 0, local.stdout[-3000:]
    assert f"{len(CORPUS_TESTS)} skipped" in local.stdout
