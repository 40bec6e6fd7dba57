"""Asset checks: the pure rules on hand-made tables, then the checks inside Dagster runs on the bundled samples."""

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetCheckSeverity, DagsterEventType, DagsterInstance, materialize

from llava_sensing_pipeline.assets import environment_features, novel_files, sensor_records, text_chunks
from llava_sensing_pipeline.planning import FAILED_PARTITIONS as FAILED_PARTITIONS_KEY
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
from llava_sensing_pipeline.environment import ENV_FIELDS
from llava_sensing_pipeline.jobs import EXPORT_JOB, PER_FILE_JOB
from llava_sensing_pipeline.llm import OllamaResource
from llava_sensing_pipeline.partitions import PARTITIONS_NAME, discover_novels
from llava_sensing_pipeline.settings import PipelineSettings
from llava_sensing_pipeline.text import chunk_text

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
    assert len(good) == 3 and chunk_problems(good, 120, NOVEL) == []
    shifted = good.assign(char_start=[0, good.char_start[1] + 4, good.char_start[2]])
    assert chunk_problems(shifted, 120, NOVEL) == [
        f"chunk 1: text is not the text of its span [{good.char_start[1] + 4}, {good.char_end[1]})"]
    overlapping = good.assign(char_start=[0, good.char_end[0] - 10, good.char_start[2]])
    assert chunk_problems(overlapping, 120, NOVEL)[0] == (
        f"chunk 1: span [{good.char_end[0] - 10}, {good.char_end[1]}) overlaps the previous chunk, which ends at "
        f"{good.char_end[0]}")
    beyond = good.assign(char_end=[*good.char_end[:2], len(NOVEL) + 5])
    assert chunk_problems(beyond, 120, NOVEL) == [
        f"chunk 2: span [{good.char_start[2]}, {len(NOVEL) + 5}) is outside the text ({len(NOVEL)} chars)"]
    assert chunk_problems(good.assign(chunk_index=[0, 1, 3]), 120, NOVEL) == ["chunk indices are not 0..2 in order"]
    swapped = good.assign(text=[good.text[0], good.text[2], good.text[1]])
    assert [p.split(":")[0] for p in chunk_problems(swapped, 120, NOVEL)] == ["chunk 1", "chunk 2"]


def test_label_problems_name_the_field_and_value():
    frame = pd.DataFrame({"chunk_index": [0, 1], "temperature_hint": ["cold", "freezing"], "humidity_hint": ["dry"] * 2,
                          "weather": ["rain", "unknown"], "time_of_day": ["night", "noon"],
                          "location": ["indoor", "moon_walk"], "movement": ["still", "walking"], "wind": ["calm"] * 2,
                          "confidence": [0.5, 0.0]})
    problems = label_problems(frame, [0, 1])
    assert len(problems) == 2
    assert problems[0].startswith("chunk 1: temperature_hint='freezing' is not one of cold")
    assert problems[1].startswith("chunk 1: location='moon_walk'")
    assert label_problems(frame.drop(columns=["wind"]).iloc[:1], [0]) == ["column wind is missing"]


def test_label_problems_check_confidence_and_the_chunks_covered():
    frame = pd.DataFrame({"chunk_index": [0, 1], **{name: ["unknown"] * 2 for name in ENV_FIELDS},
                          "confidence": [0.4, 0.2]})
    assert label_problems(frame, [0, 1]) == []
    assert label_problems(frame.assign(confidence=[1.5, float("nan")]), [0, 1]) == [
        "chunk 0: confidence 1.5 is outside [0, 1]", "chunk 1: confidence nan is outside [0, 1]"]
    assert label_problems(frame, [0, 1, 2]) == ["labels cover 2 chunk(s) (0..1), text_chunks has 3 (0..2)"]
    assert label_problems(frame.iloc[::-1], [0, 1]) == ["labels cover 2 chunk(s) (1..0), text_chunks has 2 (0..1)"]


