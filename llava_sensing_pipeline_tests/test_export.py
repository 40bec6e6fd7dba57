import json

import fsspec
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


def test_split_files_are_written_beside_the_dataset(tmp_path):
    records = [_record(i) for i in range(5)]
    result = write_export(records, tmp_path, "simple", 2, splits={"train": records[:3], "validation": [],
                                                                    "test": records[3:]})
    assert result.split_paths == {name: tmp_path / "splits" / f"{name}.json" for name in ("train", "validation", "test")}
    assert [len(_read(p)) for p in result.split_paths.values()] == [3, 0, 2]
    assert _read(result.split_paths["test"]) == records[3:]


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


def _full_record(stem, genre, i, text):
    record = _record(i, stem)
    record["target_paragraph"] = text
    record["source_info"] = {"source_path": f"{genre}/{stem}.txt", "chunk_index": i, "partition_key": f"{genre}/{stem}"}
    record["metadata"] = {"mode": "simple", "generation_method": "source_excerpt", "novel_metadata": {}}
    return record


def test_export_asset_dedups_splits_and_writes_the_card(tmp_path):
    from llava_sensing_pipeline.assets.export import export_dataset
    from llava_sensing_pipeline.settings import PipelineSettings

    keys, frames = [], {}
    for genre, prefix in (("Modernist_Novel", "A"), ("Travel_Novel", "B")):
        for n in range(3):
            stem, key = f"{prefix}{n}_Book", f"{genre}/{prefix}{n}_Book"
            (tmp_path / "in" / genre).mkdir(parents=True, exist_ok=True)
            (tmp_path / "in" / genre / f"{stem}.txt").write_text(f"text of {stem}", encoding="utf-8")
            texts = [f"{stem} passage {i}: " + " ".join(f"w{n}{i}{k}{prefix}" for k in range(12)) for i in range(6)]
            if key == "Travel_Novel/B2_Book":
                texts[0] = "Modernist_Novel A0 copy: " + texts[0]  # unique
                texts[1] = "A0_Book passage 0: " + " ".join(f"w00{k}A" for k in range(12))  # exact copy of A0's
            keys.append(key)
            frames[key] = pd.DataFrame({"selection_rank": range(6), "record_json": [
                json.dumps(_full_record(stem, genre, i, t)) for i, t in enumerate(texts)]})
    settings = PipelineSettings(input_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"), num_examples=30,
                                export_chunk_size=7, split_ratios=[4, 1, 1])
    import logging

    _, metadata = export_dataset(logging.getLogger("test"), settings, keys, frames, failures={}, notes={},
                                 code_versions={"chunked_json_exports": "abc"})
    out = tmp_path / "out"
    data = _read(out / "simple_dataset.json")
    index = _read(out / "chunks" / INDEX_NAME)
    chunks = [r for p in sorted((out / "chunks").glob("novel_dataset_chunk_*.json")) for r in _read(p)]
    splits = {name: _read(out / "splits" / f"{name}.json") for name in ("train", "validation", "test")}
    assert len(data) == index["total_examples"] == len(chunks) == sum(map(len, splits.values())) == 30
    assert index["deduplication"]["exact"] == 1 and index["deduplication"]["removed_examples"][0]["id"] == "B2_Book_1"
    assert [f["duplicates_removed"] for f in index["files"]] == [0, 0, 0, 0, 0, 1]
    assert all(f["shortfall"] == 0 for f in index["files"])  # B2 took its next-ranked passage instead
    for name, part in splits.items():
        assert sorted({r["source_info"]["source_path"] for r in part}) == index["splits"][name]["novels"]
        assert len(part) == index["splits"][name]["examples"]
    ids = [r["id"] for part in splits.values() for r in part]
    paragraphs = [r["target_paragraph"] for part in splits.values() for r in part]
    assert len(set(ids)) == len(ids) == 30 and len(set(paragraphs)) == 30
    assert {n: len(v["novels"]) for n, v in index["splits"].items()} == {"train": 4, "validation": 1, "test": 1}
    assert index["split_ratios"] == {"train": 0.666667, "validation": 0.166667, "test": 0.166667}
    assert (out / "README.md").is_file() and (out / "card" / "wind_rose.png").is_file()
    assert "Travel_Novel/B2_Book.txt" in (out / "README.md").read_text(encoding="utf-8")
    assert metadata["duplicates_removed"] == 1 and metadata["exact_duplicates_removed"] == 1
    assert metadata["split_novels"].data == {"train": 4, "validation": 1, "test": 1}


