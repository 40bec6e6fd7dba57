"""The persistent response cache: a reply is kept under its request's key across runs, so re-materializing a
partition whose inputs did not change makes no request, and a partition that failed half-way only pays for the
requests it had not finished.

A SQLite file under ``data/cache/`` by default, or a PostgreSQL table that every worker of a distributed run shares
(:func:`open_cache`). Only replies that passed the checks of :mod:`.base` are put here (never an empty, truncated or
off-schema one).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from .protocol import CacheUnavailable


class ResponseCache:
    """A map from request key (:func:`request_key`) to the reply (text and eval figures), kept across runs.

    Two implementations, chosen by :func:`open_cache` from the location: :class:`SQLiteResponseCache`, a file
    (the default, ``data/cache/llm_responses.sqlite``: one machine, any number of processes), and
    :class:`PostgresResponseCache`, a table in a PostgreSQL database (a ``postgresql://`` URL: every worker of a
    distributed run sees the same cache, so no passage is answered twice whichever worker asks). Both are
    thread-safe; ``put`` of a key that is there replaces it.
    """

    location: str

    def get(self, key: str) -> dict | None:
        raise NotImplementedError

    def put(self, key: str, model: str, reply: dict) -> None:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg2://")


def is_postgres_url(location: str | os.PathLike) -> bool:
    return str(location).startswith(POSTGRES_SCHEMES)


def open_cache(location: str | os.PathLike) -> ResponseCache:
    """The cache at ``location``: a ``postgresql://user@host:port/db`` URL (password in the URL or, better, in
    libpq's ``PGPASSWORD``), else a SQLite file path."""
    if is_postgres_url(location):
        return PostgresResponseCache(str(location))
    return SQLiteResponseCache(location)


class SQLiteResponseCache(ResponseCache):
    """A SQLite file (WAL mode, so several processes on one machine can share it)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.location = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, created REAL, "
                         "reply TEXT)")
        self._db.commit()

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, model: str, reply: dict) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?)",
                             (key, model, time.time(), json.dumps(reply)))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PostgresResponseCache(ResponseCache):
    """The table ``llava_sensing_llm_replies`` in a PostgreSQL database (created on first use), with the SQLite
    cache's columns and keys. One connection per process, in autocommit mode; a connection that was dropped is
    opened again once before an operation fails. Needs ``psycopg2`` (``dagster-postgres`` installs it).
    """

    TABLE = "llava_sensing_llm_replies"

    def __init__(self, url: str):
        import psycopg2

        self._psycopg2 = psycopg2
        self.url = url
        self.location = _redacted(url)
        self._dsn = url.replace("postgresql+psycopg2://", "postgresql://", 1)
        self._lock = threading.Lock()
        self._db = None
        self._run(f"CREATE TABLE IF NOT EXISTS {self.TABLE} (key TEXT PRIMARY KEY, model TEXT, "
                  "created DOUBLE PRECISION, reply TEXT)")

    def _connect(self):
        try:
            db = self._psycopg2.connect(self._dsn, connect_timeout=10)
        except self._psycopg2.OperationalError as exc:
            raise CacheUnavailable(f"LLM response cache {self.location}: {str(exc).strip()}") from None
        db.autocommit = True
        return db

    def _run(self, sql: str, params: tuple = (), fetch: bool = False):
        with self._lock:
            for attempt in (1, 2):
                if self._db is None or self._db.closed:
                    self._db = self._connect()
                try:
                    with self._db.cursor() as cur:
                        cur.execute(sql, params)
                        return cur.fetchone() if fetch else None
                except (self._psycopg2.OperationalError, self._psycopg2.InterfaceError):
                    self._db = None  # dropped (server restart, idle timeout): reconnect once
                    if attempt == 2:
                        raise

    def get(self, key: str) -> dict | None:
        row = self._run(f"SELECT reply FROM {self.TABLE} WHERE key = %s", (key,), fetch=True)
        return json.loads(row[0]) if row else None

    def put(self, key: str, model: str, reply: dict) -> None:
        self._run(f"INSERT INTO {self.TABLE} (key, model, created, reply) VALUES (%s, %s, %s, %s) "
                  "ON CONFLICT (key) DO UPDATE SET model = EXCLUDED.model, created = EXCLUDED.created, "
                  "reply = EXCLUDED.reply", (key, model, time.time(), json.dumps(reply)))

    def __len__(self) -> int:
        return self._run(f"SELECT COUNT(*) FROM {self.TABLE}", fetch=True)[0]

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _redacted(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and metadata)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def request_key(api: str, model: str, revision: str, messages: list[dict], fmt: Any, options: dict) -> str:
    """The cache key of a request: the API, the served model and its revision (a digest, or a hash of what the
    server reports of the model when it has no digest), the messages, the output schema and the options. The API
    key is never part of it."""
    if not revision:
        raise ValueError("a cache key needs the model's revision (check_ready() first)")
    payload = {"api": api, "model": model, "digest": revision, "messages": messages, "format": fmt,
               "options": options}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
