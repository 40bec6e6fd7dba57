"""The Ollama client resource: readiness check, timeouts, bounded retries with backoff, and a persistent cache.

Every LLM call of the pipeline goes through :meth:`OllamaResource.chat`. A reply is cached (a SQLite file under
``data/cache/`` by default, or a PostgreSQL table that every worker of a distributed run shares, see
:func:`open_cache`) keyed by model, model digest, messages, format and options, so re-materializing a partition whose
inputs did not change makes no LLM call, and a partition that failed half-way only pays for the chunks it had not
finished. Timeouts, connection errors, 429 and 5xx answers are retried with exponential backoff and jitter; other
errors (such as 404 for a missing model) are not.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
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


class OllamaUnavailable(RuntimeError):
    """The server cannot be used: the message says what to run."""


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


@dataclass
class Host:
    """One server of the pool: its slots, health and throughput."""

    url: str
    client: ollama.Client
    in_use: int = 0
    down_until: float = 0.0  # monotonic time; 0 = healthy
    cooldown_s: float = 0.0
    probing: bool = False
    requests: int = 0
    failures: int = 0
    tokens: int = 0
    busy_s: float = 0.0


class HostPool:
    """Spreads requests over hosts by free slots; a host whose requests fail to connect is taken out of rotation
    and probed (``/api/tags``) after a cool-down that doubles while it stays down (5 s up to 60 s)."""

    def __init__(self, urls: list[str], slots: int, timeout_s: float, check_timeout_s: float):
        self.slots = max(1, slots)
        self.hosts = [Host(u, ollama.Client(host=u, timeout=timeout_s)) for u in urls]
        self._check_timeout_s = check_timeout_s
        self._cond = threading.Condition()
        self.excluded: dict[str, str] = {}

    def _probe(self, host: Host) -> bool:
        try:
            ollama.Client(host=host.url, timeout=self._check_timeout_s).list()
            return True
        except (ConnectionError, httpx.HTTPError, ollama.ResponseError):
            return False

    def acquire(self, wait_s: float) -> Host:
        """A host with a free slot (most free slots first); waits up to ``wait_s`` while all are busy."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            while True:
                now = time.monotonic()
                for host in self.hosts:  # hosts due for a health check
                    if host.down_until and now >= host.down_until and not host.probing:
                        host.probing = True
                        self._cond.release()
                        try:
                            ok = self._probe(host)
                        finally:
                            self._cond.acquire()
                        host.probing = False
                        if ok:
                            host.down_until, host.cooldown_s = 0.0, 0.0
                        else:
                            host.cooldown_s = min(60.0, max(5.0, host.cooldown_s * 2))
                            host.down_until = time.monotonic() + host.cooldown_s
                free = [h for h in self.hosts if h.down_until == 0.0 and h.in_use < self.slots]
                if free:
                    host = max(free, key=lambda h: (self.slots - h.in_use, -h.requests))
                    host.in_use += 1
                    return host
                if all(h.down_until for h in self.hosts):
                    soonest = min(h.down_until for h in self.hosts)
                    if soonest > deadline:
                        raise ConnectionError("every Ollama host is down: " + ", ".join(h.url for h in self.hosts))
                if now >= deadline:
                    raise ConnectionError("no free Ollama slot within the timeout")
                self._cond.wait(timeout=0.05)

    def release(self, host: Host, *, seconds: float, tokens: int = 0, failed: bool = False,
                unreachable: bool = False) -> None:
        with self._cond:
            host.in_use -= 1
            host.requests += 1
            host.busy_s += seconds
            host.tokens += tokens
            if failed:
                host.failures += 1
            if unreachable and not host.down_until:
                host.cooldown_s = 5.0
                host.down_until = time.monotonic() + host.cooldown_s
            self._cond.notify_all()

    def mark_down(self, url: str) -> None:
        """Takes a host out of rotation until its next health check."""
        with self._cond:
            for host in self.hosts:
                if host.url == url and not host.down_until:
                    host.cooldown_s = 5.0
                    host.down_until = time.monotonic() + host.cooldown_s

    def mark_excluded(self, url: str, reason: str) -> None:
        """Takes a host out for good (e.g. it serves another build of the model)."""
        with self._cond:
            self.hosts = [h for h in self.hosts if h.url != url]
            self.excluded[url] = reason

    def snapshot(self) -> dict[str, dict]:
        with self._cond:
            return {h.url: {"requests": h.requests, "failures": h.failures, "tokens": h.tokens,
                            "busy_s": round(h.busy_s, 2), "healthy": h.down_until == 0.0,
                            "tokens_per_s": round(h.tokens / h.busy_s, 1) if h.busy_s else 0.0}
                    for h in self.hosts}


