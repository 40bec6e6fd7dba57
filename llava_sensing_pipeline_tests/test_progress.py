"""What the CLI's progress logger writes to stderr: progress lines, and each step warning or error once."""

import logging

import pytest

from llava_sensing_pipeline import progress


def record(level: int, message: str, dagster_event: bool = False) -> logging.LogRecord:
    rec = logging.LogRecord("dagster", level, __file__, 1, message, None, None)
    rec.dagster_meta = {"orig_message": message, "dagster_event": object() if dagster_event else None}
    return rec


@pytest.fixture
def handler():
    progress.new_session()
    yield progress._ProgressHandler(tty=False)
    progress.new_session()


def test_warnings_are_shown_once_and_a_failed_file_is_left_to_the_summary(handler, capsys):
    """Issue 22, reproduction 5: a failed file's message was printed three times; it is now the summary's one
    line. Dagster's skip notices are not shown; a step's own warning (an outage) once."""
    failed = "novel_files [4/6] Travel_Novel/B901: NovelReadError: the file is empty"
    handler.emit(record(logging.ERROR, failed))
    handler.emit(record(logging.ERROR, "Dependencies for step text_chunks failed: ['novel_files']. Not executing."))
    handler.emit(record(logging.ERROR, "Dependencies for step style_labels were not executed: ['x']. Not executing."))
    handler.emit(record(logging.ERROR, failed.replace("[4/6]", "[1/1]")))
    handler.emit(record(logging.ERROR, "Step failed", dagster_event=True))  # Dagster's own event: in the log only
    outage = "Ollama at http://h:1 unreachable since 10:00:00"
    handler.emit(record(logging.WARNING, outage))
    handler.emit(record(logging.WARNING, outage))
    handler.emit(record(logging.INFO, progress.PREFIX + "novel_files 6/6 files, 0 s, ETA 0 s"))
    handler.emit(record(logging.INFO, "an ordinary info message"))
    assert capsys.readouterr().err.splitlines() == [
        f"  warning: {outage}",
        "  novel_files 6/6 files, 0 s, ETA 0 s",
    ]
    progress.new_session()  # the next command in this process shows it again
    handler.emit(record(logging.WARNING, outage))
    assert capsys.readouterr().err == f"  warning: {outage}\n"
    stop = "environment_features [1/1] Travel_Novel/B901: ServerDown: Ollama at http://h:1 still down"
    handler.emit(record(logging.ERROR, stop))  # a failure that stops the run is news now
    assert capsys.readouterr().err == f"  error: {stop}\n"


def test_without_a_terminal_each_step_writes_a_line_every_few_seconds_and_its_last(handler, capsys, monkeypatch):
    clock = iter([0.0, 1.0, 2.0, 12.0, 13.0, 23.0, 24.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    for done in (1, 2, 3, 4, 5, 6, 7):
        handler.emit(record(logging.INFO, progress.PREFIX + f"text_chunks {done}/7 files, {done} s, ETA 1 s"))
    assert [line.split(" files")[0] for line in capsys.readouterr().err.splitlines()] == [
        "  text_chunks 4/7", "  text_chunks 6/7", "  text_chunks 7/7"]


def test_on_a_terminal_the_line_is_a_live_bar(capsys):
    progress.new_session()
    handler = progress._ProgressHandler(tty=True)
    for done in (1, 2, 3):
        handler.emit(record(logging.INFO, progress.PREFIX + f"environment_features {done}/3 files, 1 s, ETA 0 s"))
    err = capsys.readouterr().err
    assert "\r" in err and "environment_features" in err and "files/s" in err and "\n" not in err  # in place
