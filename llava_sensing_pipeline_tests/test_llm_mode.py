"""The LLM modes end to end through the CLI and the real ``ollama`` client.

Most tests use the scripted test server (fast, deterministic replies, injected faults); one runs the real
SmolLM2-135M model through xllamacpp, as Ollama would serve it.
"""

import json
import re
import shutil
import sqlite3
from pathlib import Path


from llava_sensing_pipeline.cli import main
from llava_sensing_pipeline_tests.support.ollama_test_server import RequestError
from llava_sensing_pipeline.environment import ENV_FIELDS, analyze_rules
from llava_sensing_pipeline.generation import check_quality

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2:135m"


def passage_of(request) -> str:
    return request.messages[-1]["content"].split('"""')[1]


def reading(prompt: str, name: str) -> str:
    match = re.search(rf"- {name}: (.+)", prompt)
    return match.group(1).strip() if match else ""


def faithful_script(request) -> str:
    """Analysis requests get the rule labels as JSON; generation requests a first-person paragraph that echoes
    the readings in words (so it aligns with the sensor record)."""
    if request.format:
        labels = analyze_rules(passage_of(request)).labels()
        return json.dumps({**labels, "confidence": 0.9})
    prompt = request.messages[-1]["content"]
    cues = ", ".join(x for x in (reading(prompt, n) for n in ("Temperature", "Humidity", "Weather", "Time of day",
                                                                   "Movement"))
                     if x)
    return f"Here is the paragraph:\n\nI register {cues} around me. " + body_for(request.options.get("seed", 0))


NOUNS = ("lantern bridge orchard harbour stairway market chapel meadow quarry archway fountain terrace ferry mill "
         "cloister vineyard tower garden railway pier cottage corridor courtyard bell").split()
ADJECTIVES = ("crooked patient silver narrow hollow ancient quiet amber brittle distant tender restless weathered "
              "gilded sunken humble faded").split()
TEMPLATES = (
    "I pass the {a} {n} and my sensors trace its {a2} edges.",
    "Beyond the {n} I notice a {a} {n2} that seems to watch me.",
    "My attention turns from the {a} {n} to the {n2}, and I wonder who built them.",
    "I remember a {a} {n} from another journey, though I cannot say where it was.",
    "The way to the {n} is {a}, and I keep a careful pace beside the {n2}.",
    "I record the {a} {n} and the {a2} {n2}, yet what I keep is the feeling of passing.",
    "Somewhere near the {n} a door closes, and I listen to the {a} hush that follows.",
    "I think of the people who crossed this {a} {n} before me, and of their errands.",
    "Every surface of the {n} tells me something {a}, and I am grateful to sense it.",
    "When I stop by the {a} {n} at last, the {n2} settles into my memory like dust.",
)


def body_for(seed: int) -> str:
    """Ten first-person sentences whose nouns and adjectives are drawn from the seed, so no two replies are
    near-duplicates (the export removes those)."""
    import random

    rng = random.Random(seed)
    return " ".join(t.format(a=rng.choice(ADJECTIVES), a2=rng.choice(ADJECTIVES), n=rng.choice(NOUNS),
                             n2=rng.choice(NOUNS)) for t in TEMPLATES)


def run(ws, server, mode, *extra):
    return main(["generate", "--mode", mode, "--input-dir", str(ws / "Novel"), "--output-dir", str(ws / "out"),
                 "--model", MODEL, "--ollama-host", server.url, "--parallel", "2", "--max-retries", "1", *extra])


def dataset(ws, mode):
    return json.loads((ws / "out" / f"{mode}_dataset.json").read_text(encoding="utf-8"))


def test_llm_mode_scripted_end_to_end_then_cached(workspace, scripted_ollama, capsys):
    scripted_ollama.set_script(faithful_script)
    assert run(workspace, scripted_ollama, "llm", "--num-examples", "12", "--min-alignment", "0.5") == 0
    data = dataset(workspace, "llm")
    assert len(data) == 12
    for e in data:
        meta = e["metadata"]
        assert meta["generation_method"] == "ollama_llm" and meta["generation_model"] == MODEL
        assert meta["model_digest"] == scripted_ollama.digest and 1 <= meta["generation_attempts"] <= 3
        assert {"generation_options", "generation_seed", "alignment_score", "latency_s", "eval_tokens"} <= set(meta)
        assert not e["target_paragraph"].startswith("Here is")
        assert check_quality(e["target_paragraph"], e["sensor_data"], min_alignment=0.5).ok
        analysis = e["source_info"]["environmental_analysis"]
        assert analysis["source"] == "llm" and "raw_reply" in analysis
    stats = scripted_ollama.stats()
    # one analysis (plus the margin) and one generation per accepted example
    assert stats["chat"] <= 12 * 1.25 + 6 + 12
    # re-materializing everything pays nothing: every reply comes from the cache
    scripted_ollama.reset()
    assert run(workspace, scripted_ollama, "llm", "--num-examples", "12", "--min-alignment", "0.5", "--force") == 0
    assert scripted_ollama.stats()["chat"] == 0
    assert dataset(workspace, "llm") == data