LABELS = {"temperature_hint": "cold", "humidity_hint": "humid", "weather": "rain", "time_of_day": "morning",
          "location": "city_walking", "movement": "walking", "wind": "breeze"}


def features_frame(**overrides) -> pd.DataFrame:
    return pd.DataFrame([{"chunk_index": 0, **LABELS, "confidence": 0.5, **overrides}])


def sensor_frame(**overrides) -> pd.DataFrame:
    row = {"chunk_index": 0, "temperature": 3.5, "humidity": 80.0, "wind_direction": 4, "wind_direction_name": "E",
           "imu": [0.1, -0.2, 9.8, 0.01, 0.0, -0.02], "movement": "walking", "scenario": "city_walking",
           "time": "morning", "weather": "rain", "wind": "unknown"}
    row.update(overrides)
    return pd.DataFrame([row])


def test_sensor_problems_check_ranges_wind_names_and_imu():
    features = features_frame()
    assert sensor_problems(sensor_frame(), features) == []
    assert sensor_problems(sensor_frame(humidity=float("nan")), features)[0].startswith("chunk 0: humidity=nan outside")
    assert sensor_problems(sensor_frame(wind_direction_name="W"), features) == [
        "chunk 0: wind_direction_name 'W' does not match index 4"]
    assert "chunk 0: wind_direction=16 outside (0, 15)" in sensor_problems(sensor_frame(wind_direction=16), features)
    assert sensor_problems(sensor_frame(imu=[0.0] * 5), features) == ["chunk 0: imu has 5 values, expected 6"]
    assert sensor_problems(sensor_frame(imu=[0.0, 0.0, 25.0, 0.0, 0.0, 11.0]), features) == [
        "chunk 0: acc_z=25.0 outside (-20.0, 20.0)", "chunk 0: gyro_z=11.0 outside (-10.0, 10.0)"]


def test_sensor_problems_check_each_record_against_its_chunk_labels():
    features = features_frame()
    assert sensor_problems(sensor_frame(), features) == []
    # the temperature hint's documented band (sensors.TEMPERATURE_RANGES); snow caps it at 2 degrees
    assert sensor_problems(sensor_frame(temperature=12.0), features) == [
        "chunk 0: temperature 12.0 is outside the band of its temperature_hint 'cold' (-5.0 to 5.0)"]
    warm_snow = features_frame(temperature_hint="warm", weather="snow")
    assert sensor_problems(sensor_frame(temperature=2.0, weather="snow"), warm_snow) == []
    assert sensor_problems(sensor_frame(temperature=20.0, weather="snow"), warm_snow) == [
        "chunk 0: temperature 20.0 is outside the band of its temperature_hint 'warm' with snow (2.0 to 2.0)"]
    # the context is the chunk's labels
    assert sensor_problems(sensor_frame(weather="clear", scenario="indoor"), features) == [
        "chunk 0: context scenario='indoor' but the chunk's location is 'city_walking'",
        "chunk 0: context weather='clear' but the chunk's weather is 'rain'"]
    assert sensor_problems(sensor_frame(movement="still"), features) == [
        "chunk 0: movement='still' but the chunk's movement is 'walking'"]
    # no wind indoors; shore and sea winds come from the northern sector
    indoor = features_frame(location="indoor")
    assert sensor_problems(sensor_frame(scenario="indoor"), indoor) == [
        "chunk 0: wind_direction 4 indoors, where it is always 0"]
    sea = features_frame(location="sea_voyage")
    assert sensor_problems(sensor_frame(scenario="sea_voyage", wind_direction=15, wind_direction_name="NNW"), sea) == []
    assert sensor_problems(sensor_frame(scenario="sea_voyage"), sea) == [
        "chunk 0: wind_direction 4 at sea_voyage, which takes only 15, 0, 1, 2"]
    # the records and the labels cover the same chunks
    assert sensor_problems(sensor_frame(), features.assign(chunk_index=1)) == [
        "sensor records cover 1 chunk(s) (0..0), environment_features has 1 (1..1)"]


