"""The request loop every backend shares: cache → host pool → send (watched) → check the reply → bounded retries.

A backend (:mod:`.ollama`, :mod:`.openai_compatible`) says how to ask one host for the model's revision
(:meth:`LLMResource._revision`) and how to send one chat request (:meth:`LLMResource._request`); everything else is
here, so both APIs behave the same way under faults:

- **Cache.** A reply is kept under :func:`~.cache.request_key` (API, model, revision, messages, schema, options) and
  served from there on every later run. Only checked replies are kept.
- **Checks.** A reply whose content is empty (after its reasoning is taken out), cut off at the token limit, or
  refused by the caller's ``validate`` (e.g. not the JSON object asked for) is never cached as an answer. An empty
  one is a glitch: asked again once, and not remembered. The others raise :class:`~.protocol.ReplyRejected` at once
  (the same seeded request gives the same reply; the caller moves on, e.g. to another seed), and the cache
  remembers the rejection, not the text, so a re-run raises it again without a request.
  Reasoning (``<think>`` blocks, Ollama's ``thinking``, ``reasoning_content``, gpt-oss's analysis channel) never
  reaches the content; its tokens are counted.
- **Retries.** Timeouts, dropped connections of a host that still answers, 408/429/5xx are retried with backoff and
  jitter (429 waits its ``Retry-After``), at most ``max_retries`` times. Other 4xx are not retried. A host that goes
  away (refused, dropped, hung) is left to the pool, which waits for it (``--ollama-down-wait`` in all); a request
  that was sent and lost that way counts as a failed attempt, so a request that crashes the server is not sent
  forever.
- **Requests that can never succeed.** A prompt longer than the server's context, refused (llama.cpp, vLLM) or cut
  silently (seen from the reply's prompt token count), raises :class:`~.protocol.PromptTooLong` at once with the
  server's reason and the setting that fixes it; the runner stops the run.
- **Budget.** Every request sent takes one from the caller's :class:`~.protocol.RequestBudget`, retries and resends
  included; a spent budget raises :class:`~.protocol.BudgetExhausted`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
from pydantic import PrivateAttr

from ..seeding import rng_for
from .cache import ResponseCache, open_cache, request_key
from .pool import DOWN_WAIT_S, Host, HostDown, HostPool
from .protocol import (
    BudgetExhausted,
    LLMCallFailed,
    LLMClient,
    LLMReply,
    ModelNotAvailable,
    PromptTooLong,
    ReplyRejected,
    RequestBudget,
    ServerUnavailable,
)

RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
PROBE_AFTER_S = 15.0  # a request unanswered this long gets its host health-checked (slow or hung?)
EMPTY_REPLY_RETRIES = 1  # an empty reply is asked again this often
MAX_RETRY_AFTER_S = 60.0
# A prompt is taken as cut by the server when it reports fewer tokens than its characters / this. English prose
# is 3.5-4.5 characters per token with the tokenizers of the models used here; only prompts the server reports as
# at least MIN_COUNTED_PROMPT_TOKENS are judged (a server that leaves cached tokens out reports far fewer).
MAX_CHARS_PER_TOKEN = 5.0
CHARS_PER_TOKEN = 4  # for the estimate of a prompt's tokens the messages quote
MIN_COUNTED_PROMPT_TOKENS = 512
_log = logging.getLogger(__name__)


class ServerError(Exception):
    """An HTTP error answer: its status, the server's message and any ``Retry-After`` (seconds)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class RawReply:
    """One host's answer as its API gave it, before the checks."""

    content: str
    finish_reason: str = "stop"
    reasoning: str = ""  # a separate reasoning field (thinking, reasoning_content, reasoning)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int | None = None  # when the server reports it
    eval_duration_s: float = 0.0


_THINK = re.compile(r"^\s*<think>(.*?)(?:</think>|$)", re.S)
_HARMONY_FINAL = "<|channel|>final<|message|>"
# gpt-oss's harmony markup: "<|start|>assistant", "<|channel|>analysis", "<|message|>", "<|end|>", ...
_HARMONY_TAGS = re.compile(r"<\|start\|>\w*|<\|channel\|>\w*|<\|(?:end|return|message|call|constrain)\|>")


