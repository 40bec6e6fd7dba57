"""What is up to date, as Dagster sees it (planning.py), and how the CLI's runs follow it (runner.py)."""

import shutil
from pathlib import Path

from dagster import AssetKey, DagsterEventType, DagsterInstance

from llava_sensing_pipeline.cli import main
from llava_sensing_pipeline.partitions import discover_novels
from llava_sensing_pipeline.planning import (
    SOURCE_KEY,
    contiguous_ranges,
    export_out_of_date,
    out_of_date,
    recorded_source_versions,
    sync_sources,
)

REPO = Path(__file__).resolve().parents[1]


def test_contiguous_ranges_split_on_gaps_and_length():
    order = ["a", "b", "c", "d", "e", "f", "g"]
    assert contiguous_ranges(order, {"a", "b", "d", "e", "f", "g"}, 3) == [["a", "b"], ["d", "e", "f"], ["g"]]
    assert contiguous_ranges(order, set(), 3) == []
    assert contiguous_ranges(order, {"c"}, 1) == [["c"]]
    assert contiguous_ranges(order, set(order), 10) == [order]


def generate(ws, *extra):
    return main(["generate", "--input-dir", str(ws / "Novel"), "--output-dir", str(ws / "out"), *extra])


def test_sources_are_observed_once_per_change(tmp_path):
    corpus = tmp_path / "Novel"
    shutil.copytree(REPO / "Novel", corpus, ignore=shutil.ignore_patterns("*.md"))
    files = discover_novels(corpus)
    with DagsterInstance.ephemeral() as instance:
        first = sync_sources(instance, corpus, files)
        assert first.added == first.changed == [f.key for f in files]
        again = sync_sources(instance, corpus, files)
        assert again.added == again.changed == []
        (corpus / files[0].relative_path).write_text("Changed.\n\n" * 30, encoding="utf-8")
        third = sync_sources(instance, corpus, files)
        assert third.changed == [files[0].key] and third.added == []
        observations = instance.fetch_observations(SOURCE_KEY, limit=100).records
        assert len(observations) == len(files) + 1
        versions = recorded_source_versions(instance, [f.key for f in files])
        assert len(set(versions.values())) == len(files)


def test_the_first_out_of_date_asset_and_dagsters_cause(workspace, capsys, monkeypatch):
    assert generate(workspace, "--num-examples", "12") == 0
    from llava_sensing_pipeline.definitions import build_definitions

    defs = build_definitions()
    keys = [f.key for f in discover_novels(workspace / "Novel")]
    with DagsterInstance.get() as instance:
        assert out_of_date(instance, defs.resolve_asset_graph(), keys) == {}
        assert export_out_of_date(instance, defs.resolve_asset_graph(), keys) is None
        # a changed file: its novel_files is stale because its source has a new data version
        path = workspace / "Novel" / "Travel_Novel" / "B901_Salt_Roads.txt"
        path.write_text(path.read_text(encoding="utf-8") + "\nOne more line of rain.\n", encoding="utf-8")
        sync_sources(instance, workspace / "Novel", discover_novels(workspace / "Novel"))
        reasons = out_of_date(instance, defs.resolve_asset_graph(), keys)
        assert list(reasons) == ["Travel_Novel/B901_Salt_Roads"]
        assert reasons["Travel_Novel/B901_Salt_Roads"].first == 0
        assert "new dependency data version (novel_sources)" in reasons["Travel_Novel/B901_Salt_Roads"]
    # another --num-examples: only generated_examples (the last asset) is redone, for every file
    monkeypatch.setenv("LLAVA_SENSING_NUM_EXAMPLES", "30")
    defs = build_definitions()
    with DagsterInstance.get() as instance:
        reasons = out_of_date(instance, defs.resolve_asset_graph(), keys)
        assert {r.first for k, r in reasons.items() if k != "Travel_Novel/B901_Salt_Roads"} == {5}
        assert all("generated_examples has a new code version" in r for k, r in reasons.items()
                   if k != "Travel_Novel/B901_Salt_Roads")
        assert "code version" in export_out_of_date(instance, defs.resolve_asset_graph(), keys)


def test_a_bulk_run_is_one_run_and_a_settings_change_redoes_only_the_stage_it_affects(workspace, capsys):
    assert generate(workspace, "--num-examples", "12") == 0
    files = len(list((workspace / "Novel").glob("*/*.txt")))
    with DagsterInstance.get() as instance:
        [run] = [r for r in instance.get_runs() if r.job_name == "per_file_job"]
        materialized = instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
    assert files > 1 and len(materialized) == 6 * files
    assert generate(workspace, "--num-examples", "30") == 0
    assert "6 × generated_examples has a new code version" in capsys.readouterr().out
    with DagsterInstance.get() as instance:
        runs = [r for r in instance.get_runs() if r.job_name == "per_file_job"]
        newest = max(runs, key=lambda r: instance.get_run_record_by_id(r.run_id).create_timestamp)
        keys = {e.dagster_event.asset_key for e in
                instance.all_logs(newest.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)}
    assert keys == {AssetKey("generated_examples")}


def test_out_of_date_agrees_with_dagsters_stale_status_resolver(workspace, capsys, monkeypatch):
    """The batched reading of Dagster's provenance gives what the UI's resolver gives, partition by partition:
    fresh, a changed file, a code/settings change, a missing partition."""
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.loader import LoadingContextForTest

    from llava_sensing_pipeline.definitions import build_definitions
    from llava_sensing_pipeline.planning import PER_FILE_KEYS

    assert generate(workspace, "--num-examples", "12") == 0
    path = workspace / "Novel" / "Travel_Novel" / "B902_North by Rail!.txt"
    path.write_text(path.read_text(encoding="utf-8") + "\nThe train slowed in the snow.\n", encoding="utf-8")
    shutil.copy(workspace / "Novel" / "Travel_Novel" / "B901_Salt_Roads.txt",
                workspace / "Novel" / "Travel_Novel" / "B904_New.txt")
    monkeypatch.setenv("LLAVA_SENSING_SEED", "7")  # a setting of sensor_records and generated_examples
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    keys = [f.key for f in discover_novels(workspace / "Novel")]
    with DagsterInstance.get() as instance:
        sync_sources(instance, workspace / "Novel", discover_novels(workspace / "Novel"))
        ours = out_of_date(instance, graph, keys)
        resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
        for key in keys:
            first = next((i for i, asset in enumerate(PER_FILE_KEYS)
                          if resolver.get_status(asset, key) != StaleStatus.FRESH), None)
            assert (ours[key].first if key in ours else None) == first, key
    assert ours["Travel_Novel/B904_New"] == "novel_files missing"
    assert "novel_sources" in ours["Travel_Novel/B902_North by Rail!"]
    assert ours["Modernist_Novel/A901_The_Glass_Weather"] == "sensor_records has a new code version"
