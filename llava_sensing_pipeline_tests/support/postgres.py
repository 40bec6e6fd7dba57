"""A throwaway PostgreSQL server for tests: Debian's ``postgresql`` server binaries
(``/usr/lib/postgresql/<version>/bin``) on a free loopback port with a temporary data directory, as the ``postgres``
OS user when the tests run as root (``initdb`` and ``pg_ctl`` refuse root). The ``postgres_server`` fixture
(``conftest.py``) starts one per session. Without the binaries a test that needs it is skipped, except in CI
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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llava_sensing_pipeline_tests.support.needs import require

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

    def query(self, sql: str, db: str | None = None) -> list[list[str]]:
        """Rows of a query, as text."""
        out = self.client("psql", "-d", db or self.db, "-AtF", "\t", "-c", sql)
        return [line.split("\t") for line in out.splitlines()]

    def create_database(self, name: str) -> str:
        """Creates the empty database ``name`` (dropping one of that name first); returns ``name``."""
        self.client("dropdb", "--if-exists", name)
        self.client("createdb", name)
        return name

    def url(self, db: str | None = None, password: bool = False) -> str:
        """``postgresql://user@host:port/db``, with the password only if asked (else libpq reads ``PGPASSWORD``)."""
        secret = f":{self.password}" if password else ""
        return f"postgresql://{self.user}{secret}@{self.host}:{self.port}/{db or self.db}"


def _as_server_user(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Runs a server command, as the ``postgres`` OS user when we are root (initdb and pg_ctl refuse root)."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", SERVER_USER, "--", *cmd]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=90)


@contextmanager
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
