from llava_sensing_pipeline.runner import contiguous_ranges


def test_contiguous_ranges_split_on_gaps_and_length():
    order = ["a", "b", "c", "d", "e", "f", "g"]
    assert contiguous_ranges(order, {"a", "b", "d", "e", "f", "g"}, 3) == [["a", "b"], ["d", "e", "f"], ["g"]]
    assert contiguous_ranges(order, set(), 3) == []
    assert contiguous_ranges(order, {"c"}, 1) == [["c"]]
    assert contiguous_ranges(order, set(order), 10) == [order]


def test_a_bulk_run_plans_each_asset_once_for_its_range_and_restores_the_environment(tmp_path, monkeypatch):
    import os
    import shutil
    from pathlib import Path

    from dagster import DagsterEventType, DagsterInstance

    from llava_sensing_pipeline.cli import main
    from llava_sensing_pipeline.runner import _SUBSET_PLANNED_EVENTS

    corpus = tmp_path / "Novel"
    shutil.copytree(Path(__file__).resolve().parents[1] / "Novel", corpus, ignore=shutil.ignore_patterns("*.md"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLAVA_SENSING_STORAGE_DIR", str(tmp_path / "storage"))
    monkeypatch.delenv(_SUBSET_PLANNED_EVENTS, raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--input-dir", str(corpus), "--output-dir", str(tmp_path / "out"),
                 "--num-examples", "12"]) == 0
    assert _SUBSET_PLANNED_EVENTS not in os.environ
    with DagsterInstance.get() as instance:
        [run] = [r for r in instance.get_runs() if r.job_name == "per_file_job"]
        planned = instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
        materialized = instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
    files = len(list(corpus.glob("*/*.txt")))
    assert files > 1 and len(planned) == 6 and len(materialized) == 6 * files
