"""The Ollama resource against the scripted test server, through the real ``ollama`` client, with faults."""

import time

import pytest

from llava_sensing_pipeline.ollama_resource import (
    CallStats,
    LLMCallFailed,
    OllamaDown,
    OllamaResource,
    OllamaUnavailable,
    is_outage,
    normalize_host,
    open_cache,
)

MODEL = "smollm2:135m"
MESSAGES = [{"role": "user", "content": "Say something."}]


def resource(url, tmp_path, **kw):
    return OllamaResource(host=url, model=MODEL, cache_path=str(tmp_path / "cache.sqlite"), backoff_s=0.01,
                          timeout_s=kw.pop("timeout_s", 5.0), **kw)


def test_normalize_host():
    assert normalize_host("0.0.0.0:11434") == "http://127.0.0.1:11434"
    assert normalize_host("localhost") == "http://localhost:11434"
    assert normalize_host("https://gpu-box:8443/") == "https://gpu-box:8443"


def test_check_ready_returns_the_digest(scripted_ollama, tmp_path):
    assert resource(scripted_ollama.url, tmp_path).check_ready() == scripted_ollama.digest


def test_missing_model_says_ollama_pull(scripted_ollama, tmp_path):
    r = OllamaResource(host=scripted_ollama.url, model="llama3.1:8b", cache_path=str(tmp_path / "c.sqlite"))
    with pytest.raises(OllamaUnavailable, match=r"ollama pull llama3\.1:8b"):
        r.check_ready()


def test_server_down_says_ollama_serve_and_fails_fast(tmp_path):
    started = time.monotonic()
    with pytest.raises(OllamaUnavailable, match="ollama serve") as info:
        resource("http://127.0.0.1:9", tmp_path).check_ready()
    assert "http://127.0.0.1:9" in str(info.value) and time.monotonic() - started < 6


def test_chat_is_cached_across_resources(scripted_ollama, tmp_path):
    scripted_ollama.set_script("hello there")
    first = resource(scripted_ollama.url, tmp_path).chat(MESSAGES, options={"seed": 1})
    assert first.text == "hello there" and not first.cached and first.attempts == 1
    calls = scripted_ollama.stats()["chat"]
    again = resource(scripted_ollama.url, tmp_path).chat(MESSAGES, options={"seed": 1})
    assert again.cached and again.text == "hello there"
    assert scripted_ollama.stats()["chat"] == calls
    # other options are another request
    resource(scripted_ollama.url, tmp_path).chat(MESSAGES, options={"seed": 2})
    assert scripted_ollama.stats()["chat"] == calls + 1


@pytest.mark.parametrize("kind", ["http500", "disconnect"])
def test_transient_faults_are_retried(scripted_ollama, tmp_path, kind):
    scripted_ollama.set_script("fine")
    scripted_ollama.inject_fault(kind, count=2, path="/api/chat")
    reply = resource(scripted_ollama.url, tmp_path, max_retries=3).chat(MESSAGES, options={})
    assert reply.text == "fine" and reply.attempts == 3


def test_timeouts_are_retried_then_fail_with_a_message(scripted_ollama, tmp_path):
    scripted_ollama.set_script("late")
    scripted_ollama.inject_fault("timeout", count=5, path="/api/chat", seconds=3)
    r = resource(scripted_ollama.url, tmp_path, timeout_s=0.3, max_retries=1)
    started = time.monotonic()
    with pytest.raises(LLMCallFailed, match="after 2 attempts"):
        r.chat(MESSAGES, options={})
    assert time.monotonic() - started < 3


def test_garbage_reply_comes_back_as_text(scripted_ollama, tmp_path):
    scripted_ollama.inject_fault("garbage", path="/api/chat", content="{not json")
    reply = resource(scripted_ollama.url, tmp_path).chat(MESSAGES, options={}, fmt="json")
    assert reply.text == "{not json"


def test_model_removed_mid_run_is_unavailable(scripted_ollama, tmp_path):
    r = resource(scripted_ollama.url, tmp_path)
    r.check_ready()
    gone = OllamaResource(host=scripted_ollama.url, model="other:1b", cache_path=str(tmp_path / "c.sqlite"))
    gone._digest = "x"  # as if it had been checked before the model was removed
    with pytest.raises(OllamaUnavailable, match="ollama pull other:1b"):
        gone.chat(MESSAGES, options={})


def test_response_cache_round_trip(tmp_path):
    cache = open_cache(tmp_path / "c.sqlite")
    cache.put("k", "m", {"text": "t", "eval_count": 3, "eval_duration_s": 0.5})
    assert cache.get("k")["text"] == "t" and cache.get("missing") is None and len(cache) == 1
    cache.close()
    assert open_cache(tmp_path / "c.sqlite").get("k")["eval_count"] == 3


