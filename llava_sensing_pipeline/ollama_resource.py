"""The Ollama client resource: readiness check, timeouts, bounded retries with backoff, and a persistent cache.

Every LLM call of the pipeline goes through :meth:`OllamaResource.chat`. A reply is cached (a SQLite file under
``data/cache/`` by default, or a PostgreSQL table that every worker of a distributed run shares, see
:func:`open_cache`) keyed by model, model digest, messages, format and options, so re-materializing a partition whose
inputs did not change makes no LLM call, and a partition that failed half-way only pays for the chunks it had not
finished. Timeouts, dropped connections, 429 and 5xx answers are retried with exponential backoff and jitter; other
errors (such as 404 for a missing model) are not.

A server that goes away (connection refused; a dropped connection and no answer to a health check; or hung: a
request unanswered after ``probe_after_s`` whose health check gets no reply either) is not retried against the
retry budget: it is reported once (``attach_log``), requests wait for it, or another host, to come back for at most
``down_wait_s`` and are then sent again, and past that wait they raise :class:`OllamaDown`, which fails the
partition (re-running resumes from the cache).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import ollama
from dagster import ConfigurableResource
from pydantic import PrivateAttr

from .seeding import rng_for

DEFAULT_MODEL = "llama3.1:8b"
DEFAULT_HOST = "http://localhost:11434"
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
DOWN_WAIT_S = 300.0  # how long requests wait for a server that went away to come back (--ollama-down-wait)
PROBE_AFTER_S = 15.0  # a request unanswered this long gets its host health-checked (slow or hung?)
DOWN_PROBE_S = 1.0  # while no host is up, each is checked this often
_log = logging.getLogger(__name__)


class OllamaUnavailable(RuntimeError):
    """The server cannot be used: the message says what to run."""


class OllamaDown(OllamaUnavailable):
    """Every host went away during the run and none came back within the down wait: the partition fails (a step
    retry would only wait again), and re-running resumes where it stopped."""


class ModelNotAvailable(OllamaUnavailable):
    """The server answers but does not have the model (a wrong ``--model``, or one not pulled yet)."""


class LLMCallFailed(RuntimeError):
    """A call still failed after its retries (or at once, for an error that is not retried).

    ``attempts`` is the number of requests actually sent to a server for it: 1 for an error that is not retried,
    up to ``max_retries + 1`` for one that is, fewer when no host had a free slot for an attempt.
    """

    def __init__(self, message: str, attempts: int = 0):
        super().__init__(message)
        self.attempts = attempts


class OllamaCacheUnavailable(RuntimeError):
    """The response cache's database cannot be reached: the message names it (without its password)."""


def normalize_host(host: str | None) -> str:
    """``OLLAMA_HOST`` may be ``0.0.0.0:11434`` or ``localhost``; the client needs a URL."""
    host = (host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST).strip().rstrip("/")
    if "://" not in host:
        host = f"http://{host}"
    if host.count(":") == 1:  # no port given
        host = f"{host}:11434"
    return host.replace("://0.0.0.0", "://127.0.0.1")


@dataclass(frozen=True)
class LLMReply:
    text: str
    cached: bool
    latency_s: float  # wall time of the successful call (as recorded then, when cached)
    eval_count: int
    eval_duration_s: float
    attempts: int  # calls made for this reply (0 when cached)


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
            raise OllamaCacheUnavailable(f"LLM response cache {self.location}: {str(exc).strip()}") from None
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
    import re

    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def request_key(model: str, digest: str, messages: list[dict], fmt: Any, options: dict) -> str:
    payload = {"model": model, "digest": digest, "messages": messages, "format": fmt, "options": options}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def parse_hosts(host: str | None, env: dict[str, str] | None = None) -> list[str]:
    """Hosts from ``host`` (comma-separated allowed), else ``$OLLAMA_HOSTS``, else ``$OLLAMA_HOST``, else localhost."""
    env = os.environ if env is None else env
    raw = host or env.get("OLLAMA_HOSTS") or env.get("OLLAMA_HOST") or DEFAULT_HOST
    hosts = [normalize_host(h) for h in raw.split(",") if h.strip()]
    return list(dict.fromkeys(hosts)) or [DEFAULT_HOST]


