"""The LLM clients against the scripted test server, once per API (Ollama's native client, the OpenAI-compatible
one over httpx), with faults: the shared request loop must behave the same whatever the API."""

import time

import pytest

from llava_sensing_pipeline.llm import (
    CallStats,
    LLMCallFailed,
    OllamaResource,
    ServerDown,
    ServerUnavailable,
    is_outage,
)
from llava_sensing_pipeline.llm.cache import open_cache
from llava_sensing_pipeline.llm.ollama import normalize_host

from .conftest import CHAT_PATHS, MODEL, PROBE_PATHS, make_client

MESSAGES = [{"role": "user", "content": "Say something."}]


def test_normalize_host():
    assert normalize_host("0.0.0.0:11434") == "http://127.0.0.1:11434"
    assert normalize_host("localhost") == "http://localhost:11434"
    assert normalize_host("https://gpu-box:8443/") == "https://gpu-box:8443"


def revision(api, server, tmp_path):
    """What check_ready returns for the scripted server: Ollama's digest; on the OpenAI API a hash of the model's
    /v1/models entry (that API has no digest)."""
    return server.digest if api == "ollama" else make_client(api, server, tmp_path / "other").check_ready()


def test_check_ready_returns_the_revision(api, scripted_ollama, tmp_path):
    got = make_client(api, scripted_ollama, tmp_path).check_ready()
    if api == "ollama":
        assert got == scripted_ollama.digest
    else:
        assert got.startswith("v1-") and got == make_client(api, scripted_ollama, tmp_path).check_ready()


def test_missing_model_says_what_to_do(api, scripted_ollama, tmp_path):
    r = make_client(api, scripted_ollama, tmp_path, model="llama3.1:8b")
    fix = r"ollama pull llama3\.1:8b" if api == "ollama" else r"serves: smollm2:135m\)\. Choose one with --model"
    with pytest.raises(ServerUnavailable, match=fix):
        r.check_ready()


def test_server_down_says_ollama_serve_and_fails_fast(tmp_path):
    started = time.monotonic()
    with pytest.raises(ServerUnavailable, match="ollama serve") as info:
        make_client("ollama", "http://127.0.0.1:9", tmp_path).check_ready()
    assert "http://127.0.0.1:9" in str(info.value) and time.monotonic() - started < 6


def test_chat_is_cached_across_resources(api, scripted_ollama, tmp_path):
    scripted_ollama.set_script("hello there")
    first = make_client(api, scripted_ollama, tmp_path).chat(MESSAGES, options={"seed": 1})
    assert first.text == "hello there" and not first.cached and first.attempts == 1
    calls = scripted_ollama.stats()["completions"]
    again = make_client(api, scripted_ollama, tmp_path).chat(MESSAGES, options={"seed": 1})
    assert again.cached and again.text == "hello there"
    assert scripted_ollama.stats()["completions"] == calls
    # other options are another request
    make_client(api, scripted_ollama, tmp_path).chat(MESSAGES, options={"seed": 2})
    assert scripted_ollama.stats()["completions"] == calls + 1


@pytest.mark.parametrize("kind", ["http500", "disconnect"])
def test_transient_faults_are_retried(api, scripted_ollama, tmp_path, kind):
    scripted_ollama.set_script("fine")
    scripted_ollama.inject_fault(kind, count=2, path=CHAT_PATHS[api])
    reply = make_client(api, scripted_ollama, tmp_path, max_retries=3).chat(MESSAGES, options={})
    assert reply.text == "fine" and reply.attempts == 3


def test_timeouts_are_retried_then_fail_with_a_message(api, scripted_ollama, tmp_path):
    scripted_ollama.set_script("late")
    scripted_ollama.inject_fault("timeout", count=5, path=CHAT_PATHS[api], seconds=3)
    r = make_client(api, scripted_ollama, tmp_path, timeout_s=0.3, max_retries=1)
    started = time.monotonic()
    with pytest.raises(LLMCallFailed, match="after 2 attempts"):
        r.chat(MESSAGES, options={})
    assert time.monotonic() - started < 3


