"""End to end through the CLI: Dagster runs against a temporary DAGSTER_HOME on copies of the bundled samples."""

import json
import shutil
import time
from pathlib import Path

import pytest

from llava_sensing_pipeline.cli import main

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ["*** START", "*** END", "Project Gutenberg", "PROJECT GUTENBERG", "Produced by", "[Illustration",
             "http://", "https://"]


def generate(ws, *extra):
    return main(["generate", "--input-dir", str(ws / "Novel"), "--output-dir", str(ws / "out"), *extra])


def exports(ws):
    return {p.relative_to(ws / "out"): p.read_bytes() for p in sorted((ws / "out").rglob("*.json"))}


def test_simple_run_exports_the_stage1_schema(workspace, capsys):
    assert generate(workspace, "--num-examples", "30", "--chunk-size", "7") == 0
    out = capsys.readouterr().out
    assert "examples: 30 of 30 requested" in out
    data = json.loads((workspace / "out" / "simple_dataset.json").read_text(encoding="utf-8"))
    assert len(data) == 30 and len({e["id"] for e in data}) == 30
    for e in data:
        assert set(e) == {"id", "sensor_data", "literary_style", "prompt", "target_paragraph", "source_info", "metadata"}
        assert e["literary_style"] in {"modernist_novel", "travel_novel"}
        assert isinstance(e["sensor_data"]["wind_direction"], int) and 0 <= e["sensor_data"]["wind_direction"] <= 15
        assert len(e["sensor_data"]["imu"]) == 6
        assert e["target_paragraph"] and not any(f in e["target_paragraph"] for f in FORBIDDEN)
        assert e["id"] == f"{Path(e['source_info']['source_path']).stem}_{e['source_info']['chunk_index']}"
        assert "source_link" not in json.dumps(e["metadata"]) and "soure_link" not in json.dumps(e["metadata"])
    genres = {e["source_info"]["source_path"].split("/")[0] for e in data}
    assert genres == {"Modernist_Novel", "Travel_Novel"}
    chunks = sorted((workspace / "out" / "chunks").glob("novel_dataset_chunk_*.json"))
    assert [len(json.loads(c.read_text())) for c in chunks] == [7, 7, 7, 7, 2]
    index = json.loads((workspace / "out" / "chunks" / "chunks_index.json").read_text())
    assert index["total_examples"] == 30 and index["failed_files"] == []
    assert sum(f["exported"] for f in index["files"]) == 30
    assert (workspace / "out" / "simple_dataset.parquet").exists()
    # the runs are recorded in the persistent instance the UI reads
    assert (workspace / "home" / "dagster.yaml").exists()


def test_rerun_is_incremental_and_byte_identical(workspace, capsys):
    assert generate(workspace, "--num-examples", "20") == 0
    first = exports(workspace)
    capsys.readouterr()
    assert generate(workspace, "--num-examples", "20") == 0
    out = capsys.readouterr().out
    assert "0 materialized" in out and "export: up to date" in out
    assert exports(workspace) == first
    # an export setting alone re-exports without re-materializing anything
    assert generate(workspace, "--num-examples", "20", "--chunk-size", "3") == 0
    out = capsys.readouterr().out
    assert "0 materialized" in out and "export: up to date" not in out
    assert generate(workspace, "--num-examples", "20") == 0
    again = exports(workspace)
    assert again[Path("simple_dataset.json")] == first[Path("simple_dataset.json")]
    assert {k for k in again} == {k for k in first}
    capsys.readouterr()
    # a new file changes every file's share of --num-examples: its whole chain, and the others' example selection
    src = next((workspace / "Novel" / "Travel_Novel").glob("*.txt"))
    shutil.copy(src, src.with_name("B999_Copy.txt"))
    assert generate(workspace, "--num-examples", "20") == 0
    out = capsys.readouterr().out
    assert "1 × novel_files missing" in out and "6 × generated_examples has a new code version" in out
    # with the default quota (100 per file) a new file costs exactly one partition
    assert generate(workspace) == 0
    capsys.readouterr()
    shutil.copy(src, src.with_name("B998_Copy.txt"))
    assert generate(workspace) == 0
    out = capsys.readouterr().out
    assert "to materialize: 1 of 8 file(s): 1 × novel_files missing" in out and "1 materialized" in out
    # a changed seed makes every partition stale
    assert generate(workspace, "--num-examples", "20", "--seed", "7") == 0
    out = capsys.readouterr().out
    n_files = len(list((workspace / "Novel").rglob("*.txt")))
    assert f"{n_files} materialized" in out


