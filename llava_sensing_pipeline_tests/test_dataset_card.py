import hashlib
import json
import re

import pytest

from llava_sensing_pipeline import dataset_card
from llava_sensing_pipeline.curation import plan_splits
from llava_sensing_pipeline.dataset_card import (
    CARD_NAME,
    EXCERPT_CHARS,
    PLOT_FILES,
    PLOTS_DIR,
    corpus_manifest,
    input_licence_note,
    plot_values,
    short_example,
    write_dataset_card,
)
from llava_sensing_pipeline.export import write_export

SCENARIOS = ["indoor", "city_walking", "sea_voyage", "forest_exploration"]
TIMES = ["night", "morning", "unknown"]
NOVELS = [f"Modernist_Novel/A00{i}_Book.txt" for i in range(1, 5)] + [f"Travel_Novel/B00{i}_Trip.txt"
                                                                      for i in range(1, 5)]
CODE = {"chunked_json_exports": "abc123", "novel_files": "def456"}


def _record(i: int, novel: str, mode: str = "simple") -> dict:
    stem = novel.rsplit("/", 1)[-1][:-4]
    scenario = SCENARIOS[i % len(SCENARIOS)]
    meta = {"mode": mode, "generation_method": "source_excerpt" if mode == "simple" else "ollama_llm",
            "novel_metadata": {"title": stem.replace("_", " "), "author": "An Author"}}
    if mode == "llm":
        meta.update(generation_model="tiny:1b", model_digest="sha256:feedbeef")
    return {
        "id": f"{stem}_{i}",
        "sensor_data": {"temperature": round(-3 + (i * 7) % 35, 1), "humidity": float(20 + (i * 13) % 80),
                        "wind_direction": 0 if scenario == "indoor" else i % 16, "wind_direction_name": "N",
                        "imu": [0.1 * (i % 5), -0.2, 9.8, 0.01, 0.0, -0.01], "movement": ["still", "walking"][i % 2],
                        "context": {"scenario": scenario, "time": TIMES[i % 3], "weather": "clear",
                                    "wind": "calm" if i == 7 else "breeze"}},
        "literary_style": "modernist_novel" if novel.startswith("Modernist") else "travel_novel",
        "prompt": "p",
        "target_paragraph": f"Passage {i} of {stem}. " + "The wind moved over the water and the light changed. " * 8,
        "source_info": {"source_path": novel, "chunk_index": i},
        "metadata": meta,
    }


def _export(tmp_path, mode="simple", n=40):
    records = [_record(i, NOVELS[i % len(NOVELS)], mode) for i in range(n)]
    plan = plan_splits(records, [0.8, 0.1, 0.1], seed=3)
    out = tmp_path / "out"
    result = write_export(records, out, mode, 10, index_extra={
        "seed": 3, "requested_examples": n + 2, "files": [], "failed_files": [], "split_ratios": plan.ratios,
        "splits": plan.summary, "split_warnings": plan.warnings,
        "deduplication": {"removed": 2, "exact": 1, "near": 1, "method": "MinHash test"}},
        splits=plan.split_records(records))
    index = json.loads(result.index_path.read_text(encoding="utf-8"))
    return records, index, out


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    for i, novel in enumerate(NOVELS):
        path = root / novel
        path.parent.mkdir(parents=True, exist_ok=True)
        header = "The Project Gutenberg eBook of a book\n" if i % 2 else "Title:An invented book\n"
        path.write_text(header + f"Body of {novel}.\n", encoding="utf-8")
    (root / "README.md").write_text("# Corpus\n\nAbout it.\n\n## Licence\nAll public domain.\n\nReally.\n\n"
                                    "## Format\nCRLF.\n", encoding="utf-8")
    return root