def test_garbage_reply_comes_back_as_text(api, scripted_ollama, tmp_path):
    scripted_ollama.inject_fault("garbage", path=CHAT_PATHS[api], content="{not json")
    reply = make_client(api, scripted_ollama, tmp_path).chat(MESSAGES, options={})
    assert reply.text == "{not json"


def test_model_removed_mid_run_is_unavailable(api, scripted_ollama, tmp_path):
    gone = make_client(api, scripted_ollama, tmp_path, model="other:1b")
    gone._digest = "x"  # as if it had been checked before the model was removed
    with pytest.raises(ServerUnavailable, match="ollama pull other:1b" if api == "ollama" else "choose one with"):
        gone.chat(MESSAGES, options={})


def test_response_cache_round_trip(tmp_path):
    cache = open_cache(tmp_path / "c.sqlite")
    cache.put("k", "m", {"text": "t", "eval_count": 3, "eval_duration_s": 0.5})
    assert cache.get("k")["text"] == "t" and cache.get("missing") is None and len(cache) == 1
    cache.close()
    assert open_cache(tmp_path / "c.sqlite").get("k")["eval_count"] == 3


def test_call_stats_summary():
    from llava_sensing_pipeline.llm import LLMReply

    stats = CallStats()
    stats.record(LLMReply("a", False, 1.0, 100, 2.0, 1))
    stats.record(LLMReply("b", False, 3.0, 100, 2.0, 2))
    stats.record(LLMReply("c", True, 0.0, 100, 2.0, 0))
    stats.record_failure(LLMCallFailed("x: refused", attempts=4))
    s = stats.summary("x")
    assert s["x_llm_calls"] == 7 and s["x_cache_hits"] == 1 and s["x_failed_requests"] == 1
    assert s["x_tokens_per_second"] == 50.0 and s["x_latency_p95_s"] == 3.0


def test_parse_hosts_from_flag_and_env():
    from llava_sensing_pipeline.llm.ollama import parse_hosts

    assert parse_hosts("a:1,b:2") == ["http://a:1", "http://b:2"]
    assert parse_hosts(None, {"OLLAMA_HOSTS": "http://x:1, http://y:1", "OLLAMA_HOST": "z"}) == ["http://x:1",
                                                                                              "http://y:1"]
    assert parse_hosts(None, {"OLLAMA_HOST": "z"}) == ["http://z:11434"]
    assert parse_hosts(None, {}) == ["http://localhost:11434"]


def test_pool_survives_a_host_stopping_mid_run_and_returns_to_it(tmp_path):
    """Two hosts, one stopped mid-run: every request is answered once, nothing is lost, the pool stops sending to
    the dead host, and uses it again once it is back."""
    from concurrent.futures import ThreadPoolExecutor

    from llava_sensing_pipeline_tests.support.ollama_test_server import OllamaTestServer

    a = OllamaTestServer(backend="scripted", latency=0.05).start()
    b = OllamaTestServer(backend="scripted", latency=0.05).start()
    b_port, b_url = b.port, b.url
    try:
        r = OllamaResource(host=f"{a.url},{b.url}", model=MODEL, parallel=2, backoff_s=0.01, timeout_s=5,
                           cache_path=str(tmp_path / "c.sqlite"))
        messages = []
        r.attach_log(messages.append)
        assert r.check_ready() == a.digest and r.total_slots == 4
        prompts = [f"passage {i}" for i in range(40)]

        def ask(p):
            if p == "passage 12":
                b.stop()
            return r.chat([{"role": "user", "content": p}], options={})

        with ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(ask, prompts))
        assert [x.text for x in replies] == [f"Scripted reply to: {p}" for p in prompts]
        assert len(r.cache) == 40
        hosts = r.host_metadata()
        assert hosts[a.url]["requests"] > 0 and hosts[b_url]["requests"] > 0
        assert hosts[b_url]["healthy"] is False
        served_by_b = hosts[b_url]["requests"]
        # b comes back on the same port: after its cool-down the pool probes it and sends to it again
        b = OllamaTestServer(backend="scripted", port=b_port).start()
        time.sleep(5.2)
        for i in range(8):
            r.chat([{"role": "user", "content": f"later {i}"}], options={})
        assert r.host_metadata()[b_url]["healthy"] and r.host_metadata()[b_url]["requests"] > served_by_b
        # one line when b went away (a carried on), one when it came back; the pool never waited
        assert len(messages) == 2, messages
        assert messages[0].startswith(f"Ollama at {b_url} unreachable since ")
        assert "the other 1 host(s) carry on" in messages[0]
        assert messages[1].startswith(f"Ollama at {b_url} is back after ")
        assert r.host_metadata()[b_url]["outages"] == 1 and r.host_metadata()[b_url]["downtime_s"] >= 5
        assert r.outage_metadata((0, 0.0)) == {"ollama_outages": 1, "ollama_downtime_s": 0.0}
    finally:
        a.stop()
        b.stop()


