"""The main job against a real OpenAI-compatible server: llama.cpp's own HTTP server (``xllamacpp``) serving the
SmolLM2-135M test model on loopback (``support/llamacpp_server.py``). Contracts only (export, cache, counts, the
context check), not prose."""

import json
import os
import shutil
import time

from llava_sensing_pipeline.cli import main
from llava_sensing_pipeline.generation import check_quality
from llava_sensing_pipeline_tests.support.llamacpp_server import LlamaCppServer

RELAXED = ["--min-words", "40", "--max-words", "400", "--min-alignment", "0", "--confidence-threshold", "0"]
PREDICTED = "llamacpp:tokens_predicted_total"


def run(ws, server, *extra):
    return main(["generate", "--mode", "llm", "--llm-api", "openai", "--llm-url", server.url, "--model",
                 "smollm2:135m", "--input-dir", str(ws / "Novel"), "--output-dir", str(ws / "out"),
                 "--parallel", "2", *RELAXED, *extra])


def test_llm_mode_on_llama_server_exports_then_rerun_sends_nothing(workspace):
    """One file (a 135M model gets every paragraph of some passages rejected, which fails that partition by design;
    the replies are seeded and one slot serves them in turn, so for this file the outcome is the same on every
    run: batched slots on a CPU can change a seeded reply)."""
    shutil.rmtree(workspace / "Novel" / "Travel_Novel")
    args = ["--max-files", "1", "--num-examples", "2"]
    with LlamaCppServer(parallel=1, threads=os.cpu_count() or 2) as llama_server:
        assert run(workspace, llama_server, *args, "--parallel", "1") == 0
        data = json.loads((workspace / "out" / "llm_dataset.json").read_text(encoding="utf-8"))
        assert 1 <= len(data) <= 2
        predicted = llama_server.metrics()[PREDICTED]
        assert run(workspace, llama_server, *args, "--parallel", "1", "--force") == 0
        assert llama_server.metrics()[PREDICTED] == predicted  # every reply from the cache
    for example in data:
        assert check_quality(example["target_paragraph"], example["sensor_data"], min_words=40, max_words=400,
                             min_alignment=0).ok
        assert example["metadata"]["llm_api"] == "openai" and example["metadata"]["model_digest"].startswith("v1-")
    assert json.loads((workspace / "out" / "llm_dataset.json").read_text(encoding="utf-8")) == data


def test_a_context_too_small_stops_the_run_with_the_servers_reason(workspace, capsys):
    with LlamaCppServer(parallel=1, ctx_per_slot=2048) as server:
        started = time.monotonic()
        assert run(workspace, server, "--num-examples", "4") == 1
        assert time.monotonic() - started < 60
    err = capsys.readouterr().err
    assert "exceeds the available context size (2048 tokens)" in err and "-c 8192" in err
    assert "The run stopped:" in err
