"""The rule analyzer against hand labels of real passages (data/labelled_passages.json; see its "about",
"sampling" and "guidelines"). The passages are read from ../shared/corpus by byte range, after checking each file's
sha256 against MANIFEST.tsv; without the corpus the test is skipped, and fails in CI (support/needs.py). Run with ``-s``
to see the figures."""

import csv
import hashlib
import json
from pathlib import Path

from llava_sensing_pipeline.environment import VOCABULARY, analyze_rules
from llava_sensing_pipeline_tests.support.needs import require_corpus

LABELS = Path(__file__).parent / "data" / "labelled_passages.json"
FIELDS = ("time_of_day", "weather", "location")
# Agreement reached when the labels were made (29/36, 28/36, 18/36), less a margin below one passage (1/36).
MIN_AGREEMENT = {"time_of_day": 0.80, "weather": 0.77, "location": 0.49}


def _passages() -> list[dict]:
    return json.loads(LABELS.read_text(encoding="utf-8"))["passages"]


def _manifest(corpus: Path) -> dict[str, str]:
    with open(corpus / "MANIFEST.tsv", encoding="utf-8", newline="") as fh:
        return {f"{row['genre']}/{row['file']}": row["sha256"] for row in csv.DictReader(fh, delimiter="\t")}


def test_labels_are_in_the_analyzer_vocabulary():
    passages = _passages()
    assert 30 <= len(passages) <= 40
    assert len({(p["file"], p["byte_start"]) for p in passages}) == len(passages)
    for p in passages:
        for name in FIELDS:
            assert p[name] in VOCABULARY[name], (p["file"], name, p[name])
        assert 0 <= p["byte_start"] < p["byte_end"] and len(p["starts_with"]) <= 40


def test_rule_analyzer_agreement_with_hand_labels():
    corpus = require_corpus()
    manifest = _manifest(corpus)
    agree = {name: 0 for name in FIELDS}
    passages = _passages()
    for p in passages:
        data = (corpus / p["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == manifest[p["file"]] == p["sha256"], f"{p['file']} changed"
        text = data[p["byte_start"] : p["byte_end"]].decode("utf-8")
        assert text.startswith(p["starts_with"]), (p["file"], p["byte_start"])
        labels = analyze_rules(text).labels()
        for name in FIELDS:
            agree[name] += labels[name] == p[name]  # "unknown" agrees only with an "unknown" hand label
    figures = {name: agree[name] / len(passages) for name in FIELDS}
    print("\nrule analyzer vs hand labels: " + ", ".join(
        f"{name} {agree[name]}/{len(passages)} = {figures[name]:.1%}" for name in FIELDS))
    for name in FIELDS:
        assert figures[name] >= MIN_AGREEMENT[name], f"{name} agreement fell to {figures[name]:.1%}"