def test_check_ready_with_one_host_down_uses_the_other(scripted_ollama, tmp_path):
    r = OllamaResource(host=f"http://127.0.0.1:9,{scripted_ollama.url}", model=MODEL, backoff_s=0.01,
                       cache_path=str(tmp_path / "c.sqlite"))
    assert r.check_ready() == scripted_ollama.digest
    assert r.chat(MESSAGES, options={}).text.startswith("Scripted reply")
    assert r.host_metadata()["http://127.0.0.1:9"]["healthy"] is False


def test_a_failed_call_counts_only_the_attempts_it_made(api, scripted_ollama, tmp_path):
    """An error that is not retried (HTTP 400) is one attempt; a retried one (HTTP 500) is max_retries + 1."""
    from llava_sensing_pipeline_tests.support.ollama_test_server import RequestError

    def refuse(request):
        raise RequestError(400, "invalid request: injected test fault")

    scripted_ollama.set_script(refuse)
    with pytest.raises(LLMCallFailed, match="answered 400") as info:
        make_client(api, scripted_ollama, tmp_path, max_retries=3).chat(MESSAGES, options={})
    assert info.value.attempts == 1 == scripted_ollama.stats()["completions"]
    scripted_ollama.reset()
    scripted_ollama.set_script("fine")
    scripted_ollama.inject_fault("http500", count=10, path=CHAT_PATHS[api])
    with pytest.raises(LLMCallFailed, match="after 3 attempts") as info:
        make_client(api, scripted_ollama, tmp_path, max_retries=2).chat(MESSAGES, options={"seed": 2})
    assert info.value.attempts == 3 == scripted_ollama.stats()["completions"]


def test_partition_metadata_counts_the_llm_calls_the_server_saw(scripted_ollama, tmp_path):
    """The hybrid analysis of one file, whose first request is refused (HTTP 400, not retried): the partition's
    llm_calls are exactly the requests the server answered, the refused one counted once."""
    import json
    import shutil
    from pathlib import Path

    from dagster import DagsterInstance, materialize

    from llava_sensing_pipeline.assets import environment_features, novel_files, text_chunks
    from llava_sensing_pipeline.io_managers import PartitionedParquetIOManager
    from llava_sensing_pipeline.partitions import PARTITIONS_NAME, discover_novels
    from llava_sensing_pipeline.settings import PipelineSettings
    from llava_sensing_pipeline_tests.support.ollama_test_server import RequestError

    corpus = tmp_path / "Novel"
    rel = "Travel_Novel/B901_Salt_Roads.txt"
    (corpus / rel).parent.mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[2] / "Novel" / rel, corpus / rel)
    refused = []

    def script(request):
        if not refused:
            refused.append(request)
            raise RequestError(400, "invalid request: injected test fault")
        return json.dumps({"weather": "rain", "time_of_day": "night", "confidence": 0.9})

    scripted_ollama.set_script(script)
    settings = PipelineSettings(input_dir=str(corpus), output_dir=str(tmp_path / "out"), mode="hybrid",
                                num_examples=8, llm_confidence_threshold=0.2)  # 2 of 7 fields at 0.9
    resources = {"settings": settings, "parquet_io_manager": PartitionedParquetIOManager(base_dir=str(tmp_path / "s")),
                 "llm": make_client("ollama", scripted_ollama, tmp_path, max_retries=3)}
    instance = DagsterInstance.ephemeral()
    [key] = [f.key for f in discover_novels(corpus)]
    instance.add_dynamic_partitions(PARTITIONS_NAME, [key])
    result = materialize([novel_files, text_chunks, environment_features], partition_key=key, resources=resources,
                         instance=instance)
    assert result.success and refused
    [materialization] = result.asset_materializations_for_node("environment_features")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["analysis_failed_requests"] == 1
    assert metadata["analysis_llm_calls"] == scripted_ollama.stats()["completions"]


