"""What the CLI shows while Dagster works: a progress line that moves per file (a live ``tqdm`` line with rate and
ETA on a terminal; otherwise plain lines, at most one per step every ``PLAIN_EVERY_S`` seconds and its last), the
steps' warnings (an outage) once each, and Dagster's full output in a log file instead of the terminal
(``--verbose`` shows it too). A file that fails is not printed while the run goes on (the runner's ``[3/7] …: 1
failed`` line says so); the summary at the end gives it one line: what, why, what to do. A failure that stops the
run (the server gone, or its context too small) is shown at once.

The steps report progress with :func:`report_progress` (at most one message a second per step, so a long run does
not fill the event log); the CLI's runs carry two loggers that read those messages and everything else:
``progress`` and ``file`` (see :func:`cli_run_config`). Runs launched from the UI keep Dagster's console logger.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time

from dagster import Field, InitLoggerContext, colored_console_logger, logger
from tqdm import tqdm

from .llm.protocol import stops_run

PREFIX = "progress: "
_last: dict[str, float] = {}
# Dagster's notices for the steps it skips after a failure: consequences of an error already shown, not news.
SKIPPED_STEP = re.compile(r"^Dependencies for step \S+ (?:failed|were not executed)")
COUNTER = re.compile(r" \[\d+/\d+\] ")  # "[4/6]": a step's position in its run, which differs between runs
# "<step> [4/6] <partition>: <why>": one partition failed; the CLI's summary gives it its one line.
PARTITION_FAILED = re.compile(r"^\S+ \[\d+/\d+\] \S.*?: ")
# "<step> <done>/<total> <what>, ...": a progress report
PROGRESS = re.compile(r"^(?P<step>.+?) (?P<done>\d+)/(?P<total>\d+) (?P<rest>.*)$")
PLAIN_EVERY_S = 10.0
_shown: set[str] = set()


def report_progress(context, step: str, done: int, total: int, started: float, what: str = "files",
                    note: str = "") -> None:
    """Logs ``progress: <step> <done>/<total> <what><note>, <elapsed> s, ETA <eta> s`` if a second passed since the
    step's last report (and always for the last item)."""
    now = time.monotonic()
    if done < total and now - _last.get(step, 0.0) < 1.0:
        return
    _last[step] = now
    elapsed = now - started
    eta = elapsed / done * (total - done) if done else 0.0
    context.log.info(f"{PREFIX}{step} {done}/{total} {what}{note}, {elapsed:.0f} s, ETA {eta:.0f} s")


def new_session() -> None:
    """Forgets the progress reports and messages of an earlier command in this process (each CLI command starts
    afresh)."""
    _last.clear()
    _shown.clear()


def _original(record: logging.LogRecord) -> str:
    meta = getattr(record, "dagster_meta", None)
    return meta.get("orig_message", "") if isinstance(meta, dict) else record.getMessage()


class _ProgressHandler(logging.Handler):
    def __init__(self, tty: bool):
        super().__init__(logging.INFO)
        self.tty = tty
        self.bar: tqdm | None = None
        self.bar_step = ""
        self.printed: dict[str, float] = {}  # step -> when its last plain line was written

    def emit(self, record: logging.LogRecord) -> None:
        message = _original(record)
        meta = getattr(record, "dagster_meta", None)
        if record.levelno >= logging.WARNING and not (isinstance(meta, dict) and meta.get("dagster_event")):
            # the steps' own warnings and errors, one line each (an outage), not Dagster's; each once per process (a
            # failed range run and the run that isolates the failed file report it alike); a failed partition is
            # left to the summary, unless its failure stops the run (the server is gone or too small): that is
            # news now
            key = f"{record.levelname}:{COUNTER.sub(' ', message)}"
            left_to_summary = PARTITION_FAILED.match(message) and not stops_run(message)
            if SKIPPED_STEP.match(message) or left_to_summary or key in _shown:
                return
            _shown.add(key)
            self._write(f"  {record.levelname.lower()}: {message}")
            return
        match = PROGRESS.match(message[len(PREFIX):]) if message.startswith(PREFIX) else None
        if match is None:
            return
        step, done, total = match["step"], int(match["done"]), int(match["total"])
        if self.tty:
            self._live(step, done, total, match["rest"].split(",")[0])
            return
        now = time.monotonic()
        if step not in self.printed:  # a step's clock starts at its first report: a quick step shows its last only
            self.printed[step] = now
        if done < total and now - self.printed[step] < PLAIN_EVERY_S:
            return
        self.printed[step] = now
        self._write("  " + message[len(PREFIX):])

    def _live(self, step: str, done: int, total: int, what: str) -> None:
        """One live line on the terminal (tqdm: count, rate, elapsed, ETA), redrawn in place."""
        if self.bar is None or step != self.bar_step or total != self.bar.total:
            if self.bar is not None:
                self.bar.close()
            self.bar = tqdm(total=total, desc=f"  {step}", unit=what.split()[0] if what else "it", leave=False,
                            file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
            self.bar_step = step
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()
            self.bar = None

    def _write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.clear()
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        if self.bar is not None:
            self.bar.refresh()


@logger(config_schema={"tty": Field(bool, default_value=False)},
        description="The CLI's progress line and the steps' own warnings, to stderr.")
def progress_logger(init_context: InitLoggerContext) -> logging.Logger:
    log = logging.getLogger("llava_sensing.progress")
    log.handlers = [_ProgressHandler(init_context.logger_config["tty"])]
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


@logger(config_schema={"path": Field(str)}, description="Everything Dagster logs in a run, appended to a file.")
def file_logger(init_context: InitLoggerContext) -> logging.Logger:
    path = init_context.logger_config["path"]
    log = logging.getLogger(f"llava_sensing.file.{path}")
    if not log.handlers:
        if os.path.isdir(os.path.dirname(os.path.abspath(path))):
            handler = logging.FileHandler(path, encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        else:  # a step on a worker of another machine, where the CLI's folder is not: its events are in the instance
            handler = logging.NullHandler()
        log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    return log


LOGGERS = {"console": colored_console_logger, "progress": progress_logger, "file": file_logger}


def cli_run_config(log_path: str, verbose: bool, tty: bool | None = None) -> dict:
    """Run config for the CLI's runs: progress to the terminal, everything to ``log_path``, and with ``verbose``
    Dagster's console logger too."""
    tty = sys.stderr.isatty() if tty is None else tty
    loggers = {"progress": {"config": {"tty": tty and not verbose}}, "file": {"config": {"path": log_path}}}
    if verbose:
        loggers["console"] = {"config": {"log_level": "INFO"}}
    return {"loggers": loggers}
