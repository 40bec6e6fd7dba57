"""Ctrl-C stops ``dagster dev``, also while a run its daemon launched waits for an LLM server that is down.

The reported bug: ``dagster dev`` on a DAGSTER_HOME whose settings say LLM mode launched an llm run over every file
within seconds (``novel_file_sensor``); the run waited up to ``--ollama-down-wait`` (300 s) for the Ollama server,
which was not running, and Ctrl-C on ``dagster dev`` did not stop it within 60 s. Here the server's URL is a free
loopback port, the down wait stays at 300 s (so a run that ends did not just wait it out), and SIGINT goes to the
whole process group, as a terminal sends it: every process of the group, the run worker included, must be gone
within a few seconds, and no process of this DAGSTER_HOME may be left anywhere else.
"""

import os
import shutil
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from llava_sensing_pipeline_tests.support.dagster_server import free_port, interrupt, serving_process, wait_for

REPO = Path(__file__).resolve().parents[1]
STOP_S = 20  # "within a few seconds"; dagster dev's own fallback (kill its children) is after 60 s
DOWN_WAIT_S = 300


def _wait(what: str, condition, log: Path, timeout: float):
    return wait_for(what, condition, log, timeout)


def _processes_of(home: Path) -> list[str]:
    """Live processes (other than this one) whose environment has ``DAGSTER_HOME=home``, wherever their group."""
    marker = f"DAGSTER_HOME={home}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            stat = (proc / "stat").read_text()
            if stat[stat.rindex(")") + 2:].split()[0] == "Z":
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            found.append(f"{proc.name} {cmdline}")
        except (OSError, ValueError):
            continue
    return found


def test_ctrl_c_stops_dagster_dev_while_a_run_waits_for_a_down_llm_server(tmp_path, monkeypatch):
    corpus = tmp_path / "Novel"
    shutil.copytree(REPO / "Novel" / "Travel_Novel", corpus / "Travel_Novel", ignore=shutil.ignore_patterns("*.md"))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LLAVA_SENSING_", "OLLAMA_")) and k != "DAGSTER_HOME"}
    env.update(
        DAGSTER_HOME=str(home), PYTHONPATH=str(REPO),
        LLAVA_SENSING_MODE="llm",
        LLAVA_SENSING_LLM_URL=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        LLAVA_SENSING_OLLAMA_DOWN_WAIT=str(DOWN_WAIT_S),
        LLAVA_SENSING_INPUT_DIR=str(corpus),
        LLAVA_SENSING_OUTPUT_DIR=str(tmp_path / "out"),
        LLAVA_SENSING_STORAGE_DIR=str(tmp_path / "storage"),
        LLAVA_SENSING_LLM_CACHE=str(tmp_path / "llm.sqlite"),
        LLAVA_SENSING_SENSOR_INTERVAL="3",
    )
    log = tmp_path / "dagster_dev.log"
    command = [sys.executable, "-m", "dagster", "dev"]
    with serving_process(command, env, log, load_timeout=90, stop_timeout=10) as (_, server), \
            DagsterInstance.get() as instance:

        def waiting_run():
            """A started run whose logs say it waits for the LLM server to come back."""
            for record in instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
                run_id = record.dagster_run.run_id
                if any("come back" in (entry.user_message or "") for entry in instance.all_logs(run_id)):
                    return run_id
            return None

        run_id = _wait("a run waiting for the LLM server", waiting_run, log, timeout=120)
        started = time.monotonic()
        alive = interrupt(server, STOP_S)
        took = time.monotonic() - started
        assert not alive, (f"{len(alive)} process(es) of dagster dev's group still running {STOP_S} s after "
                           f"SIGINT:\n" + "\n".join(alive) + f"\n{log.read_text(errors='replace')[-4000:]}")
        left = _processes_of(home)
        assert not left, "processes of this DAGSTER_HOME left after dagster dev stopped:\n" + "\n".join(left)
        status = instance.get_run_by_id(run_id).status
        assert status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED), f"the run was left {status}"
        print(f"dagster dev and its run stopped {took:.1f} s after SIGINT")


def test_an_interrupted_wait_for_the_server_ends_the_retried_step_at_once(tmp_path):
    """The cause, without dagster dev: Dagster turns an interrupt of a step with a ``RetryPolicy`` (the LLM assets)
    into a retry, on the same resource. The interrupted ``wait_ready`` must stop the pool's waits, so that the
    retry's ``wait_ready`` raises ``ServerDown`` at once instead of waiting ``down_wait_s`` again."""
    import _thread
    import threading

    from llava_sensing_pipeline.definitions import llm_from_env
    from llava_sensing_pipeline.llm import ServerDown

    llm = llm_from_env({"LLAVA_SENSING_LLM_URL": f"http://127.0.0.1:{free_port()}",
                        "LLAVA_SENSING_OLLAMA_DOWN_WAIT": str(DOWN_WAIT_S),
                        "LLAVA_SENSING_LLM_CACHE": str(tmp_path / "llm.sqlite")})
    timer = threading.Timer(1.0, _thread.interrupt_main)  # SIGINT's KeyboardInterrupt, in the main thread
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        llm.wait_ready()
    timer.join()
    assert time.monotonic() - started < 10
    retry: dict = {}

    def retried_step():
        try:
            llm.wait_ready()
        except BaseException as exc:
            retry["error"] = exc

    thread = threading.Thread(target=retried_step, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        llm.stop_waiting()  # ends it, for the next tests
        thread.join(10)
        pytest.fail(f"the retried step waits for the server again ({DOWN_WAIT_S} s) after an interrupt")
    assert isinstance(retry.get("error"), ServerDown) and "interrupted" in str(retry["error"]), retry