def test_hybrid_mode_keeps_the_source_passage(workspace, scripted_ollama):
    requests = []
    scripted_ollama.set_script(lambda request: requests.append(request) or faithful_script(request))
    assert run(workspace, scripted_ollama, "hybrid", "--num-examples", "6") == 0
    data = dataset(workspace, "hybrid")
    assert len(data) == 6
    for e in data:
        assert e["metadata"]["generation_method"] == "source_excerpt"
        assert e["source_info"]["environmental_analysis"]["source"] == "llm"
        # a hybrid example describes its scene: a known weather, time of day or place
        assert any(e["source_info"]["environmental_analysis"][f] != "unknown"
                   for f in ("weather", "time_of_day", "location"))
    # only analysis requests were made, each chunk at most once
    assert requests and all(r.format for r in requests)
    assert len({passage_of(r) for r in requests}) == len(requests)


def test_invalid_labels_are_validated_and_filled_by_rules(workspace, scripted_ollama):
    def sloppy(request):
        if request.format:
            return json.dumps({"weather": "sunny-ish", "location": "village", "time_of_day": "Dusk",
                               "confidence": "0.95"})
        return faithful_script(request)

    scripted_ollama.set_script(sloppy)
    assert run(workspace, scripted_ollama, "hybrid", "--num-examples", "4", "--confidence-threshold", "0.0") == 0
    from llava_sensing_pipeline.environment import VOCABULARY

    for e in dataset(workspace, "hybrid"):
        norm = e["source_info"]["environmental_analysis_normalized"]
        assert all(norm[f] in VOCABULARY[f] for f in ENV_FIELDS)
        assert norm["time_of_day"] == "evening"


def test_failed_partition_reruns_only_its_unfinished_chunks(workspace, scripted_ollama, capsys):
    """One file's generations fail (HTTP 500) on the first run: only that partition fails, the others are
    exported; the re-run materializes only that partition and pays only for its unfinished chunks."""
    broken = {"on": True}

    def script(request):
        text = request.messages[-1]["content"]
        if broken["on"] and not request.format and "travel novel" in text:
            raise RequestError(500, "injected failure for travel generations")
        return faithful_script(request)

    scripted_ollama.set_script(script)
    assert run(workspace, scripted_ollama, "llm", "--num-examples", "12", "--min-alignment", "0.5",
               "--max-files", "2") == 1
    failed = capsys.readouterr().err.split("file(s) failed")[1]  # after the progress lines
    assert "Travel_Novel/B901_Salt_Roads" in failed and "Modernist_Novel" not in failed
    index = json.loads((workspace / "out" / "chunks" / "chunks_index.json").read_text())
    assert {f["source_path"].split("/")[0] for f in index["failed_files"]} == {"Travel_Novel"}
    assert index["total_examples"] > 0
    analysed_before = scripted_ollama.stats()["chat"]
    broken["on"] = False
    scripted_ollama.reset()
    assert run(workspace, scripted_ollama, "llm", "--num-examples", "12", "--min-alignment", "0.5",
               "--max-files", "2") == 0
    out = capsys.readouterr().out
    assert "2 materialized" in out and "2 up to date" in out  # only the two travel files
    # their analyses were cached by the failed run: only generations are paid for now
    assert 0 < scripted_ollama.stats()["chat"] < analysed_before
    assert len(dataset(workspace, "llm")) == 12