def test_bad_files_fail_their_own_partition(workspace, capsys):
    (workspace / "Novel" / "Modernist_Novel" / "A998_Empty.txt").write_bytes(b"")
    (workspace / "Novel" / "Travel_Novel" / "B998_Binary.txt").write_bytes(bytes(range(256)) * 40)
    assert generate(workspace, "--num-examples", "12") == 1
    captured = capsys.readouterr()
    assert "A998_Empty" in captured.err and "B998_Binary" in captured.err
    index = json.loads((workspace / "out" / "chunks" / "chunks_index.json").read_text())
    failed = {f["source_path"]: f["reason"] for f in index["failed_files"]}
    assert set(failed) == {"Modernist_Novel/A998_Empty.txt", "Travel_Novel/B998_Binary.txt"}
    assert "empty" in failed["Modernist_Novel/A998_Empty.txt"].lower()
    assert "binary" in failed["Travel_Novel/B998_Binary.txt"].lower()
    assert index["total_examples"] > 0  # the good files were still exported
    # removing the bad files: the run is clean again; their partitions stay until pruned
    (workspace / "Novel" / "Modernist_Novel" / "A998_Empty.txt").unlink()
    (workspace / "Novel" / "Travel_Novel" / "B998_Binary.txt").unlink()
    assert generate(workspace, "--num-examples", "12") == 0
    index = json.loads((workspace / "out" / "chunks" / "chunks_index.json").read_text())
    assert index["failed_files"] == [] and len(index["files"]) == 6
    capsys.readouterr()
    assert main(["prune", "--input-dir", str(workspace / "Novel")]) == 0
    out = capsys.readouterr().out
    assert "deleted partition Modernist_Novel/A998_Empty" in out and "2 partition(s) deleted, 6 kept" in out


def test_smaller_rerun_leaves_no_stale_chunk_files(workspace):
    assert generate(workspace, "--num-examples", "40", "--chunk-size", "5") == 0
    assert generate(workspace, "--num-examples", "10", "--chunk-size", "5") == 0
    chunks = sorted(p.name for p in (workspace / "out" / "chunks").glob("novel_dataset_chunk_*.json"))
    assert chunks == ["novel_dataset_chunk_001.json", "novel_dataset_chunk_002.json"]


def test_max_files_is_per_genre(workspace, capsys):
    assert generate(workspace, "--max-files", "1", "--num-examples", "10") == 0
    data = json.loads((workspace / "out" / "simple_dataset.json").read_text(encoding="utf-8"))
    paths = {e["source_info"]["source_path"] for e in data}
    assert len(paths) == 2 and {p.split("/")[0] for p in paths} == {"Modernist_Novel", "Travel_Novel"}


def test_llm_mode_with_server_down_fails_fast_and_writes_nothing(workspace, capsys):
    started = time.monotonic()
    code = generate(workspace, "--mode", "llm", "--ollama-host", "http://127.0.0.1:9", "--num-examples", "4")
    assert code == 1 and time.monotonic() - started < 15
    err = capsys.readouterr().err
    assert "ollama serve" in err and "127.0.0.1:9" in err
    assert not (workspace / "out").exists()


def test_status_and_backfill_failed_only(workspace, capsys):
    (workspace / "Novel" / "Travel_Novel" / "B997_Blank.txt").write_text("   \n\n  ")
    assert generate(workspace, "--num-examples", "12") == 1
    capsys.readouterr()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "Travel_Novel/B997_Blank" in out and "failed" in out and "6 materialized" in out
    assert main(["status", "--genre", "Modernist_Novel"]) == 0
    assert "Travel_Novel" not in capsys.readouterr().out
    # fix the file, then re-run only what failed or is missing
    src = next((workspace / "Novel" / "Travel_Novel").glob("B901*.txt"))
    shutil.copy(src, workspace / "Novel" / "Travel_Novel" / "B997_Blank.txt")
    assert main(["backfill", "--failed", "--input-dir", str(workspace / "Novel"), "--output-dir",
                 str(workspace / "out"), "--num-examples", "12"]) == 0
    out = capsys.readouterr().out
    assert "1 selected" not in out and "[1/1] Travel_Novel/B997_Blank: ok" in out
    assert main(["status"]) == 0
    assert "7 materialized" in capsys.readouterr().out