def clock(wall: float) -> str:
    """``HH:MM:SS`` local time, as the outage messages show it."""
    return time.strftime("%H:%M:%S", time.localtime(wall))


def is_outage(reason: str) -> bool:
    """Whether a partition's failure ``reason`` is an :class:`OllamaDown` (the server stayed away past the wait)."""
    return f"{OllamaDown.__name__}: " in reason


def outage_text(reason: str) -> str:
    """The :class:`OllamaDown` message inside a failure ``reason`` (which may quote it after a step's words)."""
    mark = f"{OllamaDown.__name__}: "
    return reason[reason.index(mark) + len(mark):] if mark in reason else reason


class HostDown(Exception):
    """A request's host is gone: refused (``reached`` False), dropped with no health check answered, or hung
    (``hung``: it accepts connections, but neither the request nor a health check got a reply)."""

    def __init__(self, hung: bool = False, reached: bool = True):
        super().__init__("hung" if hung else "unreachable")
        self.hung = hung
        self.reached = reached


@dataclass
class Host:
    """One server of the pool: its slots, health and throughput."""

    url: str
    client: ollama.Client
    in_use: int = 0
    down_until: float = 0.0  # monotonic time of its next health check; 0 = healthy
    cooldown_s: float = 0.0
    probing: bool = False
    requests: int = 0
    failures: int = 0
    tokens: int = 0
    busy_s: float = 0.0
    down_since: float = 0.0  # wall clock when it went down (0 = up)
    down_mono: float = 0.0
    hung: bool = False
    outages: int = 0
    downtime_s: float = 0.0