RAINY_MORNING = {"temperature": 3.5, "humidity": 80.0, "wind_direction": 4, "wind_direction_name": "E",
                 "imu": [0.1, -0.2, 9.8, 0.01, 0.0, -0.02], "movement": "walking",
                 "context": {"scenario": "city_walking", "time": "morning", "weather": "rain", "wind": "unknown"}}
SOURCE = chunks("First passage.", "Second passage.").assign(char_start=[0, 20], char_end=[14, 35])
SENSORS = pd.concat([sensor_frame(), sensor_frame(chunk_index=1)], ignore_index=True)
FEATURES = pd.concat([features_frame(), features_frame(chunk_index=1)], ignore_index=True)
STYLES = pd.DataFrame({"chunk_index": [0, 1], "literary_style": ["travel_novel"] * 2})


def example(id_: str, chunk_index: int, target: str, mode: str = "simple", **changes) -> dict:
    span = SOURCE.iloc[chunk_index] if chunk_index < len(SOURCE) else {"char_start": 0, "char_end": 0}
    record = {"id": id_, "target_paragraph": target, "sensor_data": RAINY_MORNING, "literary_style": "travel_novel",
              "metadata": {"mode": mode},
              "source_info": {"chunk_index": chunk_index, "source_path": "Travel_Novel/a.txt",
                              "char_start": int(span["char_start"]), "char_end": int(span["char_end"]),
                              "environmental_analysis_normalized": dict(LABELS)}}
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = record
        for part in parents:
            node[part] = dict(node[part])
            node = node[part]
        node[leaf] = value
    return {"id": id_, "chunk_index": chunk_index, "record_json": json.dumps(record)}


def examples_problems(*rows, mode="simple"):
    return example_problems(pd.DataFrame(list(rows)), chunks=SOURCE, sensors=SENSORS, features=FEATURES,
                            styles=STYLES, mode=mode)


def test_example_problems_check_each_example_against_its_chunk():
    assert examples_problems(example("a_0", 0, "First passage."), example("a_1", 1, "Second passage.")) == []
    assert examples_problems(example("a_0", 0, "Written anew.", "llm"), mode="llm") == []
    assert examples_problems(example("a_0", 0, "Second passage."), example("a_0", 0, "First passage.")) == [
        "a_0: 2 examples share this id", "a_0: target is not the text of chunk 0"]
    assert examples_problems(example("a_7", 7, "First passage.")) == ["a_7: chunk 7 is not in text_chunks"]
    assert examples_problems(example("a_1", 0, "First passage.")) == [
        "a_1: the id does not match its file and chunk (a_0)"]
    assert examples_problems(example("a_0", 0, "First passage.", source_info__char_end=99)) == [
        "a_0: source span [0, 99) is not chunk 0's [0, 14)"]
    assert examples_problems(example("a_0", 0, "First passage.", sensor_data__temperature=30.0)) == [
        "a_0: sensor_data is not chunk 0's sensor record"]
    assert examples_problems(example("a_0", 0, "First passage.", literary_style="modernist_novel")) == [
        "a_0: literary_style 'modernist_novel' is not chunk 0's 'travel_novel'"]
    assert examples_problems(example("a_0", 0, "First passage.",
                                     source_info__environmental_analysis_normalized={**LABELS, "weather": "fog"})) == [
        "a_0: environment labels are not chunk 0's (weather)"]
    assert examples_problems(example("a_0", 0, "First passage.", "hybrid")) == [
        "a_0: metadata.mode is 'hybrid', the run's mode is 'simple'"]
    assert examples_problems(example("a_0", 0, "", "llm"), mode="llm") == ["a_0: empty target_paragraph"]


def quota_index(*files, warnings=(), failed=()):
    return {"requested_examples": sum(f["quota"] for f in files), "files": list(files), "warnings": list(warnings),
            "failed_files": list(failed)}


