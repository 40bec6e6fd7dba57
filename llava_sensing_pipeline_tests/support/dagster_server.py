"""A Dagster webserver (``dagster-webserver`` or ``dagster dev``) on ``workspace.yaml`` for the UI tests, and its
GraphQL API, which is what the UI's buttons call."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKSPACE = REPO / "workspace.yaml"
LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus locationOrLoadError { __typename } } } } }"


def wait_for(what: str, condition, log: Path, timeout: float, poll: float = 0.5):
    """``condition()``'s first true value, polled every ``poll`` seconds; fails the test after ``timeout`` seconds
    with the end of the server's ``log``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text(errors='replace')[-4000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(base: str, query: str, variables: dict | None = None) -> dict:
    """The ``data`` of a GraphQL request to the webserver at ``base``; fails the test on GraphQL errors."""
    request = urllib.request.Request(f"{base}/graphql", data=json.dumps({"query": query, "variables": variables or {}})
                                     .encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]


def _loaded(base: str, server: subprocess.Popen, log: Path) -> bool:
    """Whether every code location has loaded (a load error fails the test, and so does a server that exited)."""
    if server.poll() is not None:
        pytest.fail(f"the Dagster webserver exited with {server.returncode}:\n{log.read_text()[-4000:]}")
    try:
        entries = graphql(base, LOCATIONS)["workspaceOrError"]["locationEntries"]
    except OSError:
        return False
    if not entries or any(e["loadStatus"] != "LOADED" for e in entries):
        return False
    errors = [e for e in entries if e["locationOrLoadError"]["__typename"] != "RepositoryLocation"]
    assert not errors, f"code location failed to load: {errors}\n{log.read_text()[-4000:]}"
    return True


@contextmanager
def serving(command: Sequence[str], env: Mapping[str, str], log: Path, *, load_timeout: float,
            stop_timeout: float) -> Iterator[str]:
    """Starts ``command`` (its arguments, then ``-w workspace.yaml -h 127.0.0.1 -p <port>``) in its own process
    group with ``env``, its output in ``log``; yields the base URL once the code location has loaded; then stops the
    whole group (the webserver and the processes it started), killing it after ``stop_timeout`` seconds."""
    with serving_process(command, env, log, load_timeout=load_timeout, stop_timeout=stop_timeout) as (base, _):
        yield base


def group_members(pgid: int) -> list[str]:
    """The live processes (zombies left out) of process group ``pgid``, as ``"<pid> <command line>"``, from /proc."""
    members = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, pgrp, ...
            if int(fields[2]) != pgid or fields[0] == "Z":
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        members.append(f"{proc.name} {cmdline}")
    return members


def interrupt(server: subprocess.Popen, timeout: float) -> list[str]:
    """Sends SIGINT to ``server``'s whole process group, as Ctrl-C in a terminal does, and waits up to ``timeout``
    seconds for every process of the group to exit; returns those still alive then (empty: it stopped)."""
    os.killpg(server.pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while True:
        server.poll()  # reaps it once it exits (a zombie is not counted anyway)
        alive = group_members(server.pid)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


@contextmanager
def serving_process(command: Sequence[str], env: Mapping[str, str], log: Path, *, load_timeout: float,
                    stop_timeout: float) -> Iterator[tuple[str, subprocess.Popen]]:
    """:func:`serving`, yielding the base URL and the process (its pid is the group's id, see :func:`interrupt`);
    whatever of the group is still alive afterwards is stopped as :func:`serving` does."""
    port = free_port()
    with open(log, "w") as out:
        server = subprocess.Popen([*command, "-w", str(WORKSPACE), "-h", "127.0.0.1", "-p", str(port)], cwd=REPO,
                                  env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + load_timeout
        while not _loaded(base, server, log):
            if time.monotonic() > deadline:
                pytest.fail(f"the Dagster webserver did not load {WORKSPACE.name} in {load_timeout:g} s:\n"
                            f"{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield base, server
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=stop_timeout)
        except ProcessLookupError:  # the whole group has exited already
            server.wait()
        except subprocess.TimeoutExpired:
            pass
        if group_members(server.pid):  # the server itself, or a process it left behind
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            server.wait()
