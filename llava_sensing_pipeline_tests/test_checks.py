"""Asset checks: the pure rules on hand-made tables, then the checks inside Dagster runs on the bundled samples."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetCheckSeverity, DagsterInstance, materialize

from llava_sensing_pipeline.assets import environment_features, novel_files, text_chunks
from llava_sensing_pipeline.assets import environment as environment_assets
from llava_sensing_pipeline.checks import (
    FINGERPRINT_SIZE,
    book_fingerprint,
    chunk_problems,
    duplicate_book_problems,
    export_problems,
    files_agree_with_index,
    incomplete_export_problems,
    label_variety_problems,
    load_export,
    load_index,
    prose_problems,
    rejection_problems,
)
from llava_sensing_pipeline.cli import main
from llava_sensing_pipeline.definitions import build_definitions
from llava_sensing_pipeline.jobs import EXPORT_JOB, PER_FILE_JOB
from llava_sensing_pipeline.llm import OllamaResource
from llava_sensing_pipeline.partitions import PARTITIONS_NAME, discover_novels
from llava_sensing_pipeline.settings import PipelineSettings
from llava_sensing_pipeline.text import chunk_text, read_novel
from llava_sensing_pipeline_tests.support.needs import require_corpus

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- pure rules


def chunks(*texts: str) -> pd.DataFrame:
    return pd.DataFrame({"chunk_index": range(len(texts)), "text": list(texts)})


def test_chunk_problems_find_boilerplate_tags_and_long_chunks():
    clean = "The tide produced by the moon ran high. Produced by night, the fog lay on the river."
    assert chunk_problems(chunks(clean), max_chars=200) == []
    bad = chunks(
        "*** START OF THE PROJECT GUTENBERG EBOOK X ***",
        "This eBook is for the use of anyone, see www.gutenberg.org for the licence.\n*** START: FULL LICENSE ***",
        "Some text.\nProduced by Jane Doe and the Online Distributed Proofreading Team",
        "She turned. [Illustration: a ship at anchor] Then she left.",
        "x" * 201,
        "   ",
        "*** END OF THIS TEXT Salt Roads ***",
    )
    problems = chunk_problems(bad, max_chars=200)
    assert "chunk 0: START/END marker" in problems and "chunk 0: 'Project Gutenberg'" in problems
    assert "chunk 1: licence link" in problems and "chunk 1: licence text" in problems
    assert "chunk 2: 'Produced by' credit" in problems
    assert "chunk 3: [Illustration] tag" in problems
    assert "chunk 4: 201 chars > max 200" in problems
    assert "chunk 5: empty" in problems
    assert "chunk 6: START/END marker" in problems


def test_chunk_problems_find_control_characters():
    bad = chunks("A clean first passage.", "\x93The room faced north,\x94 she said.", "Tab\tand bell\x07.",
                 "Two paragraphs.\n\nNothing wrong here.")
    assert chunk_problems(bad, max_chars=200) == ["chunk 1: 2 control characters, first U+0093",
                                                  "chunk 2: 2 control characters, first U+0009"]
    assert chunk_problems(chunks("Bell\x07."), max_chars=200) == ["chunk 0: control character U+0007"]


def novel_chunks(text: str, **sizes) -> pd.DataFrame:
    found = chunk_text(text, **sizes)
    return pd.DataFrame({"chunk_index": [c.index for c in found], "text": [c.text for c in found],
                         "char_start": [c.char_start for c in found], "char_end": [c.char_end for c in found]})


NOVEL = ("The first paragraph tells of the rain on the quay.\n\nCHAPTER II.\n\nThe second one [Illustration: a "
         "ship] goes on about the wind.\n\nThe third is short.\n\nThe fourth paragraph ends the book at night.")


def test_chunk_problems_check_each_chunk_against_its_span_of_the_novel():
    good = novel_chunks(NOVEL, target_chars=60, min_chars=20, max_chars=120)
    assert len(good) == 3 and chunk_problems(good, 120, NOVEL, span_sample=1) == []
    shifted = good.assign(char_start=[0, good.char_start[1] + 4, good.char_start[2]])
    assert chunk_problems(shifted, 120, NOVEL, span_sample=1) == [
        f"chunk 1: text is not the text of its span [{good.char_start[1] + 4}, {good.char_end[1]})"]
    overlapping = good.assign(char_start=[0, good.char_end[0] - 10, good.char_start[2]])
    assert chunk_problems(overlapping, 120, NOVEL, span_sample=1)[0] == (
        f"chunk 1: span [{good.char_end[0] - 10}, {good.char_end[1]}) overlaps the previous chunk, which ends at "
        f"{good.char_end[0]}")
    beyond = good.assign(char_end=[*good.char_end[:2], len(NOVEL) + 5])
    assert chunk_problems(beyond, 120, NOVEL, span_sample=1) == [
        f"chunk 2: span [{good.char_start[2]}, {len(NOVEL) + 5}) is outside the text ({len(NOVEL)} chars)"]
    assert chunk_problems(good.assign(chunk_index=[0, 1, 3]), 120, NOVEL, span_sample=1) == ["chunk indices are not 0..2 in order"]
    swapped = good.assign(text=[good.text[0], good.text[2], good.text[1]])
    assert [p.split(":")[0] for p in chunk_problems(swapped, 120, NOVEL, span_sample=1)] == ["chunk 1", "chunk 2"]
    # by default every eighth chunk's text is compared with its span (all spans are checked)
    assert chunk_problems(shifted, 120, NOVEL) == []
    assert chunk_problems(good.assign(char_start=[4, *good.char_start[1:]]), 120, NOVEL) == [
        f"chunk 0: text is not the text of its span [4, {good.char_end[0]})"]


BAD = REPO / "llava_sensing_pipeline_tests" / "data" / "bad_inputs"
"""Real faults of real corpora, small: a French text, a table of contents with an index, a scraped page repeated
twelve times, and a sample novel re-wrapped as another edition would be (the same book under another name)."""


def corpus_texts() -> dict[str, str]:
    return {p.name: read_novel(p).text for p in sorted(require_corpus().glob("*/*.txt"))}


def test_prose_rule_stops_another_language_and_a_table_of_contents():
    assert prose_problems(read_novel(BAD / "not_english.txt").text) == [
        "not English: 2% of its words are common English words (English prose: over 40 %, the bound 20%); remove the "
        "file or translate it"]
    [problem] = prose_problems(read_novel(BAD / "table_of_contents.txt").text)
    assert problem.startswith("not narrative prose: 12% of its words are lower-case and 44% are numbers")
    assert prose_problems("Too short to judge: 3 4 5.") == []


def test_prose_rule_passes_every_novel_of_the_shared_corpus_and_the_samples():
    texts = {**corpus_texts(), **{p.name: read_novel(p).text for p in sorted((REPO / "Novel").glob("*/*.txt"))}}
    assert {name: prose_problems(text) for name, text in texts.items()} == {name: [] for name in texts}


def rule_labels(path: Path) -> pd.DataFrame:
    settings = PipelineSettings()
    found = chunk_text(read_novel(path).text, settings.chunk_chars, settings.min_chunk_chars, settings.max_chunk_chars)
    frame = pd.DataFrame({"chunk_index": [c.index for c in found], "text": [c.text for c in found],
                          "partition_key": "G/x"})
    return environment_assets.rule_features(frame.assign(chars=frame["text"].str.len()))


def test_label_variety_rule_warns_of_a_page_scraped_over_and_over():
    problems = label_variety_problems(rule_labels(BAD / "repeated_page.txt"))
    assert "weather is 'rain' in 13 of 13 passages: check the file for text repeated throughout, or the model's " \
           "answers" in problems


def test_label_variety_rule_passes_every_novel_of_the_shared_corpus():
    paths = sorted(require_corpus().glob("*/*.txt"))
    assert {p.name: label_variety_problems(rule_labels(p)) for p in paths} == {p.name: [] for p in paths}


def test_duplicate_books_are_found_across_editions_and_not_between_different_books():
    sample = REPO / "Novel" / "Travel_Novel" / "B901_Salt_Roads.txt"
    fingerprints = {"Travel_Novel/B901_Salt_Roads": book_fingerprint(read_novel(sample).text),
                    "Travel_Novel/same_book_rewrapped": book_fingerprint(read_novel(BAD / "same_book_rewrapped.txt").text)}
    assert duplicate_book_problems(fingerprints) == [
        "Travel_Novel/same_book_rewrapped is the same book as Travel_Novel/B901_Salt_Roads (96% of their sentences "
        "shared): remove one of them"]
    corpus = {name: book_fingerprint(text) for name, text in corpus_texts().items()}
    assert duplicate_book_problems(corpus) == []
    assert all(len(f) == FINGERPRINT_SIZE for f in corpus.values())


def test_rejection_rule_bounds_the_share_of_rejected_replies():
    assert rejection_problems({"generation_rejected_replies": 6, "generation_answered": 4}, "generation") == [
        "6 of 10 generation replies rejected (60% > 50%): try a stronger --model, or check the server's chat template"]
    assert rejection_problems({"analysis_rejected_replies": 5, "analysis_answered": 5}, "analysis") == []
    assert rejection_problems({}, "analysis") == []


def test_an_incomplete_export_names_its_failed_files():
    index, _, _ = consistent_export()
    assert incomplete_export_problems(index) == ["G/c.txt: empty"]
    assert incomplete_export_problems({**index, "failed_files": []}) == []


def consistent_export():
    dataset = [{"id": f"a_{i}", "source_info": {"partition_key": "G/a"}} for i in range(3)] + [
        {"id": "b_0", "source_info": {"partition_key": "G/b"}}]
    index = {"total_examples": 4, "total_chunks": 2,
             "chunks": [{"filename": "c_001.json", "start_index": 0, "end_index": 3, "size": 3},
                        {"filename": "c_002.json", "start_index": 3, "end_index": 4, "size": 1}],
             "files": [{"partition_key": "G/a", "source_path": "G/a.txt", "exported": 3},
                       {"partition_key": "G/b", "source_path": "G/b.txt", "exported": 1}],
             "failed_files": [{"partition_key": "G/c", "source_path": "G/c.txt", "reason": "empty"}]}
    return index, dataset, {"c_001.json": dataset[:3], "c_002.json": dataset[3:]}


def test_export_problems_cross_check_index_dataset_and_chunk_files():
    index, dataset, chunk_files = consistent_export()
    assert export_problems(index, dataset, chunk_files) == []
    problems = export_problems({**index, "total_examples": 5}, dataset, {**chunk_files, "c_002.json": None},
                               ["c_003.json"])
    assert problems == ["index says 5 examples, the dataset has 4", "c_002.json: listed in the index but missing",
                        "c_003.json: chunk file not listed in the index"]
    shuffled = {"c_001.json": [dataset[1], dataset[0], dataset[2]], "c_002.json": dataset[3:]}
    assert export_problems(index, dataset, shuffled) == [
        "c_001.json: its 3 ids are not examples 0..2 of the dataset"]
    moved = [dataset[0], dataset[1], dataset[2], {"id": "c_0", "source_info": {"partition_key": "G/c"}}]
    assert export_problems(index, moved, {"c_001.json": moved[:3], "c_002.json": moved[3:]}) == [
        "G/b.txt: index says 1 exported, the dataset has 0",
        "G/c.txt: failed but has 1 examples in the dataset"]
    duplicated = dataset[:3] + [dataset[0]]
    assert "1 duplicate id(s) in the dataset, e.g. a_0" in export_problems(
        index, duplicated, {"c_001.json": duplicated[:3], "c_002.json": duplicated[3:]})


def test_loading_names_a_missing_index(tmp_path):
    for load in (load_index, lambda out: load_export(out, "simple")):
        with pytest.raises(FileNotFoundError, match="chunks_index.json is missing: materialize chunked_json_exports"):
            load(tmp_path)


# ---------------------------------------------------------------- inside Dagster runs


@pytest.fixture
def project(tmp_path):
    """Two sample novels, an ephemeral instance with their partitions, and the definitions' resources."""
    corpus = tmp_path / "Novel"
    for rel in ("Modernist_Novel/A901_The_Glass_Weather.txt", "Travel_Novel/B901_Salt_Roads.txt"):
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "Novel" / rel, corpus / rel)
    settings = PipelineSettings(input_dir=str(corpus), output_dir=str(tmp_path / "out"), num_examples=10)
    defs = build_definitions(settings=settings, storage_dir=str(tmp_path / "storage"),
                             llm=OllamaResource(cache_path=str(tmp_path / "c.sqlite")))
    instance = DagsterInstance.ephemeral()
    keys = [f.key for f in discover_novels(corpus)]
    instance.add_dynamic_partitions(PARTITIONS_NAME, keys)
    return defs, instance, keys, tmp_path


