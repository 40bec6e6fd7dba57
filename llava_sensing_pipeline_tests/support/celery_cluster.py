"""A Redis broker and Celery worker processes on loopback, for the distributed tests (``test_distributed.py``).

- :func:`redis_server` starts Debian's ``redis-server`` on a free loopback port with no persistence, in a temporary
  folder, and stops it at the end. Without the binary a test is skipped, except in CI (``CI`` set), where it fails
  (``support.needs.require``): ``apt-get install -y redis-server``.
- :func:`start_worker` starts one Celery worker exactly as the README's distributed set-up does,
  ``celery -A llava_sensing_pipeline.celery_app worker -Q dagster --concurrency 1 -n NAME@%h``, in a process group
  (session) of its own and a working folder of its own, so a test can kill the whole worker (main process and pool
  process) with one ``SIGKILL``, as when its machine is lost.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llava_sensing_pipeline_tests.support.needs import REPO, require

WORKER_APP = "llava_sensing_pipeline.celery_app"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """Yields the URL (``redis://127.0.0.1:PORT/0``) of a throwaway Redis server."""
    binary = shutil.which("redis-server")
    require(binary, "redis-server not found (the Celery broker of the distributed tests): "
                    "apt-get install -y redis-server")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(workdir / "redis.log", "wb")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not _ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {(workdir / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def base_env(**extra: str) -> dict[str, str]:
    """A clean environment for a subprocess (no ``LLAVA_SENSING_*`` or ``DAGSTER_*`` of the test process), with the
    repository on ``PYTHONPATH`` (the package may be installed from another checkout) and ``extra``."""
    keep = {k: v for k, v in os.environ.items()
            if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ") or k.startswith("PYENV")}
    return {**keep, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **extra}


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen
    log: Path
    folder: Path

    @property
    def hostname(self) -> str:
        """The Celery node name (``NAME@host``), as dagster-celery's engine events give it."""
        return f"{self.name}@{socket.gethostname()}"

    def pids(self) -> set[int]:
        """The worker's processes: the main one and its pool process(es)."""
        found = {self.proc.pid}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
            except OSError:
                continue
            if int(fields[2]) == self.proc.pid:  # in the worker's process group
                found.add(int(stat.parent.name))
        return found

    def kill(self) -> None:
        """SIGKILL to every process of the worker at once (its process group): nothing is cleaned up."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGQUIT)  # cold shutdown: at the end of a test no step is running
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        except ProcessLookupError:
            pass

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def worker_command(name: str) -> list[str]:
    """The README's worker command (``celery`` as ``python -m celery``, so the test's interpreter runs it)."""
    return [sys.executable, "-m", "celery", "-A", WORKER_APP, "worker", "-Q", "dagster", "--concurrency", "1",
            "-n", f"{name}@%h", "--loglevel", "INFO"]


def start_workers(names: list[str], env: dict[str, str], folder: Path, timeout_s: float = 90) -> list[Worker]:
    """Starts one worker per name (each in ``folder/NAME``, its own working folder) and waits until all are ready."""
    workers = []
    for name in names:
        own = folder / name
        own.mkdir(parents=True, exist_ok=True)
        log = folder / f"{name}.log"
        proc = subprocess.Popen(worker_command(name), env=env, cwd=own, stdout=open(log, "wb"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        workers.append(Worker(name, proc, log, own))
    deadline = time.monotonic() + timeout_s
    for worker in workers:
        while f"{worker.name}@" not in worker.tail(100_000) or " ready." not in worker.tail(100_000):
            if worker.proc.poll() is not None or time.monotonic() > deadline:
                for w in workers:
                    w.stop()
                raise RuntimeError(f"Celery worker {worker.name} did not start:\n{worker.tail()}")
            time.sleep(0.2)
    return workers
