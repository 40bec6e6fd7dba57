"""The Ollama resource against the scripted test server, through the real ``ollama`` client, with faults."""

import time

import pytest

from llava_sensing_pipeline.ollama_resource import (
    CallStats,
    LLMCallFailed,
    OllamaResource,
    OllamaUnavailable,
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