def entry(name, quota, candidates, exported, duplicates=0, cause=None, reason=None):
    shortfall = quota - exported
    return {"partition_key": f"G/{name}", "source_path": f"G/{name}.txt", "quota": quota, "candidates": candidates,
            "exported": exported, "shortfall": shortfall, "duplicates_removed": duplicates,
            **({"shortfall_cause": cause, "shortfall_reason": reason or f"{cause} in words"} if shortfall else {})}


def test_quota_problems_accept_explained_shortfalls_only():
    good = quota_index(entry("a", 10, 20, 10), entry("b", 10, 4, 4, cause="few_usable_passages"),
                       entry("c", 10, 0, 0, cause="no_usable_passages"),
                       entry("d", 10, 12, 9, duplicates=3, cause="duplicates_removed"),
                       warnings=["G/c.txt: no examples: no usable passage"],
                       failed=[{"source_path": "G/e.txt", "reason": "empty file"}])
    assert quota_problems(good) == []
    assert quota_problems(quota_index(entry("b", 10, 4, 4, cause="tired"))) == [
        "G/b.txt: shortfall_cause 'tired' is not one of no_usable_passages, few_usable_passages, duplicates_removed"]
    assert quota_problems(quota_index(entry("b", 10, 4, 4, cause="few_usable_passages", reason=" "))) == [
        "G/b.txt: 4 of 10 exported and no shortfall_reason"]
    assert quota_problems(quota_index(entry("a", 10, 30, 8, cause="duplicates_removed"))) == [
        "G/a.txt: 8 of 10 exported, yet only 8 of its 30 candidates were used or removed as duplicates"]
    assert quota_problems(quota_index(entry("b", 10, 4, 4, cause="duplicates_removed"))) == [
        "G/b.txt: shortfall_cause duplicates_removed does not fit 4 candidates for a quota of 10"]
    assert quota_problems(quota_index(entry("a", 10, 20, 10), entry("b", 12, 20, 12))) == [
        "quotas are not spread evenly over the files: 10 to 12"]
    assert quota_problems(quota_index(entry("c", 10, 0, 0, cause="no_usable_passages"))) == [
        "G/c.txt: no examples and no warning names it"]
    assert quota_problems(quota_index(entry("a", 10, 20, 12))) == [
        "G/a.txt: 12 exported, more than its quota 10", "G/a.txt: shortfall -2 but 12 of 10 exported"]
    assert quota_problems(quota_index(entry("a", 10, 20, 10), failed=[{"source_path": "G/e.txt", "reason": ""}])) == [
        "G/e.txt: failed without a reason"]


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
    result = materialize([novel_files, text_chunks, environment_features, sensor_records],
                         partition_key=keys[0], resources=defs.resources, instance=instance)
    assert result.success
    assert evaluations(result) == {("chunks_are_clean", keys[0]): True, ("labels_in_vocabulary", keys[0]): True,
                                   ("sensors_match_labels", keys[0]): True}
    evaluation = result.get_asset_check_evaluations()[0]
    assert evaluation.metadata["problems"].value == 0 and evaluation.target_materialization_data is not None


def test_jobs_run_every_check_per_partition_also_in_a_range_run(project):
    defs, instance, keys, tmp_path = project
    job = defs.resolve_job_def(PER_FILE_JOB)
    result = job.execute_in_process(instance=instance, tags={"dagster/asset_partition_range_start": keys[0],
                                                             "dagster/asset_partition_range_end": keys[-1]})
    assert result.success
    checks = ["chunks_are_clean", "labels_in_vocabulary", "sensors_match_labels", "examples_match_sources"]
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


def shift_second_chunk(chunk_text_fn):
    def chunk_text_(text, *args):
        found = chunk_text_fn(text, *args)
        return [c._replace(char_start=c.char_start + 3) if c.index == 1 else c for c in found]
    return chunk_text_


