"""Ollama-API-compatible HTTP server for DEVELOPMENT AND TESTS ONLY (not for production).

It speaks the subset of the Ollama REST API that the ``ollama`` Python client (0.6.x) uses, so the
client works against it unchanged, and the OpenAI-compatible chat API of vLLM / llama.cpp's
llama-server / Ollama's /v1 (see "OpenAI-compatible API" below):

- ``GET /`` and ``HEAD /`` ("Ollama is running"), ``GET /api/version``, ``GET /api/tags``,
  ``POST /api/show``, ``GET /api/ps``, ``POST /api/pull`` (no-op success for the served model,
  HTTP 404 for any other), ``POST /api/generate`` and ``POST /api/chat`` with ``format``
  (``"json"`` or a JSON-schema object), ``options`` (temperature, num_predict, seed, top_p, top_k,
  min_p, typical_p, repeat_penalty, repeat_last_n, presence_penalty, frequency_penalty, stop),
  ``system``, ``raw``, ``keep_alive`` (accepted, ignored: the model stays loaded) and
  ``stream`` true (NDJSON, chunked) or false (one JSON object).
- An empty generate prompt (and no system) or an empty chat message list answers
  ``done_reason: "load"`` like Ollama's preload call. Images are rejected (text-only model);
  ``tools``, ``context``, ``template`` and ``suffix`` are ignored. ``think`` (true, false, "low", "medium",
  "high"; anything else is a 400) reaches scripts as ``GenerationRequest.think``, is counted in the stats and
  only changes the reply when the server plays a reasoning model (below).
- Unknown models answer HTTP 404 ``{"error": "model \\"x\\" not found, try pulling it first"}``.
  A name without a tag means ``:latest``; names compare case-insensitively.

OpenAI-compatible API (both backends):

- ``GET /v1/models``: ``{"object": "list", "data": [{"id": <model_name as served>, "object": "model",
  "created": <unix seconds>, "owned_by": "ollama-test-server"}]}``.
- ``POST /v1/chat/completions``, non-streaming only (``"stream": true`` is a 400). Request fields: ``model``,
  ``messages`` (string contents; lists of text parts are joined), ``temperature``, ``top_p``, ``seed``,
  ``presence_penalty``, ``frequency_penalty``, ``stop``, ``max_tokens`` or ``max_completion_tokens`` (->
  ``num_predict``), ``response_format`` (``{"type": "json_schema", "json_schema": {"name": .., "schema":
  {..}}}`` -> ``format`` = the schema, ``{"type": "json_object"}`` -> ``"json"``, ``{"type": "text"}`` ->
  none), ``reasoning_effort`` and ``chat_template_kwargs``; other fields are ignored. It becomes the same
  ``GenerationRequest`` an ``/api/chat`` request gives (``endpoint="chat"``, Ollama option names), with
  ``api="openai"`` and ``think`` = ``reasoning_effort`` if given, else False when
  ``chat_template_kwargs.enable_thinking`` is false, else None; so scripts written for the Ollama API work
  unchanged. Reply: ``{"id": "chatcmpl-<n>", "object": "chat.completion", "created", "model": <requested>,
  "choices": [{"index": 0, "message": {"role": "assistant", "content"}, "finish_reason": "stop" |
  "length"}], "usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}``.
- Every error on a /v1 path (validation, unknown model 404 ``not_found_error``, unknown /v1 route, injected
  faults, 401, 429) has OpenAI's body ``{"error": {"message", "type", "code"}}`` (``type`` by status:
  ``invalid_request_error``, ``authentication_error``, ``not_found_error``, ``rate_limit_error``,
  ``server_error``, ...); native paths keep Ollama's ``{"error": "..."}``.
- ``api_key``: when set, /v1 routes need ``Authorization: Bearer <key>``, else 401 ``"Invalid API Key"``
  (checked before faults, so a refused request takes none); the native API needs no key.
- ``/v1/chat/completions`` is a generation path like ``/api/generate`` and ``/api/chat``: faults (without a
  ``path``), ``latency``, ``hang()``, the per-model counts and ``answered`` apply to it alike.

Backends:

- ``"llama"``: a real GGUF model (default: SmolLM2-135M-Instruct from ``ensure_test_model()``) run
  by ``xllamacpp`` with ``parallel`` slots of ``ctx_per_slot`` tokens each, so concurrent requests
  are batched together. Both endpoints apply the model's chat template (``/api/generate`` wraps
  the prompt as a user message, ``system`` as a system message) unless ``raw`` is true. Sampling
  defaults follow Ollama (temperature 0.8, top_k 40, top_p 0.9, min_p 0, repeat_penalty 1.1,
  repeat_last_n 64). With a fixed seed the output is reproducible on CPU, also under concurrency.
  ``threads`` defaults to half the CPU cores: on a busy 2-core machine two engine threads wait on
  each other's time slices and generation slows by 10-100x, one thread stays steady. Idle engine
  threads sleep (no busy polling).
  xllamacpp also opens its own llama.cpp HTTP listener on a random loopback port; it is unused.
- ``"scripted"``: no model. Replies come from a script: a callable ``GenerationRequest -> str``,
  an iterable of reply strings consumed in order (an HTTP 500 once exhausted), or one string
  returned every time. Without a script each reply echoes the last message. Replies are split
  into whitespace-delimited "tokens" for streaming, ``num_predict`` and ``stop`` are applied; those pieces
  are the completion tokens. Prompt tokens are ``ceil(characters of all message contents (or the raw
  prompt) / 4)``, close to a real BPE tokenizer.
- ``context_tokens`` (scripted backend only, like ``reasoning``: a ValueError with the llama backend, which has
  its engine's real ``ctx_per_slot`` limit):
  a request whose prompt tokens exceed it gets, on ``/v1/chat/completions``, llama.cpp's HTTP 400
  ``{"error": {"code": 400, "message": "request (P tokens) exceeds the available context size (C tokens), try
  increasing it", "type": "exceed_context_size_error"}}``; on ``/api/chat`` and ``/api/generate`` what Ollama
  does: silent truncation, a normal reply, and ``prompt_eval_count`` = C. The attribute can be changed while
  serving (None: no limit).
- ``reasoning`` (scripted backend; attribute, changeable while serving): play a reasoning model. The script's
  reply is the answer and the server adds ``reasoning_text`` (default "Let me reason about the scene. The
  passage mentions rain, so the weather is rainy.") around it. Thinking is "disabled" by native
  ``think: false``, or on /v1 by ``chat_template_kwargs.enable_thinking: false`` or ``reasoning_effort:
  "none"``.

  * ``"think_tags"`` (deepseek-r1 without a reasoning parser): content = ``"<think>\\n" + reasoning +
    "\\n</think>\\n\\n" + reply`` on both APIs, the reply alone when disabled.
  * ``"thinking_field"`` (deepseek-r1 on Ollama >= 0.9): native ``message.thinking`` (``thinking`` on
    /api/generate; streamed as a first chunk with empty content); /v1 ``message.reasoning``. None when
    disabled.
  * ``"reasoning_content"`` (vLLM / SGLang with a reasoning parser): /v1 ``message.reasoning_content``,
    native like ``"thinking_field"``. None when disabled.
  * ``"harmony"`` (gpt-oss): always reasons (cannot be disabled; ``think``/``reasoning_effort`` "low" keeps
    only the first sentence). Native ``message.thinking``; /v1 content =
    ``"<|channel|>analysis<|message|>" + reasoning + "<|end|><|start|>assistant<|channel|>final<|message|>"
    + reply``.

  Reasoning tokens (``ceil(len(reasoning) / 4)``) are added to ``eval_count`` / ``completion_tokens``; for
  ``"reasoning_content"`` and ``"harmony"`` /v1 also reports ``usage.completion_tokens_details.
  reasoning_tokens``. ``/api/show`` then lists the ``"thinking"`` capability. ``garbage``/``empty`` faults
  replace the whole content and carry no reasoning.

Test hooks (Python API and HTTP control endpoints, which are not counted in the stats):

- ``latency`` seconds are slept at the start of each generation request, without any lock
  held, so N concurrent requests with latency L take about L, not N*L.
- Faults, ``POST /_test/faults`` with ``{"kind": ..., "count": 1, "path": null, "seconds": null,
  "content": null}``, apply to the next ``count`` requests whose path equals ``path`` (default: the
  generation paths ``/api/generate``, ``/api/chat`` and ``/v1/chat/completions``); any API path can be named.
  ``timeout`` waits ``seconds`` (default ``fault_timeout_s``, cut short by ``stop()``, which then drops the
  connection) and then answers normally; ``garbage`` answers 200 whose generated content is ``content``
  (default: truncated JSON, unparseable), or on other paths a body that is only ``content``; ``empty``
  answers 200 with empty generated content (as if the model produced nothing), or on other paths an empty
  body; ``http500`` answers 500; ``http429`` answers 429 with a ``Retry-After: <ceil(seconds), default 1>``
  header; both with the error body of the API called (Ollama's, or OpenAI's on /v1); ``disconnect``
  closes the socket without a response. ``GET /_test/faults`` lists pending faults.
- ``GET /_test/stats``: ``requests_by_path``; ``generate`` and ``chat`` (native counts) and ``completions``
  (generate + /api/chat + /v1/chat/completions, for tests parametrised over both APIs); ``models`` (generation
  requests by requested name, faulted ones included); ``think`` (generation requests by ``str()`` of what they
  asked about reasoning, as ``GenerationRequest.think``: ``"None"``, ``"False"``, ``"True"``, ``"low"``, ...);
  ``in_flight`` and ``max_in_flight``; ``faults_served``; ``answered``; ``authorized`` (/v1 requests that
  carried the right ``api_key``; 0 without one); ``pending_faults``. ``POST /_test/reset`` zeroes the counters
  and clears pending faults.
- ``POST /_test/script`` with ``{"replies": [...]}`` queues replies (scripted backend only).
- Outages. ``stop()`` is a crash as clients see it (new connections refused, open ones dropped, nothing in
  flight answered); ``start()`` again, or ``restart()``, serves on the same port. ``hang()`` makes the server
  accept connections and read requests but never answer (every API path, health checks included) until
  ``unhang()`` or ``stop()``, which drop the held requests unanswered; ``POST /_test/hang`` with ``{"on": true}``
  or ``false`` does the same over HTTP.
- ``answered``: generation requests whose reply was written in full (in ``/_test/stats``), and
  ``answered_requests()``: how many times each distinct request body was answered (a Counter keyed by the
  body's sha256), to tell a paid-for request from one that was lost, and to find one answered twice.

CLI::

    python -m llava_sensing_pipeline_tests.support.ollama_test_server --port 11434 \\
        --model-name smollm2:135m [--model-path PATH] [--parallel 2] [--latency 0] \\
        [--backend scripted [--context-tokens N] [--reasoning think_tags|thinking_field|reasoning_content|harmony]] \\
        [--api-key KEY]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import itertools
import json
import math
import os
import re
import signal
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from llava_sensing_pipeline_tests.support.model_fetch import ensure_test_model, sha256_of_file

DEFAULT_MODEL_NAME = "smollm2:135m"
OLLAMA_API_VERSION = "0.12.0"
DEFAULT_PARALLEL = 2
DEFAULT_CTX_PER_SLOT = 8192  # the analysis prompt carries the annotation guide (about 4,000 tokens)
DEFAULT_FAULT_TIMEOUT_S = 30.0
DEFAULT_THREADS = max(1, (os.cpu_count() or 2) // 2)
KEEP_ALIVE_S = 300
FAULT_KINDS = ("timeout", "garbage", "http500", "disconnect", "http429", "empty")
OPENAI_CHAT_PATH = "/v1/chat/completions"
GENERATION_PATHS = ("/api/generate", "/api/chat", OPENAI_CHAT_PATH)
DEFAULT_GARBAGE_CONTENT = '{"reply": "this JSON was cut off mid-str'
DEFAULT_RETRY_AFTER_S = 1
REASONING_MODES = ("think_tags", "thinking_field", "reasoning_content", "harmony")
DEFAULT_REASONING_TEXT = "Let me reason about the scene. The passage mentions rain, so the weather is rainy."
HARMONY_ANALYSIS = "<|channel|>analysis<|message|>"
HARMONY_FINAL = "<|end|><|start|>assistant<|channel|>final<|message|>"
NATIVE_THINK_LEVELS = ("low", "medium", "high")
OPENAI_OWNER = "ollama-test-server"
OPENAI_ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 429: "rate_limit_error", 501: "not_supported_error", 503: "unavailable_error",
}
OPENAI_SAMPLING_FIELDS = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")
OLLAMA_DEFAULT_OPTIONS: Mapping[str, Any] = {
    "temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0,
    "repeat_penalty": 1.1, "repeat_last_n": 64,
}
OPTION_TO_ENGINE: Mapping[str, str] = {
    "temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
    "typical_p": "typical_p", "repeat_penalty": "repeat_penalty", "repeat_last_n": "repeat_last_n",
    "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
    "seed": "seed", "num_predict": "n_predict", "stop": "stop",
}
_TOKEN_PATTERN = re.compile(r"\S+\s*|\s+")


@dataclass(frozen=True)
class ModelInfo:
    """Static description of the served model, reported by /api/tags, /api/show and /api/ps."""

    family: str
    parameter_size: str
    quantization_level: str
    license: str
    format: str = "gguf"


SMOLLM2_135M_INFO = ModelInfo(
    family="llama", parameter_size="135M", quantization_level="Q4_1", license="Apache-2.0"
)


@dataclass(frozen=True)
class GenerationRequest:
    """A parsed /api/generate, /api/chat or /v1/chat/completions request, as given to backends and scripts.

    A /v1 request is a ``"chat"`` request with ``api="openai"``; its fields are translated to Ollama's
    (``max_tokens`` -> ``options["num_predict"]``, ``response_format`` -> ``format``, ...).
    ``think`` is what the request asked about reasoning: the native body's ``think``, or on /v1
    ``reasoning_effort`` if given, else False when ``chat_template_kwargs.enable_thinking`` is false.
    """

    endpoint: Literal["generate", "chat"]
    model: str
    messages: tuple[Mapping[str, str], ...]
    prompt: str | None
    format: str | Mapping[str, Any] | None
    options: Mapping[str, Any]
    api: Literal["ollama", "openai"] = "ollama"
    think: bool | str | None = None
    chat_template_kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def raw(self) -> bool:
        """True for ``/api/generate`` with ``raw: true``: ``prompt`` is used without template."""
        return self.prompt is not None


@dataclass(frozen=True)
class GenerationResult:
    """Why and how a generation ended (Ollama's final-line statistics)."""

    done_reason: str
    prompt_eval_count: int
    prompt_eval_duration_ns: int
    eval_count: int
    eval_duration_ns: int


@dataclass
class FaultSpec:
    """A pending injected fault; ``path`` None matches the generation paths (``GENERATION_PATHS``)."""

    kind: str
    count: int = 1
    path: str | None = None  # None: the generation paths
    seconds: float | None = None
    content: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; use one of {', '.join(FAULT_KINDS)}")
        if not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"fault count must be a positive integer, got {self.count!r}")
        if self.path is not None and not str(self.path).startswith("/"):
            raise ValueError(f"fault path must start with '/', got {self.path!r}")
        if self.seconds is not None and (not isinstance(self.seconds, (int, float)) or self.seconds < 0):
            raise ValueError(f"fault seconds must be a non-negative number, got {self.seconds!r}")

    def matches(self, path: str) -> bool:
        """Whether this fault applies to a request for ``path``."""
        return path == self.path if self.path is not None else path in GENERATION_PATHS