class HostPool:
    """Spreads requests over hosts by free slots.

    A host whose request cannot connect, is dropped with no health check answered, or hangs (no reply, and a health
    check with a short timeout gets none either) is taken out of rotation and probed (``/api/tags``): while another
    host is up, after a cool-down that doubles while it stays down (5 s up to 60 s); while no host is up, every
    second. Each host going down, and coming back, is one ``notify`` message. While no host is up, requests wait
    for one to come back, for at most ``down_wait_s`` counted from when the last one went down; then they raise
    :class:`OllamaDown` (and so does every later request, at once, until a host answers again).
    """

    def __init__(self, urls: list[str], slots: int, timeout_s: float, check_timeout_s: float,
                 down_wait_s: float = DOWN_WAIT_S, notify: Callable[[str], None] | None = None):
        self.slots = max(1, slots)
        self.hosts = [Host(u, ollama.Client(host=u, timeout=timeout_s)) for u in urls]
        self._check_timeout_s = check_timeout_s
        self.down_wait_s = down_wait_s
        self.notify = notify or _log.warning
        self._cond = threading.Condition()
        self.excluded: dict[str, str] = {}
        self.all_down_since: float | None = None  # monotonic; set while no host is up
        self.outages = 0  # hosts gone down
        self.blocked_s = 0.0  # closed spells with no host up
        self.stopped = False  # set by stop(): waits end at once

    def probe(self, host: Host) -> bool:
        """A health check with the short timeout: does the host answer ``/api/tags``?"""
        try:
            with httpx.Client(timeout=self._check_timeout_s) as client:
                client.get(f"{host.url}/api/tags").raise_for_status()
            return True
        except (OSError, httpx.HTTPError):
            return False

    def _up(self) -> list[Host]:
        return [h for h in self.hosts if not h.down_until]

    def _mark_down_locked(self, host: Host, hung: bool = False) -> None:
        if host.down_until or host not in self.hosts:
            return
        now = time.monotonic()
        host.down_since, host.down_mono, host.hung = time.time(), now, hung
        host.outages += 1
        self.outages += 1
        what = f"{'not answering' if hung else 'unreachable'} since {clock(host.down_since)}"
        if hung:
            what += f" (it accepts connections, but a health check got no reply within {self._check_timeout_s:g} s)"
        others = [h for h in self._up() if h is not host]
        if others:
            host.cooldown_s = 5.0
            host.down_until = now + host.cooldown_s
            self.notify(f"Ollama at {host.url} {what}; the other {len(others)} host(s) carry on, and it is checked "
                        f"again every 5 to 60 s")
            return
        self.all_down_since = now
        for h in self.hosts:  # nothing is up: check every host often, so a return is seen at once
            h.down_until = min(h.down_until or math.inf, now + DOWN_PROBE_S)
        host.down_until = now + DOWN_PROBE_S
        who = "it" if len(self.hosts) == 1 else "one"
        none_else = "" if len(self.hosts) == 1 else ", and no other host is up"
        self.notify(f"Ollama at {host.url} {what}{none_else}; waiting for {who} to come back (up to "
                    f"{self.down_wait_s:g} s; Ctrl-C stops, re-running resumes)")

    def _mark_up_locked(self, host: Host) -> None:
        if not host.down_until:
            return
        now = time.monotonic()
        down = now - host.down_mono
        host.downtime_s += down
        if self.all_down_since is not None:
            self.blocked_s += now - self.all_down_since
            self.all_down_since = None
        self.notify(f"Ollama at {host.url} is back after {down:.0f} s (down since {clock(host.down_since)})")
        host.down_until, host.cooldown_s, host.down_since, host.down_mono, host.hung = 0.0, 0.0, 0.0, 0.0, False

    def _probe_due_locked(self) -> None:
        """Health-checks the hosts whose check is due (one thread per host; the lock is released meanwhile)."""
        for host in list(self.hosts):
            if not (host.down_until and time.monotonic() >= host.down_until and not host.probing):
                continue
            host.probing = True
            self._cond.release()
            try:
                ok = self.probe(host)
            finally:
                self._cond.acquire()
            host.probing = False
            if ok:
                self._mark_up_locked(host)
            elif self._up():
                host.cooldown_s = min(60.0, max(5.0, host.cooldown_s * 2))
                host.down_until = time.monotonic() + host.cooldown_s
            else:
                host.down_until = time.monotonic() + DOWN_PROBE_S
            self._cond.notify_all()

    def stop(self) -> None:
        """Ends every wait for a host at once (the run was interrupted): waiting requests raise :class:`OllamaDown`."""
        with self._cond:
            self.stopped = True
            self._cond.notify_all()

    def _raise_if_stopped_locked(self) -> None:
        if self.stopped:
            raise OllamaDown("interrupted (Ctrl-C) while waiting for Ollama to come back; re-running resumes")

    def _raise_if_waited_out_locked(self) -> None:
        """While no host is up: raises :class:`OllamaDown` once the wait is over (or the pool was stopped)."""
        self._raise_if_stopped_locked()
        if self.all_down_since is None or time.monotonic() - self.all_down_since < self.down_wait_s:
            return
        down = sorted(self.hosts, key=lambda h: h.down_since)
        since = clock(down[0].down_since) if down and down[0].down_since else "?"
        what = "not answering" if all(h.hung for h in down) else "unreachable"
        where = f"Ollama at {down[0].url}" if len(down) == 1 else "every Ollama host (" + ", ".join(
            h.url for h in down) + ")"
        raise OllamaDown(
            f"{where} {what} since {since}: still down after waiting {self.down_wait_s:g} s (--ollama-down-wait). "
            f"Start it again (`ollama serve`) and re-run the same command: the replies it gave are cached, so only "
            f"the unanswered requests are sent again.")

    def acquire(self, wait_s: float) -> Host:
        """A host with a free slot (most free slots first). Waits up to ``wait_s`` while all are busy, and while
        none is up, until one comes back (at most the pool's down wait; then :class:`OllamaDown`)."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            while True:
                self._raise_if_stopped_locked()
                self._probe_due_locked()
                free = [h for h in self._up() if h.in_use < self.slots]
                if free:
                    host = max(free, key=lambda h: (self.slots - h.in_use, -h.requests))
                    host.in_use += 1
                    return host
                if not self._up():
                    self._raise_if_waited_out_locked()
                elif time.monotonic() >= deadline:
                    raise ConnectionError("no free Ollama slot within the timeout")
                self._cond.wait(timeout=0.05)

    def wait_until_up(self) -> None:
        """Returns once a host is up; while none is, waits like :meth:`acquire` (at most the down wait)."""
        with self._cond:
            while True:
                self._probe_due_locked()
                if self._up():
                    return
                self._raise_if_waited_out_locked()
                self._cond.wait(timeout=0.05)

    def release(self, host: Host, *, seconds: float, tokens: int = 0, failed: bool = False,
                unreachable: bool = False, hung: bool = False) -> None:
        with self._cond:
            host.in_use -= 1
            host.requests += 1
            host.busy_s += seconds
            host.tokens += tokens
            if failed:
                host.failures += 1
            if unreachable or hung:
                self._mark_down_locked(host, hung=hung)
            elif not failed:
                self._mark_up_locked(host)  # an answer: it is up, whatever another request saw
            self._cond.notify_all()

    def mark_down(self, url: str, hung: bool = False) -> None:
        """Takes a host out of rotation until its next health check."""
        with self._cond:
            for host in self.hosts:
                if host.url == url:
                    self._mark_down_locked(host, hung=hung)

    def mark_excluded(self, url: str, reason: str) -> None:
        """Takes a host out for good (e.g. it serves another build of the model)."""
        with self._cond:
            self.hosts = [h for h in self.hosts if h.url != url]
            self.excluded[url] = reason

    def outage_counters(self) -> tuple[int, float]:
        """(hosts gone down so far, seconds with no host up so far, the current spell included)."""
        with self._cond:
            open_s = time.monotonic() - self.all_down_since if self.all_down_since is not None else 0.0
            return self.outages, self.blocked_s + open_s

    def snapshot(self) -> dict[str, dict]:
        now = time.monotonic()
        with self._cond:
            return {h.url: {"requests": h.requests, "failures": h.failures, "tokens": h.tokens,
                            "busy_s": round(h.busy_s, 2), "healthy": h.down_until == 0.0,
                            "tokens_per_s": round(h.tokens / h.busy_s, 1) if h.busy_s else 0.0,
                            "outages": h.outages,
                            "downtime_s": round(h.downtime_s + (now - h.down_mono if h.down_until else 0.0), 1)}
                    for h in self.hosts}


class OllamaResource(ConfigurableResource):
    """One Ollama server, or a pool of them, and the model.

    ``host`` defaults to ``$OLLAMA_HOSTS`` (comma-separated, a pool) or ``$OLLAMA_HOST`` or
    ``http://localhost:11434``; ``parallel`` is the slots per host (the servers' ``OLLAMA_NUM_PARALLEL``).

    Two timeouts: ``timeout_s`` bounds one request (a slow answer), ``down_wait_s`` how long requests wait for a
    server that went away (refused, dropped, or hung) to come back before the partition fails with
    :class:`OllamaDown`. A request unanswered after ``probe_after_s`` gets its host health-checked with
    ``check_timeout_s``: a host that answers is slow, one that does not is hung and counts as gone.
    Outage messages go to the callable given to :meth:`attach_log` (an asset passes ``context.log.warning``).
    """

    host: str | None = None
    model: str = DEFAULT_MODEL
    timeout_s: float = 120.0
    check_timeout_s: float = 5.0
    down_wait_s: float = DOWN_WAIT_S
    probe_after_s: float = PROBE_AFTER_S
    keep_alive: str = "10m"
    parallel: int = 1
    max_retries: int = 3
    backoff_s: float = 1.0
    cache_path: str = "data/cache/llm_responses.sqlite"
    """A SQLite file, or a ``postgresql://`` URL for a cache shared by every worker (see :func:`open_cache`)."""

    _cache: ResponseCache | None = PrivateAttr(default=None)
    _digest: str | None = PrivateAttr(default=None)
    _pool: HostPool | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _notify: Callable[[str], None] | None = PrivateAttr(default=None)

    def attach_log(self, notify: Callable[[str], None] | None) -> None:
        """Where outage and recovery messages go (one line each, once per outage), e.g. ``context.log.warning``:
        the CLI's console and the run's logs in the UI. None: this module's Python logger."""
        self._notify = notify

    def _emit(self, message: str) -> None:
        (self._notify if self._notify is not None else _log.warning)(message)

    @property
    def hosts(self) -> list[str]:
        return parse_hosts(self.host)

    @property
    def url(self) -> str:
        return ",".join(self.hosts)

    @property
    def total_slots(self) -> int:
        """Concurrent requests the pool can take: slots per host × hosts."""
        return self.parallel * len(self.pool.hosts)

    @property
    def pool(self) -> HostPool:
        with self._lock:
            if self._pool is None:
                self._pool = HostPool(self.hosts, self.parallel, self.timeout_s, self.check_timeout_s,
                                      down_wait_s=self.down_wait_s, notify=self._emit)
            return self._pool

    @property
    def cache(self) -> ResponseCache:
        with self._lock:
            if self._cache is None:
                self._cache = open_cache(self.cache_path)
            return self._cache

    def _host_digest(self, url: str) -> str:
        """The model's digest on one host; raises :class:`OllamaUnavailable` with the command to run."""
        client = ollama.Client(host=url, timeout=self.check_timeout_s)
        try:
            models = client.list().models
        except (ConnectionError, httpx.HTTPError) as exc:
            error = OllamaUnavailable(
                f"Ollama is not reachable at {url} ({type(exc).__name__}: {exc}). Start the server with "
                f"`ollama serve` (or point --ollama-host / OLLAMA_HOST at a running one) and re-run.")
            error.hung = isinstance(exc, httpx.TimeoutException)  # connected, but no reply within the timeout
            raise error from None
        except ollama.ResponseError as exc:
            raise OllamaUnavailable(f"Ollama at {url} answered {exc.status_code}: {exc.error}. "
                                    f"Check the server's log, then re-run.") from None
        wanted = {self.model, f"{self.model}:latest"}
        for m in models:
            if m.model in wanted:
                return m.digest or ""
        available = ", ".join(sorted(m.model for m in models if m.model)) or "none"
        raise ModelNotAvailable(
            f"model {self.model!r} is not available on {url} (it has: {available}). "
            f"Run `ollama pull {self.model}` there, or choose one with --model."
        )

    def check_ready(self) -> str:
        """Checks that the servers answer and have the model; returns the model digest.

        With several hosts, at least one must be ready; hosts that are down are skipped (and probed again later),
        hosts serving another build of the model are excluded. Raises :class:`OllamaUnavailable` with the command
        to run when none is ready.
        """
        errors, digests = [], {}
        for url in self.hosts:
            try:
                digests[url] = self._host_digest(url)
            except OllamaUnavailable as exc:
                errors.append(exc)
        if not digests:
            if len(errors) == 1:
                raise errors[0]
            kind = ModelNotAvailable if all(isinstance(e, ModelNotAvailable) for e in errors) else OllamaUnavailable
            error = kind("no Ollama host is ready:\n  " + "\n  ".join(str(e) for e in errors))
            error.hung = all(getattr(e, "hung", False) for e in errors)
            raise error
        digest = digests.get(self.hosts[0]) if self.hosts[0] in digests else next(iter(digests.values()))
        pool = self.pool
        for url in self.hosts:
            if url not in digests:
                pool.mark_down(url)
            elif digests[url] != digest:
                pool.mark_excluded(url, f"serves another build of {self.model} ({digests[url][:12]})")
        self._digest = digest
        return digest

    def wait_ready(self) -> str:
        """:meth:`check_ready` inside a run: a server that cannot be reached is waited for (a message, then up to
        ``down_wait_s``, the same wait as a request's) instead of failing at once; a missing model fails at once."""
        while True:
            try:
                return self.check_ready()
            except ModelNotAvailable:
                raise
            except OllamaUnavailable as exc:
                pool = self.pool
                for url in self.hosts:
                    pool.mark_down(url, hung=getattr(exc, "hung", False))
                pool.wait_until_up()

    def stop_waiting(self) -> None:
        """Ends the requests' waits for a server at once (Ctrl-C: the run is being interrupted)."""
        self.pool.stop()

    def outage_counters(self) -> tuple[int, float]:
        """(hosts gone down, seconds with no host up) so far; see :meth:`outage_metadata`."""
        return self.pool.outage_counters()

    def outage_metadata(self, before: tuple[int, float]) -> dict[str, float | int]:
        """A partition's ``ollama_outages`` (hosts that went down) and ``ollama_downtime_s`` (seconds with no host
        up, requests waiting) since ``before`` = :meth:`outage_counters` at its start."""
        outages, blocked = self.pool.outage_counters()
        return {"ollama_outages": outages - before[0], "ollama_downtime_s": round(blocked - before[1], 1)}

    @property
    def digest(self) -> str:
        if self._digest is None:
            self.check_ready()
        return self._digest or ""

    def host_metadata(self) -> dict[str, dict]:
        """Per-host requests, failures, tokens, busy seconds and health, for a partition's metadata."""
        return self.pool.snapshot()

    def _send(self, host: Host, messages: list[dict], fmt: Any, options: dict):
        """One request to ``host``, watched: unanswered after ``probe_after_s`` (and again each time), the host
        gets a health check with the short timeout; no reply to it means the host hangs (:class:`HostDown`, the
        request is abandoned). A refused connection, or one dropped by a host that then fails its health check, is
        :class:`HostDown` too; other errors propagate."""
        result: dict[str, Any] = {}
        done = threading.Event()

        def request() -> None:
            try:
                result["response"] = host.client.chat(model=self.model, messages=messages, format=fmt,
                                                      options=options, keep_alive=self.keep_alive, stream=False)
            except BaseException as exc:  # handed to the caller's thread
                result["error"] = exc
            finally:
                done.set()

        threading.Thread(target=request, name=f"ollama-request-{host.url}", daemon=True).start()
        every = max(0.05, min(self.probe_after_s, self.timeout_s / 2))
        while not done.wait(every):
            if self.pool.stopped:
                raise HostDown()  # the run was interrupted: abandon the request (the next acquire raises)
            if not self.pool.probe(host) and not done.is_set():
                raise HostDown(hung=True)
        exc = result.get("error")
        if exc is None:
            return result["response"]
        if isinstance(exc, (ConnectionError, httpx.ConnectError)):
            raise HostDown(reached=False) from exc
        if isinstance(exc, httpx.TransportError) and not self.pool.probe(host):
            raise HostDown() from exc  # dropped (reset, cut off, timed out) by a host that no longer answers
        raise exc

    def chat(self, messages: list[dict], *, options: dict, fmt: Any = None) -> LLMReply:
        """One chat completion (non-streaming), from the cache when this exact request was answered before.

        The request goes to the pool host with the most free slots. A host that goes away (refused, dropped, hung)
        is taken out of rotation and the request is sent again elsewhere, or, when no host is up, once one comes
        back: that uses none of the ``max_retries``, and gives up with :class:`OllamaDown` after ``down_wait_s``.
        Timeouts, dropped connections of a host that still answers, 429 and 5xx are retried with backoff.
        """
        key = request_key(self.model, self.digest, messages, fmt, options)
        hit = self.cache.get(key)
        if hit is not None:
            return LLMReply(hit["text"], True, hit.get("latency_s", 0.0), hit["eval_count"], hit["eval_duration_s"], 0)
        rng = rng_for(0, key, "backoff")
        last: Exception | None = None
        sent = 0  # requests that reached a server (a refused connection, or no free host, sends none)
        failed_attempts = 0
        while True:
            try:
                host = self.pool.acquire(wait_s=self.timeout_s)
            except ConnectionError as exc:  # every slot busy for the whole timeout
                last = exc
            else:
                started = time.monotonic()
                sent += 1
                try:
                    response = self._send(host, messages, fmt, options)
                except HostDown as exc:  # wait for a host (this one or another), no retry used
                    sent -= not exc.reached
                    gone = not self.pool.stopped  # stopped: abandoned on Ctrl-C, the host is not to blame
                    self.pool.release(host, seconds=time.monotonic() - started, failed=True,
                                      unreachable=gone and not exc.hung, hung=gone and exc.hung)
                    continue
                except ollama.ResponseError as exc:
                    self.pool.release(host, seconds=time.monotonic() - started, failed=True)
                    if exc.status_code == 404:
                        raise ModelNotAvailable(f"model {self.model!r} is not available on {host.url}: run "
                                                f"`ollama pull {self.model}` there.") from None
                    if exc.status_code not in RETRYABLE_STATUS:
                        raise LLMCallFailed(f"{host.url} answered {exc.status_code}: {exc.error}",
                                            attempts=sent) from None
                    last = exc
                except (ConnectionError, httpx.TransportError) as exc:  # timeouts, drops of a host that answers
                    self.pool.release(host, seconds=time.monotonic() - started, failed=True)
                    last = exc
                else:
                    elapsed = time.monotonic() - started
                    reply = {
                        "text": response.message.content or "",
                        "eval_count": int(response.eval_count or 0),
                        "eval_duration_s": (response.eval_duration or 0) / 1e9,
                        "latency_s": round(elapsed, 3),
                    }
                    self.pool.release(host, seconds=elapsed, tokens=reply["eval_count"])
                    self.cache.put(key, self.model, reply)
                    return LLMReply(reply["text"], False, reply["latency_s"], reply["eval_count"],
                                    reply["eval_duration_s"], sent)
            failed_attempts += 1
            if failed_attempts > self.max_retries:
                break
            time.sleep(self.backoff_s * 2 ** (failed_attempts - 1) * rng.uniform(0.5, 1.5))
        raise LLMCallFailed(f"{self.url}: {type(last).__name__}: {last} (after {self.max_retries + 1} attempts; "
                            f"check the server, or raise --ollama-timeout)", attempts=sent)

    def teardown_after_execution(self, context) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None


