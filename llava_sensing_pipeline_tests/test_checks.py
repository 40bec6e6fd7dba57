"""Asset checks: the pure rules on hand-made tables, then the checks inside Dagster runs on the bundled samples."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetCheckSeverity, DagsterEventType, DagsterInstance, materialize

from llava_sensing_pipeline.assets import environment_features, novel_files, sensor_records, text_chunks
from llava_sensing_pipeline.assets._partitioned import FAILED_PARTITIONS_KEY
from llava_sensing_pipeline.assets import environment as environment_assets
from llava_sensing_pipeline.checks import (
    chunk_problems,
    example_problems,
    export_problems,
    files_agree_with_index,
    label_problems,
    load_export,
    load_index,
    quota_problems,
    sensor_problems,
)
from llava_sensing_pipeline.definitions import build_definitions
from llava_sensing_pipeline.jobs import EXPORT_JOB, PER_FILE_JOB
from llava_sensing_pipeline.ollama_resource import OllamaResource
from llava_sensing_pipeline.partitions import PARTITIONS_NAME, discover_novels
from llava_sensing_pipeline.settings import PipelineSettings

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


def test_label_problems_name_the_field_and_value():
    frame = pd.DataFrame({"chunk_index": [0, 1], "temperature_hint": ["cold", "freezing"], "humidity_hint": ["dry"] * 2,
                          "weather": ["rain", "unknown"], "time_of_day": ["night", "noon"],
                          "location": ["indoor", "moon_walk"], "movement": ["still", "walking"], "wind": ["calm"] * 2})
    problems = label_problems(frame)
    assert len(problems) == 2
    assert problems[0].startswith("chunk 1: temperature_hint='freezing' is not one of cold")
    assert problems[1].startswith("chunk 1: location='moon_walk'")
    assert label_problems(frame.drop(columns=["wind"]).iloc[:1]) == ["column wind is missing"]


def sensor_frame(**overrides) -> pd.DataFrame:
    row = {"chunk_index": 0, "temperature": 12.5, "humidity": 60.0, "wind_direction": 4, "wind_direction_name": "E",
           "imu": [0.1, -0.2, 9.8, 0.01, 0.0, -0.02]}
    row.update(overrides)
    return pd.DataFrame([row])


def test_sensor_problems_check_ranges_wind_names_and_imu():
    assert sensor_problems(sensor_frame()) == []
    assert sensor_problems(sensor_frame(temperature=41.0)) == ["chunk 0: temperature=41.0 outside (-5.0, 35.0)"]
    assert sensor_problems(sensor_frame(humidity=float("nan")))[0].startswith("chunk 0: humidity=nan outside")
    assert sensor_problems(sensor_frame(wind_direction_name="W")) == [
        "chunk 0: wind_direction_name 'W' does not match index 4"]
    assert "chunk 0: wind_direction=16 outside (0, 15)" in sensor_problems(sensor_frame(wind_direction=16))
    assert sensor_problems(sensor_frame(imu=[0.0] * 5)) == ["chunk 0: imu has 5 values, expected 6"]
    assert sensor_problems(sensor_frame(imu=[0.0, 0.0, 25.0, 0.0, 0.0, 11.0])) == [
        "chunk 0: acc_z=25.0 outside (-20.0, 20.0)", "chunk 0: gyro_z=11.0 outside (-10.0, 10.0)"]


RAINY_MORNING = {"temperature": 3.0, "humidity": 85.0, "wind_direction": 0, "wind_direction_name": "N",
                 "imu": [0.0] * 6, "movement": "walking",
                 "context": {"weather": "rain", "time": "morning", "scenario": "city_walking"}}
GOOD_PARAGRAPH = (
    "I walked out into the cold morning with my collar turned up against the rain. My boots found every puddle on the "
    "way to the harbour, and I could feel the wet air settle on my sleeves and in my hair. I kept walking past the "
    "shuttered shops, listening to the steady patter on the awnings, and I thought about the long winter that still "
    "lay ahead of me.")


def example(id_: str, chunk_index: int, target: str, mode: str) -> dict:
    record = {"id": id_, "target_paragraph": target, "sensor_data": RAINY_MORNING, "metadata": {"mode": mode},
              "source_info": {"chunk_index": chunk_index}}
    return {"id": id_, "record_json": json.dumps(record)}


def test_example_problems_by_mode():
    source = chunks("First passage.", "Second passage.")
    limits = dict(min_words=40, max_words=300, min_alignment=0.3)
    simple = pd.DataFrame([example("a_0", 0, "First passage.", "simple"), example("a_1", 1, "Second passage.", "hybrid")])
    assert example_problems(simple, source, **limits) == []
    wrong = pd.DataFrame([example("a_0", 0, "Second passage.", "simple"), example("a_0", 0, "First passage.", "simple")])
    problems = example_problems(wrong, source, **limits)
    assert problems[0] == "a_0: 2 examples share this id"
    assert problems[1] == "a_0: target is not the source passage of chunk 0"
    llm = pd.DataFrame([example("a_0", 0, GOOD_PARAGRAPH, "llm"),
                        example("a_1", 1, GOOD_PARAGRAPH.replace("the long winter", "the 3 long winters"), "llm"),
                        example("a_2", 1, "It was warm.", "llm")])
    problems = example_problems(llm, source, **limits)
    assert problems[0] == "a_1: generated text contains digits"
    assert problems[1] == "a_1: quality filter rejects it (digits)"
    assert problems[2].startswith("a_2: quality filter rejects it (") and "too_short" in problems[2]
    assert len(problems) == 3


def test_quota_problems_accept_explained_shortfalls_only():
    files = [
        {"partition_key": "G/a", "source_path": "G/a.txt", "quota": 10, "candidates": 30, "exported": 10, "shortfall": 0},
        {"partition_key": "G/b", "source_path": "G/b.txt", "quota": 10, "candidates": 4, "exported": 4, "shortfall": 6,
         "shortfall_reason": "only 4 candidate chunks"},
    ]
    assert quota_problems({"files": files, "failed_files": [{"source_path": "G/c.txt", "reason": "empty file"}]}) == []
    unexplained = [{**files[1], "shortfall_reason": ""}, {**files[0], "exported": 8},
                   {**files[0], "exported": 12, "shortfall": 0}]
    assert quota_problems({"files": unexplained, "failed_files": [{"source_path": "G/c.txt", "reason": ""}]}) == [
        "G/b.txt: 4 of 10 exported and no shortfall_reason",
        "G/a.txt: shortfall 0 but 8 of 10 exported",
        "G/a.txt: 12 exported, more than its quota 10",
        "G/c.txt: failed without a reason",
    ]


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
    defs = build_definitions(settings, str(tmp_path / "storage"), OllamaResource(cache_path=str(tmp_path / "c.sqlite")))
    instance = DagsterInstance.ephemeral()
    keys = [f.key for f in discover_novels(corpus)]
    instance.add_dynamic_partitions(PARTITIONS_NAME, keys)
    return defs, instance, keys, tmp_path


def evaluations(result) -> dict[tuple[str, str | None], bool]:
    return {(e.check_name, e.partition): e.passed for e in result.get_asset_check_evaluations()}


def test_checks_pass_on_a_materialized_partition(project):
    defs, instance, keys, _ = project
    result = materialize([novel_files, text_chunks, environment_features, sensor_records],
                         partition_key=keys[0], resources=defs.resources, instance=instance)
    assert result.success
    assert evaluations(result) == {("chunks_are_clean", keys[0]): True, ("labels_in_vocabulary", keys[0]): True,
                                   ("values_in_documented_ranges", keys[0]): True}
    evaluation = result.get_asset_check_evaluations()[0]
    assert evaluation.metadata["problems"].value == 0 and evaluation.target_materialization_data is not None


def test_jobs_run_every_check_per_partition_also_in_a_range_run(project):
    defs, instance, keys, tmp_path = project
    job = defs.resolve_job_def(PER_FILE_JOB)
    result = job.execute_in_process(instance=instance, tags={"dagster/asset_partition_range_start": keys[0],
                                                             "dagster/asset_partition_range_end": keys[-1]})
    assert result.success
    checks = ["chunks_are_clean", "labels_in_vocabulary", "values_in_documented_ranges", "text_fits_mode"]
    assert evaluations(result) == {(c, k): True for c in checks for k in keys}
    export = defs.resolve_job_def(EXPORT_JOB).execute_in_process(instance=instance)
    assert export.success
    assert evaluations(export) == {("quotas_met_or_explained", None): True, ("files_agree_with_index", None): True}
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


def test_bad_data_fails_the_blocking_check_and_stops_downstream(project, monkeypatch):
    defs, instance, keys, tmp_path = project
    job = defs.resolve_job_def(PER_FILE_JOB)
    rule_features = environment_assets.rule_features

    def one_bad_label(chunks, columns=None):  # the analysis of the second file returns a label outside the vocabulary
        frame = rule_features(chunks, columns)
        if chunks["partition_key"].iloc[0] == keys[1]:
            frame.loc[0, "weather"] = "sunny"
        return frame

    monkeypatch.setattr(environment_assets, "rule_features", one_bad_label)
    result = job.execute_in_process(instance=instance, raise_on_error=False, tags={
        "dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[1]})
    assert not result.success
    labels = {k: v for (c, k), v in evaluations(result).items() if c == "labels_in_vocabulary"}
    assert labels == {keys[0]: True, keys[1]: False}
    failed = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    assert [e.step_key for e in failed] == ["environment_features"]
    reasons = failed[0].step_failure_data.user_failure_data.metadata[FAILED_PARTITIONS_KEY].value
    assert list(reasons) == [keys[1]] and "weather='sunny'" in reasons[keys[1]]
    assert not result.asset_materializations_for_node("sensor_records")  # blocked: nothing downstream ran
    bad = [e for e in result.get_asset_check_evaluations() if not e.passed][0]
    assert bad.severity == AssetCheckSeverity.ERROR and bad.metadata["problems"].value == 1
