"""The environment labels against the hand-labelled evaluation set (data/label_eval), and ``llava-sensing
eval-labels``.

Quality is checked on the held-out split only (204 passages the rules were never tuned on); the targets (precision
0.85 where a label is given, recall 0.5 for weather, time of day and location) and the measured figures are in the
README. Two tests:

- the labels must beat the trivial baselines (precision above the majority label's, F1 above the best baseline's);
- the floors below, set well above the baselines and before the held-out split was measured, are not reached by
  today's rules (held-out precision 0.44-0.50 for the context fields): that test is a strict expected failure, so it
  turns into a failure as soon as the rules reach the floors, and the marker must then go.

The floors:

- precision >= 0.70 for weather, time of day and location: the majority-label baseline's precision is at most 0.15
  on either split, so 0.70 means the analyzer's labels are mostly right, not lucky;
- F1 >= 0.40 for these fields: twice the best baseline's F1 on the dev split (always "indoor": 0.21; the other
  fields' majority labels 0.07 and 0.09; always "unknown": 0);
- accuracy above always answering "unknown" for every field (the old analyzer did no better than that);
- precision >= 0.60 for movement and temperature where at least five labels are given.
"""

import json

import pytest

from llava_sensing_pipeline import label_eval
from llava_sensing_pipeline.cli import main
from llava_sensing_pipeline.environment import VOCABULARY, analyze_rules, rule_label_fills

MODEL = "smollm2:135m"
CONTEXT = ("weather", "time_of_day", "location")


def test_the_set_has_a_hand_label_for_every_passage_in_the_vocabularies():
    passages = label_eval.load_passages()
    gold = label_eval.load_gold()
    assert len(passages) == 340 and {p["id"] for p in passages} == set(gold)
    assert len(label_eval.load_passages(split="heldout")) == 204 and len(label_eval.load_passages(split="dev")) == 136
    for row in gold.values():
        for name in label_eval.EVAL_FIELDS:
            assert row[name] in VOCABULARY[name], (row["id"], name)


def test_wilson_interval():
    assert label_eval.wilson(0, 0) == (0.0, 1.0)
    lo, hi = label_eval.wilson(17, 20)
    assert lo == pytest.approx(0.640, abs=1e-3) and hi == pytest.approx(0.948, abs=1e-3)
    lo, hi = label_eval.wilson(20, 20)
    assert hi == 1.0 and 0.83 < lo < 0.84


def test_field_metrics_count_given_correct_and_known():
    gold = ["rain", "rain", "unknown", "fog", "unknown", "clear"]
    pred = ["rain", "unknown", "clear", "fog", "unknown", "rain"]
    m = label_eval.field_metrics(pred, gold, resamples=200)
    assert (m.given, m.correct, m.known, m.equal) == (4, 2, 4, 3)
    assert m.precision == 0.5 and m.recall == 0.5 and m.f1 == 0.5 and m.accuracy == 0.5
    assert m.precision_ci[0] < 0.5 < m.precision_ci[1] and m.f1_ci[0] <= 0.5 <= m.f1_ci[1]
    none = label_eval.field_metrics(["unknown"] * 3, ["rain", "unknown", "unknown"])
    assert none.precision is None and none.recall == 0.0 and none.f1 == 0.0


def test_baselines_confusion_and_calibration():
    gold = ["indoor", "indoor", "unknown", "sea_voyage", "unknown"]
    b = label_eval.baselines(gold)
    assert b["always_unknown"]["accuracy"] == 0.4 and b["always_unknown"]["f1"] == 0.0
    assert b["majority"]["label"] == "indoor" and b["majority"]["precision"] == 0.4
    c = label_eval.confusion(["indoor", "sea_voyage", "indoor", "unknown", "unknown"], gold)
    assert (c["wrong"], c["labelled_unknown"], c["missed"]) == (1, 1, 1)
    assert c["wrong_pairs"] == [["indoor", "sea_voyage", 1]] and c["missed_by_label"] == {"sea_voyage": 1}
    table = label_eval.calibration([(0.55, True), (0.55, False), (0.95, True)])
    assert [(row["labels"], row["correct"]) for row in table] == [(2, 1), (1, 1)]