class RequestError(Exception):
    """A request the server answers with an HTTP error: Ollama's ``{"error": message}`` on native paths,
    OpenAI's ``{"error": {"message", "type", "code"}}`` on /v1 paths (``error_type`` defaults by status)."""

    def __init__(
        self, status: int, message: str, error_type: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or OPENAI_ERROR_TYPES.get(
            status, "invalid_request_error" if status < 500 else "server_error"
        )
        self.headers = dict(headers or {})

    def body(self, openai: bool) -> dict[str, Any]:
        """The JSON error body in the style of the API that was called."""
        if openai:
            return {"error": {"message": self.message, "type": self.error_type, "code": self.status}}
        return {"error": self.message}


class GenerationCancelled(Exception):
    """Generation stopped because the client went away or the server is stopping."""


Script = Callable[[GenerationRequest], str] | Iterable[str] | str
OnPiece = Callable[[str], bool]


def normalize_model_name(name: str) -> str:
    """Compare key for model names: case-folded, ``:latest`` added when no tag is given."""
    folded = name.strip().casefold()
    return folded if ":" in folded.rsplit("/", 1)[-1] else f"{folded}:latest"


def display_model_name(name: str) -> str:
    """Listing name as Ollama shows it: ``:latest`` added when no tag is given."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def utc_timestamp(moment: datetime | None = None) -> str:
    """RFC 3339 UTC timestamp like Ollama's ``created_at``."""
    return (moment or datetime.now(timezone.utc)).isoformat().replace("+00:00", "Z")


def not_found_message(model: str) -> str:
    """Ollama's message for a model that is not available."""
    return f'model "{model}" not found, try pulling it first'


def _require_type(body: Mapping[str, Any], key: str, kinds: type | tuple[type, ...], name: str) -> Any:
    value = body.get(key)
    if value is not None and not isinstance(value, kinds):
        raise RequestError(400, f"invalid {key}: expected {name}")
    return value


def parse_generation_request(endpoint: Literal["generate", "chat"], body: Mapping[str, Any]) -> GenerationRequest:
    """Validate an Ollama generate/chat body; raises ``RequestError`` (400) when malformed."""
    model = body.get("model") or body.get("name")
    if not isinstance(model, str) or not model.strip():
        raise RequestError(400, "model is required")
    options = _require_type(body, "options", dict, "an object") or {}
    fmt = body.get("format")
    if fmt == "":
        fmt = None
    if fmt is not None and fmt != "json" and not isinstance(fmt, dict):
        raise RequestError(400, 'invalid format: expected "json" or a JSON schema')
    think = body.get("think")
    if think is not None and not isinstance(think, bool) and think not in NATIVE_THINK_LEVELS:
        raise RequestError(400, f'invalid think value {think!r}: expected true, false, "low", "medium" or "high"')
    if endpoint == "generate":
        prompt = _require_type(body, "prompt", str, "a string") or ""
        system = _require_type(body, "system", str, "a string") or ""
        if body.get("images"):
            raise RequestError(400, f'"{model}" is a text-only model in this test server; remove "images"')
        if body.get("raw"):
            return GenerationRequest(endpoint, model, (), prompt, fmt, options, think=think)
        messages = [{"role": "system", "content": system}] if system else []
        messages += [{"role": "user", "content": prompt}] if prompt else []
        return GenerationRequest(endpoint, model, tuple(messages), None, fmt, options, think=think)
    raw_messages = _require_type(body, "messages", list, "a list of messages") or []
    messages = []
    for message in raw_messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(400, "invalid message: expected an object with a string 'role'")
        if message.get("images"):
            raise RequestError(400, f'"{model}" is a text-only model in this test server; remove "images"')
        content = message.get("content") or ""
        if not isinstance(content, str):
            raise RequestError(400, "invalid message content: expected a string")
        messages.append({"role": message["role"], "content": content})
    return GenerationRequest(endpoint, model, tuple(messages), None, fmt, options, think=think)


def openai_think(body: Mapping[str, Any]) -> bool | str | None:
    """What a /v1 request asked about reasoning: ``reasoning_effort``, else False when
    ``chat_template_kwargs.enable_thinking`` is false, else None."""
    effort = body.get("reasoning_effort")
    if effort is not None:
        return effort
    kwargs = body.get("chat_template_kwargs")
    if isinstance(kwargs, dict) and kwargs.get("enable_thinking") is False:
        return False
    return None


def _openai_content(content: Any, model: str) -> str:
    """A /v1 message content: a string, null, or a list of text parts (joined)."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list) and all(isinstance(part, dict) for part in content):
        if any(part.get("type") != "text" for part in content):
            raise RequestError(400, f'"{model}" is a text-only model in this test server; send text parts only')
        texts = [part.get("text") for part in content]
        if all(isinstance(text, str) for text in texts):
            return "".join(texts)
    raise RequestError(400, "invalid message content: expected a string or a list of text parts")


def _openai_format(response_format: Any) -> str | Mapping[str, Any] | None:
    """``response_format`` as an Ollama ``format``: None, ``"json"`` or a JSON schema."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            return schema
        raise RequestError(400, "invalid response_format: json_schema needs a 'schema' object")
    raise RequestError(400, 'invalid response_format: expected type "text", "json_object" or "json_schema"')


def parse_openai_request(body: Mapping[str, Any]) -> GenerationRequest:
    """Validate an OpenAI chat-completions body into the ``GenerationRequest`` an /api/chat one gives.

    Raises ``RequestError`` (400) when malformed or when it asks for streaming; unknown fields are ignored."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise RequestError(400, "model is required")
    if body.get("stream"):
        raise RequestError(400, 'streaming is not supported by this test server; send "stream": false')
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise RequestError(400, "'messages' is required and must be a non-empty array")
    messages = []
    for message in raw_messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(400, "invalid message: expected an object with a string 'role'")
        messages.append({"role": message["role"], "content": _openai_content(message.get("content"), model)})
    options: dict[str, Any] = {}
    for key in OPENAI_SAMPLING_FIELDS:
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int if key == "seed" else (int, float)):
            raise RequestError(400, f"invalid {key}: expected {'an integer' if key == 'seed' else 'a number'}")
        options[key] = value
    max_tokens = body.get("max_completion_tokens")
    max_tokens = body.get("max_tokens") if max_tokens is None else max_tokens
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            raise RequestError(400, "invalid max_tokens: expected an integer")
        options["num_predict"] = max_tokens
    stop = body.get("stop")
    if stop is not None:
        if not isinstance(stop, (str, list)) or (isinstance(stop, list) and not all(isinstance(s, str) for s in stop)):
            raise RequestError(400, "invalid stop: expected a string or a list of strings")
        options["stop"] = stop
    _require_type(body, "reasoning_effort", str, "a string")
    kwargs = _require_type(body, "chat_template_kwargs", dict, "an object") or {}
    return GenerationRequest(
        "chat", model, tuple(messages), None, _openai_format(body.get("response_format")), options,
        api="openai", think=openai_think(body), chat_template_kwargs=kwargs,
    )


def _json_object(raw_body: bytes) -> dict[str, Any] | None:
    """A request body parsed as a JSON object, or None when it is not one."""
    try:
        body = json.loads(raw_body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _requested_model_name(raw_body: bytes) -> str:
    """The ``model`` field of a JSON request body, or a placeholder when there is none."""
    body = _json_object(raw_body)
    if body is None:
        return "<invalid body>"
    model = body.get("model") or body.get("name")
    return model if isinstance(model, str) else "<no model>"


def _requested_think(path: str, raw_body: bytes) -> str:
    """``str()`` of what a generation request asked about reasoning (the ``think`` stats key)."""
    body = _json_object(raw_body) or {}
    return str(openai_think(body) if path == OPENAI_CHAT_PATH else body.get("think"))


def approx_token_count(text: str) -> int:
    """Tokens of ``text`` as the scripted backend counts them: ceil(characters / 4), like a BPE tokenizer."""
    return math.ceil(len(text) / 4)


def prompt_token_count(request: GenerationRequest) -> int:
    """Prompt tokens of a request for the scripted backend: ceil(characters of all contents / 4)."""
    return approx_token_count("".join(m["content"] for m in request.messages) + (request.prompt or ""))


def context_exceeded_message(prompt_tokens: int, context_tokens: int) -> str:
    """llama.cpp's message for a prompt longer than the context."""
    return (
        f"request ({prompt_tokens} tokens) exceeds the available context size ({context_tokens} tokens), "
        "try increasing it"
    )


def thinking_disabled(request: GenerationRequest) -> bool:
    """Whether the request turned reasoning off: native ``think: false``; on /v1
    ``chat_template_kwargs.enable_thinking: false`` or ``reasoning_effort: "none"``."""
    if request.api == "openai":
        return request.think in (False, "none") or request.chat_template_kwargs.get("enable_thinking") is False
    return request.think is False


@dataclass(frozen=True)
class Reasoning:
    """Reasoning the server adds around a scripted reply: in front of the content, or in a message field."""

    text: str
    content_prefix: str = ""
    message_field: str | None = None  # "thinking" (native), "reasoning" or "reasoning_content" (/v1)
    detailed: bool = False  # /v1 usage reports completion_tokens_details.reasoning_tokens

    @property
    def tokens(self) -> int:
        return approx_token_count(self.text)


def reasoning_for(mode: str | None, text: str, request: GenerationRequest) -> Reasoning | None:
    """The reasoning a ``mode`` model adds to a reply for ``request`` (see the module docstring)."""
    if mode is None:
        return None
    if mode == "harmony":
        if request.think == "low":
            text = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
        if request.api == "openai":
            return Reasoning(text, content_prefix=f"{HARMONY_ANALYSIS}{text}{HARMONY_FINAL}", detailed=True)
        return Reasoning(text, message_field="thinking")
    if thinking_disabled(request):
        return None
    if mode == "think_tags":
        return Reasoning(text, content_prefix=f"<think>\n{text}\n</think>\n\n")
    if request.api == "ollama":
        return Reasoning(text, message_field="thinking")
    if mode == "thinking_field":
        return Reasoning(text, message_field="reasoning")
    return Reasoning(text, message_field="reasoning_content", detailed=True)


def is_openai_path(path: str) -> bool:
    """Whether ``path`` belongs to the OpenAI-compatible API (errors then use OpenAI's body shape)."""
    return path == "/v1" or path.startswith("/v1/")


def is_load_request(request: GenerationRequest) -> bool:
    """Ollama answers ``done_reason: "load"`` without generating for empty input."""
    return not request.messages and not request.prompt


def engine_request(request: GenerationRequest) -> dict[str, Any]:
    """Translate a generation request to an xllamacpp (llama.cpp server) streaming request body."""
    options = {**OLLAMA_DEFAULT_OPTIONS, **request.options}
    body: dict[str, Any] = {"stream": True}
    for ollama_key, engine_key in OPTION_TO_ENGINE.items():
        if options.get(ollama_key) is not None:
            body[engine_key] = options[ollama_key]
    if isinstance(body.get("n_predict"), int) and body["n_predict"] < 0:
        body["n_predict"] = -1
    if isinstance(body.get("seed"), int) and body["seed"] < 0:
        del body["seed"]
    if isinstance(body.get("stop"), str):
        body["stop"] = [body["stop"]]
    schema = {} if request.format == "json" else request.format
    if request.raw:
        body["prompt"] = request.prompt
        if schema is not None:
            body["json_schema"] = schema
    else:
        body["messages"] = [dict(message) for message in request.messages]
        if request.format == "json":
            body["response_format"] = {"type": "json_object"}
        elif schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {"schema": schema}}
    return body