def test_call_stats_summary():
    from llava_sensing_pipeline.ollama_resource import LLMReply

    stats = CallStats()
    stats.record(LLMReply("a", False, 1.0, 100, 2.0, 1))
    stats.record(LLMReply("b", False, 3.0, 100, 2.0, 2))
    stats.record(LLMReply("c", True, 0.0, 100, 2.0, 0))
    stats.record_failure(4)
    s = stats.summary("x")
    assert s["x_llm_calls"] == 7 and s["x_cache_hits"] == 1 and s["x_failed_requests"] == 1
    assert s["x_tokens_per_second"] == 50.0 and s["x_latency_p95_s"] == 3.0


def test_parse_hosts_from_flag_and_env():
    from llava_sensing_pipeline.ollama_resource import parse_hosts

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


def test_a_failed_call_counts_only_the_attempts_it_made(scripted_ollama, tmp_path):
    """An error that is not retried (HTTP 400) is one attempt; a retried one (HTTP 500) is max_retries + 1."""
    from llava_sensing_pipeline_tests.support.ollama_test_server import RequestError

    def refuse(request):
        raise RequestError(400, "invalid request: injected test fault")

    scripted_ollama.set_script(refuse)
    with pytest.raises(LLMCallFailed, match="answered 400") as info:
        resource(scripted_ollama.url, tmp_path, max_retries=3).chat(MESSAGES, options={})
    assert info.value.attempts == 1 == scripted_ollama.stats()["chat"]
    scripted_ollama.reset()
    scripted_ollama.set_script("fine")
    scripted_ollama.inject_fault("http500", count=10, path="/api/chat")
    with pytest.raises(LLMCallFailed, match="after 3 attempts") as info:
        resource(scripted_ollama.url, tmp_path, max_retries=2).chat(MESSAGES, options={"seed": 2})
    assert info.value.attempts == 3 == scripted_ollama.stats()["chat"]


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
    shutil.copy(Path(__file__).resolve().parents[1] / "Novel" / rel, corpus / rel)
    refused = []

    def script(request):
        if not refused:
            refused.append(request)
            raise RequestError(400, "invalid request: injected test fault")
        return json.dumps({"weather": "rain", "time_of_day": "night", "confidence": 0.9})

    scripted_ollama.set_script(script)
    settings = PipelineSettings(input_dir=str(corpus), output_dir=str(tmp_path / "out"), mode="hybrid",
                                num_examples=8)
    resources = {"settings": settings, "parquet_io_manager": PartitionedParquetIOManager(base_dir=str(tmp_path / "s")),
                 "ollama": resource(scripted_ollama.url, tmp_path, max_retries=3)}
    instance = DagsterInstance.ephemeral()
    [key] = [f.key for f in discover_novels(corpus)]
    instance.add_dynamic_partitions(PARTITIONS_NAME, [key])
    result = materialize([novel_files, text_chunks, environment_features], partition_key=key, resources=resources,
                         instance=instance)
    assert result.success and refused
    [materialization] = result.asset_materializations_for_node("environment_features")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["analysis_failed_requests"] == 1
    assert metadata["analysis_llm_calls"] == scripted_ollama.stats()["chat"]


# --- The server going away mid-run (issue 15) -------------------------------------------------------------------

class Log(list):
    """Collects outage messages with the time each was emitted."""

    def __call__(self, message: str) -> None:
        self.append((time.monotonic(), message))

    def texts(self) -> list[str]:
        return [m for _, m in self]


def test_server_gone_waits_the_down_wait_then_fails_and_says_so_at_once(scripted_ollama, tmp_path):
    """Killed: the first request that finds it gone emits one message at once, waits --ollama-down-wait (not the
    request timeout, not per retry), then fails with OllamaDown; later requests fail at once."""
    import re

    r = resource(scripted_ollama.url, tmp_path, down_wait_s=1.5, max_retries=3, timeout_s=60)
    log = Log()
    r.attach_log(log)
    assert r.wait_ready() == scripted_ollama.digest
    r.chat(MESSAGES, options={"seed": 1})
    before = r.outage_counters()
    scripted_ollama.stop()
    started = time.monotonic()
    with pytest.raises(OllamaDown) as info:
        r.chat(MESSAGES, options={"seed": 2})
    waited = time.monotonic() - started
    assert 1.5 <= waited < 3.5
    assert len(log) == 1 and log[0][0] - started < 0.5
    assert re.fullmatch(rf"Ollama at {re.escape(r.url)} unreachable since \d\d:\d\d:\d\d; waiting for it to come "
                        r"back \(up to 1.5 s; Ctrl-C stops, re-running resumes\)", log[0][1])
    assert "still down after waiting 1.5 s (--ollama-down-wait)" in str(info.value)
    assert is_outage(f"OllamaDown: {info.value}") and isinstance(info.value, OllamaUnavailable)
    started = time.monotonic()
    with pytest.raises(OllamaDown):
        r.chat(MESSAGES, options={"seed": 3})
    assert time.monotonic() - started < 0.5 and len(log) == 1
    meta = r.outage_metadata(before)
    assert meta["ollama_outages"] == 1 and meta["ollama_downtime_s"] >= 1.5


