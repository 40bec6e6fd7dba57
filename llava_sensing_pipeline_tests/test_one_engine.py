"""One engine: Dagster decides what is up to date for the CLI, the UI, the sensor and the schedule alike.

Each test here reproduces one of the seven ways the CLI and the UI disagreed (issue 12) and fails on the code that
planned runs from its own fingerprints.
"""

import importlib
import inspect
import json
import shutil
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, SkipReason, build_sensor_context, evaluate_automation_conditions

from llava_sensing_pipeline.cli import main

REPO = Path(__file__).resolve().parents[1]


def ui_settings(monkeypatch, ws) -> None:
    """The variables ``dagster dev`` would be started with for the CLI's run of ``generate(ws, "--num-examples", "12")``."""
    monkeypatch.setenv("LLAVA_SENSING_INPUT_DIR", str(ws / "Novel"))
    monkeypatch.setenv("LLAVA_SENSING_OUTPUT_DIR", str(ws / "out"))
    monkeypatch.setenv("LLAVA_SENSING_NUM_EXAMPLES", "12")


def generate(ws, *extra, corpus="Novel", out="out"):
    return main(["generate", "--input-dir", str(ws / corpus), "--output-dir", str(ws / out), *extra])


def index_of(ws, out="out"):
    return json.loads((ws / out / "chunks" / "chunks_index.json").read_text(encoding="utf-8"))


def exports(ws, out="out"):
    root = ws / out
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_1_a_larger_num_examples_redoes_what_the_smaller_one_capped(workspace, capsys):
    assert generate(workspace, "--num-examples", "12") == 0
    assert generate(workspace) == 0
    after = index_of(workspace)["total_examples"]
    assert generate(workspace, "--force") == 0
    assert index_of(workspace)["total_examples"] == after > 24


def test_2_code_versions_cover_every_module_an_asset_uses(monkeypatch):
    """Editing a module changes the code version of exactly the assets whose code imports it."""
    from llava_sensing_pipeline import versions

    before = dict(versions.code_versions())
    real = inspect.getsource

    def edited(target, name):
        def fake(obj):
            text = real(obj)
            return text + "\n# edited\n" if getattr(obj, "__name__", "") == name else text
        return fake

    cases = {
        "llava_sensing_pipeline.environment_llm": {"environment_features"},
        "llava_sensing_pipeline.assets.generation": {"generated_examples"},
        "llava_sensing_pipeline.assets.export": {"chunked_json_exports"},
        "llava_sensing_pipeline.assets.novels": {"novel_files", "text_chunks"},
        "llava_sensing_pipeline.curation": {"chunked_json_exports"},
    }
    for module, expected in cases.items():
        monkeypatch.setattr(inspect, "getsource", edited(inspect, module))
        importlib.reload(versions)
        changed = {k for k, v in versions.code_versions().items() if v != before[k]}
        assert expected <= changed, (module, changed)
        monkeypatch.setattr(inspect, "getsource", real)
        importlib.reload(versions)
    # a module no asset imports changes nothing
    monkeypatch.setattr(inspect, "getsource", edited(inspect, "llava_sensing_pipeline.cli"))
    importlib.reload(versions)
    assert versions.code_versions() == before


def test_3_a_ui_backfill_of_the_per_file_assets_brings_the_export_up_to_date(workspace, monkeypatch):
    """A UI backfill runs as ``__ASSET_JOB``; the export follows it through its automation condition."""
    assert generate(workspace, "--num-examples", "12") == 0
    from llava_sensing_pipeline.definitions import build_definitions

    (workspace / "Novel" / "Travel_Novel" / "B901_Salt_Roads.txt").write_text(
        "It rained all night on the harbour.\n\n" * 40, encoding="utf-8")
    ui_settings(monkeypatch, workspace)
    defs = build_definitions()
    with DagsterInstance.get() as instance:
        from llava_sensing_pipeline.sensors import novel_file_sensor

        with build_sensor_context(instance=instance, resources=dict(defs.resources), definitions=defs) as context:
            sensor_result = novel_file_sensor(context)
        before = evaluate_automation_conditions(defs=defs, instance=instance)  # the daemon's earlier tick
        job = defs.resolve_implicit_global_asset_job_def()
        from llava_sensing_pipeline.assets import PER_FILE_ASSETS

        result = job.get_subset(asset_selection={a.key for a in PER_FILE_ASSETS}).execute_in_process(
            instance=instance, partition_key="Travel_Novel/B901_Salt_Roads")
        assert result.success
        automation = evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
        requested = {key.to_user_string() for key in defs.resolve_asset_graph().materializable_asset_keys
                     if automation.get_num_requested(key)}
    assert [r.partition_key for r in sensor_result.run_requests] == ["Travel_Novel/B901_Salt_Roads"]
    assert any("chunked_json_exports" in r for r in requested), requested


