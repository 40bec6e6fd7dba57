"""Dagster instance storage on a real PostgreSQL server (``deploy/dagster-postgres.yaml``), through the CLI.

The session fixture starts Debian's ``postgresql`` server binaries (``/usr/lib/postgresql/<version>/bin``) on a free
loopback port with a temporary data directory, as the ``postgres`` OS user when the tests run as root (``initdb``
and ``pg_ctl`` refuse root), and stops it at the end. Without the binaries the test is skipped, except in CI
(``CI`` set), where it fails (``support.needs.require``): install them with ``apt-get install -y postgresql``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus

from llava_sensing_pipeline.cli import main
from llava_sensing_pipeline.schedules import partition_states
from llava_sensing_pipeline_tests.support.needs import require

REPO = Path(__file__).resolve().parents[1]
DEBIAN_POSTGRES = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"
PASSWORD = "llava-sensing-test"
DATABASE = "dagster_test"


def postgres_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with ``initdb`` and ``pg_ctl``, or None."""
    found = [p for p in DEBIAN_POSTGRES.glob("*/bin") if (p / "initdb").exists() and (p / "pg_ctl").exists()]
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1) if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresServer:
    bin_dir: Path
    port: int
    host: str = "127.0.0.1"
    user: str = SERVER_USER
    password: str = PASSWORD
    db: str = DATABASE

    def dagster_env(self) -> dict[str, str]:
        """The variables ``deploy/dagster-postgres.yaml`` reads."""
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USER": self.user,
                "DAGSTER_PG_PASSWORD": self.password, "DAGSTER_PG_DB": self.db}

    def client(self, tool: str, *args: str) -> str:
        """Runs a client program (psql, createdb) against the server; returns its output."""
        done = subprocess.run([str(self.bin_dir / tool), "-h", self.host, "-p", str(self.port), "-U", self.user,
                               *args], env={**os.environ, "PGPASSWORD": self.password}, capture_output=True,
                              text=True, timeout=30)
        if done.returncode:
            raise RuntimeError(f"{tool} {' '.join(args)} on {self.host}:{self.port} failed: {done.stderr.strip()}")
        return done.stdout

    def query(self, sql: str) -> list[list[str]]:
        """Rows of a query, as text."""
        out = self.client("psql", "-d", self.db, "-AtF", "\t", "-c", sql)
        return [line.split("\t") for line in out.splitlines()]


def _as_server_user(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Runs a server command, as the ``postgres`` OS user when we are root (initdb and pg_ctl refuse root)."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", SERVER_USER, "--", *cmd]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=90)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server on loopback with an empty database ``dagster_test``."""
    bin_dir = postgres_bin_dir()
    require(bin_dir is not None, f"PostgreSQL server binaries not found under {DEBIAN_POSTGRES}/<version>/bin: "
                                 "apt-get install -y postgresql")
    workdir = Path(tempfile.mkdtemp(prefix="llava-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam(SERVER_USER)
        os.chown(workdir, account.pw_uid, account.pw_gid)
    data, log = workdir / "data", workdir / "server.log"
    server = PostgresServer(bin_dir, free_port())
    try:
        pwfile = workdir / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        steps = [
            [str(bin_dir / "initdb"), "-D", str(data), "-U", SERVER_USER, f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "--locale=C", "--encoding=UTF8", "--no-sync"],
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
             f"-c listen_addresses=127.0.0.1 -c port={server.port} -c unix_socket_directories='' -c fsync=off", "start"],
        ]
        for cmd in steps:
            done = _as_server_user(cmd, workdir)
            if done.returncode:
                log_tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"{Path(cmd[0]).name} failed ({done.returncode}): {done.stderr.strip()}\n{log_tail}")
        server.client("createdb", server.db)
        yield server
    finally:
        if (data / "postmaster.pid").exists():
            _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], workdir)
        shutil.rmtree(workdir, ignore_errors=True)


def test_runs_and_materializations_are_recorded_in_postgres(postgres_server, tmp_path, monkeypatch, capsys):
    corpus = tmp_path / "Novel"
    shutil.copytree(REPO / "Novel", corpus, ignore=shutil.ignore_patterns("*.md"))
    empty = corpus / "Modernist_Novel" / "A000_Empty.txt"  # sorts first, so --max-files 2 selects it
    empty.write_bytes(b"")
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster-postgres.yaml", home / "dagster.yaml")
    for name, value in postgres_server.dagster_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("LLAVA_SENSING_STORAGE_DIR", str(tmp_path / "storage"))
    monkeypatch.chdir(tmp_path)
    flags = ["--input-dir", str(corpus), "--output-dir", str(tmp_path / "out"), "--max-files", "2",
             "--num-examples", "12"]
    keys = ["Modernist_Novel/A000_Empty", "Modernist_Novel/A901_The_Glass_Weather", "Travel_Novel/B901_Salt_Roads",
            "Travel_Novel/B902_North by Rail!"]

    assert main(["generate", *flags]) == 1
    assert "Modernist_Novel/A000_Empty" in capsys.readouterr().err
    assert main(["status"]) == 0
    assert "1 failed, 3 materialized" in capsys.readouterr().out  # read back from PostgreSQL

    shutil.copy(corpus / "Modernist_Novel" / "A903_Tidewater_Hours.txt", empty)  # fix the file
    assert main(["backfill", "--failed", *flags]) == 0
    assert "[1/1] Modernist_Novel/A000_Empty: ok" in capsys.readouterr().out

    with DagsterInstance.get() as instance:
        from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        latest = instance.get_latest_storage_id_by_partition(AssetKey("generated_examples"),
                                                             DagsterEventType.ASSET_MATERIALIZATION)
        assert sorted(latest) == keys
        assert partition_states(instance, keys) == {k: "materialized" for k in keys}
        statuses = [run.status for run in instance.get_runs()]
        assert DagsterRunStatus.FAILURE in statuses and DagsterRunStatus.SUCCESS in statuses

    # the same facts, read straight from PostgreSQL's tables
    materialized = postgres_server.query(
        "SELECT partition, count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
        "AND asset_key = '[\"generated_examples\"]' GROUP BY partition ORDER BY partition")
    assert [row[0] for row in materialized] == keys
    assert dict(materialized)["Modernist_Novel/A000_Empty"] == "1"  # once, by the backfill
    failures = postgres_server.query(
        "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'STEP_FAILURE'")
    assert int(failures[0][0]) >= 1
    runs = dict(postgres_server.query("SELECT status, count(*) FROM runs GROUP BY status"))
    assert int(runs["FAILURE"]) >= 1 and int(runs["SUCCESS"]) >= 3  # per-file runs and the exports
    registered = postgres_server.query("SELECT partition FROM dynamic_partitions ORDER BY partition")
    assert [row[0] for row in registered] == keys
    assert not list(home.rglob("*.db"))  # no SQLite storage beside it