def _heldout_report() -> dict:
    passages = label_eval.load_passages(split="heldout")
    return label_eval.evaluate(passages, label_eval.rule_predictions(passages), label_eval.load_gold())


def test_rule_labels_on_the_heldout_split_beat_the_trivial_baselines():
    report = _heldout_report()
    for name, f in report["fields"].items():
        majority = f["baselines"]["majority"]
        if name in CONTEXT or f["given"] >= 5:
            assert f["precision"] > majority["precision"], name
        if name in CONTEXT:
            assert f["f1"] > majority["f1"], name


@pytest.mark.xfail(strict=True, reason="the precision-first rules do not reach these floors on held-out passages yet "
                                       "(README, Label quality)")
def test_rule_labels_on_the_heldout_split_are_well_above_the_baselines():
    report = _heldout_report()
    for name, f in report["fields"].items():
        assert f["accuracy"] > f["baselines"]["always_unknown"]["accuracy"], name
        if name in CONTEXT:
            assert f["precision"] >= 0.70, (name, f["precision"])
            assert f["f1"] >= 0.40, (name, f["f1"])
            assert f["f1"] > 2 * f["baselines"]["majority"]["f1"], name
        elif f["given"] >= 5:
            assert f["precision"] >= 0.60, (name, f["precision"])


def test_eval_labels_prints_figures_baselines_confusion_and_calibration(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["eval-labels", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "split heldout, 204 passages" in text and "rules (simple mode)" in text
    for needle in ("precision [95% CI]", "baselines", "always unknown", "confusion", "calibration", *CONTEXT):
        assert needle in text, needle
    report = json.loads(out.read_text(encoding="utf-8"))
    assert set(report["fields"]) == set(label_eval.EVAL_FIELDS) and report["mode"] == "simple"
    assert main(["eval-labels", "--split", "dev", "--limit", "5"]) == 0
    assert "split dev, 5 passages" in capsys.readouterr().out


def test_eval_labels_hybrid_against_a_scripted_server(scripted_ollama, tmp_path, monkeypatch, capsys):
    """The LLM path: every passage analysed once, replies validated, gaps filled from trustworthy rule labels."""
    monkeypatch.setenv("LLAVA_SENSING_LLM_CACHE", str(tmp_path / "cache.sqlite"))
    scripted_ollama.set_script(lambda request: json.dumps({"weather": "fog", "confidence": 0.8}))
    out = tmp_path / "report.json"
    assert main(["eval-labels", "--mode", "hybrid", "--model", MODEL, "--ollama-host", scripted_ollama.url,
                 "--split", "dev", "--limit", "12", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"LLM analyzer {MODEL}" in text and "split dev, 12 passages" in text
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["fields"]["weather"]["given"] == 12  # the model said fog every time
    assert report["notes"]["failed_requests"] == 0 and scripted_ollama.stats()["chat"] == 12
    passages = label_eval.load_passages(split="dev")[:12]
    filled = sum(rule_label_fills(f, analyze_rules(p["text"])) for p in passages for f in CONTEXT[1:])
    assert report["notes"]["fields_filled_by_rules"] == filled


def test_eval_labels_hybrid_without_a_server_fails_with_the_fix(capsys):
    assert main(["eval-labels", "--mode", "hybrid", "--ollama-host", "http://127.0.0.1:9", "--limit", "1"]) == 1
    assert "ollama serve" in capsys.readouterr().err


def test_eval_labels_hybrid_against_the_real_test_model(real_ollama, tmp_path, monkeypatch, capsys):
    """Contract only: the real model answers through the whole path, and the report comes out."""
    monkeypatch.setenv("LLAVA_SENSING_LLM_CACHE", str(tmp_path / "cache.sqlite"))
    assert main(["eval-labels", "--mode", "hybrid", "--model", MODEL, "--ollama-host", real_ollama.url,
                 "--split", "dev", "--limit", "1", "--max-retries", "1", "--ollama-timeout", "300"]) == 0
    text = capsys.readouterr().out
    assert f"LLM analyzer {MODEL}" in text and "1 passages" in text and "failed_requests 0" in text
    assert real_ollama.stats()["chat"] == 1
