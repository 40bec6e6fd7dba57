"""The OpenAI-compatible chat API (``/v1/chat/completions``): vLLM, SGLang, llama.cpp's ``llama-server``,
LM Studio, Ollama's ``/v1``, or any server that speaks it.

Plain ``httpx`` (already installed with the ``ollama`` client): the pipeline needs one endpoint, its own retry,
timeout and pool logic (:mod:`.base`) and no streaming, so the ``openai`` package would add a dependency whose
retries and timeouts would have to be turned off. Readiness and the model check through ``/v1/models``; structured
output through ``response_format`` with the JSON schema; Ollama-style options mapped (``seed``, ``temperature``,
``top_p``, ``top_k``, ``num_predict`` → ``max_tokens``, ``stop``, ``repeat_penalty``), with Ollama's sampling
defaults sent explicitly (:data:`SAMPLING_DEFAULTS`); ``num_ctx`` cannot be set per request on this API, the
server's context applies; ``usage`` tokens recorded; 429 waits its ``Retry-After``. The API key is read from
``LLAVA_SENSING_LLM_API_KEY`` or ``OPENAI_API_KEY`` at each request and is never logged, cached or put in metadata.
Reasoning: gpt-oss is asked for ``reasoning_effort: "low"``, other models for ``enable_thinking: false`` through
``chat_template_kwargs`` (honoured by the Qwen3 and DeepSeek templates on vLLM, SGLang and llama.cpp); what reasoning
still comes back (``reasoning_content``, ``reasoning``, ``<think>``, harmony channels) is kept out of the content.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import httpx
from pydantic import PrivateAttr

from ..settings import stable_hash
from .base import LLMResource, RawReply, ServerError
from .protocol import ModelNotAvailable, ServerUnavailable

DEFAULT_URL = "http://localhost:8000/v1"
API_KEY_VARIABLES = ("LLAVA_SENSING_LLM_API_KEY", "OPENAI_API_KEY")
# Ollama's sampling defaults, sent explicitly so that both APIs sample alike (servers' own defaults vary: llama.cpp
# has no repeat penalty, vLLM takes the model's generation config). The penalty goes by two names: llama.cpp's
# ``repeat_penalty`` and vLLM's / SGLang's ``repetition_penalty``; each server ignores the other's.
SAMPLING_DEFAULTS = {"top_k": 40, "top_p": 0.9, "repeat_penalty": 1.1}
# What identifies the served model in a /v1/models entry (its "created" is often the time of the call).
REVISION_FIELDS = ("id", "root", "parent", "owned_by", "meta", "max_model_len")


def normalize_url(url: str) -> str:
    """``gpu:8000`` → ``http://gpu:8000/v1``; a URL with a path is kept as given (without a trailing slash)."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    scheme, _, rest = url.partition("://")
    if "/" not in rest:
        url = f"{url}/v1"
    return url.replace("://0.0.0.0", "://127.0.0.1")


def parse_urls(url: str | None, env: dict[str, str] | None = None) -> list[str]:
    """Base URLs from ``url`` (comma-separated: a pool), else ``$LLAVA_SENSING_LLM_URL``, else localhost:8000."""
    env = os.environ if env is None else env
    raw = url or env.get("LLAVA_SENSING_LLM_URL") or DEFAULT_URL
    urls = [normalize_url(u) for u in raw.split(",") if u.strip()]
    return list(dict.fromkeys(urls)) or [DEFAULT_URL]


def api_key(env: dict[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    return next((env[name] for name in API_KEY_VARIABLES if env.get(name)), None)


def request_body(model: str, messages: list[dict], fmt: Any, options: dict) -> dict:
    """The ``/v1/chat/completions`` body for Ollama-style ``options`` and a JSON schema ``fmt``."""
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": False}
    options = {**SAMPLING_DEFAULTS, **options}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k"), ("seed", "seed"),
                         ("num_predict", "max_tokens"), ("stop", "stop"), ("repeat_penalty", "repeat_penalty"),
                         ("repeat_penalty", "repetition_penalty")):
        if options.get(ours) is not None:
            body[theirs] = options[ours]
    if fmt is not None:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "reply", "schema": fmt, "strict": True}}
    if "gpt-oss" in model.lower():
        body["reasoning_effort"] = "low"
    else:
        body["chat_template_kwargs"] = {"enable_thinking": False}
    return body