def test_status_shows_a_deleted_file_as_gone_not_failed(workspace, capsys):
    """Issue 22, item 2: a failed file deleted afterwards was still listed as failed, with `generate` (which ignores
    it) as the advice; only `prune` clears it."""
    blank = workspace / "Novel" / "Travel_Novel" / "B997_Blank.txt"
    blank.write_text("   \n\n  ")
    assert generate(workspace) == 1  # fixed quotas per file: deleting a file changes no other file's
    blank.unlink()
    capsys.readouterr()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    [row] = [line for line in out.splitlines() if "B997_Blank" in line]
    assert "file gone" in row and "failed" not in row and "prune" in row
    assert "1 file gone, 6 materialized; 0 not up to date" in out and "1 whose file is gone" in out


def test_status_of_one_input_folder_lists_its_new_files_too(workspace, capsys):
    assert generate(workspace, "--num-examples", "12") == 0
    other = workspace / "Other" / "Travel_Novel"
    other.mkdir(parents=True)
    shutil.copy(next((workspace / "Novel" / "Travel_Novel").glob("B901*.txt")), other / "B950_Elsewhere.txt")
    capsys.readouterr()
    assert main(["status", "--input-dir", str(workspace / "Other")]) == 0
    out = capsys.readouterr().out
    assert "Travel_Novel/B950_Elsewhere" in out and "not registered" in out and "Modernist_Novel" not in out
    assert main(["status", "--input-dir", str(workspace / "Novel")]) == 0
    out = capsys.readouterr().out
    assert "B950" not in out and "6 materialized" in out
    assert main(["status", "--input-dir", str(workspace / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_backfill_one_genre(workspace, capsys):
    assert generate(workspace, "--num-examples", "12") == 0
    capsys.readouterr()
    assert main(["backfill", "--genre", "Travel_Novel", "--input-dir", str(workspace / "Novel"), "--output-dir",
                 str(workspace / "out"), "--num-examples", "12"]) == 0
    out = capsys.readouterr().out
    assert "3 materialized" in out and "Modernist_Novel/A90" not in out.split("files:")[0]
    with pytest.raises(SystemExit, match="genres here"):
        main(["backfill", "--genre", "Poetry", "--input-dir", str(workspace / "Novel")])


def test_a_file_outside_both_genres_gets_an_inferred_style(workspace):
    travel = sorted((workspace / "Novel" / "Travel_Novel").glob("*.txt"))[0]
    (workspace / "Novel" / "Essays").mkdir()
    shutil.copyfile(travel, workspace / "Novel" / "Essays" / "E001_Notes.txt")
    assert generate(workspace, "--num-examples", "40") == 0  # one bulk run over every file, the essay included
    data = json.loads((workspace / "out" / "simple_dataset.json").read_text())
    essays = [e for e in data if e["source_info"]["source_path"] == "Essays/E001_Notes.txt"]
    others = [e for e in data if e["source_info"]["source_path"] != "Essays/E001_Notes.txt"]
    assert essays and {e["metadata"]["style_source"] for e in essays} == {"inferred"}
    assert {e["metadata"]["style_source"] for e in others} == {"genre_folder"}


def test_a_windows_1252_novel_keeps_its_quotes_and_records_its_encoding(tmp_path, monkeypatch, capsys):
    """The issue's case: curly quotes in Windows-1252 were read as Latin-1 control characters."""
    import re

    from dagster import AssetKey, DagsterInstance

    from llava_sensing_pipeline.partitions import latest_records

    text = (REPO / "Novel" / "Modernist_Novel" / "A902_A_Room_Facing_North.txt").read_text(encoding="utf-8-sig")
    assert "The room faced north, and so it never had the sun." in text
    text = text.replace("The room faced north, and so it never had the sun.",
                        "\u201cThe room faced north,\u201d she said, \u2018and so\u2019 it never had the sun.")
    corpus = tmp_path / "Novel" / "Modernist_Novel"
    corpus.mkdir(parents=True)
    (corpus / "A902_A_Room_Facing_North.txt").write_bytes(text.encode("cp1252"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLAVA_SENSING_STORAGE_DIR", str(tmp_path / "storage"))
    monkeypatch.chdir(tmp_path)
    assert generate(tmp_path, "--num-examples", "50", "--min-confidence", "0") == 0
    data = json.loads((tmp_path / "out" / "simple_dataset.json").read_text(encoding="utf-8"))
    targets = [e["target_paragraph"] for e in data]
    assert not [t for t in targets if re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", t)]
    import pandas as pd

    chunks = pd.read_parquet(tmp_path / "storage" / "text_chunks" / "Modernist_Novel" /
                             "A902_A_Room_Facing_North.parquet")["text"].tolist()
    assert not [t for t in chunks if re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", t)]
    assert any("\u201cThe room faced north,\u201d she said, \u2018and so\u2019 it never" in t for t in chunks)
    with DagsterInstance.get() as instance:
        key = "Modernist_Novel/A902_A_Room_Facing_North"
        [record] = latest_records(instance, AssetKey("novel_files"), [key]).values()
    assert record.asset_materialization.metadata["encoding"].value == "cp1252"


BAD_FLAGS = [
    (["--num-examples", "-5"], "--num-examples: must be at least 1, got -5"),
    (["--num-examples", "0"], "--num-examples: must be at least 1, got 0"),
    (["--max-files", "0"], "--max-files: must be at least 1, got 0"),
    (["--chunk-size", "0"], "--chunk-size: must be at least 1, got 0"),
    (["--chunk-chars", "-3"], "--chunk-chars: must be at least 1, got -3"),
    (["--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["--parallel", "0"], "--parallel: must be at least 1, got 0"),
    (["--min-confidence", "1.5"], "--min-confidence: must be between 0 and 1, got 1.5"),
    (["--min-confidence", "-0.1"], "--min-confidence: must be between 0 and 1, got -0.1"),
    (["--min-confidence", "nan"], "--min-confidence: must be between 0 and 1, got nan"),
    (["--confidence-threshold", "2"], "--confidence-threshold: must be between 0 and 1, got 2.0"),
    (["--min-alignment", "-1"], "--min-alignment: must be between 0 and 1, got -1.0"),
    (["--near-duplicate-threshold", "0"], "--near-duplicate-threshold: must be above 0 and at most 1, got 0.0"),
    (["--near-duplicate-threshold", "1.1"], "--near-duplicate-threshold: must be above 0 and at most 1, got 1.1"),
    (["--split-ratios", "80,10"], "--split-ratios: need three numbers"),
    (["--split-ratios", "80,-10,30"], "--split-ratios: need three numbers"),
    (["--split-ratios", "0,10,10"], "--split-ratios: need three numbers"),
    (["--split-ratios", "a,b,c"], "--split-ratios: need three numbers"),
    (["--seed", "-1"], "--seed: must be 0 or more, got -1"),
    (["--min-words", "300", "--max-words", "120"], "--min-words (300) must not exceed --max-words (120)"),
    (["--ollama-timeout", "0"], "--ollama-timeout: must be a number of seconds above 0, got 0.0"),
    (["--max-retries", "-1"], "--max-retries: must be 0 or more, got -1"),
    (["--ollama-down-wait", "-1"], "--ollama-down-wait: must be a number of seconds, 0 or more, got -1.0"),
    (["--ollama-down-wait", "inf"], "--ollama-down-wait: must be a number of seconds, 0 or more, got inf"),
    (["--min-chunk-chars", "900"], "need --min-chunk-chars (900) <= --chunk-chars (500) <= --max-chunk-chars (1000)"),
]


@pytest.mark.parametrize(("flags", "message"), BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_invalid_flags_exit_2_with_a_clear_message(workspace, capsys, flags, message):
    assert generate(workspace, *flags) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {message}"), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert not (workspace / "out").exists() and not (workspace / "home").exists()


def test_unparseable_numbers_exit_2(workspace, capsys):
    assert generate(workspace, "--num-examples", "many") == 2
    assert "argument --num-examples: invalid int value: 'many'" in capsys.readouterr().err


def test_input_dir_must_be_an_existing_folder(workspace, capsys):
    assert main(["generate", "--input-dir", str(workspace / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --input-dir {workspace / 'nope'}: no such folder;") and "Modernist_Novel/" in err
    novel = next((workspace / "Novel").rglob("*.txt"))
    assert main(["generate", "--input-dir", str(novel)]) == 2
    assert capsys.readouterr().err.startswith(f"error: --input-dir {novel}: is a file, not a folder;")
    assert main(["backfill", "--input-dir", str(novel)]) == 2


def test_a_model_the_server_does_not_have_exits_2(workspace, scripted_ollama, capsys):
    code = generate(workspace, "--mode", "hybrid", "--ollama-host", scripted_ollama.url, "--model", "nosuch:7b",
                    "--num-examples", "4")
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --model nosuch:7b: model 'nosuch:7b' is not available on")
    assert "smollm2:135m" in err and "ollama pull nosuch:7b" in err
    assert not (workspace / "out").exists()


def test_a_file_that_gives_no_example_is_a_warning_with_its_reason(tmp_path, monkeypatch, capsys):
    """The issue's case: x.txt/ is a folder, so x.txt/inner.txt is a novel (genre x.txt, style inferred); a short
    note gives no usable passage, which the CLI and the index say, naming the file and why."""
    corpus = tmp_path / "Novel"
    for rel in ("Modernist_Novel/A901_The_Glass_Weather.txt", "Travel_Novel/B901_Salt_Roads.txt"):
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "Novel" / rel, corpus / rel)
    (corpus / "x.txt").mkdir()
    (corpus / "x.txt" / "inner.txt").write_text("A short note about nothing in particular.\n")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLAVA_SENSING_STORAGE_DIR", str(tmp_path / "storage"))
    monkeypatch.chdir(tmp_path)
    assert generate(tmp_path, "--num-examples", "12") == 0
    captured = capsys.readouterr()
    index = json.loads((tmp_path / "out" / "chunks" / "chunks_index.json").read_text())
    [entry] = [f for f in index["files"] if f["source_path"] == "x.txt/inner.txt"]
    assert entry["exported"] == 0 and entry["candidates"] == 0 and entry["shortfall_cause"] == "no_usable_passages"
    assert entry["shortfall_reason"] == ("no usable passage: the text gives 1 chunk; 1 shorter than 200 characters "
                                         "(--min-chunk-chars)")
    warning = f"x.txt/inner.txt: no examples: {entry['shortfall_reason']}"
    assert index["warnings"] == [warning]
    assert f"warning: {warning}" in captured.err


# --- A command that fails before it starts leaves the instance as it was (issue 22, reproduction 1) ------------

def test_llm_mode_with_no_server_leaves_the_recorded_settings_as_they_were(workspace, capsys):
    """It used to record LLAVA_SENSING_MODE=llm in DAGSTER_HOME's settings although it wrote nothing: `status` then
    called every file stale and `dagster dev` launched an llm run over every file."""
    from llava_sensing_pipeline.settings import SETTINGS_FILE

    assert main(["generate", "--input-dir", "Novel", "--num-examples", "4"]) == 0
    settings = workspace / "home" / SETTINGS_FILE
    before = settings.read_bytes()
    rc = main(["generate", "--mode", "llm", "--input-dir", "Novel", "--num-examples", "4", "--llm-url",
               "http://127.0.0.1:9"])
    assert rc == 1 and "Nothing was written." in capsys.readouterr().err
    assert settings.read_bytes() == before
    assert main(["status"]) == 0
    assert "stale" not in capsys.readouterr().out.lower()


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_unreadable_recorded_settings_are_an_error_in_the_cli_and_the_ui(workspace, capsys, content):
    from llava_sensing_pipeline.definitions import build_definitions
    from llava_sensing_pipeline.settings import SETTINGS_FILE, SettingsUnreadable

    home = workspace / "home"
    home.mkdir(exist_ok=True)
    (home / SETTINGS_FILE).write_text(content, encoding="utf-8")
    for argv in (["status"], ["generate", "--input-dir", "Novel"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{SETTINGS_FILE} cannot be read" in err and "delete it" in err and "Traceback" not in err
    assert (home / SETTINGS_FILE).read_text(encoding="utf-8") == content  # not overwritten
    with pytest.raises(SettingsUnreadable, match="dagster dev"):  # what the UI's code location shows
        build_definitions()


def test_a_failed_file_is_one_line_once_and_quick_steps_one_line_each(workspace, capsys):
    """Issue 22, reproduction 5: one empty file among 7 printed its ~240-character reason three times, and every
    progress update of every step was a line of its own on a pipe."""
    (workspace / "Novel" / "Travel_Novel" / "B000_Empty.txt").write_bytes(b"")
    assert generate(workspace) == 1
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert text.count("the file is empty") == 1
    reason = next(line for line in text.splitlines() if "the file is empty" in line)
    assert "remove it from the input folder or replace it" in reason  # what, why, what to do
    progress = [line.strip() for line in captured.err.splitlines() if " files, " in line and "ETA" in line]
    assert progress and all(line.split(" files")[0].split()[-1] in ("1/1", "3/3", "6/6", "7/7") for line in progress)


def test_the_cli_defaults_and_the_settings_defaults_are_one_setting():
    """The CLI's --split-ratios default (80,10,10) and the settings' (0.8/0.1/0.1) gave the export two code versions:
    the UI on the CLI's corpus saw another export than the CLI wrote (found by the UI-path test, issue 22)."""
    from llava_sensing_pipeline.settings import PipelineSettings

    assert PipelineSettings(split_ratios=[80, 10, 10]).split_ratios == PipelineSettings().split_ratios == [0.8, 0.1, 0.1]
    assert PipelineSettings(split_ratios="8/1/1").split_ratios == [0.8, 0.1, 0.1]