class CallStats:
    """Thread-safe tally of LLM calls for a partition's metadata: calls, cache hits, latency, tokens per second."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.cache_hits = 0
        self.failures = 0
        self.latencies: list[float] = []
        self.tokens = 0
        self.eval_seconds = 0.0

    def record(self, reply: LLMReply) -> None:
        with self._lock:
            if reply.cached:
                self.cache_hits += 1
                return
            self.calls += reply.attempts
            self.latencies.append(reply.latency_s)
            self.tokens += reply.eval_count
            self.eval_seconds += reply.eval_duration_s

    def record_failure(self, attempts: int) -> None:
        with self._lock:
            self.failures += 1
            self.calls += attempts

    @staticmethod
    def _percentile(values: list[float], q: float) -> float:
        if not values:
            return 0.0
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    def summary(self, prefix: str) -> dict[str, float | int]:
        with self._lock:
            return {
                f"{prefix}_llm_calls": self.calls,
                f"{prefix}_cache_hits": self.cache_hits,
                f"{prefix}_failed_requests": self.failures,
                f"{prefix}_latency_p50_s": round(self._percentile(self.latencies, 0.5), 3),
                f"{prefix}_latency_p95_s": round(self._percentile(self.latencies, 0.95), 3),
                f"{prefix}_tokens_per_second": round(self.tokens / self.eval_seconds, 1) if self.eval_seconds else 0.0,
            }