def split_reasoning(content: str, reasoning: str = "") -> tuple[str, str]:
    """(answer, reasoning) of a reply: ``<think>…</think>`` at the start (an unclosed one is all reasoning; a
    template that opened it in the prompt leaves only ``…</think>``), gpt-oss's harmony channels (the answer is the
    ``final`` channel), and a reasoning field the API gave apart."""
    parts = [reasoning.strip()] if reasoning and reasoning.strip() else []
    if _HARMONY_FINAL in content or "<|channel|>analysis" in content:
        before, _, after = content.partition(_HARMONY_FINAL)
        parts.append(" ".join(_HARMONY_TAGS.sub(" ", before).split()))
        content = _HARMONY_TAGS.sub("", after).strip()
    match = _THINK.match(content)
    if match:
        parts.append(match.group(1).strip())
        content = content[match.end():]
    elif "</think>" in content and "<think>" not in content:
        before, _, content = content.partition("</think>")
        parts.append(before.strip())
    return content.strip(), "\n".join(p for p in parts if p)


def reply_problem(content: str, finish_reason: str,
                  validate: Callable[[str], str | None] | None) -> tuple[str, str] | None:
    """Why a reply cannot be kept, as (reason, words), or None when it can: empty, cut off at the token limit, or
    refused by ``validate``."""
    if not content.strip():
        return "empty", "an empty reply"
    if finish_reason == "length":
        return "cut_off", "a reply cut off at the token limit"
    problem = validate(content) if validate is not None else None
    return ("off_schema", problem) if problem else None


def context_fix(tokens: int) -> str:
    """How to give a prompt of about ``tokens`` tokens room on each server kind."""
    need = 1 << max(11, (tokens + 600).bit_length())  # the next power of two with room for the reply
    return (f"The prompt needs about {tokens:,} tokens plus its reply: give each request slot a context of at least "
            f"{need:,} tokens (Ollama: OLLAMA_CONTEXT_LENGTH={need} on the server, or the native API, which sets "
            f"num_ctx per request; llama-server: -c {need} × its --parallel slots; vLLM: --max-model-len {need}; "
            f"SGLang: --context-length {need}), then re-run.")


def is_context_error(error: ServerError) -> bool:
    """A 4xx saying the prompt does not fit (llama.cpp: "exceeds the available context size"; vLLM: "maximum
    context length"; SGLang: "longer than the model's context length")."""
    return 400 <= error.status < 500 and bool(re.search(r"context|too long|too many tokens", error.message, re.I))


