"""What the pipeline asks of an LLM server, whatever its API: the client protocol, the reply, the errors.

Assets and ``eval-labels`` depend on :class:`LLMClient` only; :mod:`.ollama` (Ollama's native API) and
:mod:`.openai_compatible` (vLLM, SGLang, llama.cpp's ``llama-server``, LM Studio, Ollama's ``/v1``) implement it
over the shared request loop of :mod:`.base`. ``definitions.llm_from_env`` picks one (``--llm-api``).

The error class names are part of the stored state: a partition's failure reason quotes them, and the runner tells
an outage (:class:`ServerDown`) and a request no server can answer (:class:`PromptTooLong`) from other failures by
them (:func:`stops_run`). ``OllamaDown`` is the name :class:`ServerDown` had before the second API; reasons stored
under it are still recognised.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from dagster import ConfigurableResource


class ServerUnavailable(RuntimeError):
    """The server cannot be used: the message says what to run."""


class ServerDown(ServerUnavailable):
    """Every host went away during the run and none came back within the down wait (``--ollama-down-wait``, in
    all): the partition fails (a step retry would only wait again), and re-running resumes where it stopped."""


class ModelNotAvailable(ServerUnavailable):
    """The server answers but does not have the model (a wrong ``--model``, or one not pulled yet)."""


class CacheUnavailable(RuntimeError):
    """The response cache's database cannot be reached: the message names it (without its password)."""


class LLMCallFailed(RuntimeError):
    """A call still failed after its retries (or at once, for an error that is not retried).

    ``attempts`` is the number of requests actually sent to a server for it.
    """

    def __init__(self, message: str, attempts: int = 0):
        super().__init__(message)
        self.attempts = attempts


class ReplyRejected(LLMCallFailed):
    """The server answered, but the reply failed the checks: ``reason`` is ``empty`` (nothing after the reasoning),
    ``cut_off`` (stopped at the token limit) or ``off_schema`` (refused by the caller's ``validate``). The model's
    doing, not the server's: never cached, and counted as a rejection rather than a failed request."""

    def __init__(self, message: str, attempts: int = 0, reason: str = "off_schema"):
        super().__init__(message, attempts)
        self.reason = reason


class PromptTooLong(ServerUnavailable):
    """The server refused the prompt as longer than its context, or cut it silently: no retry can change that, so
    the run stops at once with the server's reason and the setting that fixes it."""

    def __init__(self, message: str, attempts: int = 0):
        super().__init__(message)
        self.attempts = attempts


class BudgetExhausted(LLMCallFailed):
    """The file's request budget (``--max-requests-per-example`` × its quota) is spent: its step stops at once."""


# A failure reason holding one of these stops the whole run (the runner starts no further partition).
RUN_STOPPERS = ("ServerDown", "OllamaDown", "PromptTooLong")


def stops_run(reason: str) -> bool:
    """Whether a partition's failure ``reason`` means no other partition can succeed now (server gone, context too
    small): the runner stops instead of trying the rest."""
    return any(f"{name}: " in reason for name in RUN_STOPPERS)


def is_outage(reason: str) -> bool:
    """Whether a partition's failure ``reason`` is a :class:`ServerDown` (the server stayed away past the wait)."""
    return "ServerDown: " in reason or "OllamaDown: " in reason


def stop_text(reason: str) -> str:
    """The message of the error that stopped the run, inside a failure ``reason`` (which may quote it after a
    step's words)."""
    for name in RUN_STOPPERS:
        mark = f"{name}: "
        if mark in reason:
            return reason[reason.index(mark) + len(mark):]
    return reason


@dataclass(frozen=True)
class LLMReply:
    """One answer: the content with any reasoning taken out, and its figures."""

    text: str
    cached: bool
    latency_s: float  # wall time of the successful call (as recorded then, when cached)
    eval_count: int  # generated tokens, reasoning included
    eval_duration_s: float
    attempts: int  # requests sent for this reply (0 when cached)
    prompt_tokens: int = 0
    reasoning_tokens: int = 0


class RequestBudget:
    """A hard cap on the requests one file's step may send (first tries, retries, resends after an outage).

    :meth:`take` is called before every request and raises :class:`BudgetExhausted` once ``limit`` were sent;
    :meth:`refund` gives one back for a request that never left (connection refused). Thread-safe.
    """

    def __init__(self, limit: int, what: str = ""):
        self.limit = max(0, int(limit))
        self.what = what
        self.used = 0
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            if self.used >= self.limit:
                raise BudgetExhausted(f"{self.what} request budget of {self.limit} spent "
                                      "(--max-requests-per-example)")
            self.used += 1

    def refund(self) -> None:
        with self._lock:
            self.used = max(0, self.used - 1)

    @property
    def spent(self) -> bool:
        with self._lock:
            return self.used >= self.limit


class LLMClient(ConfigurableResource):
    """The protocol every LLM backend implements (the ``llm`` resource of the definitions).

    ``chat`` answers one request, from the persistent cache when it was answered before; ``check_ready`` /
    ``wait_ready`` check the server and the model and return the model's revision; the rest report on the
    servers for a partition's metadata.
    """

    model: str

    @property
    def api(self) -> str:
        raise NotImplementedError

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def total_slots(self) -> int:
        raise NotImplementedError

    @property
    def digest(self) -> str:
        raise NotImplementedError

    def chat(self, messages: list[dict], *, options: dict, fmt: dict | None = None,
             budget: RequestBudget | None = None, validate=None) -> LLMReply:
        raise NotImplementedError

    def check_ready(self) -> str:
        raise NotImplementedError

    def wait_ready(self) -> str:
        raise NotImplementedError

    def attach_log(self, notify) -> None:
        raise NotImplementedError

    def stop_waiting(self) -> None:
        raise NotImplementedError

    def outage_counters(self) -> tuple[int, float]:
        raise NotImplementedError

    def outage_metadata(self, before: tuple[int, float]) -> dict[str, float | int]:
        raise NotImplementedError

    def host_metadata(self) -> dict[str, dict]:
        raise NotImplementedError
