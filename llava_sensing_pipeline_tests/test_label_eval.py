"""The environment labels against the hand-labelled evaluation sets (data/label_eval), and ``llava-sensing
eval-labels``.

Round 1 (340 passages, ``dev``) is what the rules were designed on and their per-field decisions fitted on, with
leave-one-book-out cross-validation; rounds 2 and 3 (400 + 300 new passages, each labelled by two new annotators,
``heldout``) were drawn after the rules were frozen and never tuned on. The issue's targets are precision >= 0.85 for
every field where a label is given and recall >= 0.5 for weather, time of day and location; the figures are in the
README. Quality is checked on the held-out rounds:

- the labels must beat the trivial baselines: precision above the majority label's for every labelled field,
  accuracy at least always answering "unknown", and F1 above the majority label's for weather and time of day
  (location's recall is too low for that: it is labelled only on heavy evidence);
- the issue's targets, which the held-out rounds do not meet (precision: weather 0.52, time of day 0.57, location
  0.72): a
  strict expected failure, so it turns into a failure as soon as the rules reach them, and the marker must then go.

The rule decisions in environment/rules.py must be what the cross-validated fit on round 1 gives.
"""

import json

import numpy as np
import pytest

from llava_sensing_pipeline import label_eval
from llava_sensing_pipeline.cli import main
from llava_sensing_pipeline.environment import VOCABULARY, analyze_rules, rule_label_fills

MODEL = "smollm2:135m"
CONTEXT = ("weather", "time_of_day", "location")


def test_the_sets_have_a_hand_label_for_every_passage_in_the_vocabularies():
    dev, heldout = label_eval.load_passages(split="dev"), label_eval.load_passages(split="heldout")
    gold = label_eval.load_gold()
    assert len(dev) == 340 and len(heldout) == 700 and len(label_eval.load_passages(split="all")) == 1040
    assert len({p["id"] for p in dev + heldout}) == 1040 and {p["id"] for p in dev + heldout} == set(gold)
    assert len({label_eval.book_of(p) for p in dev}) == 14
    for row in gold.values():
        for name in label_eval.EVAL_FIELDS:
            assert row[name] in VOCABULARY[name], (row["id"], name)
    agreement = label_eval.load_agreement(split="heldout")
    assert set(agreement) == set(label_eval.EVAL_FIELDS) and min(a["cohen_kappa"] for a in agreement.values()) > 0.8


def test_cohen_kappa():
    assert label_eval.cohen_kappa(["a", "b", "a", "b"], ["a", "b", "a", "b"]) == 1.0
    assert label_eval.cohen_kappa(["a", "a", "b", "b"], ["a", "b", "a", "b"]) == 0.0  # agreement by chance only
    assert label_eval.cohen_kappa(["u", "u", "u"], ["u", "u", "u"]) == 1.0
    assert label_eval.cohen_kappa(["a", "a", "a", "b"], ["a", "a", "b", "b"]) == pytest.approx(0.5)


def test_missing_round_is_a_clear_error(tmp_path):
    (tmp_path / "passages.json").write_text("[]", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="held-out set is missing"):
        label_eval.load_passages(tmp_path, "heldout")
    assert main(["eval-labels", "--data", str(tmp_path)]) == 2


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


def test_the_rule_decisions_are_the_cross_validated_fit_on_round_1():
    fit = label_eval.fit_rule_decisions(label_eval.load_passages(split="dev"), label_eval.load_gold())
    in_use = label_eval.rule_decisions_in_use()
    for name, f in fit["fields"].items():
        assert f["threshold"] == in_use[name]["threshold"], name
        if f["threshold"] is not None:
            assert f["dominance"] == in_use[name]["dominance"], name
            assert tuple(f["confidence"]) == tuple(in_use[name]["confidence"]), name
    # the expected quality on unseen books, as the README states it
    cv = {name: (f["cv"]["correct"], f["cv"]["given"]) for name, f in fit["fields"].items()}
    assert cv["weather"] == (11, 12) and cv["time_of_day"] == (19, 21) and cv["location"] == (10, 11)
    assert fit["fields"]["movement"]["threshold"] is None and fit["fields"]["temperature_hint"]["threshold"] is None