class LLMResource(LLMClient):
    """The shared loop over one server, or a pool of servers of one API, and the model.

    ``host``: one URL or several, comma-separated (a pool); ``parallel``: requests in flight per host.
    Two timeouts: ``timeout_s`` bounds one request (a slow answer), ``down_wait_s`` how long, in all, requests wait
    for servers that went away (refused, dropped, or hung) to come back before the partition fails with
    :class:`~.protocol.ServerDown`. A request unanswered after ``probe_after_s`` gets its host health-checked with
    ``check_timeout_s``: a host that answers is slow, one that does not is hung and counts as gone.
    """

    host: str | None = None
    model: str
    timeout_s: float = 120.0
    check_timeout_s: float = 5.0
    down_wait_s: float = DOWN_WAIT_S
    probe_after_s: float = PROBE_AFTER_S
    parallel: int = 1
    max_retries: int = 3
    backoff_s: float = 1.0
    cache_path: str = "data/cache/llm_responses.sqlite"
    """A SQLite file, or a ``postgresql://`` URL for a cache shared by every worker (see :func:`~.cache.open_cache`)."""

    _cache: ResponseCache | None = PrivateAttr(default=None)
    _digest: str | None = PrivateAttr(default=None)
    _pool: HostPool | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _notify: Callable[[str], None] | None = PrivateAttr(default=None)

    # --- what a backend provides ---------------------------------------------------------------------------------

    label: ClassVar[str] = "LLM server"  # names the server in messages
    restart_hint: ClassVar[str] = "the server"
    probe_path: ClassVar[str] = "/models"

    @property
    def hosts(self) -> list[str]:
        raise NotImplementedError

    def _headers(self) -> dict:
        return {}

    def _revision(self, url: str) -> str:
        """The model's revision on one host (never empty); raises :class:`ServerUnavailable` (with ``hung``) or
        :class:`ModelNotAvailable` with what to run."""
        raise NotImplementedError

    def _request(self, url: str, messages: list[dict], fmt: Any, options: dict) -> RawReply:
        """One chat request; raises :class:`ServerError` for an HTTP error answer, ``ConnectionError`` or an
        ``httpx.TransportError`` when the connection fails."""
        raise NotImplementedError

    # --- the protocol --------------------------------------------------------------------------------------------

    def attach_log(self, notify: Callable[[str], None] | None) -> None:
        """Where outage and recovery messages go (one line each, once per outage), e.g. ``context.log.warning``:
        the CLI's console and the run's logs in the UI. None: this module's Python logger."""
        self._notify = notify

    def _emit(self, message: str) -> None:
        (self._notify if self._notify is not None else _log.warning)(message)

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
                self._pool = HostPool(self.hosts, self.parallel, self.check_timeout_s, down_wait_s=self.down_wait_s,
                                      notify=self._emit, probe_path=self.probe_path, headers=self._headers,
                                      label=self.label, restart=self.restart_hint)
            return self._pool

    @property
    def cache(self) -> ResponseCache:
        with self._lock:
            if self._cache is None:
                self._cache = open_cache(self.cache_path)
            return self._cache

    def check_ready(self) -> str:
        """Checks that the servers answer and have the model; returns the model's revision.

        With several hosts, at least one must be ready; hosts that are down are skipped (and probed again later),
        hosts serving another build of the model are excluded. Raises :class:`ServerUnavailable` with the command
        to run when none is ready.
        """
        errors, revisions = [], {}
        for url in self.hosts:
            try:
                revisions[url] = self._revision(url)
            except ServerUnavailable as exc:
                errors.append(exc)
        if not revisions:
            if len(errors) == 1:
                raise errors[0]
            kind = ModelNotAvailable if all(isinstance(e, ModelNotAvailable) for e in errors) else ServerUnavailable
            error = kind(f"no {self.label} host is ready:\n  " + "\n  ".join(str(e) for e in errors))
            error.hung = all(getattr(e, "hung", False) for e in errors)
            raise error
        revision = revisions.get(self.hosts[0]) or next(iter(revisions.values()))
        pool = self.pool
        for url in self.hosts:
            if url not in revisions:
                pool.mark_down(url)
            elif revisions[url] != revision:
                pool.mark_excluded(url, f"serves another build of {self.model} ({revisions[url][:12]})")
        self._digest = revision
        return revision

    def wait_ready(self) -> str:
        """:meth:`check_ready` inside a run: a server that cannot be reached is waited for (a message, then what is
        left of ``down_wait_s``) instead of failing at once; a missing model fails at once.

        An interrupt (Ctrl-C or SIGTERM, raised here as ``KeyboardInterrupt`` or Dagster's
        ``DagsterExecutionInterruptedError``) stops the pool's waits, like one during the requests
        (:meth:`stop_waiting`), and propagates: Dagster turns an interrupt in a step with a ``RetryPolicy`` into a
        retry of the step, and the retry must end at once (:class:`~.protocol.ServerDown`), not wait again."""
        try:
            while True:
                try:
                    return self.check_ready()
                except ModelNotAvailable:
                    raise
                except ServerUnavailable as exc:
                    pool = self.pool
                    for url in self.hosts:
                        pool.mark_down(url, hung=getattr(exc, "hung", False))
                    pool.wait_until_up()
        except Exception:
            raise
        except BaseException:  # an interrupt
            self.stop_waiting()
            raise

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

    def _watched(self, host: Host, messages: list[dict], fmt: Any, options: dict) -> RawReply:
        """One request to ``host``, watched: unanswered after ``probe_after_s`` (and again each time), the host
        gets a health check with the short timeout; no reply to it means the host hangs (:class:`HostDown`, the
        request is abandoned). A refused connection, or one dropped by a host that then fails its health check, is
        :class:`HostDown` too; other errors propagate."""
        result: dict[str, Any] = {}
        done = threading.Event()

        def request() -> None:
            try:
                result["reply"] = self._request(host.url, messages, fmt, options)
            except BaseException as exc:  # handed to the caller's thread
                result["error"] = exc
            finally:
                done.set()

        threading.Thread(target=request, name=f"llm-request-{host.url}", daemon=True).start()
        every = max(0.05, min(self.probe_after_s, self.timeout_s / 2))
        while not done.wait(every):
            if self.pool.stopped:
                raise HostDown()  # the run was interrupted: abandon the request (the next acquire raises)
            if not self.pool.probe(host) and not done.is_set():
                raise HostDown(hung=True)
        exc = result.get("error")
        if exc is None:
            return result["reply"]
        if isinstance(exc, (ConnectionError, httpx.ConnectError)):
            raise HostDown(reached=False) from exc
        if isinstance(exc, httpx.TransportError) and not self.pool.probe(host):
            raise HostDown() from exc  # dropped (reset, cut off, timed out) by a host that no longer answers
        raise exc

    def _check_prompt(self, host: Host, raw: RawReply, prompt_chars: int, estimate: int, sent: int) -> None:
        """Raises :class:`PromptTooLong` when the server read far fewer prompt tokens than the prompt has (it cut
        the prompt to its context without saying so, as Ollama does)."""
        tokens = raw.prompt_tokens
        if tokens >= MIN_COUNTED_PROMPT_TOKENS and prompt_chars / tokens > MAX_CHARS_PER_TOKEN:
            raise PromptTooLong(f"{self.label} at {host.url} read only {tokens:,} tokens of a prompt of about "
                                f"{estimate:,}: it cut the prompt to fit its context. {context_fix(estimate)}",
                                attempts=sent)

    def chat(self, messages: list[dict], *, options: dict, fmt: Any = None, budget: RequestBudget | None = None,
             validate: Callable[[str], str | None] | None = None) -> LLMReply:
        """One chat completion (non-streaming), from the cache when this exact request was answered before.

        ``options`` in Ollama's terms (temperature, seed, num_predict, num_ctx, ...; each backend maps them);
        ``fmt`` a JSON schema for structured output; ``validate(content)`` returns why a reply is unusable, or
        None. See the module docstring for retries, checks and the budget.
        """
        key = request_key(self.api, self.model, self.digest, messages, fmt, options)
        hit = self.cache.get(key)
        if hit is not None and hit.get("rejected"):
            raise ReplyRejected(f"{self.url}: the model gave {hit['words']} (an earlier run's reply, not kept)",
                                attempts=0, reason=hit["rejected"])
        if hit is not None and hit.get("text"):  # an empty reply cached by an earlier version is not an answer
            return LLMReply(hit["text"], True, hit.get("latency_s", 0.0), hit["eval_count"], hit["eval_duration_s"],
                            0, hit.get("prompt_tokens", 0), hit.get("reasoning_tokens", 0))
        rng = rng_for(0, key, "backoff")
        prompt_chars = sum(len(m.get("content") or "") for m in messages)
        estimate = round(prompt_chars / CHARS_PER_TOKEN)
        last: Exception | None = None
        sent = failed = empty = 0
        while True:
            retry_after = None
            if budget is not None:
                try:
                    budget.take()
                except BudgetExhausted as exc:
                    raise BudgetExhausted(str(exc), attempts=sent) from None
            try:
                host = self.pool.acquire(wait_s=self.timeout_s)
            except ConnectionError as exc:  # every slot busy for the whole timeout: nothing was sent
                if budget is not None:
                    budget.refund()
                last = exc
            else:
                started = time.monotonic()
                sent += 1
                try:
                    raw = self._watched(host, messages, fmt, options)
                except HostDown as exc:  # the pool waits for a host (this one or another)
                    gone = not self.pool.stopped  # stopped: abandoned on Ctrl-C, the host is not to blame
                    self.pool.release(host, seconds=time.monotonic() - started, failed=True,
                                      unreachable=gone and not exc.hung, hung=gone and exc.hung)
                    if not exc.reached:  # refused: nothing was sent
                        sent -= 1
                        if budget is not None:
                            budget.refund()
                        continue
                    last = exc  # sent and lost: a failed attempt, so a request that kills the server ends
                    failed += 1
                    if failed > self.max_retries:
                        break
                    continue
                except ServerError as exc:
                    self.pool.release(host, seconds=time.monotonic() - started, failed=True)
                    if exc.status == 404:
                        raise ModelNotAvailable(self._missing_model(host.url, exc.message)) from None
                    if is_context_error(exc):
                        raise PromptTooLong(f"{self.label} at {host.url} refused the request: {exc.message}. "
                                            f"{context_fix(estimate)}", attempts=sent) from None
                    if exc.status not in RETRYABLE_STATUS:
                        raise LLMCallFailed(f"{host.url} answered {exc.status}: {exc.message}", attempts=sent) from None
                    last, retry_after = exc, exc.retry_after
                except (ConnectionError, httpx.TransportError) as exc:  # timeouts, drops of a host that answers
                    self.pool.release(host, seconds=time.monotonic() - started, failed=True)
                    last = exc
                else:
                    elapsed = time.monotonic() - started
                    self.pool.release(host, seconds=elapsed, tokens=raw.completion_tokens, started=started)
                    self._check_prompt(host, raw, prompt_chars, estimate, sent)
                    content, reasoning = split_reasoning(raw.content, raw.reasoning)
                    problem = reply_problem(content, raw.finish_reason, validate)
                    if problem is None:
                        return self._keep(key, content, reasoning, raw, elapsed, sent)
                    reason, words = problem
                    empty += reason == "empty"
                    if reason != "empty":
                        self.cache.put(key, self.model, {"rejected": reason, "words": words, "text": ""})
                    if reason != "empty" or empty > EMPTY_REPLY_RETRIES:
                        raise ReplyRejected(f"{host.url}: the model gave {words} ({sent} attempt(s); not kept)",
                                            attempts=sent, reason=reason)
                    continue
            failed += 1
            if failed > self.max_retries:
                break
            delay = self.backoff_s * 2 ** (failed - 1) * rng.uniform(0.5, 1.5)
            time.sleep(min(MAX_RETRY_AFTER_S, max(delay, retry_after or 0.0)))
        raise LLMCallFailed(f"{self.url}: {type(last).__name__}: {last} (after {sent} attempts; check the server, "
                            f"or raise --ollama-timeout)", attempts=sent)

    def _keep(self, key: str, content: str, reasoning: str, raw: RawReply, elapsed: float, sent: int) -> LLMReply:
        """Caches a checked reply and returns it."""
        if raw.reasoning_tokens is not None:
            reasoning_tokens = raw.reasoning_tokens
        elif reasoning:  # not reported: the reasoning's share of the generated text
            reasoning_tokens = round(raw.completion_tokens * len(reasoning) / (len(reasoning) + len(content)))
        else:
            reasoning_tokens = 0
        reply = {"text": content, "eval_count": raw.completion_tokens, "eval_duration_s": raw.eval_duration_s,
                 "latency_s": round(elapsed, 3), "prompt_tokens": raw.prompt_tokens,
                 "reasoning_tokens": reasoning_tokens}
        self.cache.put(key, self.model, reply)
        return LLMReply(content, False, reply["latency_s"], raw.completion_tokens, raw.eval_duration_s, sent,
                        raw.prompt_tokens, reasoning_tokens)

    def _missing_model(self, url: str, message: str) -> str:
        return f"model {self.model!r} is not available on {url} ({message})"

    def teardown_after_execution(self, context) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None