def test_garbage_and_timeouts_beyond_the_failure_share_fail_the_partition(workspace, scripted_ollama, capsys):
    """Garbage (a 200 reply whose JSON is cut off) is a rejected reply: never cached, not asked again (the same
    seeded request gives the same reply), and not a failed request. A timeout is a failed request. Three garbage
    replies, then every request timing out: each file's failed share is above 25 %, so both partitions fail, the
    garbage is not counted among the failures, and no answer was cached (only the garbage's rejection)."""
    scripted_ollama.set_script(faithful_script)
    scripted_ollama.inject_fault("garbage", count=3, path="/api/chat")
    scripted_ollama.inject_fault("timeout", count=10_000, path="/api/chat", seconds=1.5)
    assert run(workspace, scripted_ollama, "llm", "--num-examples", "4", "--max-files", "1", "--max-retries", "0",
               "--ollama-timeout", "0.3") == 1
    err = capsys.readouterr().err
    shares = {key: (int(failed), int(tried)) for key, failed, tried in re.findall(
        r"environment_features (\S+): (\d+) of (\d+) LLM requests failed after retries", err)}
    assert set(shares) == {"Modernist_Novel/A901_The_Glass_Weather", "Travel_Novel/B901_Salt_Roads"}
    assert sorted(tried - failed for failed, tried in shares.values()) == [0, 3]  # one file got the garbage
    served = scripted_ollama.stats()["faults_served"]
    assert served["garbage"] == 3 and served["timeout"] >= sum(failed for failed, _ in shares.values())
    assert not (workspace / "out" / "llm_dataset.json").exists()
    with sqlite3.connect(workspace / "cache.sqlite") as db:  # the garbage is remembered as rejected, never as text
        kept = [json.loads(reply) for (reply,) in db.execute("SELECT reply FROM replies")]
    assert len(kept) == 3 and all(r["rejected"] == "off_schema" and not r["text"] for r in kept)


def test_real_model_llm_and_hybrid(workspace, real_ollama):
    """The real SmolLM2-135M through xllamacpp: contracts only (schema, filter, counts, cache), not prose.

    One file only: a 135M model gets every paragraph of some passages rejected (a contradiction with the
    readings, second person), which fails that partition by design (see the tests below). The replies are
    seeded, so for this file and this code the outcome is the same on every run."""
    shutil.rmtree(workspace / "Novel" / "Travel_Novel")
    relaxed = ["--min-words", "40", "--max-words", "400", "--min-alignment", "0", "--confidence-threshold", "0.0",
               "--max-files", "1", "--num-examples", "2"]
    assert run(workspace, real_ollama, "llm", *relaxed) == 0  # seeded: the same replies on every run
    path = workspace / "out" / "llm_dataset.json"
    assert path.exists(), "no file produced any accepted paragraph"
    data = dataset(workspace, "llm")
    assert 1 <= len(data) <= 2
    for e in data:
        assert check_quality(e["target_paragraph"], e["sensor_data"], min_words=40, max_words=400,
                             min_alignment=0).ok
        assert e["metadata"]["model_digest"] == real_ollama.digest
    real_ollama.reset()
    assert run(workspace, real_ollama, "llm", *relaxed, "--force") == 0
    assert real_ollama.stats()["chat"] == 0  # all from the cache
    assert run(workspace, real_ollama, "hybrid", *relaxed) == 0
    assert len(dataset(workspace, "hybrid")) == 2


def test_every_generation_rejected_writes_no_dataset(workspace, scripted_ollama, capsys):
    def useless(request):
        return faithful_script(request) if request.format else "It was 20 degrees."

    scripted_ollama.set_script(useless)
    assert run(workspace, scripted_ollama, "llm", "--num-examples", "2", "--max-files", "1") == 1
    captured = capsys.readouterr()
    assert "every generated paragraph was rejected by the quality filter" in captured.err
    assert "top reasons: digits" in captured.err and "no dataset was written" in captured.err
    assert not (workspace / "out" / "llm_dataset.json").exists()


def test_a_model_whose_every_paragraph_is_rejected_says_why_and_what_to_relax(workspace, scripted_ollama, capsys):
    def terse(request):
        if request.format:
            return faithful_script(request)
        return "I walk on."  # far below --min-words

    scripted_ollama.set_script(terse)
    status = run(workspace, scripted_ollama, "llm", "--num-examples", "2", "--max-files", "1")
    assert status == 1
    err = capsys.readouterr().err
    assert "every generated paragraph was rejected by the quality filter" in err
    assert "too_short" in err and "--min-words" in err
    assert "Traceback" not in err and "Stack Trace" not in err
