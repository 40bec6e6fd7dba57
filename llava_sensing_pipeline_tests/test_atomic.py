"""Output storage: local paths (atomic rename) and fsspec URLs (one write per object), down to the CLI."""

import importlib.util
import json
import shutil
from pathlib import Path

import fsspec
import pandas as pd
import pytest

from llava_sensing_pipeline.atomic import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_parquet,
    display_location,
    is_remote,
    read_parquet,
    storage_path,
)
from llava_sensing_pipeline.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def memory_root(tmp_path):
    """A fresh folder name on fsspec's in-process ``memory://`` filesystem, removed afterwards."""
    fs = fsspec.filesystem("memory")
    yield tmp_path.name
    if fs.exists(f"/{tmp_path.name}"):
        fs.rm(f"/{tmp_path.name}", recursive=True)


def test_local_locations_stay_plain_paths(tmp_path):
    assert storage_path("data/processed") == Path("data/processed")
    assert storage_path(tmp_path) == tmp_path
    assert storage_path(f"file://{tmp_path}/out") == tmp_path / "out"
    assert type(storage_path(f"file://{tmp_path}")) is type(tmp_path) and not is_remote(storage_path(tmp_path))
    assert display_location(Path("rel")) == str(Path("rel").resolve())


def test_urls_become_upaths(memory_root):
    path = storage_path(f"memory://{memory_root}/out") / "chunks" / "a.json"
    assert is_remote(path) and str(path) == f"memory://{memory_root}/out/chunks/a.json"
    assert display_location(path) == str(path)


def test_unknown_protocol_names_the_location():
    with pytest.raises(ValueError, match=r"nosuch://bucket/x: .*fsspec URL"):
        storage_path("nosuch://bucket/x")


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed")
def test_missing_protocol_package_says_what_to_install():
    with pytest.raises(ImportError, match=r"s3://bucket/out: .*llava_sensing_pipeline\[s3\]"):
        storage_path("s3://bucket/out")


def test_remote_writes_are_whole_objects(memory_root):
    fs = fsspec.filesystem("memory")
    atomic_write_bytes(b"first", f"memory://{memory_root}/a/b.bin")
    atomic_write_bytes(b"second", f"memory://{memory_root}/a/b.bin")
    frame = pd.DataFrame({"x": [1, 2], "t": ["é", "z"]})
    atomic_write_parquet(frame, f"memory://{memory_root}/a/f.parquet")
    assert fs.find(f"/{memory_root}") == [f"/{memory_root}/a/b.bin", f"/{memory_root}/a/f.parquet"]
    assert fs.cat_file(f"/{memory_root}/a/b.bin") == b"second"
    pd.testing.assert_frame_equal(read_parquet(f"memory://{memory_root}/a/f.parquet"), frame)


def test_local_write_that_fails_leaves_the_old_file(tmp_path):
    target = tmp_path / "sub" / "x.json"
    atomic_write_bytes(b"old", target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old" and [p.name for p in target.parent.iterdir()] == ["x.json"]


def test_cli_generate_to_memory_protocol(tmp_path, memory_root, monkeypatch, capsys):
    """The whole pipeline with the Parquet storage and the export on ``memory://``, in one process."""
    shutil.copytree(REPO / "Novel", tmp_path / "Novel", ignore=shutil.ignore_patterns("*.md"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLAVA_SENSING_STORAGE_DIR", f"memory://{memory_root}/st")
    monkeypatch.chdir(tmp_path)
    out = f"memory://{memory_root}/out"
    assert main(["generate", "--input-dir", str(tmp_path / "Novel"), "--output-dir", out, "--max-files", "1",
                 "--num-examples", "8", "--chunk-size", "3"]) == 0
    printed = capsys.readouterr().out
    assert "examples: 8 of 8 requested" in printed and f"dataset: {out}/simple_dataset.json" in printed
    fs = fsspec.filesystem("memory")
    dataset = json.loads(fs.cat_file(f"/{memory_root}/out/simple_dataset.json"))
    index = json.loads(fs.cat_file(f"/{memory_root}/out/chunks/chunks_index.json"))
    assert len(dataset) == 8 and index["total_examples"] == 8 and index["total_chunks"] == 3
    assert [len(json.loads(fs.cat_file(c["file_path"]))) for c in index["chunks"]] == [3, 3, 2]
    assert {e["source_info"]["source_path"].split("/")[0] for e in dataset} == {"Modernist_Novel", "Travel_Novel"}
    assert fs.exists(f"/{memory_root}/out/README.md") and fs.exists(f"/{memory_root}/out/card/labels.png")
    with fs.open(f"/{memory_root}/out/simple_dataset.parquet", "rb") as fh:
        assert list(pd.read_parquet(fh)["id"]) == [e["id"] for e in dataset]
    stored = fs.find(f"/{memory_root}/st/generated_examples")
    assert len(stored) == 2 and all(p.endswith(".parquet") for p in stored)
    # nothing but the Dagster instance was written to the local disk
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Novel", "home"]