def error_message(response: httpx.Response) -> str:
    """The server's own words from an error answer (OpenAI's ``{"error": {"message": ...}}`` or a plain body)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error or body.get("detail") or body.get("message") or body)[:500]


def retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


def parse_reply(body: dict) -> RawReply:
    """A chat completion as :class:`RawReply`; raises ``ValueError`` when it has no choice."""
    choices = body.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        raise ValueError("a chat completion without choices")
    message = choices[0].get("message") or {}
    usage = body.get("usage") or {}
    details = usage.get("completion_tokens_details") or {}
    timings = body.get("timings") or {}  # llama.cpp
    return RawReply(
        content=message.get("content") or "",
        reasoning=message.get("reasoning_content") or message.get("reasoning") or "",
        finish_reason=choices[0].get("finish_reason") or "stop",
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        reasoning_tokens=details.get("reasoning_tokens"),
        eval_duration_s=float(timings.get("predicted_ms") or 0.0) / 1000,
    )


class OpenAICompatibleResource(LLMResource):
    """An OpenAI-compatible server (or a pool: comma-separated base URLs such as ``http://gpu:8000/v1``).
    ``parallel``: requests in flight per server (vLLM / SGLang batch 64-256; llama-server: its ``--parallel``)."""

    model: str

    label: ClassVar[str] = "LLM server"
    restart_hint: ClassVar[str] = "the inference server"
    probe_path: ClassVar[str] = "/models"

    _http: httpx.Client | None = PrivateAttr(default=None)

    @property
    def api(self) -> str:
        return "openai"

    @property
    def hosts(self) -> list[str]:
        return parse_urls(self.host)

    def _headers(self) -> dict:
        key = api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                limits = httpx.Limits(max_connections=None, max_keepalive_connections=max(8, self.parallel * 2))
                self._http = httpx.Client(timeout=self.timeout_s, limits=limits)
            return self._http

    def _revision(self, url: str) -> str:
        """A hash of what ``/models`` says of the model (id, root, owner, llama.cpp's ``meta``: its size and
        parameters), so a different build served under the same name is another cache key."""
        try:
            with httpx.Client(timeout=self.check_timeout_s, headers=self._headers()) as client:
                response = client.get(f"{url}/models")
        except httpx.HTTPError as exc:
            error = ServerUnavailable(
                f"the LLM server is not reachable at {url} ({type(exc).__name__}: {exc}). Start it (e.g. `vllm "
                f"serve MODEL`, `llama-server -m MODEL.gguf`), or point --llm-url / LLAVA_SENSING_LLM_URL at a "
                f"running one, and re-run.")
            error.hung = isinstance(exc, httpx.TimeoutException)
            raise error from None
        if response.status_code in (401, 403):
            raise ServerUnavailable(f"the LLM server at {url} refused the API key ({response.status_code}: "
                                    f"{error_message(response)}): set LLAVA_SENSING_LLM_API_KEY or OPENAI_API_KEY.")
        if response.status_code >= 400:
            raise ServerUnavailable(f"the LLM server at {url} answered {response.status_code} to /models: "
                                    f"{error_message(response)}. Is it an OpenAI-compatible server (its base URL "
                                    f"usually ends in /v1)?")
        try:
            entries = [e for e in response.json().get("data", []) if isinstance(e, dict)]
        except (ValueError, AttributeError):
            raise ServerUnavailable(f"the LLM server at {url} answered /models with something that is not the "
                                    "OpenAI model list. Is --llm-url the API's base URL (usually ending in /v1)?")
        entry = next((e for e in entries if str(e.get("id", "")).lower() == self.model.lower()), None)
        if entry is None:
            available = ", ".join(sorted(str(e.get("id")) for e in entries)) or "none"
            raise ModelNotAvailable(f"model {self.model!r} is not served at {url} (it serves: {available}). "
                                    "Choose one with --model, or start the server with that model.")
        return "v1-" + stable_hash({k: entry.get(k) for k in REVISION_FIELDS}, 32)

    def _request(self, url: str, messages: list[dict], fmt: Any, options: dict) -> RawReply:
        response = self._client().post(f"{url}/chat/completions", headers=self._headers(),
                                        json=request_body(self.model, messages, fmt, options))
        if response.status_code >= 400:
            raise ServerError(response.status_code, error_message(response), retry_after(response))
        try:
            return parse_reply(response.json())
        except (ValueError, TypeError, AttributeError) as exc:
            raise ServerError(502, f"not a chat completion ({exc}): {response.text[:200]!r}") from None

    def _missing_model(self, url: str, message: str) -> str:
        return (f"model {self.model!r} is not served at {url} ({message}); choose one with --model, or start the "
                "server with that model.")

    def teardown_after_execution(self, context) -> None:
        super().teardown_after_execution(context)
        if self._http is not None:
            self._http.close()
            self._http = None