def test_4_the_ui_does_not_redo_the_clis_work(workspace, monkeypatch):
    """``dagster dev`` on the CLI's DAGSTER_HOME: the file sensor and the automation request no run."""
    assert generate(workspace, "--num-examples", "12") == 0
    ui_settings(monkeypatch, workspace)
    from llava_sensing_pipeline.definitions import build_definitions
    from llava_sensing_pipeline.sensors import novel_file_sensor

    defs = build_definitions()
    with DagsterInstance.get() as instance:
        with build_sensor_context(instance=instance, resources=dict(defs.resources), definitions=defs) as context:
            result = novel_file_sensor(context)
        assert isinstance(result, SkipReason), result.run_requests
        automation = evaluate_automation_conditions(defs=defs, instance=instance)
        assert automation.total_requested == 0


def test_5_the_uis_export_equals_the_clis(workspace, monkeypatch):
    assert generate(workspace, "--num-examples", "12") == 0
    cli = exports(workspace)
    for path in (workspace / "out").rglob("*.json"):
        if path.name != "chunks_index.json":  # the index keeps its split_timestamp when nothing else changed
            path.write_text("{}")  # so the UI's export must rewrite every other file, with the same bytes
    ui_settings(monkeypatch, workspace)
    from llava_sensing_pipeline.definitions import build_definitions

    defs = build_definitions()
    with DagsterInstance.get() as instance:
        job = defs.resolve_implicit_global_asset_job_def().get_subset(
            asset_selection={defs.resolve_assets_def("chunked_json_exports").key})
        assert job.execute_in_process(instance=instance).success
    assert exports(workspace) == cli


def test_6_another_corpus_on_the_same_instance_deletes_nothing(workspace, capsys):
    other = workspace / "Other" / "Travel_Novel"
    other.mkdir(parents=True)
    shutil.copy(workspace / "Novel" / "Travel_Novel" / "B901_Salt_Roads.txt", other / "B999_Elsewhere.txt")
    assert generate(workspace, "--num-examples", "12") == 0
    with DagsterInstance.get() as instance:
        before = set(instance.get_dynamic_partitions("novel_files"))
    assert generate(workspace, corpus="Other", out="out2") == 0
    assert "deleted" not in capsys.readouterr().out
    with DagsterInstance.get() as instance:
        after = set(instance.get_dynamic_partitions("novel_files"))
    assert before <= after and "Travel_Novel/B999_Elsewhere" in after
    assert index_of(workspace, "out2")["total_examples"] > 0
    assert {f["source_path"] for f in index_of(workspace, "out2")["files"]} == {"Travel_Novel/B999_Elsewhere.txt"}


def test_7a_ollama_hosts_wins_over_ollama_host():
    from llava_sensing_pipeline.definitions import llm_from_env

    resource = llm_from_env({"OLLAMA_HOST": "http://a:11434", "OLLAMA_HOSTS": "http://b:11434,http://c:11434"})
    assert resource.hosts == ["http://b:11434", "http://c:11434"]
    assert (resource.down_wait_s, resource.probe_after_s, resource.check_timeout_s) == (300.0, 15.0, 5.0)
    resource = llm_from_env({"LLAVA_SENSING_OLLAMA_DOWN_WAIT": "42", "LLAVA_SENSING_OLLAMA_PROBE_AFTER": "3",
                                "LLAVA_SENSING_OLLAMA_CHECK_TIMEOUT": "1.5"})
    assert (resource.down_wait_s, resource.probe_after_s, resource.check_timeout_s) == (42.0, 3.0, 1.5)


def test_7b_the_cli_runs_on_the_configured_executor(workspace, monkeypatch):
    monkeypatch.setenv("LLAVA_SENSING_EXECUTOR", "multiprocess")
    assert generate(workspace, "--num-examples", "6", "--max-files", "1") == 0
    import os

    with DagsterInstance.get() as instance:
        pids = {e.dagster_event.pid for run in instance.get_runs()
                for e in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START)}
    assert pids and os.getpid() not in pids  # each step ran in a worker process, not in the CLI's