# --- The server going away mid-run (issue 15) -------------------------------------------------------------------

class Log(list):
    """Collects outage messages with the time each was emitted."""

    def __call__(self, message: str) -> None:
        self.append((time.monotonic(), message))

    def texts(self) -> list[str]:
        return [m for _, m in self]


def test_server_gone_waits_the_down_wait_then_fails_and_says_so_at_once(api, scripted_ollama, tmp_path):
    """Killed: the first request that finds it gone emits one message at once, waits --ollama-down-wait (not the
    request timeout, not per retry), then fails with ServerDown; later requests fail at once."""
    import re

    r = make_client(api, scripted_ollama, tmp_path, down_wait_s=1.5, max_retries=3, timeout_s=60)
    log = Log()
    r.attach_log(log)
    assert r.wait_ready() == revision(api, scripted_ollama, tmp_path)
    r.chat(MESSAGES, options={"seed": 1})
    before = r.outage_counters()
    scripted_ollama.stop()
    started = time.monotonic()
    with pytest.raises(ServerDown) as info:
        r.chat(MESSAGES, options={"seed": 2})
    waited = time.monotonic() - started
    assert 1.5 <= waited < 3.5
    assert len(log) == 1 and log[0][0] - started < 0.5
    assert re.fullmatch(rf"{r.label} at {re.escape(r.url)} unreachable since \d\d:\d\d:\d\d; waiting for it to come "
                        r"back \(up to 1.5 s; Ctrl-C stops, re-running resumes\)", log[0][1])
    assert "still down after waiting 1.5 s in all (--ollama-down-wait)" in str(info.value)
    assert is_outage(f"ServerDown: {info.value}") and isinstance(info.value, ServerUnavailable)
    started = time.monotonic()
    with pytest.raises(ServerDown):
        r.chat(MESSAGES, options={"seed": 3})
    assert time.monotonic() - started < 0.5 and len(log) == 1
    meta = r.outage_metadata(before)
    assert meta["ollama_outages"] == 1 and meta["ollama_downtime_s"] >= 1.5


def test_server_restarted_within_the_wait_answers_the_request_once(api, scripted_ollama, tmp_path):
    """Killed, then back on the same port within the wait: the waiting request is sent again once it is back,
    answered once, and uses no retry; one message when it went, one when it came back."""
    import threading

    scripted_ollama.set_script("fine")
    r = make_client(api, scripted_ollama, tmp_path, down_wait_s=30, max_retries=0)
    log = Log()
    r.attach_log(log)
    r.check_ready()
    before = r.outage_counters()
    scripted_ollama.stop()
    threading.Timer(1.5, scripted_ollama.start).start()
    started = time.monotonic()
    reply = r.chat(MESSAGES, options={"seed": 4})
    assert reply.text == "fine" and reply.attempts == 1 and time.monotonic() - started < 5
    assert len(log) == 2 and "unreachable since" in log[0][1] and "is back after 2 s" in log[1][1]
    assert list(scripted_ollama.answered_requests().values()) == [1]
    meta = r.outage_metadata(before)
    assert meta["ollama_outages"] == 1 and 1.4 <= meta["ollama_downtime_s"] < 5


def test_hung_server_is_found_by_the_health_probe(api, scripted_ollama, tmp_path):
    """Hung (accepts connections, answers nothing): a request unanswered after probe_after_s gets a health check
    with the short timeout; no reply to it means hung, long before the request timeout: the same wait, then
    ServerDown. Nothing was answered."""
    import re

    r = make_client(api, scripted_ollama, tmp_path, down_wait_s=1.0, probe_after_s=0.5, check_timeout_s=0.5,
                 timeout_s=60)
    log = Log()
    r.attach_log(log)
    r.check_ready()
    scripted_ollama.hang()
    started = time.monotonic()
    with pytest.raises(ServerDown, match="not answering since"):
        r.chat(MESSAGES, options={"seed": 5})
    assert time.monotonic() - started < 6
    assert len(log) == 1 and re.search(r"not answering since \d\d:\d\d:\d\d \(it accepts connections", log[0][1])
    assert 0.9 <= log[0][0] - started < 2.5
    scripted_ollama.unhang()
    assert scripted_ollama.stats()["answered"] == 0