def test_server_restarted_within_the_wait_answers_the_request_once(scripted_ollama, tmp_path):
    """Killed, then back on the same port within the wait: the waiting request is sent again once it is back,
    answered once, and uses no retry; one message when it went, one when it came back."""
    import threading

    scripted_ollama.set_script("fine")
    r = resource(scripted_ollama.url, tmp_path, down_wait_s=30, max_retries=0)
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


def test_hung_server_is_found_by_the_health_probe(scripted_ollama, tmp_path):
    """Hung (accepts connections, answers nothing): a request unanswered after probe_after_s gets a health check
    with the short timeout; no reply to it means hung, long before the request timeout: the same wait, then
    OllamaDown. Nothing was answered."""
    import re

    r = resource(scripted_ollama.url, tmp_path, down_wait_s=1.0, probe_after_s=0.5, check_timeout_s=0.5,
                 timeout_s=60)
    log = Log()
    r.attach_log(log)
    r.check_ready()
    scripted_ollama.hang()
    started = time.monotonic()
    with pytest.raises(OllamaDown, match="not answering since"):
        r.chat(MESSAGES, options={"seed": 5})
    assert time.monotonic() - started < 6
    assert len(log) == 1 and re.search(r"not answering since \d\d:\d\d:\d\d \(it accepts connections", log[0][1])
    assert 0.9 <= log[0][0] - started < 2.5
    scripted_ollama.unhang()
    assert scripted_ollama.stats()["answered"] == 0


def test_slow_server_is_told_apart_from_a_hung_one(tmp_path):
    """A slow answer (2 s, probe after 0.3 s): the server answers its health checks, so the request keeps waiting
    and is answered; no outage."""
    from llava_sensing_pipeline_tests.support.ollama_test_server import OllamaTestServer

    with OllamaTestServer(backend="scripted", script="slow but fine", latency=2.0) as slow:
        r = resource(slow.url, tmp_path, down_wait_s=1.0, probe_after_s=0.3, check_timeout_s=0.5, timeout_s=30)
        log = Log()
        r.attach_log(log)
        reply = r.chat(MESSAGES, options={})
        assert reply.text == "slow but fine" and reply.latency_s >= 2.0 and not log
        assert r.outage_metadata((0, 0.0)) == {"ollama_outages": 0, "ollama_downtime_s": 0.0}
        assert slow.stats()["requests_by_path"]["/api/tags"] >= 4  # the probes


def test_wait_ready_waits_for_a_server_that_is_down_when_a_step_starts(scripted_ollama, tmp_path):
    import threading

    r = resource(scripted_ollama.url, tmp_path, down_wait_s=30)
    log = Log()
    r.attach_log(log)
    scripted_ollama.stop()
    threading.Timer(1.0, scripted_ollama.start).start()
    assert r.wait_ready() == scripted_ollama.digest
    assert len(log) == 2 and "waiting for it to come back" in log[0][1] and "is back" in log[1][1]


def test_stop_waiting_ends_the_wait_at_once(scripted_ollama, tmp_path):
    """Ctrl-C during the wait: the step calls stop_waiting() (walk_until_quota's on_interrupt), and the requests
    waiting for the server end at once with OllamaDown instead of after --ollama-down-wait."""
    import threading

    r = resource(scripted_ollama.url, tmp_path, down_wait_s=60)
    r.attach_log(Log())
    r.check_ready()
    scripted_ollama.stop()
    errors = []
    waiting = threading.Thread(target=lambda: errors.append(pytest.raises(OllamaDown, r.chat, MESSAGES, options={})))
    waiting.start()
    time.sleep(1.0)
    started = time.monotonic()
    r.stop_waiting()
    waiting.join(5)
    assert not waiting.is_alive() and time.monotonic() - started < 1.5
    assert "interrupted (Ctrl-C)" in str(errors[0].value)


def test_stop_waiting_abandons_a_slow_request_without_blaming_the_host(tmp_path):
    """Ctrl-C while a request waits for a slow (healthy) answer: it is abandoned at once, and no outage is
    reported for a host that did nothing wrong."""
    import threading

    from llava_sensing_pipeline_tests.support.ollama_test_server import OllamaTestServer

    with OllamaTestServer(backend="scripted", latency=10.0) as slow:
        r = resource(slow.url, tmp_path, probe_after_s=0.2, timeout_s=60)
        log = Log()
        r.attach_log(log)
        r.check_ready()
        errors = []
        waiting = threading.Thread(target=lambda: errors.append(pytest.raises(OllamaDown, r.chat, MESSAGES,
                                                                              options={})))
        waiting.start()
        time.sleep(0.5)
        r.stop_waiting()
        waiting.join(5)
        assert not waiting.is_alive() and "interrupted (Ctrl-C)" in str(errors[0].value)
        assert not log and r.host_metadata()[slow.url]["healthy"]