@pytest.fixture
def memory_out(tmp_path):
    """A fresh ``memory://`` output folder: its URL and the fsspec filesystem behind it."""
    fs = fsspec.filesystem("memory")
    yield f"memory://{tmp_path.name}/out", fs
    if fs.exists(f"/{tmp_path.name}"):
        fs.rm(f"/{tmp_path.name}", recursive=True)


def test_write_export_to_memory_protocol_matches_local(tmp_path, memory_out):
    url, fs = memory_out
    records = [_record(i) for i in range(7)]
    splits = {"train": records[:4], "validation": records[4:5], "test": records[5:]}
    local = write_export(records, tmp_path / "local", "simple", 3, {"seed": 1}, splits=splits)
    remote = write_export(records, url, "simple", 3, {"seed": 1}, splits=splits)
    root = url.removeprefix("memory://")
    names = sorted(p.relative_to(tmp_path / "local").as_posix() for p in (tmp_path / "local").rglob("*") if p.is_file())
    assert sorted(p.removeprefix(f"/{root}/") for p in fs.find(f"/{root}")) == names  # no temporary objects
    for name in names:
        if name == f"chunks/{INDEX_NAME}":
            continue
        assert fs.cat_file(f"/{root}/{name}") == (tmp_path / "local" / name).read_bytes(), name
    index = json.loads(fs.cat_file(f"/{root}/chunks/{INDEX_NAME}"))
    assert index["original_file"] == f"{url}/simple_dataset.json"
    assert [c["file_path"] for c in index["chunks"]] == [f"{url}/chunks/{chunk_filename(n)}" for n in (1, 2, 3)]
    assert str(remote.index_path) == f"{url}/chunks/{INDEX_NAME}"
    with fs.open(f"/{root}/simple_dataset.parquet", "rb") as fh:
        pd.testing.assert_frame_equal(pd.read_parquet(fh), pd.read_parquet(local.parquet_path))


def test_memory_protocol_rerun_keeps_timestamp_and_removes_stale_chunks(memory_out):
    url, fs = memory_out
    root = url.removeprefix("memory://")
    write_export([_record(i) for i in range(10)], url, "simple", 2)
    first = fs.cat_file(f"/{root}/chunks/{INDEX_NAME}")
    write_export([_record(i) for i in range(10)], url, "simple", 2)
    assert fs.cat_file(f"/{root}/chunks/{INDEX_NAME}") == first  # unchanged: same index, same timestamp
    result = write_export([_record(i) for i in range(3)], url, "simple", 2)
    assert result.removed_stale == [chunk_filename(n) for n in (3, 4, 5)]
    assert sorted(fs.ls(f"/{root}/chunks", detail=False)) == [
        f"/{root}/chunks/{name}" for name in (INDEX_NAME, chunk_filename(1), chunk_filename(2))]


def test_examples_encoded_once_give_exactly_the_indented_json_of_each_file():
    from llava_sensing_pipeline.atomic import dumps_json
    from llava_sensing_pipeline.export import _EncodedRecords

    records = [{"id": f"a_{i}", "text": "line one\nline two — é “q”", "nested": {"list": [1, 2.5, None, True],
                "empty": [], "obj": {}, "deep": [{"k": "v\\n"}]}} for i in range(5)]
    encoded = _EncodedRecords(records)
    assert encoded.array(records) == dumps_json(records)
    assert encoded.array(records[1:3]) == dumps_json(records[1:3])
    assert encoded.array([]) == dumps_json([])
    other = [{"id": "x", "v": [1]}]  # not among the encoded records: encoded on the fly
    assert encoded.array(other + records[:1]) == dumps_json(other + records[:1])
