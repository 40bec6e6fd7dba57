"""The Ollama client resource: readiness check, timeouts, bounded retries with backoff, and a persistent cache.

Every LLM call of the pipeline goes through :meth:`OllamaResource.chat`. A reply is cached on disk (SQLite, under
``data/cache/``) keyed by model, model digest, messages, format and options, so re-materializing a partition whose
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


class LLMCallFailed(RuntimeError):
    """A call still failed after its retries."""


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

    @property
    def tokens_per_second(self) -> float:
        return self.eval_count / self.eval_duration_s if self.eval_duration_s > 0 else 0.0


class ResponseCache:
    """A thread-safe SQLite map from request key to the reply (text and eval figures)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
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


def request_key(model: str, digest: str, messages: list[dict], fmt: Any, options: dict) -> str:
    payload = {"model": model, "digest": digest, "messages": messages, "format": fmt, "options": options}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class OllamaResource(ConfigurableResource):
    """An Ollama server and model. ``host`` defaults to ``$OLLAMA_HOST`` or ``http://localhost:11434``."""

    host: str | None = None
    model: str = DEFAULT_MODEL
    timeout_s: float = 120.0
    check_timeout_s: float = 5.0
    keep_alive: str = "10m"
    parallel: int = 1  # match the server's OLLAMA_NUM_PARALLEL
    max_retries: int = 3
    backoff_s: float = 1.0
    cache_path: str = "data/cache/llm_responses.sqlite"

    _local: threading.local = PrivateAttr(default_factory=threading.local)
    _cache: ResponseCache | None = PrivateAttr(default=None)
    _digest: str | None = PrivateAttr(default=None)
    _cache_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return normalize_host(self.host)

    def _client(self) -> ollama.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = ollama.Client(host=self.url, timeout=self.timeout_s)
        return client

    @property
    def cache(self) -> ResponseCache:
        with self._cache_lock:
            if self._cache is None:
                self._cache = ResponseCache(self.cache_path)
            return self._cache

    def check_ready(self) -> str:
        """Checks that the server answers and has the model; returns the model digest.

        Raises :class:`OllamaUnavailable` with the command to run when it does not.
        """
        client = ollama.Client(host=self.url, timeout=self.check_timeout_s)
        try:
            models = client.list().models
        except (ConnectionError, httpx.HTTPError) as exc:
            raise OllamaUnavailable(
                f"Ollama is not reachable at {self.url} ({type(exc).__name__}: {exc}). Start the server with "
                f"`ollama serve` (or point --ollama-host / OLLAMA_HOST at a running one) and re-run."
            ) from None
        except ollama.ResponseError as exc:
            raise OllamaUnavailable(f"Ollama at {self.url} answered {exc.status_code}: {exc.error}. "
                                    f"Check the server's log, then re-run.") from None
        wanted = {self.model, f"{self.model}:latest"}
        for m in models:
            if m.model in wanted:
                self._digest = m.digest or ""
                return self._digest
        available = ", ".join(sorted(m.model for m in models if m.model)) or "none"
        raise OllamaUnavailable(
            f"model {self.model!r} is not available on {self.url} (it has: {available}). "
            f"Run `ollama pull {self.model}` there, or choose one with --model."
        )

    @property
    def digest(self) -> str:
        if self._digest is None:
            self.check_ready()
        return self._digest or ""

    def chat(self, messages: list[dict], *, options: dict, fmt: Any = None) -> LLMReply:
        """One chat completion (non-streaming), from the cache when this exact request was answered before."""
        key = request_key(self.model, self.digest, messages, fmt, options)
        hit = self.cache.get(key)
        if hit is not None:
            return LLMReply(hit["text"], True, hit.get("latency_s", 0.0), hit["eval_count"], hit["eval_duration_s"], 0)
        rng = rng_for(0, key, "backoff")
        last: Exception | None = None
        for attempt in range(1, self.max_retries + 2):
            started = time.monotonic()
            try:
                response = self._client().chat(model=self.model, messages=messages, format=fmt, options=options,
                                               keep_alive=self.keep_alive, stream=False)
            except ollama.ResponseError as exc:
                if exc.status_code == 404:
                    raise OllamaUnavailable(f"model {self.model!r} is not available on {self.url}: run "
                                            f"`ollama pull {self.model}` there.") from None
                if exc.status_code not in RETRYABLE_STATUS:
                    raise LLMCallFailed(f"{self.url} answered {exc.status_code}: {exc.error}") from None
                last = exc
            except (ConnectionError, httpx.TransportError) as exc:  # refused, reset, timeouts
                last = exc
            else:
                reply = {
                    "text": response.message.content or "",
                    "eval_count": int(response.eval_count or 0),
                    "eval_duration_s": (response.eval_duration or 0) / 1e9,
                    "latency_s": round(time.monotonic() - started, 3),
                }
                self.cache.put(key, self.model, reply)
                return LLMReply(reply["text"], False, reply["latency_s"], reply["eval_count"],
                                reply["eval_duration_s"], attempt)
            if attempt <= self.max_retries:
                time.sleep(self.backoff_s * 2 ** (attempt - 1) * rng.uniform(0.5, 1.5))
        raise LLMCallFailed(f"{self.url}: {type(last).__name__}: {last} (after {self.max_retries + 1} attempts; "
                            f"check the server, or raise --ollama-timeout)")

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