def emit_text(text: str, request: GenerationRequest, on_piece: OnPiece) -> GenerationResult:
    """Stream a fixed reply as whitespace-delimited pieces, honouring ``stop`` and ``num_predict``."""
    started = time.perf_counter_ns()
    done_reason = "stop"
    stops = request.options.get("stop") or []
    for stop in [stops] if isinstance(stops, str) else stops:
        if stop and stop in text:
            text = text[: text.index(stop)]
    pieces = _TOKEN_PATTERN.findall(text)
    limit = request.options.get("num_predict")
    if isinstance(limit, int) and 0 <= limit < len(pieces):
        pieces, done_reason = pieces[:limit], "length"
    for piece in pieces:
        if not on_piece(piece):
            raise GenerationCancelled()
    return GenerationResult(done_reason, prompt_token_count(request), 0, len(pieces), time.perf_counter_ns() - started)


class _EngineStream:
    """Collects xllamacpp streaming callbacks; forwards text pieces to ``on_piece``."""

    def __init__(self, on_piece: OnPiece, raw: bool) -> None:
        self.on_piece = on_piece
        self.raw = raw
        self.error: Any = None
        self.failure: Exception | None = None
        self.cancelled = False
        self.finish_reason: str | None = None
        self.timings: Mapping[str, Any] = {}

    def callback(self, chunk: Mapping[str, Any]) -> bool:
        """xllamacpp callback: returns True to stop the generation."""
        try:
            return self._consume(chunk)
        except Exception as exc:  # xllamacpp would swallow it; result() re-raises it
            self.failure = exc
            return True

    def _consume(self, chunk: Mapping[str, Any]) -> bool:
        if "error" in chunk:
            self.error = chunk["error"]
            return True
        self.timings = chunk.get("timings") or self.timings
        for choice in chunk.get("choices") or []:
            text = choice.get("text") if self.raw else (choice.get("delta") or {}).get("content")
            if text and not self.on_piece(text):
                self.cancelled = True
                return True
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        return False

    def result(self) -> GenerationResult:
        """The final statistics, or the engine's error / the cancellation as an exception."""
        if self.failure is not None:
            raise self.failure
        if self.cancelled:
            raise GenerationCancelled()
        if self.error is not None:
            error = self.error if isinstance(self.error, dict) else {"message": str(self.error)}
            raise RequestError(int(error.get("code") or 500), str(error.get("message") or error), error.get("type"))
        timings = self.timings
        return GenerationResult(
            done_reason=self.finish_reason or "stop",
            prompt_eval_count=int(timings.get("cache_n", 0)) + int(timings.get("prompt_n", 0)),
            prompt_eval_duration_ns=int(float(timings.get("prompt_ms", 0.0)) * 1e6),
            eval_count=int(timings.get("predicted_n", 0)),
            eval_duration_ns=int(float(timings.get("predicted_ms", 0.0)) * 1e6),
        )


