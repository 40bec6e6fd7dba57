import json

import pandas as pd
import pytest

from llava_sensing_pipeline.export import (
    INDEX_NAME,
    chunk_filename,
    order_examples,
    select_examples,
    write_export,
)


def _record(i, stem="A1_Book"):
    return {"id": f"{stem}_{i}", "sensor_data": {"temperature": 10.0, "humidity": 50.0, "wind_direction": 3,
            "wind_direction_name": "ENE", "imu": [0, 0, 9.8, 0, 0, 0], "movement": "walking",
            "context": {"scenario": "indoor", "time": "night", "weather": "clear"}},
            "literary_style": "modernist_novel", "prompt": "p", "target_paragraph": f"text {i} é",
            "source_info": {"source_path": f"Modernist_Novel/{stem}.txt", "chunk_index": i},
            "metadata": {"mode": "simple"}}


def _read(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_chunk_file_names():
    assert chunk_filename(1) == "novel_dataset_chunk_001.json"
    assert chunk_filename(1000) == "novel_dataset_chunk_1000.json"


def test_write_export_layout_and_index(tmp_path):
    records = [_record(i) for i in range(7)]
    result = write_export(records, tmp_path, "simple", 3, {"seed": 1})
    assert _read(tmp_path / "simple_dataset.json") == records
    assert "é" in (tmp_path / "simple_dataset.json").read_text(encoding="utf-8")  # ensure_ascii=False
    chunks = sorted((tmp_path / "chunks").glob("novel_dataset_chunk_*.json"))
    assert [len(_read(c)) for c in chunks] == [3, 3, 1]
    index = _read(tmp_path / "chunks" / INDEX_NAME)
    assert index["total_examples"] == 7 and index["chunk_size"] == 3 and index["total_chunks"] == 3
    assert [(c["chunk_number"], c["start_index"], c["end_index"], c["size"]) for c in index["chunks"]] == [
        (1, 0, 3, 3), (2, 3, 6, 3), (3, 6, 7, 1)]
    assert index["original_file"].endswith("simple_dataset.json") and index["split_timestamp"]
    frame = pd.read_parquet(result.parquet_path)
    assert list(frame["id"]) == [r["id"] for r in records]


def test_smaller_rerun_removes_stale_chunk_files(tmp_path):
    write_export([_record(i) for i in range(10)], tmp_path, "simple", 2)
    result = write_export([_record(i) for i in range(3)], tmp_path, "simple", 2)
    names = sorted(p.name for p in (tmp_path / "chunks").glob("novel_dataset_chunk_*.json"))
    assert names == ["novel_dataset_chunk_001.json", "novel_dataset_chunk_002.json"]
    assert result.removed_stale == [chunk_filename(n) for n in (3, 4, 5)]
    assert _read(tmp_path / "chunks" / INDEX_NAME)["total_examples"] == 3


def test_unchanged_rerun_is_byte_identical(tmp_path):
    records = [_record(i) for i in range(5)]
    write_export(records, tmp_path, "simple", 2)
    first = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*.json"))}
    write_export(records, tmp_path, "simple", 2)
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*.json"))} == first


def test_no_temp_files_left(tmp_path):
    write_export([_record(i) for i in range(5)], tmp_path, "simple", 2)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_bad_chunk_size(tmp_path):
    with pytest.raises(ValueError, match="chunk-size"):
        write_export([], tmp_path, "simple", 0)


def test_select_examples_takes_quota_by_rank_and_reports_shortfall():
    frame = pd.DataFrame({"selection_rank": [2, 0, 1],
                          "record_json": [json.dumps(_record(i)) for i in (5, 9, 7)]})
    records, reports = select_examples({"M/A1": frame}, {"M/A1": 2, "M/A2": 4}, {"M/A1": "M/A1.txt", "M/A2": "M/A2.txt"})
    assert [r["id"] for r in records] == ["A1_Book_9", "A1_Book_7"]
    assert [(r.partition_key, r.exported, r.shortfall) for r in reports] == [("M/A1", 2, 0)]
    _, reports = select_examples({"M/A1": frame}, {"M/A1": 5}, {"M/A1": "M/A1.txt"})
    assert reports[0].shortfall == 2 and reports[0].candidates == 3


def test_order_is_seeded_and_mixes():
    records = [_record(i, "A") for i in range(20)] + [_record(i, "B") for i in range(20)]
    a = [r["id"] for r in order_examples(records, 1)]
    assert a == [r["id"] for r in order_examples(list(reversed(records)), 1)]
    assert a != [r["id"] for r in order_examples(records, 2)]
    assert {x[0] for x in a[:10]} == {"A", "B"}


def test_duplicate_ids_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        order_examples([_record(1), _record(1)], 0)
