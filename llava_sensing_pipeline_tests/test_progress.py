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


def test_a_step_error_is_shown_once_and_dagsters_skip_notices_not_at_all(handler, capsys):
    failed = "novel_files [4/6] Travel_Novel/B901: NovelReadError: the file is empty"
    handler.emit(record(logging.ERROR, failed))
    handler.emit(record(logging.ERROR, "Dependencies for step text_chunks failed: ['novel_files']. Not executing."))
    handler.emit(record(logging.ERROR, "Dependencies for step style_labels were not executed: ['x']. Not executing."))
    # the run that isolates the failed file reports the same error at another position
    handler.emit(record(logging.ERROR, failed.replace("[4/6]", "[1/1]")))
    handler.emit(record(logging.ERROR, "Step failed", dagster_event=True))  # Dagster's own event: in the log only
    handler.emit(record(logging.WARNING, "Ollama at http://h:1 unreachable since 10:00:00"))
    handler.emit(record(logging.INFO, progress.PREFIX + "novel_files 6/6 files, 0 s, ETA 0 s"))
    handler.emit(record(logging.INFO, "an ordinary info message"))
    assert capsys.readouterr().err.splitlines() == [
        f"  error: {failed}",
        "  warning: Ollama at http://h:1 unreachable since 10:00:00",
        "  novel_files 6/6 files, 0 s, ETA 0 s",
    ]
    progress.new_session()  # the next command in this process shows it again
    handler.emit(record(logging.ERROR, failed))
    assert capsys.readouterr().err == f"  error: {failed}\n"