class LlamaBackend:
    """Real generation with xllamacpp: ``parallel`` slots of ``ctx_per_slot`` tokens each."""

    def __init__(self, model_path: Path, parallel: int, ctx_per_slot: int, threads: int) -> None:
        import xllamacpp

        if not model_path.is_file():
            raise FileNotFoundError(
                f"Model file {model_path} does not exist; pass an existing GGUF path or omit it "
                "to use ensure_test_model()."
            )
        params = xllamacpp.CommonParams()
        params.model.path = str(model_path)
        params.n_parallel = parallel
        params.n_ctx = parallel * ctx_per_slot
        params.ctx_shift = False
        params.verbosity = -1
        for cpu_params in (params.cpuparams, params.cpuparams_batch):
            cpu_params.n_threads = threads
            cpu_params.poll = 0
        self._engine: Any = xllamacpp.Server(params)

    def generate(self, request: GenerationRequest, on_piece: OnPiece) -> GenerationResult:
        """Run one generation, streaming pieces to ``on_piece`` (return False to cancel)."""
        engine = self._engine
        if engine is None:
            raise GenerationCancelled()
        stream = _EngineStream(on_piece, request.raw)
        handle = engine.handle_completions if request.raw else engine.handle_chat_completions
        try:
            handle(engine_request(request), stream.callback)
        except ValueError as exc:
            raise RequestError(400, str(exc)) from exc
        return stream.result()

    def close(self) -> None:
        """Release the engine (in-flight calls keep their own reference until they return)."""
        self._engine = None