def test_fit_chooses_the_loosest_setting_that_reaches_the_target():
    grid = label_eval._FieldGrid(settings=[(3.0, 2.0), (2.0, 2.0), (1.0, 2.0)],
                                 given=np.array([[1, 1, 1], [1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 1]], bool),
                                 correct=np.array([[1, 1, 1], [1, 1, 1], [0, 1, 1], [0, 0, 0], [0, 0, 0]], bool),
                                 strong=np.zeros((5, 3), bool))
    rows = np.ones(5, bool)
    assert label_eval._choose(grid, rows) == 1  # 3 of 3 right; the loosest setting is 3 of 5
    assert label_eval._choose(grid, np.array([1, 0, 0, 1, 1], bool)) is None  # fewer than MIN_LABELS right
    assert label_eval._confidence_table(np.array([0, 0, 1], bool), np.array([1, 0, 1], bool)) == (0.5, 0.67)
    assert label_eval._confidence_table(np.array([0, 0, 1], bool), np.array([1, 1, 0], bool)) == (0.6, 0.6)


def _heldout_report() -> dict:
    passages = label_eval.load_passages(split="heldout")
    return label_eval.evaluate(passages, label_eval.rule_predictions(passages), label_eval.load_gold())


def test_rule_labels_on_the_held_out_rounds_beat_the_trivial_baselines():
    report = _heldout_report()
    for name, f in report["fields"].items():
        baselines = f["baselines"]
        assert f["accuracy"] >= baselines["always_unknown"]["accuracy"], name
        if f["given"]:
            assert f["precision"] > baselines["majority"]["precision"], name
        if name in ("weather", "time_of_day"):
            assert f["f1"] > baselines["majority"]["f1"], name


@pytest.mark.xfail(strict=True, reason="the rules do not reach the issue's targets on the held-out rounds (README, Label quality)")
def test_rule_labels_on_the_held_out_rounds_meet_the_targets():
    report = _heldout_report()
    for name, f in report["fields"].items():
        if f["given"]:
            assert f["precision"] >= 0.85, (name, f["precision"])
        if name in CONTEXT:
            assert f["recall"] >= 0.5, (name, f["recall"])


def test_eval_labels_prints_figures_baselines_confusion_and_calibration(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["eval-labels", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "split heldout (rounds 2 and 3, held out), 700 passages" in text and "rules (simple mode)" in text
    for needle in ("precision [95% CI]", "baselines", "always unknown", "confusion", "calibration", *CONTEXT):
        assert needle in text, needle
    report = json.loads(out.read_text(encoding="utf-8"))
    assert set(report["fields"]) == set(label_eval.EVAL_FIELDS) and report["mode"] == "simple"
    assert main(["eval-labels", "--split", "dev", "--limit", "5"]) == 0
    assert "split dev (round 1, designed and fitted on), 5 passages" in capsys.readouterr().out


def test_eval_labels_cv_prints_the_fit_and_checks_the_analyzer_uses_it(tmp_path, capsys):
    out = tmp_path / "fit.json"
    assert main(["eval-labels", "--cv", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "leave-one-book-out cross-validation" in text and "340 passages of 14 books" in text
    assert "the analyzer's decisions (environment/rules.py) are this fit's" in text
    fit = json.loads(out.read_text(encoding="utf-8"))
    assert set(fit["fields"]) == set(label_eval.EVAL_FIELDS) and fit["calibration"]


def test_eval_labels_hybrid_against_a_scripted_server(scripted_ollama, tmp_path, monkeypatch, capsys):
    """The LLM path: every passage analysed once, replies validated, gaps filled from trustworthy rule labels."""
    monkeypatch.setenv("LLAVA_SENSING_LLM_CACHE", str(tmp_path / "cache.sqlite"))
    scripted_ollama.set_script(lambda request: json.dumps({"weather": "fog", "confidence": 0.8}))
    out = tmp_path / "report.json"
    assert main(["eval-labels", "--mode", "hybrid", "--model", MODEL, "--ollama-host", scripted_ollama.url,
                 "--split", "dev", "--limit", "12", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"LLM analyzer {MODEL}" in text and "12 passages" in text
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


def test_eval_labels_hybrid_leaves_unanswered_passages_out_and_exits_1(scripted_ollama, tmp_path, monkeypatch,
                                                                        capsys):
    """Issue 22, reproduction 4: failed requests were scored as "unknown" predictions and the command exited 0."""
    monkeypatch.setenv("LLAVA_SENSING_LLM_CACHE", str(tmp_path / "cache.sqlite"))
    answers = iter(['{"weather": "fog", "confidence": 0.8}', "not JSON at all"] * 2)
    scripted_ollama.set_script(lambda request: next(answers))
    out = tmp_path / "report.json"
    assert main(["eval-labels", "--mode", "hybrid", "--model", MODEL, "--ollama-host", scripted_ollama.url,
                 "--split", "dev", "--limit", "4", "--parallel", "1", "--json", str(out)]) == 1
    err = capsys.readouterr().err
    assert "2 of 4 passage(s) got no usable reply" in err and "left out of the figures, which cover 2" in err
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["passages"] == 2 and report["fields"]["weather"]["given"] == 2