def test_card_describes_the_export_and_links_its_plots(tmp_path, corpus):
    records, index, out = _export(tmp_path)
    manifest = corpus_manifest(corpus, NOVELS)
    card = write_dataset_card(out, records, index, manifest, CODE, input_licence_note(corpus))
    text = card.read_text(encoding="utf-8")
    assert card == out / CARD_NAME
    for heading in ("## How it was made", "## Corpus manifest", "## Counts", "## Label distributions",
                    "## Sensor values", "## Example records", "## Known limitations", "## Licence"):
        assert heading in text
    for name in PLOT_FILES.values():
        assert f"]({PLOTS_DIR}/{name})" in text
        assert (out / PLOTS_DIR / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    digest = hashlib.sha256((corpus / NOVELS[0]).read_bytes()).hexdigest()
    assert f"`{digest}`" in text
    assert "| simple | 40 | 100.0 % |" in text
    for split, info in index["splits"].items():
        assert f"| {split} | {len(info['novels'])} | {info['examples']} |" in text
    assert "| night | 14 | 35.0 % |" in text and "| sea_voyage | 10 | 25.0 % |" in text
    assert "Seed: 3" in text and "duplicates removed: 2 (1 exact, 1 near)" in text and "| chunked_json_exports | abc123 |" in text
    assert "none (no example was written by a model)" in text
    assert text.count("```json") == 3
    assert "> All public domain." in text and "> Really." in text and "CRLF" not in text
    assert "4 of 8 source file(s) carry a Project Gutenberg header" in text
    assert '"imu": [0.0, -0.2, 9.8, 0.01, 0.0, -0.01]' in text
    assert index["split_timestamp"] not in text


def test_unchanged_export_rewrites_nothing_and_skips_the_plots(tmp_path, corpus, monkeypatch):
    records, index, out = _export(tmp_path)
    manifest = corpus_manifest(corpus, NOVELS)
    write_dataset_card(out, records, index, manifest, CODE)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.rglob("*")) if p.is_file()}

    def no_render(values):
        raise AssertionError("plots re-rendered although the data did not change")

    monkeypatch.setattr(dataset_card, "render_plots", no_render)
    write_dataset_card(out, records, index, manifest, CODE)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.rglob("*")) if p.is_file()} == before
    records[0]["sensor_data"]["temperature"] = 30.5
    with pytest.raises(AssertionError, match="re-rendered"):
        write_dataset_card(out, records, index, manifest, CODE)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_llm_provenance_is_in_the_card(tmp_path, corpus, monkeypatch):
    monkeypatch.setattr(dataset_card, "render_plots", lambda values: {k: b"png" for k in PLOT_FILES})
    records, index, out = _export(tmp_path, mode="llm", n=12)
    text = write_dataset_card(out, records, index, corpus_manifest(corpus, NOVELS), CODE).read_text(encoding="utf-8")
    assert "`tiny:1b` (digest `sha256:feedbeef`, 12 examples)" in text
    assert "`ollama_llm` (12)" in text and "written by a language model" in text


def test_manifest_marks_missing_files_and_gutenberg_headers(corpus):
    rows = corpus_manifest(corpus, [NOVELS[1], NOVELS[0], "Travel_Novel/Gone.txt", NOVELS[0]])
    assert [r["source_path"] for r in rows] == [NOVELS[0], NOVELS[1], "Travel_Novel/Gone.txt"]
    assert [r["gutenberg"] for r in rows] == [False, True, False]
    assert rows[2]["sha256"] is None and rows[0]["bytes"] == (corpus / NOVELS[0]).stat().st_size


def test_licence_note(tmp_path, corpus):
    assert input_licence_note(corpus) == "All public domain.\n\nReally."
    assert input_licence_note(tmp_path) is None
    (tmp_path / "README.md").write_text("# Texts\nNo rights section.\n", encoding="utf-8")
    assert input_licence_note(tmp_path) is None


def test_wind_rose_shows_only_outdoor_examples_with_a_wind():
    """Issue 22, reproduction 3: the rose, titled "outdoor examples", counted examples whose scene is unknown."""
    records = [_record(i, NOVELS[0]) for i in range(8)]
    records[1]["sensor_data"]["context"]["scenario"] = "unknown"
    values = plot_values(records)
    shown = [r for r in records if r["sensor_data"]["context"]["scenario"] not in ("indoor", "unknown")
             and r["sensor_data"]["context"]["wind"] == "breeze"]
    assert sum(values["wind"].values()) == len(shown) == 4
    assert values["labels"]["scenario"]["indoor"] == 2 and len(values["imu"]) == 6


def test_short_example_cuts_the_paragraph_and_drops_the_prompt():
    example = short_example(_record(1, NOVELS[0]))
    assert set(example) == {"id", "sensor_data", "literary_style", "target_paragraph", "source_info"}
    assert len(example["target_paragraph"]) <= EXCERPT_CHARS + 2 and example["target_paragraph"].endswith(" …")
    assert re.match(r"Passage 1 of A001_Book\.", example["target_paragraph"])
