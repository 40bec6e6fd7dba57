"""Issue 15: the Ollama server goes away in the middle of an LLM run, through the CLI on the scripted test server.

Each test runs ``llava-sensing generate --mode llm`` on two files (one partition per Dagster run) and takes the server
away after a few answered requests: killed (``stop()``: connections refused, open ones dropped), hung (``hang()``:
connections accepted, nothing answered, health checks included), or killed and restarted on the same port. The
server counts each request body it answered in full, so a request paid for twice would show.
"""

import io
import json
import logging
import re
import shlex
import sys
import threading
import time
from pathlib import Path


from llava_sensing_pipeline.cli import main
from llava_sensing_pipeline_tests.test_llm_mode import faithful_script

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2:135m"
DOWN_WAIT = 3.0


class TimedStderr(io.TextIOBase):
    """Stands in for ``sys.stderr``: keeps each line with the time it was written (Dagster's console logger
    writes its warnings there)."""

    def __init__(self):
        self.lines: list[tuple[float, str]] = []
        self._partial = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            now = time.monotonic()
            *done, self._partial = (self._partial + text).split("\n")
            self.lines.extend((now, line) for line in done)
        return len(text)

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines) + "\n" + self._partial

    def first(self, pattern: str) -> float:
        """When the first line matching ``pattern`` was written."""
        for at, line in self.lines:
            if re.search(pattern, line):
                return at
        raise AssertionError(f"no line matches {pattern!r} in:\n{self.text()}")

    def count(self, pattern: str) -> int:
        return sum(1 for _, line in self.lines if re.search(pattern, line))


class TakeAway:
    """A script that answers like ``faithful_script`` and, once it has answered ``after`` requests, runs
    ``action`` in another thread (the server cannot stop itself from inside a request)."""

    def __init__(self, after: int, action):
        self.after, self.action = after, action
        self.calls = 0
        self.at: float | None = None
        self._lock = threading.Lock()

    def __call__(self, request) -> str:
        with self._lock:
            self.calls += 1
            fire = self.calls == self.after
        if fire:
            self.at = time.monotonic()
            threading.Thread(target=self.action).start()
        return faithful_script(request)


def argv(ws, server, down_wait=DOWN_WAIT) -> list[str]:
    return ["generate", "--mode", "llm", "--input-dir", str(ws / "Novel"), "--output-dir", str(ws / "out"),
            "--model", MODEL, "--ollama-host", server.url, "--parallel", "2", "--max-retries", "1",
            "--max-files", "1", "--num-examples", "4", "--ollama-down-wait", f"{down_wait:g}"]


def run_timed(args: list[str]) -> tuple[int, TimedStderr, float]:
    """``main(args)`` with its stderr timed line by line (not through monkeypatch, whose undo would put back a
    capture that capsys has closed by then)."""
    err, before = TimedStderr(), sys.stderr
    sys.stderr = err
    try:
        rc = main(args)
    finally:
        sys.stderr = before
    return rc, err, time.monotonic()


def assert_stopped_by_the_outage(ws, err: TimedStderr, wait: float, args: list[str], what: str) -> list[str]:
    """The partition in progress failed with OllamaDown after the wait, the other one was not started, no dataset
    was written, and the summary ends with the command that resumes; returns that command's arguments."""
    text = err.text()
    assert err.count(rf"Ollama at \S+ {what} since \d\d:\d\d:\d\d.*waiting for it to come back \(up to "
                     rf"{wait:g} s; Ctrl-C stops, re-running resumes\)") == 1, text  # once, not per request
    assert re.search(rf"still down after waiting {wait:g} s in all \(--ollama-down-wait\)", text)
    assert "1 file(s) failed" in text and "1 file(s) not started" in text and "Travel_Novel/B901_Salt_Roads" in text
    assert not (ws / "out" / "llm_dataset.json").exists()
    last = [line for line in text.splitlines() if line.strip()][-2:]
    assert last[0] == "Once the server is back, resume with:", text
    resume = shlex.split(last[1])
    assert resume[0] == "llava-sensing" and resume[1:] == args
    return resume[1:]


def assert_timeline(what: str, gone: float, said: float, failed: float, returned: float) -> None:
    """The outage's timeline (monotonic seconds; printed for the record with pytest -s): the message within 5 s of the
    server going away, the partition failed after --ollama-down-wait, the CLI done within 5 s after that (the other
    partition is not started into the same wall)."""
    print(f"\n{what}: message {said - gone:.2f} s after the outage, failure {failed - said:.2f} s after the message, "
          f"CLI done {returned - failed:.2f} s after the failure")
    assert said - gone < 5
    assert DOWN_WAIT - 0.25 <= failed - said < DOWN_WAIT + 3  # the wait counts from just before the line is written
    assert returned - failed < 5


def assert_resumed_paying_only_the_rest(server, answered_before, rc: int, ws) -> None:
    answered = server.answered_requests()
    assert rc == 0
    assert max(answered.values()) == 1, "a request was answered twice"
    assert sum(answered.values()) > sum(answered_before.values())
    assert len(json.loads((ws / "out" / "llm_dataset.json").read_text())) == 4


