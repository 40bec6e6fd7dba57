"""Shared pytest fixtures.

Tests that need something from outside the repository (``../shared/corpus``, chromium, PostgreSQL, an optional
package) call ``require(condition, reason)`` from ``llava_sensing_pipeline_tests.support.needs`` (re-exported here):
it skips the test on a developer's machine and fails it in CI (``CI`` set), so nothing is skipped silently there.

Ollama test servers (see ``llava_sensing_pipeline_tests.support.ollama_test_server``):

- ``test_model_path`` (session): the verified SmolLM2-135M GGUF, downloaded once if needed.
- ``ollama_server`` (session): one real-model server (parallel 2) on a free loopback port.
- ``real_ollama`` (function): that same server after ``reset()``, so each test starts with zeroed
  counters and no pending faults; use it rather than ``ollama_server`` in tests. (Not named
  ``ollama``, which would shadow the ``ollama`` client module inside tests.)
- ``scripted_ollama`` (function): a fresh scripted-backend server (no model), echo replies
  until the test calls ``set_script(...)``.

``workspace`` (function): a copy of the bundled ``Novel/`` in ``tmp_path`` with its own ``DAGSTER_HOME``, storage and
LLM cache, as the current folder.

``postgres_server`` (session): a throwaway PostgreSQL server on loopback (``support/postgres.py``) with an empty
database ``dagster_test``; tests that need a database of their own call ``create_database(name)``.
"""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from llava_sensing_pipeline_tests.support import postgres
from llava_sensing_pipeline_tests.support.model_fetch import ensure_test_model
from llava_sensing_pipeline_tests.support.ollama_test_server import OllamaTestServer
from llava_sensing_pipeline_tests.support.needs import require, require_corpus  # noqa: F401  (re-exported)


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """A working folder with a copy of the bundled ``Novel/`` samples and its own ``DAGSTER_HOME``, per-partition
    storage and LLM cache, as the current folder; none of the settings' environment variables set."""
    shutil.copytree(REPO / "Novel", tmp_path / "Novel", ignore=shutil.ignore_patterns("*.md"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLAVA_SENSING_STORAGE_DIR", str(tmp_path / "storage"))
    monkeypatch.setenv("LLAVA_SENSING_LLM_CACHE", str(tmp_path / "cache.sqlite"))
    for name in ("LLAVA_SENSING_INPUT_DIR", "LLAVA_SENSING_OUTPUT_DIR", "LLAVA_SENSING_NUM_EXAMPLES",
                 "LLAVA_SENSING_EXECUTOR", "OLLAMA_HOST", "OLLAMA_HOSTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def test_model_path() -> Path:
    """Path of the verified test model."""
    return ensure_test_model()


@pytest.fixture(scope="session")
def ollama_server(test_model_path: Path) -> Iterator[OllamaTestServer]:
    """A real-model Ollama test server shared by the whole session."""
    with OllamaTestServer(test_model_path, parallel=2) as server:
        yield server


@pytest.fixture
def real_ollama(ollama_server: OllamaTestServer) -> OllamaTestServer:
    """The session's real-model server with zeroed counters and no pending faults."""
    ollama_server.reset()
    return ollama_server


@pytest.fixture
def scripted_ollama() -> Iterator[OllamaTestServer]:
    """A fresh scripted-backend server for fast deterministic tests."""
    with OllamaTestServer(backend="scripted") as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[postgres.PostgresServer]:
    """A PostgreSQL server on loopback for the session (skipped without Debian's binaries, failed in CI)."""
    with postgres.postgres_server() as server:
        yield server