def snowy_records(sensor_table_fn):
    def sensor_table_(features, seed, key):
        return sensor_table_fn(features, seed, key).assign(weather="snow")
    return sensor_table_


def shouted_targets(build_example_fn):
    def build_example_(**kwargs):
        record = build_example_fn(**kwargs)
        return {**record, "target_paragraph": record["target_paragraph"].upper()}
    return build_example_


BREAKAGES = {  # check: (module, function to wrap, wrapper, the first problem it reports on the second file)
    "chunks_are_clean": ("novels", "chunk_text", shift_second_chunk, "chunk 1: text is not the text of its span"),
    "sensors_match_labels": ("sensor_records", "sensor_table", snowy_records, "context weather='snow' but the chunk's"),
    "examples_match_sources": ("generation", "build_example", shouted_targets, "target is not the text of chunk"),
}


@pytest.mark.parametrize("check", sorted(BREAKAGES))
def test_each_blocking_check_fails_the_run_on_bad_data(project, monkeypatch, check):
    """The producing code is made to write bad data: the check's evaluation fails for each partition in the run,
    the step fails naming the partitions, and nothing downstream of them runs."""
    import importlib

    module_name, function, wrap, message = BREAKAGES[check]
    module = importlib.import_module(f"llava_sensing_pipeline.assets.{module_name}")
    monkeypatch.setattr(module, function, wrap(getattr(module, function)))
    defs, instance, keys, _ = project
    result = defs.resolve_job_def(PER_FILE_JOB).execute_in_process(
        instance=instance, raise_on_error=False,
        tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]})
    assert not result.success
    assert {k: v for (c, k), v in evaluations(result).items() if c == check} == {k: False for k in keys}
    bad = [e for e in result.get_asset_check_evaluations() if e.check_name == check]
    assert all(e.severity == AssetCheckSeverity.ERROR and e.blocking for e in bad)
    assert message in bad[-1].metadata["first_problems"].value[0]
    [failed] = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    reasons = failed.step_failure_data.user_failure_data.metadata[FAILED_PARTITIONS_KEY].value
    assert sorted(reasons) == sorted(keys) and f"check {check} failed" in reasons[keys[-1]]
    assert failed.step_key == bad[0].asset_key.to_user_string()
    assert not result.asset_materializations_for_node("generated_examples") or check == "examples_match_sources"


def test_an_export_that_stops_short_of_its_candidates_fails_the_quota_check(project, monkeypatch):
    """The export is made to drop a file's last example without a cause: its own index then shows a shortfall
    with candidates left, which the quota check reports (a warning: the export itself is consistent)."""
    from llava_sensing_pipeline.assets import export as export_assets

    select = export_assets.select_examples

    def one_short(frames, quotas, source_paths, dedup=None):
        records, reports = select(frames, quotas, source_paths, dedup)
        first = reports[0]
        dropped = [r for r in records if r["source_info"]["partition_key"] == first.partition_key][-1]
        first.exported -= 1
        return [r for r in records if r is not dropped], reports

    monkeypatch.setattr(export_assets, "select_examples", one_short)
    defs, instance, keys, _ = project
    assert defs.resolve_job_def(PER_FILE_JOB).execute_in_process(instance=instance, tags={
        "dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}).success
    result = defs.resolve_job_def(EXPORT_JOB).execute_in_process(instance=instance)
    assert result.success  # the export checks do not block
    assert evaluations(result) == {("quotas_met_or_explained", None): False, ("files_agree_with_index", None): True}
    [quota] = [e for e in result.get_asset_check_evaluations() if e.check_name == "quotas_met_or_explained"]
    assert quota.severity == AssetCheckSeverity.WARN
    [problem] = quota.metadata["first_problems"].value
    assert re.fullmatch(rf"{re.escape(keys[0])}\.txt: 4 of 5 exported, yet only 4 of its \d+ candidates were used "
                        "or removed as duplicates", problem), problem