def evaluations(result) -> dict[tuple[str, str | None], bool]:
    return {(e.check_name, e.partition): e.passed for e in result.get_asset_check_evaluations()}


def test_checks_pass_on_a_materialized_partition(project):
    defs, instance, keys, _ = project
    result = materialize([novel_files, text_chunks, environment_features], partition_key=keys[0],
                         resources=defs.resources, instance=instance)
    assert result.success
    assert evaluations(result) == {("is_english_prose", keys[0]): True, ("chunks_are_clean", keys[0]): True,
                                   ("labels_are_varied", keys[0]): True}
    evaluation = result.get_asset_check_evaluations()[0]
    assert evaluation.metadata["problems"].value == 0 and evaluation.target_materialization_data is not None
    assert evaluation.metadata["check_s"].value >= 0


def test_jobs_run_every_check_per_partition_also_in_a_range_run(project):
    defs, instance, keys, tmp_path = project
    job = defs.resolve_job_def(PER_FILE_JOB)
    result = job.execute_in_process(instance=instance, tags={"dagster/asset_partition_range_start": keys[0],
                                                             "dagster/asset_partition_range_end": keys[-1]})
    assert result.success
    checks = ["is_english_prose", "chunks_are_clean", "labels_are_varied"]
    assert evaluations(result) == {(c, k): True for c in checks for k in keys}
    export = defs.resolve_job_def(EXPORT_JOB).execute_in_process(instance=instance)
    assert export.success
    assert evaluations(export) == {("export_is_complete", None): True, ("files_agree_with_index", None): True,
                                   ("no_duplicate_books", None): True}
    # the UI's view: every partition's check result refers to the partition's latest materialization
    infos = instance.event_log_storage.get_asset_check_partition_info(
        [c for c in job.asset_layer.asset_graph.asset_check_keys if c.name in checks])
    assert len(infos) == len(checks) * len(keys) and all(i.is_current for i in infos)
    # a chunk file lost after the export is caught by the consistency check alone (an error, not blocking)
    next((tmp_path / "out" / "chunks").glob("novel_dataset_chunk_*.json")).unlink()
    only_check = defs.resolve_job_def(EXPORT_JOB).get_subset(
        asset_selection=set(), asset_check_selection={files_agree_with_index.check_key})
    result = only_check.execute_in_process(instance=instance)
    assert result.success and evaluations(result) == {("files_agree_with_index", None): False}
    evaluation = result.get_asset_check_evaluations()[0]
    assert evaluation.severity == AssetCheckSeverity.ERROR and not evaluation.blocking
    assert "novel_dataset_chunk_001.json: listed in the index but missing" in evaluation.metadata["first_problems"].value


