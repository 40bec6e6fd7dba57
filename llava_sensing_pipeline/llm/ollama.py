"""Ollama's native API (``/api/chat``), one server or a pool (``OLLAMA_HOSTS``).

Native rather than ``/v1`` by default because only the native API sets the context per request (``num_ctx``): the
analysis prompt (~5,000 tokens) does not fit Ollama's default context of 2,048-4,096 tokens. Structured output
through ``format`` (a JSON schema). Reasoning: a model with the ``thinking`` capability (``/api/show``) is asked
with ``think: false``, gpt-oss (which cannot turn it off) with ``think: "low"``; whatever reasoning comes back is
kept out of the content by the shared loop.
"""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar

import httpx
import ollama
from pydantic import PrivateAttr

from ..settings import stable_hash
from .base import LLMResource, RawReply, ServerError
from .protocol import ModelNotAvailable, ServerUnavailable

DEFAULT_MODEL = "llama3.1:8b"
DEFAULT_HOST = "http://localhost:11434"


def normalize_host(host: str | None) -> str:
    """``OLLAMA_HOST`` may be ``0.0.0.0:11434`` or ``localhost``; the client needs a URL."""
    host = (host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST).strip().rstrip("/")
    if "://" not in host:
        host = f"http://{host}"
    if host.count(":") == 1:  # no port given
        host = f"{host}:11434"
    return host.replace("://0.0.0.0", "://127.0.0.1")


def parse_hosts(host: str | None, env: dict[str, str] | None = None) -> list[str]:
    """Hosts from ``host`` (comma-separated allowed), else ``$OLLAMA_HOSTS``, else ``$OLLAMA_HOST``, else localhost."""
    env = os.environ if env is None else env
    raw = host or env.get("OLLAMA_HOSTS") or env.get("OLLAMA_HOST") or DEFAULT_HOST
    hosts = [normalize_host(h) for h in raw.split(",") if h.strip()]
    return list(dict.fromkeys(hosts)) or [DEFAULT_HOST]


def think_setting(model: str, capabilities: list[str]) -> bool | str | None:
    """What to send as ``think``: nothing for a model without the capability (Ollama refuses it), ``"low"`` for
    gpt-oss (its reasoning cannot be turned off), else ``False``."""
    if "thinking" not in capabilities:
        return None
    return "low" if model.split("/")[-1].startswith("gpt-oss") else False


class OllamaResource(LLMResource):
    """Ollama's native API. ``host`` defaults to ``$OLLAMA_HOSTS`` (comma-separated, a pool) or ``$OLLAMA_HOST`` or
    ``http://localhost:11434``; ``parallel`` is the slots per host (the servers' ``OLLAMA_NUM_PARALLEL``)."""

    model: str = DEFAULT_MODEL
    keep_alive: str = "10m"

    label: ClassVar[str] = "Ollama"
    restart_hint: ClassVar[str] = "`ollama serve`"
    probe_path: ClassVar[str] = "/api/tags"

    _clients: dict = PrivateAttr(default_factory=dict)
    _think: dict = PrivateAttr(default_factory=dict)

    @property
    def api(self) -> str:
        return "ollama"

    @property
    def hosts(self) -> list[str]:
        return parse_hosts(self.host)

    def _client(self, url: str) -> ollama.Client:
        with self._lock:
            if url not in self._clients:
                self._clients[url] = ollama.Client(host=url, timeout=self.timeout_s)
            return self._clients[url]

    def _revision(self, url: str) -> str:
        """The model's digest on one host (a hash of its size, date and details when the server gives none)."""
        client = ollama.Client(host=url, timeout=self.check_timeout_s)
        try:
            models = client.list().models
        except (ConnectionError, httpx.HTTPError) as exc:
            error = ServerUnavailable(
                f"Ollama is not reachable at {url} ({type(exc).__name__}: {exc}). Start the server with "
                f"`ollama serve` (or point --ollama-host / OLLAMA_HOST at a running one) and re-run.")
            error.hung = isinstance(exc, httpx.TimeoutException)  # connected, but no reply within the timeout
            raise error from None
        except ollama.ResponseError as exc:
            raise ServerUnavailable(f"Ollama at {url} answered {exc.status_code}: {exc.error}. "
                                    f"Check the server's log, then re-run.") from None
        wanted = {self.model, f"{self.model}:latest"}
        entry = next((m for m in models if m.model in wanted), None)
        if entry is None:
            available = ", ".join(sorted(m.model for m in models if m.model)) or "none"
            raise ModelNotAvailable(
                f"model {self.model!r} is not available on {url} (it has: {available}). "
                f"Run `ollama pull {self.model}` there, or choose one with --model.")
        try:
            capabilities = list(client.show(self.model).capabilities or [])
        except (ConnectionError, httpx.HTTPError, ollama.ResponseError):
            capabilities = []
        self._think[url] = think_setting(self.model, capabilities)
        if entry.digest:
            return entry.digest
        described = json.loads(entry.model_dump_json(exclude={"model", "name"}))
        return "entry-" + stable_hash(described, 32)

    def _request(self, url: str, messages: list[dict], fmt: Any, options: dict) -> RawReply:
        try:
            response = self._client(url).chat(model=self.model, messages=messages, format=fmt, options=options,
                                               keep_alive=self.keep_alive, stream=False,
                                               think=self._think.get(url))
        except ollama.ResponseError as exc:
            raise ServerError(exc.status_code, str(exc.error)) from None
        message = response.message
        return RawReply(content=message.content or "", reasoning=message.thinking or "",
                        finish_reason=response.done_reason or "stop",
                        prompt_tokens=int(response.prompt_eval_count or 0),
                        completion_tokens=int(response.eval_count or 0),
                        eval_duration_s=(response.eval_duration or 0) / 1e9)

    def _missing_model(self, url: str, message: str) -> str:
        return f"model {self.model!r} is not available on {url}: run `ollama pull {self.model}` there."
