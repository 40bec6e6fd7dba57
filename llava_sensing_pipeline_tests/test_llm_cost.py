"""The main job's cost and failure modes through the CLI, once per API (issue 21's reproductions 1, 2 and 5).

Each was first run against the code before the ``llm/`` package (Ollama API only) and failed there: 1 sent
hundreds of requests for a weak model, 2 ran on with a silently cut prompt, 5 exported paragraphs that began with
the model's ``<think>`` block.
"""

import itertools
import json
import re
import time
from pathlib import Path

import pytest

from llava_sensing_pipeline.cli import main
from llava_sensing_pipeline.environment import analyze_rules
from llava_sensing_pipeline_tests.support.needs import require_corpus
from llava_sensing_pipeline_tests.support.ollama_test_server import OllamaTestServer
from llava_sensing_pipeline_tests.test_llm_mode import MODEL, dataset, faithful_script, passage_of


@pytest.fixture(params=["ollama", "openai"])
def api(request) -> str:
    return request.param


def run(ws, server, api, *extra, model=MODEL):
    url = server.url if api == "ollama" else f"{server.url}/v1"
    return main(["generate", "--mode", "llm", "--input-dir", str(ws / "Novel"), "--output-dir", str(ws / "out"),
                 "--llm-api", api, "--llm-url", url, "--model", model, "--parallel", "2", "--max-retries", "1",
                 *extra])


def test_a_weak_model_stops_at_the_request_cap(api, workspace, scripted_ollama, capsys):
    """Reproduction 1: every analysis answers with confidence 0.1. Two books, 4 examples asked: at most 10 requests
    per asked example in all (it was 573), and each file fails with the reason and the flag that relaxes it (both
    ended "ok" with no example)."""
    def weak(request):
        if request.format:
            return json.dumps({**analyze_rules(passage_of(request)).labels(), "confidence": 0.1})
        return faithful_script(request)

    scripted_ollama.set_script(weak)
    assert run(workspace, scripted_ollama, api, "--num-examples", "4", "--max-files", "1") == 1
    assert scripted_ollama.stats()["completions"] <= 10 * 4
    err = capsys.readouterr().err
    failed = err.split("2 file(s) failed")[1]
    assert failed.count("0 accepted, fewer than the 1 needed (--min-quota-share of a quota of 2)") == 2
    assert "top reasons: low_confidence (" in err and "relax --confidence-threshold" in err
    assert not (workspace / "out" / "llm_dataset.json").exists()


def test_a_prompt_longer_than_the_server_context_stops_the_run_within_seconds(api, workspace, capsys):
    """Reproduction 2: a server whose context (2,048 tokens) cannot hold the analysis prompt. llama.cpp refuses it
    (OpenAI API), Ollama cuts it silently (native API). The run stops at once with the server's reason and the
    fix; it used to retry for a quarter of an hour."""
    with OllamaTestServer(backend="scripted", script=faithful_script, context_tokens=2048) as server:
        started = time.monotonic()
        assert run(workspace, server, api, "--num-examples", "4") == 1
        assert time.monotonic() - started < 60
        assert server.stats()["completions"] <= 2  # the requests in flight when the first answer came back
    err = capsys.readouterr().err
    assert "PromptTooLong" in err and "The run stopped:" in err
    assert "OLLAMA_CONTEXT_LENGTH=8192" in err and "--max-model-len 8192" in err
    assert ("exceeds the available context size (2048 tokens)" if api == "openai" else "read only 2,048 tokens") in err
    assert "not started (the run stopped" in err


@pytest.mark.parametrize("shape", ["think_tags", "harmony"])
def test_reasoning_models_give_paragraphs_without_their_reasoning(api, workspace, shape):
    """Reproduction 5: a server that answers like deepseek-r1 (``<think>`` in the content) or gpt-oss (the harmony
    analysis channel): no exported paragraph or analysis holds the reasoning."""
    model = "gpt-oss:20b" if shape == "harmony" else "deepseek-r1:8b"
    with OllamaTestServer(backend="scripted", script=faithful_script, model_name=model, reasoning=shape) as server:
        assert run(workspace, server, api, "--num-examples", "6", "--min-alignment", "0.5", model=model) == 0
    data = dataset(workspace, "llm")
    assert len(data) == 6
    for example in data:
        for text in (example["target_paragraph"], example["source_info"]["environmental_analysis"]["raw_reply"]):
            assert "<think>" not in text and "<|channel|>" not in text and "reason about the scene" not in text


REPO = Path(__file__).resolve().parents[1]
WEAK_REPLIES = json.loads((REPO / "llava_sensing_pipeline_tests" / "data" / "bad_inputs" /
                           "weak_model_replies.json").read_text(encoding="utf-8"))["replies"]


def test_a_model_whose_replies_are_mostly_rejected_fails_the_replies_usable_check(workspace, scripted_ollama, capsys):
    """A weak model's real failure shapes (the committed fixture: prose, cut-off JSON, empty, JSON of its own keys),
    four of every five analysis replies, the fifth usable: the files still get what examples they can, and the
    check warns, in the CLI's summary as in the UI."""
    turn = itertools.count()

    def weak(request):
        n = next(turn)
        return WEAK_REPLIES[n % 5] if n % 5 < len(WEAK_REPLIES) else faithful_script(request)

    scripted_ollama.set_script(weak)
    assert main(["generate", "--mode", "hybrid", "--input-dir", str(workspace / "Novel"), "--output-dir",
                 str(workspace / "out"), "--llm-url", scripted_ollama.url, "--model", MODEL, "--parallel", "1",
                 "--max-retries", "0", "--num-examples", "4", "--max-files", "1", "--min-quota-share", "0"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"check warning: replies_usable Modernist_Novel/A901_The_Glass_Weather: \d+ of \d+ analysis "
                     r"replies rejected \(\d+% > 50%\)", err), err


def test_the_replies_usable_check_passes_on_the_shared_corpus(workspace, scripted_ollama, capsys):
    corpus = workspace / "Shared"
    source = require_corpus()
    for genre in ("Modernist_Novel", "Travel_Novel"):
        first = sorted((source / genre).glob("*.txt"))[0]
        (corpus / genre).mkdir(parents=True)
        (corpus / genre / first.name).symlink_to(first)
    scripted_ollama.set_script(faithful_script)
    assert main(["generate", "--mode", "hybrid", "--input-dir", str(corpus), "--output-dir", str(workspace / "out"),
                 "--llm-url", scripted_ollama.url, "--model", MODEL, "--num-examples", "4"]) == 0
    assert "replies_usable" not in capsys.readouterr().err