class ScriptedBackend:
    """Canned replies for fast deterministic tests; see the module docstring for script forms."""

    def __init__(self, script: Script | None = None) -> None:
        self._lock = threading.Lock()
        self._reply_for: Callable[[GenerationRequest], str] = self._echo
        self._queue: deque[str] = deque()
        self.set_script(script)

    @staticmethod
    def _echo(request: GenerationRequest) -> str:
        last = request.messages[-1]["content"] if request.messages else request.prompt or ""
        return f"Scripted reply to: {last}"

    def _next_queued(self, request: GenerationRequest) -> str:
        with self._lock:
            if not self._queue:
                raise RequestError(
                    500,
                    f"scripted backend has no replies left for {request.endpoint} request; queue more "
                    "with OllamaTestServer.set_script() or POST /_test/script",
                )
            return self._queue.popleft()

    def set_script(self, script: Script | None) -> None:
        """Replace the script: None (echo), a callable, a constant string or an iterable of replies."""
        with self._lock:
            if script is None:
                self._reply_for = self._echo
            elif isinstance(script, str):
                self._reply_for = lambda _request: script
            elif callable(script):
                self._reply_for = script
            else:
                replies = list(script)
                if not all(isinstance(reply, str) for reply in replies):
                    raise TypeError("scripted replies must be strings")
                self._queue = deque(replies)
                self._reply_for = self._next_queued

    def generate(self, request: GenerationRequest, on_piece: OnPiece) -> GenerationResult:
        """Emit the scripted reply for ``request``."""
        try:
            reply = self._reply_for(request)
        except RequestError:
            raise
        except Exception as exc:
            raise RequestError(500, f"scripted reply function failed: {exc!r}") from exc
        if not isinstance(reply, str):
            raise RequestError(500, f"scripted reply must be a string, got {type(reply).__name__}")
        return emit_text(reply, request, on_piece)

    def close(self) -> None:
        """Nothing to release."""