def test_slow_server_is_told_apart_from_a_hung_one(api, tmp_path):
    """A slow answer (2 s, probe after 0.3 s): the server answers its health checks, so the request keeps waiting
    and is answered; no outage."""
    from llava_sensing_pipeline_tests.support.ollama_test_server import OllamaTestServer

    with OllamaTestServer(backend="scripted", script="slow but fine", latency=2.0) as slow:
        r = make_client(api, slow, tmp_path, down_wait_s=1.0, probe_after_s=0.3, check_timeout_s=0.5, timeout_s=30)
        log = Log()
        r.attach_log(log)
        reply = r.chat(MESSAGES, options={})
        assert reply.text == "slow but fine" and reply.latency_s >= 2.0 and not log
        assert r.outage_metadata((0, 0.0)) == {"ollama_outages": 0, "ollama_downtime_s": 0.0}
        assert slow.stats()["requests_by_path"][PROBE_PATHS[api]] >= 4  # the probes


def test_wait_ready_waits_for_a_server_that_is_down_when_a_step_starts(api, scripted_ollama, tmp_path):
    import threading

    r = make_client(api, scripted_ollama, tmp_path, down_wait_s=30)
    log = Log()
    r.attach_log(log)
    scripted_ollama.stop()
    threading.Timer(1.0, scripted_ollama.start).start()
    assert r.wait_ready().startswith(scripted_ollama.digest if api == "ollama" else "v1-")
    assert len(log) == 2 and "waiting for it to come back" in log[0][1] and "is back" in log[1][1]


def test_stop_waiting_ends_the_wait_at_once(api, scripted_ollama, tmp_path):
    """Ctrl-C during the wait: the step calls stop_waiting() (walk_until_quota's on_interrupt), and the requests
    waiting for the server end at once with ServerDown instead of after --ollama-down-wait."""
    import threading

    r = make_client(api, scripted_ollama, tmp_path, down_wait_s=60)
    r.attach_log(Log())
    r.check_ready()
    scripted_ollama.stop()
    errors = []
    waiting = threading.Thread(target=lambda: errors.append(pytest.raises(ServerDown, r.chat, MESSAGES, options={})))
    waiting.start()
    time.sleep(1.0)
    started = time.monotonic()
    r.stop_waiting()
    waiting.join(5)
    assert not waiting.is_alive() and time.monotonic() - started < 1.5
    assert "interrupted (Ctrl-C)" in str(errors[0].value)


def test_stop_waiting_abandons_a_slow_request_without_blaming_the_host(api, tmp_path):
    """Ctrl-C while a request waits for a slow (healthy) answer: it is abandoned at once, and no outage is
    reported for a host that did nothing wrong."""
    import threading

    from llava_sensing_pipeline_tests.support.ollama_test_server import OllamaTestServer

    with OllamaTestServer(backend="scripted", latency=10.0) as slow:
        r = make_client(api, slow, tmp_path, probe_after_s=0.2, timeout_s=60)
        log = Log()
        r.attach_log(log)
        r.check_ready()
        errors = []
        waiting = threading.Thread(target=lambda: errors.append(pytest.raises(ServerDown, r.chat, MESSAGES,
                                                                              options={})))
        waiting.start()
        time.sleep(0.5)
        r.stop_waiting()
        waiting.join(5)
        assert not waiting.is_alive() and "interrupted (Ctrl-C)" in str(errors[0].value)
        assert not log and r.host_metadata()[r.url]["healthy"]


# --- Replies checked before they are kept, reasoning, structured output, 429, the cap (issue 21) ---------------

SCHEMA = {"type": "object", "properties": {"weather": {"type": "string"}, "confidence": {"type": "number"}},
          "required": ["weather", "confidence"]}