class OllamaResource(ConfigurableResource):
    """One Ollama server, or a pool of them, and the model.

    ``host`` defaults to ``$OLLAMA_HOSTS`` (comma-separated, a pool) or ``$OLLAMA_HOST`` or
    ``http://localhost:11434``; ``parallel`` is the slots per host (the servers' ``OLLAMA_NUM_PARALLEL``).
    """

    host: str | None = None
    model: str = DEFAULT_MODEL
    timeout_s: float = 120.0
    check_timeout_s: float = 5.0
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
                self._pool = HostPool(self.hosts, self.parallel, self.timeout_s, self.check_timeout_s)
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
            raise OllamaUnavailable(
                f"Ollama is not reachable at {url} ({type(exc).__name__}: {exc}). Start the server with "
                f"`ollama serve` (or point --ollama-host / OLLAMA_HOST at a running one) and re-run."
            ) from None
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
            raise kind("no Ollama host is ready:\n  " + "\n  ".join(str(e) for e in errors))
        digest = digests.get(self.hosts[0]) if self.hosts[0] in digests else next(iter(digests.values()))
        pool = self.pool
        for url in self.hosts:
            if url not in digests:
                pool.mark_down(url)
            elif digests[url] != digest:
                pool.mark_excluded(url, f"serves another build of {self.model} ({digests[url][:12]})")
        self._digest = digest
        return digest

    @property
    def digest(self) -> str:
        if self._digest is None:
            self.check_ready()
        return self._digest or ""

    def host_metadata(self) -> dict[str, dict]:
        """Per-host requests, failures, tokens, busy seconds and health, for a partition's metadata."""
        return self.pool.snapshot()

    def chat(self, messages: list[dict], *, options: dict, fmt: Any = None) -> LLMReply:
        """One chat completion (non-streaming), from the cache when this exact request was answered before.

        The request goes to the pool host with the most free slots; a host that cannot be reached is taken out of
        rotation and the request is retried elsewhere (or after a backoff, when every host is busy or down).
        """
        key = request_key(self.model, self.digest, messages, fmt, options)
        hit = self.cache.get(key)
        if hit is not None:
            return LLMReply(hit["text"], True, hit.get("latency_s", 0.0), hit["eval_count"], hit["eval_duration_s"], 0)
        rng = rng_for(0, key, "backoff")
        last: Exception | None = None
        sent = 0  # requests that reached a host's client (an attempt without a free host sends none)
        for attempt in range(1, self.max_retries + 2):
            try:
                host = self.pool.acquire(wait_s=self.timeout_s)
            except ConnectionError as exc:
                last = exc
            else:
                started = time.monotonic()
                sent += 1
                try:
                    response = host.client.chat(model=self.model, messages=messages, format=fmt, options=options,
                                                keep_alive=self.keep_alive, stream=False)
                except ollama.ResponseError as exc:
                    self.pool.release(host, seconds=time.monotonic() - started, failed=True)
                    if exc.status_code == 404:
                        raise ModelNotAvailable(f"model {self.model!r} is not available on {host.url}: run "
                                                f"`ollama pull {self.model}` there.") from None
                    if exc.status_code not in RETRYABLE_STATUS:
                        raise LLMCallFailed(f"{host.url} answered {exc.status_code}: {exc.error}",
                                            attempts=sent) from None
                    last = exc
                except (ConnectionError, httpx.TransportError) as exc:  # refused, reset, timeouts
                    unreachable = isinstance(exc, (ConnectionError, httpx.ConnectError))
                    self.pool.release(host, seconds=time.monotonic() - started, failed=True, unreachable=unreachable)
                    last = exc
                    if unreachable and any(not h.down_until for h in self.pool.hosts):
                        continue  # another host is up: retry there at once
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
                                    reply["eval_duration_s"], attempt)
            if attempt <= self.max_retries:
                time.sleep(self.backoff_s * 2 ** (attempt - 1) * rng.uniform(0.5, 1.5))
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