def test_killed_mid_run_reports_at_once_fails_after_the_wait_and_resumes(workspace, scripted_ollama, monkeypatch,
                                                                         capsys):
    """Killed after 3 answers: one message within 5 s, the partition fails after --ollama-down-wait, the other
    partition is not started, the summary ends with the resume command; once the server is back, that command
    finishes the run, paying only for the requests not answered before."""
    take_away = TakeAway(3, scripted_ollama.stop)
    scripted_ollama.set_script(take_away)
    args = argv(workspace, scripted_ollama)
    rc, err, returned = run_timed(args)
    assert rc == 1, err.text()
    said = err.first(r"unreachable since .* waiting for it to come back")
    failed = err.first(r"\[1/1\] \S+: ServerDown: ")
    assert_timeline("killed", take_away.at, said, failed, returned)
    assert "not starting the remaining 1 partition(s)" in capsys.readouterr().out
    resume = assert_stopped_by_the_outage(workspace, err, DOWN_WAIT, args, "unreachable")

    answered_before = scripted_ollama.answered_requests()
    scripted_ollama.start()  # back on the same port
    assert_resumed_paying_only_the_rest(scripted_ollama, answered_before, main(resume), workspace)


def test_hung_server_is_detected_by_the_probe_with_the_same_outcome(workspace, scripted_ollama, monkeypatch):
    """Hung after 3 answers (connections accepted, nothing answered): a request unanswered for 0.5 s gets a health
    check with a 0.5 s timeout, which gets no reply: the same message, wait, failure and resume."""
    monkeypatch.setenv("LLAVA_SENSING_OLLAMA_PROBE_AFTER", "0.5")
    monkeypatch.setenv("LLAVA_SENSING_OLLAMA_CHECK_TIMEOUT", "0.5")
    take_away = TakeAway(3, scripted_ollama.hang)
    scripted_ollama.set_script(take_away)
    args = argv(workspace, scripted_ollama)
    rc, err, returned = run_timed(args)
    assert rc == 1, err.text()
    said = err.first(r"not answering since .* \(it accepts connections")
    failed = err.first(r"\[1/1\] \S+: ServerDown: .* not answering since")
    assert_timeline("hung", take_away.at, said, failed, returned)
    resume = assert_stopped_by_the_outage(workspace, err, DOWN_WAIT, args, "not answering")

    answered_before = scripted_ollama.answered_requests()
    scripted_ollama.restart()  # the held requests are dropped unanswered
    assert_resumed_paying_only_the_rest(scripted_ollama, answered_before, main(resume), workspace)


def test_restarted_within_the_wait_completes_with_no_failure_and_no_duplicate(workspace, scripted_ollama,
                                                                             monkeypatch):
    """Killed after 3 answers and back on the same port 2 s later, within the wait: the run completes (exit 0, no
    failure), no request is answered twice, one message when it went and one when it came back, and the partition
    that was running records the outage in its metadata."""
    from dagster import AssetKey, DagsterInstance

    def kill_and_restart():
        scripted_ollama.stop()
        time.sleep(2)
        scripted_ollama.start()

    take_away = TakeAway(3, kill_and_restart)
    scripted_ollama.set_script(take_away)
    rc, err, _ = run_timed(argv(workspace, scripted_ollama, down_wait=60))
    text = err.text()
    assert rc == 0, text
    assert "ServerDown" not in text and "failed" not in text.lower().replace("failed_files", "")
    assert err.count(r"unreachable since .* waiting for it to come back \(up to 60 s") == 1
    assert err.count(r"is back after \d+ s \(down since \d\d:\d\d:\d\d\)") == 1
    assert max(scripted_ollama.answered_requests().values()) == 1
    assert len(json.loads((workspace / "out" / "llm_dataset.json").read_text())) == 4
    with DagsterInstance.get() as instance:
        recorded = [r.asset_materialization.metadata for name in ("environment_features", "generated_examples")
                    for r in instance.fetch_materializations(AssetKey(name), limit=10).records]
        # the UI's run logs have the same two lines, as warnings of the step that waited
        logged = [(e.level, e.step_key, e.user_message) for run in instance.get_runs()
                  for e in instance.all_logs(run.run_id) if re.search(r"unreachable since|is back after", e.user_message)]
    assert [m for level, _, m in logged if level == logging.WARNING] == [m for _, _, m in logged] and len(logged) == 2
    assert logged[0][1] in ("environment_features", "generated_examples") and "unreachable since" in logged[0][2]
    outages = [m for m in recorded if m["ollama_outages"].value]
    assert len(outages) == 1 and outages[0]["ollama_outages"].value == 1
    assert 1.5 <= outages[0]["ollama_downtime_s"].value < 10
    assert all(m["ollama_downtime_s"].value == 0 for m in recorded if m is not outages[0])