def test_structured_output_and_options_reach_the_server(api, scripted_ollama, tmp_path):
    """The JSON schema and the seed, temperature and token limit arrive as each API says them."""
    seen = []

    def script(request):
        seen.append(request)
        return '{"weather": "rain", "confidence": 0.9}'

    scripted_ollama.set_script(script)
    reply = make_client(api, scripted_ollama, tmp_path).chat(
        MESSAGES, options={"seed": 7, "temperature": 0, "num_predict": 50}, fmt=SCHEMA)
    assert reply.text == '{"weather": "rain", "confidence": 0.9}' and reply.prompt_tokens > 0
    [request] = seen
    assert request.format == SCHEMA
    assert {k: request.options.get(k) for k in ("seed", "temperature", "num_predict")} == {
        "seed": 7, "temperature": 0, "num_predict": 50}


def test_empty_replies_are_retried_and_never_cached(api, scripted_ollama, tmp_path):
    """Reproduction 4: an empty reply was cached as an answer, freezing the glitch for every later run."""
    scripted_ollama.set_script("")
    r = make_client(api, scripted_ollama, tmp_path)
    with pytest.raises(LLMCallFailed, match="an empty reply") as info:
        r.chat(MESSAGES, options={"seed": 1})
    assert info.value.attempts == 2 and len(r.cache) == 0
    scripted_ollama.set_script("now an answer")
    assert r.chat(MESSAGES, options={"seed": 1}).text == "now an answer" and len(r.cache) == 1


def test_cut_off_and_off_schema_replies_are_rejected_and_remembered_as_rejections(api, scripted_ollama, tmp_path):
    """Not asked again (a seeded request gives the same reply), not kept as an answer, and a re-run raises the same
    rejection without a request."""
    from llava_sensing_pipeline.llm import ReplyRejected

    def not_json(text):
        return None if text.startswith("{") else "a reply that is not JSON"

    scripted_ollama.set_script("one two three four five six")
    r = make_client(api, scripted_ollama, tmp_path)
    with pytest.raises(ReplyRejected, match="cut off at the token limit") as info:
        r.chat(MESSAGES, options={"num_predict": 3})
    assert info.value.reason == "cut_off" and info.value.attempts == 1
    with pytest.raises(ReplyRejected, match="not JSON") as info:
        r.chat(MESSAGES, options={}, validate=not_json)
    assert info.value.reason == "off_schema" and scripted_ollama.stats()["completions"] == 2
    again = make_client(api, scripted_ollama, tmp_path)
    for options in ({"num_predict": 3}, {}):
        with pytest.raises(ReplyRejected) as info:
            again.chat(MESSAGES, options=options, validate=not_json)
        assert info.value.attempts == 0
    assert scripted_ollama.stats()["completions"] == 2


def test_a_model_without_a_digest_still_gets_a_revision(scripted_ollama, tmp_path, monkeypatch):
    """Reproduction 4: a model listed without a digest put "" in every cache key."""
    import ollama as ollama_client

    listing = ollama_client.Client(host=scripted_ollama.url).list()
    for model in listing.models:
        model.digest = None
    monkeypatch.setattr(ollama_client.Client, "list", lambda self: listing)
    r = make_client("ollama", scripted_ollama, tmp_path)
    assert r.check_ready().startswith("entry-") and len(r.check_ready()) > 20


REASONING_SHAPES = ["think_tags", "thinking_field", "reasoning_content", "harmony"]


@pytest.mark.parametrize("shape", REASONING_SHAPES)
def test_reasoning_never_reaches_the_content(api, tmp_path, shape):
    """Reproduction 5: deepseek-r1 and gpt-oss put their reasoning into the reply. It is turned off where the server
    allows (Ollama think false, gpt-oss at its lowest effort), and whatever comes back is taken out and counted."""
    from llava_sensing_pipeline_tests.support.ollama_test_server import OllamaTestServer

    name = "gpt-oss:20b" if shape == "harmony" else "deepseek-r1:8b"
    with OllamaTestServer(backend="scripted", script="The rain falls.", model_name=name, reasoning=shape) as server:
        r = make_client(api, server, tmp_path, model=name)
        reply = r.chat(MESSAGES, options={"seed": 1})
        assert reply.text == "The rain falls."
        think = server.stats()["think"]
        if shape == "harmony":  # cannot be turned off: asked at its lowest effort, reasoning taken out and counted
            assert think == {"low": 1} and reply.reasoning_tokens > 0
        else:
            assert think == {"False": 1}
        cached = make_client(api, server, tmp_path, model=name).chat(MESSAGES, options={"seed": 1})
        assert cached.cached and cached.text == "The rain falls."