def test_real_bad_files_fail_their_checks_in_the_cli_and_the_ui_alike(tmp_path, monkeypatch, capsys):
    """The bad fixtures beside two good samples, through the CLI: a French file and a table of contents fail their
    file (blocking: nothing downstream, listed as failed), the scraped page and the duplicate book warn, the
    export is incomplete; the UI reads the same evaluations from the instance."""
    corpus = tmp_path / "Novel" / "Travel_Novel"
    corpus.mkdir(parents=True)
    for path in [REPO / "Novel" / "Travel_Novel" / "B901_Salt_Roads.txt", *sorted(BAD.glob("*.txt"))]:
        shutil.copy(path, corpus / path.name)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLAVA_SENSING_STORAGE_DIR", str(tmp_path / "storage"))
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--input-dir", str(tmp_path / "Novel"), "--output-dir", "out"]) == 1
    err = capsys.readouterr().err
    assert "Travel_Novel/not_english: check is_english_prose failed: not English" in err
    assert "Travel_Novel/table_of_contents: check is_english_prose failed: not narrative prose" in err
    assert "check warning: labels_are_varied Travel_Novel/repeated_page: " in err
    assert "check warning: no_duplicate_books: Travel_Novel/same_book_rewrapped is the same book as " \
           "Travel_Novel/B901_Salt_Roads" in err
    with DagsterInstance.get() as instance:
        latest = {(key.asset_key.to_user_string(), key.name): record for key, record in
                  instance.event_log_storage.get_latest_asset_check_execution_by_key(
                      [k for k in build_definitions().resolve_asset_graph().asset_check_keys]).items()}
    outcome = {name: record.event.dagster_event.event_specific_data.passed for name, record in latest.items()
               if record.event}
    assert outcome[("chunked_json_exports", "export_is_complete")] is False
    assert outcome[("chunked_json_exports", "no_duplicate_books")] is False
    assert outcome[("chunked_json_exports", "files_agree_with_index")] is True
    index = json.loads((tmp_path / "out" / "chunks" / "chunks_index.json").read_text())
    assert [f["source_path"] for f in index["failed_files"]] == ["Travel_Novel/not_english.txt",
                                                                  "Travel_Novel/table_of_contents.txt"]
