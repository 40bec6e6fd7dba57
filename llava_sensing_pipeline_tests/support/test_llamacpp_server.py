"""Quick tests of llama.cpp's real HTTP server (xllamacpp) serving the SmolLM2-135M test model."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llava_sensing_pipeline_tests.support.llamacpp_server import (
    DEFAULT_ALIAS,
    LlamaCppServer,
    LlamaCppServerError,
    parse_prometheus_text,
    port_accepts_connections,
    port_is_free,
)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def llamacpp(test_model_path: Path) -> Iterator[LlamaCppServer]:
    """One server (2 slots x 8192 tokens) for the module's read-mostly tests."""
    with LlamaCppServer(test_model_path, parallel=2, ctx_per_slot=8192) as server:
        yield server


def test_start_health_urls_and_props(llamacpp: LlamaCppServer) -> None:
    assert llamacpp.running
    assert llamacpp.root == f"http://127.0.0.1:{llamacpp.port}"
    assert llamacpp.url == llamacpp.root + "/v1"
    assert llamacpp.request("GET", "/health") == (200, {"status": "ok"})
    props = llamacpp.props()
    assert props is not None
    assert props["total_slots"] == 2
    assert props["default_generation_settings"]["n_ctx"] == 8192  # per slot: n_ctx 16384 split over 2 slots
    assert props["model_alias"] == DEFAULT_ALIAS


def test_models_lists_the_alias(llamacpp: LlamaCppServer) -> None:
    status, body = llamacpp.request("GET", "/v1/models")
    assert status == 200 and body["object"] == "list"
    (model,) = body["data"]
    assert model["id"] == DEFAULT_ALIAS and model["object"] == "model" and model["owned_by"] == "llamacpp"
    assert model["meta"]["n_ctx"] == 8192


def test_short_chat_completion(llamacpp: LlamaCppServer) -> None:
    status, reply = llamacpp.chat(user("Say hello."), max_tokens=16, temperature=0)
    assert status == 200, reply
    assert reply["object"] == "chat.completion" and reply["model"] == DEFAULT_ALIAS
    (choice,) = reply["choices"]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")
    usage = reply["usage"]
    assert 1 <= usage["completion_tokens"] <= 16 and usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert reply["timings"]["predicted_n"] == usage["completion_tokens"]


def test_metrics_increase_with_a_request(llamacpp: LlamaCppServer) -> None:
    before = llamacpp.metrics()
    assert before["llamacpp:requests_processing"] == 0
    status, reply = llamacpp.chat(user("Name a colour."), max_tokens=8)
    assert status == 200, reply
    after = llamacpp.metrics()
    assert after["llamacpp:tokens_predicted_total"] == (
        before["llamacpp:tokens_predicted_total"] + reply["usage"]["completion_tokens"])
    assert after["llamacpp:prompt_tokens_total"] + after["llamacpp:prompt_tokens_cached_total"] > (
        before["llamacpp:prompt_tokens_total"] + before["llamacpp:prompt_tokens_cached_total"])
    assert after["llamacpp:n_decode_total"] > before["llamacpp:n_decode_total"]


def test_parse_prometheus_text() -> None:
    text = ('# HELP a_total A.\n# TYPE a_total counter\na_total 3\nllamacpp:x 1.5e+02\n'
            'b{slot="0"} 7\n\nbroken line\n')
    assert parse_prometheus_text(text) == {"a_total": 3.0, "llamacpp:x": 150.0, 'b{slot="0"}': 7.0}


def test_stop_frees_the_port_even_with_a_request_in_flight(test_model_path: Path) -> None:
    server = LlamaCppServer(test_model_path, parallel=1, ctx_per_slot=1024).start()
    port, pid = server.port, server.pid
    outcome: list[object] = []

    def long_request() -> None:
        try:
            outcome.append(server.chat(user("Tell a long story."), max_tokens=1000, ignore_eos=True, timeout=60))
        except OSError as exc:  # the connection is cut when the server process ends
            outcome.append(exc)

    client = threading.Thread(target=long_request)
    client.start()
    deadline = time.monotonic() + 10
    while server.metrics()["llamacpp:requests_processing"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5
    client.join(10)
    assert not client.is_alive() and isinstance(outcome[0], OSError)
    assert not server.running and server.pid is None
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not port_accepts_connections(port)
    assert port_is_free(port)
    server.stop()  # idempotent
    # The very same port serves again at once, and a busy port is reported clearly.
    with LlamaCppServer(test_model_path, parallel=1, ctx_per_slot=512, port=port) as again:
        assert again.port == port and again.request("GET", "/health")[0] == 200
        with pytest.raises(LlamaCppServerError, match=f"port {port} on 127.0.0.1 is already in use"):
            LlamaCppServer(test_model_path, port=port).start()


def test_prompt_longer_than_the_slot_context_is_refused(test_model_path: Path) -> None:
    with LlamaCppServer(test_model_path, parallel=1, ctx_per_slot=2048) as server:
        status, body = server.chat(user(" ".join(["apple"] * 3000)), max_tokens=4)
    assert status == 400
    assert body == {"error": {
        "code": 400,
        "message": "request (3030 tokens) exceeds the available context size (2048 tokens), try increasing it",
        "type": "exceed_context_size_error",
        "n_prompt_tokens": 3030,
        "n_ctx": 2048,
    }}


def test_missing_model_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LlamaCppServer(tmp_path / "missing.gguf").start()


def test_broken_model_file_fails_start_with_its_log(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    with pytest.raises(LlamaCppServerError, match="exited with code"):
        LlamaCppServer(broken, startup_timeout_s=60).start()