@pytest.mark.parametrize("shape", REASONING_SHAPES)
def test_reasoning_of_a_server_that_cannot_turn_it_off_is_taken_out(tmp_path, shape):
    """The same shapes when the request's setting is ignored (no reasoning parser, an old server): split in code."""
    from llava_sensing_pipeline.llm.base import split_reasoning

    reasoning = "Let me reason about the scene."
    content = {"think_tags": f"<think>\n{reasoning}\n</think>\n\nThe rain falls.",
               "thinking_field": "The rain falls.", "reasoning_content": "The rain falls.",
               "harmony": f"<|channel|>analysis<|message|>{reasoning}<|end|><|start|>assistant<|channel|>final"
                          "<|message|>The rain falls."}[shape]
    field = reasoning if shape in ("thinking_field", "reasoning_content") else ""
    assert split_reasoning(content, field) == ("The rain falls.", reasoning)
    assert split_reasoning(f"{reasoning}</think>The rain falls.") == ("The rain falls.", reasoning)
    assert split_reasoning(f"<think>{reasoning} and on, cut off") == ("", f"{reasoning} and on, cut off")


def test_429_waits_its_retry_after(api, scripted_ollama, tmp_path):
    scripted_ollama.set_script("fine")
    scripted_ollama.inject_fault("http429", count=1, path=CHAT_PATHS[api], seconds=1)
    started = time.monotonic()
    reply = make_client(api, scripted_ollama, tmp_path, backoff_s=0.01).chat(MESSAGES, options={})
    assert reply.text == "fine" and reply.attempts == 2
    if api == "openai":  # Ollama's client does not expose the header: its backoff applies
        assert time.monotonic() - started >= 0.95


def test_the_budget_caps_requests_retries_included(api, scripted_ollama, tmp_path):
    from llava_sensing_pipeline.llm import BudgetExhausted, RequestBudget

    scripted_ollama.inject_fault("http500", count=50, path=CHAT_PATHS[api])
    budget = RequestBudget(5, "test: the file's")
    r = make_client(api, scripted_ollama, tmp_path, max_retries=3)
    with pytest.raises(LLMCallFailed):
        r.chat(MESSAGES, options={"seed": 1}, budget=budget)
    with pytest.raises(BudgetExhausted, match="request budget of 5 spent") as info:
        r.chat(MESSAGES, options={"seed": 2}, budget=budget)
    assert info.value.attempts == 1 and budget.used == 5 == scripted_ollama.stats()["completions"]


def test_a_request_that_crashes_the_server_is_not_sent_forever(api, scripted_ollama, tmp_path):
    """Reproduction 3: each time the request arrives the server dies, then comes back. A resend after an outage
    counts as an attempt, so it ends after max_retries + 1 sends."""
    import threading

    def crash(request):
        threading.Thread(target=lambda: (scripted_ollama.stop(drain_timeout_s=2), time.sleep(0.2),
                                          scripted_ollama.start())).start()
        time.sleep(1.0)
        return "never delivered"

    scripted_ollama.set_script(crash)
    r = make_client(api, scripted_ollama, tmp_path, max_retries=2, down_wait_s=30, timeout_s=10)
    r.attach_log(lambda message: None)
    r.check_ready()
    with pytest.raises(LLMCallFailed) as info:
        r.chat(MESSAGES, options={})
    assert info.value.attempts == 3 and scripted_ollama.stats()["completions"] == 3