class _Stats:
    """Thread-safe request counters (the lock is only held for bookkeeping)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests_by_path: Counter[str] = Counter()
            self.models: Counter[str] = Counter()
            self.faults_served: Counter[str] = Counter()
            self.answered: Counter[str] = Counter()
            self.think: Counter[str] = Counter()
            self.authorized: Counter[str] = Counter()
            self.max_in_flight = self.in_flight

    def begin(self, path: str) -> None:
        with self._lock:
            self.requests_by_path[path] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def end(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self._idle.notify_all()

    def count(self, counter: str, key: str) -> None:
        with self._lock:
            getattr(self, counter)[key] += 1

    def wait_idle(self, timeout: float) -> bool:
        with self._lock:
            return self._idle.wait_for(lambda: self.in_flight == 0, timeout)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests_by_path": dict(sorted(self.requests_by_path.items())),
                "generate": self.requests_by_path["/api/generate"],
                "chat": self.requests_by_path["/api/chat"],
                "completions": sum(self.requests_by_path[path] for path in GENERATION_PATHS),
                "models": dict(sorted(self.models.items())),
                "think": dict(sorted(self.think.items())),
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "faults_served": dict(sorted(self.faults_served.items())),
                "answered": sum(self.answered.values()),
                "authorized": sum(self.authorized.values()),
            }

    def answered_requests(self) -> Counter[str]:
        with self._lock:
            return Counter(self.answered)


class _HTTPServer(ThreadingHTTPServer):
    """Threaded HTTP server that remembers open connections so ``stop()`` can close them."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: OllamaTestServer) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open client connection (keep-alive ones included)."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to ``OllamaTestServer`` methods."""

    protocol_version = "HTTP/1.1"
    server_version = "ollama-test-server"
    server: _HTTPServer
    raw_body: bytes = b""
    fault: FaultSpec | None = None

    ROUTES: Mapping[str, Mapping[str, str]] = {
        "/": {"GET": "root", "HEAD": "root"},
        "/api/version": {"GET": "version"},
        "/api/tags": {"GET": "tags"},
        "/api/ps": {"GET": "ps"},
        "/api/show": {"POST": "show"},
        "/api/pull": {"POST": "pull"},
        "/api/generate": {"POST": "generate"},
        "/api/chat": {"POST": "chat"},
        "/v1/models": {"GET": "openai_models"},
        OPENAI_CHAT_PATH: {"POST": "openai_chat"},
        "/_test/stats": {"GET": "test_stats"},
        "/_test/reset": {"POST": "test_reset"},
        "/_test/faults": {"GET": "test_faults", "POST": "test_faults"},
        "/_test/script": {"POST": "test_script"},
        "/_test/hang": {"POST": "test_hang"},
    }

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.app.log_requests:
            super().log_message(format, *args)

    def _dispatch(self) -> None:
        app = self.server.app
        path = self.path.split("?", 1)[0]
        counted = not path.startswith("/_test/")
        if counted:
            app._stats.begin(path)
        try:
            try:
                self.raw_body = self._read_body()
                if counted and app._held_while_hung():
                    raise GenerationCancelled()
                if is_openai_path(path):
                    app._authorize(self, path)
                self.fault = app._admit(path, self.raw_body) if counted else None
                if self.fault is None or app._apply_fault(self, path, self.fault):
                    self._route(app, path)
            except RequestError as exc:
                self.send_json(exc.status, exc.body(openai=is_openai_path(path)), exc.headers)
        except (GenerationCancelled, OSError):
            self.close_connection = True
        finally:
            if counted:
                app._stats.end()

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            raise RequestError(411, "chunked request bodies are not supported; send a Content-Length")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError as exc:
            self.close_connection = True
            raise RequestError(400, "invalid Content-Length header") from exc
        return self.rfile.read(length) if length > 0 else b""

    def _route(self, app: OllamaTestServer, path: str) -> None:
        methods = self.ROUTES.get(path)
        if methods is None:
            if is_openai_path(path):
                raise RequestError(404, "File Not Found")
            self.send_text(404, "404 page not found")
        elif self.command not in methods:
            raise RequestError(405, "method not allowed")
        else:
            getattr(app, f"_handle_{methods[self.command]}")(self, path)

    def read_json(self) -> dict[str, Any]:
        """The request body as a JSON object (empty body: ``{}``)."""
        if not self.raw_body.strip():
            return {}
        try:
            body = json.loads(self.raw_body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestError(400, f"invalid JSON body: {exc}") from exc
        if not isinstance(body, dict):
            raise RequestError(400, "invalid JSON body: expected an object")
        return body

    def send_bytes(
        self, status: int, payload: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def send_json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(body).encode(), "application/json; charset=utf-8", headers)

    def send_text(self, status: int, text: str) -> None:
        self.send_bytes(status, text.encode(), "text/plain; charset=utf-8")

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def write_line(self, body: Mapping[str, Any]) -> None:
        data = json.dumps(body).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")


class OllamaTestServer:
    """Ollama-compatible server for development and tests (see the module docstring)."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        model_name: str = DEFAULT_MODEL_NAME,
        backend: Literal["llama", "scripted"] = "llama",
        script: Script | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        parallel: int = DEFAULT_PARALLEL,
        ctx_per_slot: int = DEFAULT_CTX_PER_SLOT,
        threads: int = DEFAULT_THREADS,
        latency: float = 0.0,
        fault_timeout_s: float = DEFAULT_FAULT_TIMEOUT_S,
        model_info: ModelInfo = SMOLLM2_135M_INFO,
        log_requests: bool = False,
        context_tokens: int | None = None,
        reasoning: str | None = None,
        reasoning_text: str = DEFAULT_REASONING_TEXT,
        api_key: str | None = None,
    ) -> None:
        if backend not in ("llama", "scripted"):
            raise ValueError(f"backend must be 'llama' or 'scripted', got {backend!r}")
        if script is not None and backend != "scripted":
            raise ValueError("a script is only used with backend='scripted'")
        if (context_tokens is not None or reasoning is not None) and backend != "scripted":
            raise ValueError(
                "context_tokens and reasoning are only used with backend='scripted' "
                "(the llama backend has its real context and template)"
            )
        if context_tokens is not None and (isinstance(context_tokens, bool) or not isinstance(context_tokens, int)
                                           or context_tokens < 1):
            raise ValueError(f"context_tokens must be a positive integer or None, got {context_tokens!r}")
        if parallel < 1 or threads < 1 or ctx_per_slot < 64 or latency < 0 or fault_timeout_s < 0:
            raise ValueError(
                "need parallel >= 1, threads >= 1, ctx_per_slot >= 64, latency >= 0, fault_timeout_s >= 0"
            )
        self.model_path = Path(model_path) if model_path is not None else None
        self.model_name = model_name
        self.backend_kind = backend
        self.host = host
        self.port = port
        self.parallel = parallel
        self.ctx_per_slot = ctx_per_slot
        self.threads = threads
        self.latency = latency
        self.fault_timeout_s = fault_timeout_s
        self.model_info = model_info
        self.log_requests = log_requests
        self.context_tokens = context_tokens
        self.reasoning = reasoning
        self.reasoning_text = reasoning_text
        self.api_key = api_key
        self._completion_ids = itertools.count(1)
        self._stats = _Stats()
        self._script = script
        self._backend: LlamaBackend | ScriptedBackend | None = None
        self._faults: list[FaultSpec] = []
        self._faults_lock = threading.Lock()
        self._stopping = threading.Event()
        self._unhung: threading.Event | None = None  # set while hung: the event that ends the hang
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._digest = ""
        self._size = 0
        self._modified_at = datetime.now(timezone.utc)
        self._last_used = time.time()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> OllamaTestServer:
        """Load the backend, bind ``host:port`` (0 = a free port) and serve in a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError(f"OllamaTestServer is already running at {self.url}")
        if self.backend_kind == "llama":
            self.model_path = self.model_path or ensure_test_model()
            self._backend = LlamaBackend(self.model_path, self.parallel, self.ctx_per_slot, self.threads)
        else:
            self._backend = ScriptedBackend(self._script)
        if self.model_path is not None and self.model_path.is_file():
            self._digest = sha256_of_file(self.model_path)
            self._size = self.model_path.stat().st_size
            self._modified_at = datetime.fromtimestamp(self.model_path.stat().st_mtime, timezone.utc)
        else:
            self._digest = hashlib.sha256(f"scripted:{self.model_name}".encode()).hexdigest()
        try:
            self._httpd = _HTTPServer((self.host, self.port), self)
        except OSError as exc:
            self._backend.close()
            self._backend = None
            raise RuntimeError(
                f"Cannot listen on {self.host}:{self.port}: {exc}. Choose another port (0 picks a free one) "
                "or stop the process using it."
            ) from exc
        self.port = self._httpd.server_address[1]
        self._stopping.clear()
        self._unhung = None
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"ollama-test-server-{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Stop serving: refuse new connections, close open ones, cancel waits and generations."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        self._stats.wait_idle(drain_timeout_s)
        if self._backend is not None:
            self._backend.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OllamaTestServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def restart(self) -> OllamaTestServer:
        """``stop()`` then ``start()`` on the same port (what a client sees of a server that crashed and came back;
        the counters are kept)."""
        self.stop()
        return self.start()

    def hang(self) -> None:
        """Accept connections and read requests, but answer none (every API path) until ``unhang()`` or ``stop()``."""
        if self._unhung is None:
            self._unhung = threading.Event()

    def unhang(self) -> None:
        """Answer again; the requests held while hung are dropped unanswered (as when a hung server recovers)."""
        unhung, self._unhung = self._unhung, None
        if unhung is not None:
            unhung.set()

    @property
    def hung(self) -> bool:
        return self._unhung is not None

    def _held_while_hung(self) -> bool:
        """Holds a request while the server is hung; True when it was held (the caller drops it)."""
        unhung = self._unhung
        if unhung is None:
            return False
        while not unhung.wait(0.05) and not self._stopping.is_set():
            pass
        return True

    @property
    def reasoning(self) -> str | None:
        """How the scripted backend plays a reasoning model (None: it does not reason); see the docstring."""
        return self._reasoning

    @reasoning.setter
    def reasoning(self, mode: str | None) -> None:
        if mode is not None and mode not in REASONING_MODES:
            raise ValueError(f"reasoning must be None or one of {', '.join(REASONING_MODES)}, got {mode!r}")
        self._reasoning = mode

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:43123`` (for ``ollama.Client(host=...)``)."""
        if self._httpd is None:
            raise RuntimeError("OllamaTestServer is not running; call start() first")
        return f"http://{self.host}:{self.port}"

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` has begun: waits end early and generations are cancelled."""
        return self._stopping.is_set()

    @property
    def digest(self) -> str:
        """sha256 hex digest reported for the model (of the GGUF file when there is one)."""
        return self._digest

    # ----------------------------------------------------------------- test hooks

    def stats(self) -> dict[str, Any]:
        """Counters (see the module docstring) plus ``pending_faults``."""
        return {**self._stats.snapshot(), "pending_faults": self.pending_faults()}

    def answered_requests(self) -> Counter[str]:
        """sha256 of each generate/chat request body answered in full -> how many times it was answered."""
        return self._stats.answered_requests()

    def reset(self) -> None:
        """Zero the counters and clear pending faults."""
        self._stats.reset()
        with self._faults_lock:
            self._faults.clear()

    def inject_fault(
        self, kind: str, count: int = 1, path: str | None = None,
        seconds: float | None = None, content: str | None = None,
    ) -> None:
        """Make the next ``count`` matching requests fail with ``kind`` (see the module docstring)."""
        spec = FaultSpec(kind, count, path, seconds, content)
        with self._faults_lock:
            self._faults.append(spec)

    def pending_faults(self) -> list[dict[str, Any]]:
        """Faults not yet served, in injection order."""
        with self._faults_lock:
            return [asdict(spec) for spec in self._faults]

    def set_script(self, script: Script | None) -> None:
        """Replace the scripted backend's replies (scripted backend only)."""
        if self.backend_kind != "scripted":
            raise RuntimeError("set_script() needs backend='scripted'")
        self._script = script
        if isinstance(self._backend, ScriptedBackend):
            self._backend.set_script(script)

    def serves(self, model: str) -> bool:
        """Whether ``model`` names the served model (``:latest`` implied, case-insensitive)."""
        return normalize_model_name(model) == normalize_model_name(self.model_name)

    def _authorize(self, handler: _Handler, path: str) -> None:
        """With an ``api_key``, /v1 requests need ``Authorization: Bearer <key>`` (else 401)."""
        if self.api_key is None:
            return
        scheme, _, token = (handler.headers.get("Authorization") or "").strip().partition(" ")
        if scheme.casefold() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise RequestError(401, "Invalid API Key")
        self._stats.count("authorized", path)

    def _admit(self, path: str, raw_body: bytes) -> FaultSpec | None:
        """Count the requested model and ``think`` of a generation request; take the first matching fault."""
        if path in GENERATION_PATHS:
            self._stats.count("models", _requested_model_name(raw_body))
            self._stats.count("think", _requested_think(path, raw_body))
        with self._faults_lock:
            spec = next((spec for spec in self._faults if spec.matches(path)), None)
            if spec is None:
                return None
            spec.count -= 1
            if spec.count == 0:
                self._faults.remove(spec)
        self._stats.count("faults_served", spec.kind)
        return FaultSpec(spec.kind, 1, spec.path, spec.seconds, spec.content)

    def _apply_fault(self, handler: _Handler, path: str, fault: FaultSpec) -> bool:
        """Serve ``fault``; True when the request should then be handled normally."""
        if fault.kind == "http500":
            raise RequestError(500, "llama runner process has terminated: injected test fault (http500)")
        if fault.kind == "http429":
            retry_after = DEFAULT_RETRY_AFTER_S if fault.seconds is None else math.ceil(fault.seconds)
            raise RequestError(
                429, "too many requests, please retry later: injected test fault (http429)",
                headers={"Retry-After": str(retry_after)},
            )
        if fault.kind == "disconnect":
            raise GenerationCancelled()
        if fault.kind == "timeout":
            if self._stopping.wait(self.fault_timeout_s if fault.seconds is None else fault.seconds):
                raise GenerationCancelled()
            return True
        if path in GENERATION_PATHS:
            return True
        handler.send_bytes(200, _fault_content(fault).encode(), "application/json; charset=utf-8")
        return False

    # ----------------------------------------------------------------- model description

    def _details(self) -> dict[str, Any]:
        info = self.model_info
        return {
            "parent_model": "", "format": info.format, "family": info.family, "families": [info.family],
            "parameter_size": info.parameter_size, "quantization_level": info.quantization_level,
        }

    def _model_entry(self) -> dict[str, Any]:
        name = display_model_name(self.model_name)
        return {
            "name": name, "model": name, "modified_at": utc_timestamp(self._modified_at),
            "size": self._size, "digest": self._digest, "details": self._details(),
        }

    # ----------------------------------------------------------------- API handlers

    def _handle_root(self, handler: _Handler, path: str) -> None:
        handler.send_text(200, "Ollama is running")

    def _handle_version(self, handler: _Handler, path: str) -> None:
        handler.send_json(200, {"version": OLLAMA_API_VERSION})

    def _handle_tags(self, handler: _Handler, path: str) -> None:
        handler.send_json(200, {"models": [self._model_entry()]})

    def _handle_ps(self, handler: _Handler, path: str) -> None:
        expires = datetime.fromtimestamp(self._last_used, timezone.utc) + timedelta(seconds=KEEP_ALIVE_S)
        entry = {
            **self._model_entry(), "expires_at": utc_timestamp(expires), "size_vram": 0,
            "context_length": self.ctx_per_slot,
        }
        del entry["modified_at"]
        handler.send_json(200, {"models": [entry]})

    def _requested_model(self, body: Mapping[str, Any]) -> str:
        model = body.get("model") or body.get("name")
        if not isinstance(model, str) or not model.strip():
            raise RequestError(400, "model is required")
        return model

    def _handle_show(self, handler: _Handler, path: str) -> None:
        model = self._requested_model(handler.read_json())
        if not self.serves(model):
            raise RequestError(404, not_found_message(model))
        info = self.model_info
        source = self.model_path if self.model_path is not None else "scripted backend (no model file)"
        handler.send_json(200, {
            "license": info.license,
            "modelfile": f"# Served by ollama_test_server (development/test tool)\nFROM {source}\n",
            "parameters": "\n".join(f"{key} {value}" for key, value in OLLAMA_DEFAULT_OPTIONS.items()),
            "details": self._details(),
            "model_info": {
                "general.architecture": info.family,
                "general.size_label": info.parameter_size,
                "test_server.backend": self.backend_kind,
                "test_server.parallel": self.parallel,
                "test_server.threads": self.threads,
                "test_server.context_length_per_slot": self.ctx_per_slot,
            },
            "capabilities": ["completion", "thinking"] if self.reasoning else ["completion"],
            "modified_at": utc_timestamp(self._modified_at),
        })

    def _handle_pull(self, handler: _Handler, path: str) -> None:
        body = handler.read_json()
        model = self._requested_model(body)
        if not self.serves(model):
            raise RequestError(404, "pull model manifest: file does not exist")
        if not body.get("stream", True):
            handler.send_json(200, {"status": "success"})
            return
        handler.start_stream()
        for line in (
            {"status": "pulling manifest"},
            {"status": f"pulling {self._digest[:12]}", "digest": f"sha256:{self._digest}",
             "total": self._size, "completed": self._size},
            {"status": "verifying sha256 digest"},
            {"status": "writing manifest"},
            {"status": "success"},
        ):
            handler.write_line(line)
        handler.end_stream()

    def _handle_generate(self, handler: _Handler, path: str) -> None:
        self._reply_to_generation(handler, "generate")

    def _handle_chat(self, handler: _Handler, path: str) -> None:
        self._reply_to_generation(handler, "chat")

    def _handle_openai_models(self, handler: _Handler, path: str) -> None:
        handler.send_json(200, {"object": "list", "data": [{
            "id": self.model_name, "object": "model", "created": int(self._modified_at.timestamp()),
            "owned_by": OPENAI_OWNER,
        }]})

    def _handle_openai_chat(self, handler: _Handler, path: str) -> None:
        self._reply_to_generation(handler, "chat", api="openai")

    def _handle_test_stats(self, handler: _Handler, path: str) -> None:
        handler.send_json(200, self.stats())

    def _handle_test_reset(self, handler: _Handler, path: str) -> None:
        handler.read_json()
        self.reset()
        handler.send_json(200, {"status": "ok"})

    def _handle_test_faults(self, handler: _Handler, path: str) -> None:
        if handler.command == "POST":
            body = handler.read_json()
            unknown = sorted(set(body) - {"kind", "count", "path", "seconds", "content"})
            if unknown:
                raise RequestError(400, f"unknown fault fields: {', '.join(unknown)}")
            try:
                self.inject_fault(**body)
            except (TypeError, ValueError) as exc:
                raise RequestError(400, str(exc)) from exc
        handler.send_json(200, {"pending": self.pending_faults()})

    def _handle_test_hang(self, handler: _Handler, path: str) -> None:
        on = handler.read_json().get("on")
        if not isinstance(on, bool):
            raise RequestError(400, 'expected {"on": true} or {"on": false}')
        self.hang() if on else self.unhang()
        handler.send_json(200, {"hung": self.hung})

    def _handle_test_script(self, handler: _Handler, path: str) -> None:
        replies = handler.read_json().get("replies")
        if not isinstance(replies, list) or not all(isinstance(reply, str) for reply in replies):
            raise RequestError(400, 'expected {"replies": [string, ...]}')
        if self.backend_kind != "scripted":
            raise RequestError(400, "this server runs a real model; start it with --backend scripted")
        self.set_script(replies)
        handler.send_json(200, {"queued": len(replies)})

    # ----------------------------------------------------------------- generation

    def _reply_to_generation(
        self, handler: _Handler, endpoint: Literal["generate", "chat"], api: Literal["ollama", "openai"] = "ollama"
    ) -> None:
        started = time.perf_counter_ns()
        body = handler.read_json()
        request = parse_openai_request(body) if api == "openai" else parse_generation_request(endpoint, body)
        if not self.serves(request.model):
            raise RequestError(404, not_found_message(request.model))
        prompt_cap = self._prompt_cap(request)
        if self.latency and self._stopping.wait(self.latency):
            raise GenerationCancelled()
        self._last_used = time.time()
        fault = handler.fault
        scripted = self.backend_kind == "scripted"
        reasoning = reasoning_for(self.reasoning, self.reasoning_text, request) if scripted else None
        if fault is not None and fault.kind in ("garbage", "empty"):
            generate = partial(emit_text, _fault_content(fault))
            reasoning = None
        else:
            generate = self._backend.generate
        reply = _GenerationReply(
            self, handler, request, started, stream=api == "ollama" and body.get("stream", True) is not False,
            reasoning=reasoning, prompt_cap=prompt_cap,
        )
        if reply.run(generate):
            self._stats.count("answered", hashlib.sha256(handler.raw_body).hexdigest())

    def _prompt_cap(self, request: GenerationRequest) -> int | None:
        """Apply ``context_tokens`` (scripted backend): /v1 refuses an over-long prompt like llama.cpp (400);
        the native API truncates like Ollama, so the prompt count to report is capped (returned)."""
        context = self.context_tokens
        if context is None or self.backend_kind != "scripted" or is_load_request(request):
            return None
        prompt_tokens = prompt_token_count(request)
        if prompt_tokens > context and request.api == "openai":
            raise RequestError(400, context_exceeded_message(prompt_tokens, context), "exceed_context_size_error")
        return context

    def _next_completion_id(self) -> str:
        return f"chatcmpl-{next(self._completion_ids)}"


def _fault_content(fault: FaultSpec) -> str:
    """The body / generated content of a ``garbage`` or ``empty`` fault."""
    if fault.kind == "empty":
        return ""
    return DEFAULT_GARBAGE_CONTENT if fault.content is None else fault.content


class _GenerationReply:
    """Writes one generation reply: Ollama's NDJSON stream or single JSON object, or an OpenAI chat completion.

    ``reasoning`` (scripted reasoning models) goes in front of the content or into a message field;
    ``prompt_cap`` caps the reported prompt tokens (Ollama's silent truncation)."""

    def __init__(
        self, app: OllamaTestServer, handler: _Handler, request: GenerationRequest, started_ns: int, stream: bool,
        reasoning: Reasoning | None = None, prompt_cap: int | None = None,
    ) -> None:
        self.app = app
        self.handler = handler
        self.request = request
        self.started_ns = started_ns
        self.stream = stream
        self.reasoning = reasoning
        self.prompt_cap = prompt_cap
        self.streaming = False
        self.pieces: list[str] = []

    def envelope(self, text: str, done: bool, thinking: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.request.model, "created_at": utc_timestamp()}
        if self.request.endpoint == "chat":
            body["message"] = {"role": "assistant", "content": text}
            if thinking is not None:
                body["message"]["thinking"] = thinking
        else:
            body["response"] = text
            if thinking is not None:
                body["thinking"] = thinking
        body["done"] = done
        return body

    def on_piece(self, text: str) -> bool:
        if self.app.stopping:
            return False
        if not self.stream:
            self.pieces.append(text)
            return True
        try:
            if not self.streaming:
                self.handler.start_stream()
                self.streaming = True
            self.handler.write_line(self.envelope(text, done=False))
        except OSError:
            return False
        return True

    def start_reasoning(self) -> None:
        """Emit the reasoning that comes before the reply: a content prefix, or Ollama's streamed thinking chunk."""
        reasoning = self.reasoning
        if reasoning is None:
            return
        if reasoning.content_prefix:
            if not self.on_piece(reasoning.content_prefix):
                raise GenerationCancelled()
        elif self.stream:
            self.handler.start_stream()
            self.streaming = True
            self.handler.write_line(self.envelope("", done=False, thinking=reasoning.text))

    def openai_body(self, result: GenerationResult) -> dict[str, Any]:
        """The OpenAI chat-completion object for a finished generation."""
        message = {"role": "assistant", "content": "".join(self.pieces)}
        usage: dict[str, Any] = {
            "prompt_tokens": result.prompt_eval_count, "completion_tokens": result.eval_count,
            "total_tokens": result.prompt_eval_count + result.eval_count,
        }
        reasoning = self.reasoning
        if reasoning is not None and reasoning.message_field:
            message[reasoning.message_field] = reasoning.text
        if reasoning is not None and reasoning.detailed:
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning.tokens}
        return {
            "id": self.app._next_completion_id(), "object": "chat.completion", "created": int(time.time()),
            "model": self.request.model,
            "choices": [{
                "index": 0, "message": message,
                "finish_reason": "length" if result.done_reason == "length" else "stop",
            }],
            "usage": usage,
        }

    def run(self, generate: Callable[[GenerationRequest, OnPiece], GenerationResult]) -> bool:
        """Writes the reply; True when it was written in full (an answer), False for an error line."""
        if is_load_request(self.request):
            final = {**self.envelope("", done=True), "done_reason": "load"}
        else:
            try:
                self.start_reasoning()
                result = generate(self.request, self.on_piece)
            except RequestError as exc:
                if not self.streaming:
                    raise
                self.handler.write_line({"error": exc.message})
                self.handler.end_stream()
                return False
            if self.reasoning is not None:
                result = replace(result, eval_count=result.eval_count + self.reasoning.tokens)
            if self.prompt_cap is not None:
                result = replace(result, prompt_eval_count=min(result.prompt_eval_count, self.prompt_cap))
            if self.request.api == "openai":
                self.handler.send_json(200, self.openai_body(result))
                return True
            field_thinking = self.reasoning.text if self.reasoning and self.reasoning.message_field else None
            final = {
                **self.envelope(
                    "" if self.stream else "".join(self.pieces), done=True,
                    thinking=None if self.stream else field_thinking,
                ),
                "done_reason": result.done_reason,
                "total_duration": time.perf_counter_ns() - self.started_ns,
                "load_duration": 0,
                "prompt_eval_count": result.prompt_eval_count,
                "prompt_eval_duration": result.prompt_eval_duration_ns,
                "eval_count": result.eval_count,
                "eval_duration": result.eval_duration_ns,
            }
        if not self.stream:
            self.handler.send_json(200, final)
            return True
        if not self.streaming:
            self.handler.start_stream()
        self.handler.write_line(final)
        self.handler.end_stream()
        return True


def build_arg_parser() -> argparse.ArgumentParser:
    """Command-line options of the test server."""
    parser = argparse.ArgumentParser(
        prog="python -m llava_sensing_pipeline_tests.support.ollama_test_server",
        description="Ollama-API-compatible server backed by a small local model. "
                    "A development and test tool, not for production.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--model-path", type=Path, default=None,
                        help="GGUF file (default: the SmolLM2-135M test model, downloaded if needed)")
    parser.add_argument("--backend", choices=("llama", "scripted"), default="llama")
    parser.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL)
    parser.add_argument("--ctx-per-slot", type=int, default=DEFAULT_CTX_PER_SLOT)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="engine CPU threads (default: half the cores; more threads stall badly "
                             "when other processes compete for the cores)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each generate/chat")
    parser.add_argument("--fault-timeout", type=float, default=DEFAULT_FAULT_TIMEOUT_S,
                        help="seconds a 'timeout' fault waits")
    parser.add_argument("--context-tokens", type=int, default=None,
                        help="scripted backend: prompt tokens allowed (/v1 answers 400 above it, the native API "
                             "truncates)")
    parser.add_argument("--reasoning", choices=REASONING_MODES, default=None,
                        help="scripted backend: play a reasoning model of this kind")
    parser.add_argument("--api-key", default=None,
                        help="require 'Authorization: Bearer KEY' on the /v1 (OpenAI-compatible) routes")
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run the server until Ctrl+C or SIGTERM."""
    args = build_arg_parser().parse_args(argv)
    server = OllamaTestServer(
        args.model_path, model_name=args.model_name, backend=args.backend, host=args.host,
        port=args.port, parallel=args.parallel, ctx_per_slot=args.ctx_per_slot, threads=args.threads,
        latency=args.latency,
        fault_timeout_s=args.fault_timeout, log_requests=not args.quiet,
        context_tokens=args.context_tokens, reasoning=args.reasoning, api_key=args.api_key,
    )
    stop_requested = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_requested.set())
    server.start()
    print(f"Ollama test server ({args.backend}, model {args.model_name}) listening on {server.url}", flush=True)
    try:
        stop_requested.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