def test_the_down_wait_bounds_the_waits_of_a_run_in_all(api, scripted_ollama, tmp_path):
    """Reproduction 3: the --ollama-down-wait clock restarted at every flap; the README says "in all"."""
    import threading

    scripted_ollama.set_script("fine")
    r = make_client(api, scripted_ollama, tmp_path, down_wait_s=1.5, timeout_s=30)
    r.attach_log(lambda message: None)
    r.check_ready()
    scripted_ollama.stop()
    threading.Timer(1.0, scripted_ollama.start).start()
    assert r.chat(MESSAGES, options={"seed": 1}).text == "fine"  # waited ~1 s of the 1.5
    scripted_ollama.stop()
    started = time.monotonic()
    with pytest.raises(ServerDown, match="1.5 s in all"):
        r.chat(MESSAGES, options={"seed": 2})
    assert time.monotonic() - started < 1.2  # only what was left of the wait


def test_a_prompt_longer_than_the_context_stops_at_once_with_the_fix(api, tmp_path):
    """Reproduction 2: llama.cpp refuses a prompt longer than its context (400); Ollama cuts it silently (seen from
    the prompt token count). Either way: no retry, the server's reason and the setting that fixes it."""
    from llava_sensing_pipeline.llm import PromptTooLong
    from llava_sensing_pipeline_tests.support.ollama_test_server import OllamaTestServer

    long_prompt = [{"role": "system", "content": "guide " * 3000}, {"role": "user", "content": "the passage"}]
    with OllamaTestServer(backend="scripted", script="fine", context_tokens=2048) as server:
        r = make_client(api, server, tmp_path, max_retries=3)
        started = time.monotonic()
        with pytest.raises(PromptTooLong) as info:
            r.chat(long_prompt, options={})
        assert time.monotonic() - started < 2 and info.value.attempts == 1
        assert server.stats()["completions"] == 1 and len(r.cache) == 0
        text = str(info.value)
        if api == "openai":
            assert "exceeds the available context size (2048 tokens)" in text
        else:
            assert "read only 2,048 tokens" in text
        assert "OLLAMA_CONTEXT_LENGTH=8192" in text and "--max-model-len 8192" in text and "-c 8192" in text


def test_the_api_key_is_sent_and_kept_out_of_cache_and_config(scripted_ollama, tmp_path, monkeypatch):
    from llava_sensing_pipeline_tests.support.ollama_test_server import OllamaTestServer

    with OllamaTestServer(backend="scripted", script="fine", api_key="sk-secret-123") as server:
        r = make_client("openai", server, tmp_path)
        with pytest.raises(ServerUnavailable, match="LLAVA_SENSING_LLM_API_KEY or OPENAI_API_KEY"):
            r.check_ready()
        monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")
        assert r.chat(MESSAGES, options={}).text == "fine"
        assert server.stats()["authorized"] >= 1
        assert "sk-secret" not in (tmp_path / "cache.sqlite").read_bytes().decode("latin-1")
        assert "sk-secret" not in repr(r) and "sk-secret" not in str(r.host_metadata())


def test_resume_pays_only_for_the_unanswered_requests(api, scripted_ollama, tmp_path):
    """A run where two of four requests fail (the server answers 500 past the retries): the re-run gets the two
    answered ones from the cache and sends only the other two."""
    failing = {"passage 1", "passage 3"}

    def script(request):
        if request.messages[-1]["content"] in failing:
            from llava_sensing_pipeline_tests.support.ollama_test_server import RequestError

            raise RequestError(500, "injected: the runner crashed")
        return f"answer to {request.messages[-1]['content']}"

    scripted_ollama.set_script(script)
    prompts = [[{"role": "user", "content": f"passage {i}"}] for i in range(4)]
    first = make_client(api, scripted_ollama, tmp_path, max_retries=1)
    outcomes = []
    for messages in prompts:
        try:
            outcomes.append(first.chat(messages, options={"seed": 1}).text)
        except LLMCallFailed:
            outcomes.append(None)
    assert outcomes == ["answer to passage 0", None, "answer to passage 2", None]
    assert scripted_ollama.stats()["completions"] == 2 + 2 * 2
    failing.clear()
    scripted_ollama.reset()
    again = make_client(api, scripted_ollama, tmp_path)
    assert [again.chat(m, options={"seed": 1}).text for m in prompts] == [f"answer to passage {i}" for i in range(4)]
    assert scripted_ollama.stats()["completions"] == 2
