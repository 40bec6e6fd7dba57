"""The UI path, end to end: ``dagster dev`` (webserver and daemon) on the CLI's DAGSTER_HOME, driven through the
webserver's GraphQL API, which is what the UI's buttons call.

1. After a CLI run, ``dagster dev`` launches no run: every partition is up to date for the settings the CLI recorded.
2. A genre backfill launched as the UI does (``launchPartitionBackfill``) over a genre with a broken file: the broken
   file fails alone (``isolate_failed_partitions``), the others are materialized, the export follows and lists it.
3. The file fixed and the backfill re-executed from failure (``reexecutePartitionBackfill``): the export follows
   again, with no failed file left.
4. A broken file added alone (it fails through the sensor, no example changes), then deleted: the export lists it,
   then no longer does; its bytes equal the CLI's export of the same corpus with the same settings.
"""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter

from llava_sensing_pipeline.cli import main
from llava_sensing_pipeline_tests.support.dagster_server import graphql, serving, wait_for

REPO = Path(__file__).resolve().parents[1]
TRAVEL = ["Travel_Novel/B901_Salt_Roads", "Travel_Novel/B902_North by Rail!", "Travel_Novel/B903_The_Lantern_Coast"]
PER_FILE = ["novel_files", "text_chunks", "environment_features", "sensor_records", "style_labels",
            "generated_examples"]
BROKEN = "Travel_Novel/B901_Salt_Roads.txt"
LATEST_EXPORT = """{ assetOrError(assetKey: {path: ["chunked_json_exports"]}) { ... on Asset {
    assetMaterializations(limit: 1) { runId metadataEntries { label ... on JsonMetadataEntry { jsonString } } } } } }"""
TIMEOUT_S = 240


def _wait(what: str, condition, log: Path, timeout: float = TIMEOUT_S):
    return wait_for(what, condition, log, timeout, poll=1)


def _exports(out: Path) -> dict[str, object]:
    """Every export file's bytes (the index as JSON without its timestamp, which records when it was written)."""
    files = {}
    for path in sorted(out.rglob("*")):
        if path.is_file():
            rel = path.relative_to(out).as_posix()
            if rel == "chunks/chunks_index.json":
                index = json.loads(path.read_text(encoding="utf-8"))
                index.pop("split_timestamp")
                index.pop("original_file", None)
                files[rel] = index
            else:
                files[rel] = path.read_bytes().replace(str(out).encode(), b"<out>")
    return files


def _differences(a: dict, b: dict) -> str:
    """A unified diff of the export files that differ (for the assertion message)."""
    import difflib

    out = []
    for name in sorted(set(a) | set(b)):
        if a.get(name) != b.get(name):
            def lines(value):
                if isinstance(value, bytes):
                    return value.decode("utf-8", "replace").splitlines()
                return json.dumps(value, indent=1, sort_keys=True).splitlines()
            out += list(difflib.unified_diff(lines(a.get(name, b"")), lines(b.get(name, b"")), name, name, n=1))
    return "\n".join(out[:80])


def _runs(instance) -> list:
    return list(instance.get_run_records())


def _idle(instance) -> bool:
    busy = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
            DagsterRunStatus.STARTED]
    return not instance.get_run_records(RunsFilter(statuses=busy))


def _latest_export(instance):
    records = instance.fetch_materializations(AssetKey("chunked_json_exports"), limit=1).records
    return records[0] if records else None


def _ticks(log: Path, sensor: str) -> int:
    """How many times the daemon has evaluated ``sensor`` (from the dagster dev log)."""
    text = log.read_text(errors="replace")
    return text.count(f"Checking for new runs for sensor: {sensor}") + text.count(f"tick for {sensor} in")


@pytest.fixture
def dagster_dev(tmp_path, monkeypatch):
    corpus = tmp_path / "Novel"
    shutil.copytree(REPO / "Novel", corpus, ignore=shutil.ignore_patterns("*.md"))
    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("LLAVA_SENSING_STORAGE_DIR", str(tmp_path / "storage"))
    monkeypatch.setenv("LLAVA_SENSING_LLM_CACHE", str(tmp_path / "llm.sqlite"))
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--input-dir", str(corpus), "--output-dir", str(tmp_path / "out"),
                 "--num-examples", "12"]) == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAVA_SENSING_") or k in (
        "LLAVA_SENSING_STORAGE_DIR", "LLAVA_SENSING_LLM_CACHE")}
    env.update(DAGSTER_HOME=str(home), LLAVA_SENSING_SENSOR_INTERVAL="3", PYTHONPATH=str(REPO))
    log = tmp_path / "dagster_dev.log"
    with serving([sys.executable, "-m", "dagster", "dev"], env, log, load_timeout=90, stop_timeout=30) as base:
        yield base, tmp_path, corpus, log


def test_ui_backfill_failure_fix_and_reexecution_keep_the_export_in_step_with_the_cli(dagster_dev):
    base, tmp_path, corpus, log = dagster_dev
    with DagsterInstance.get() as instance:
        cli_runs = len(_runs(instance))
        cli_export = _latest_export(instance).storage_id

        # 1. the daemon's sensors have looked (several ticks) and launched nothing: the CLI left it all up to date
        for name in ("novel_file_sensor", "export_automation", "isolate_failed_partitions"):
            _wait(f"two ticks of {name}", lambda n=name: _ticks(log, n) >= 2, log, timeout=120)
        assert len(_runs(instance)) == cli_runs, "dagster dev redid the CLI's work"
        assert _latest_export(instance).storage_id == cli_export

        # 2. a genre backfill over a genre with a broken file, as the UI's "Materialize…" launches it
        saved = (corpus / BROKEN).read_bytes()
        (corpus / BROKEN).write_bytes(b"")
        launch = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
            __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
        params = {"partitionNames": TRAVEL, "assetSelection": [{"path": [a]} for a in PER_FILE],
                  "title": "Travel_Novel"}
        result = graphql(base, launch, {"params": params})["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", result
        backfill = result["backfillId"]

        def failed_export():
            record = _latest_export(instance)
            if record is None or record.storage_id == cli_export or not _idle(instance):
                return None
            failed = record.asset_materialization.metadata["failed_partitions"].value
            return failed if failed == ["Travel_Novel/B901_Salt_Roads"] else None

        _wait("the export to list the broken file", failed_export, log)
        index = json.loads((tmp_path / "out" / "chunks" / "chunks_index.json").read_text())
        assert [f["source_path"] for f in index["failed_files"]] == [BROKEN]
        exported = {f["partition_key"] for f in index["files"]}
        assert {"Travel_Novel/B902_North by Rail!", "Travel_Novel/B903_The_Lantern_Coast"} <= exported

        # 3. the file fixed, the backfill re-executed from failure (once the daemon has closed it: the file sensor
        # may have written the export before): the export follows with no failed file left
        status = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
            ... on PartitionBackfill { status } } }"""
        _wait("the backfill to end", lambda: graphql(base, status, {"id": backfill})["partitionBackfillOrError"][
            "status"] not in ("REQUESTED", "CANCELING", "FAILING"), log)
        (corpus / BROKEN).write_bytes(saved)
        reexecute = """mutation($params: ReexecutionParams!) { reexecutePartitionBackfill(reexecutionParams: $params) {
            __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
        result = graphql(base, reexecute, {"params": {"parentRunId": backfill, "strategy": "FROM_FAILURE"}})
        assert result["reexecutePartitionBackfill"]["__typename"] == "LaunchBackfillSuccess", result

        def clean_export():
            record = _latest_export(instance)
            if not _idle(instance) or record.asset_materialization.metadata["failed_partitions"].value:
                return None
            return record

        _wait("the export with no failed file", clean_export, log)
        assert json.loads((tmp_path / "out" / "chunks" / "chunks_index.json").read_text())["failed_files"] == []

    # 4. issue 22, item 2: a broken file added alone fails through the sensor and no example changes, so the export
    # automation does not run; a broken file deleted changes no example either. The file sensor requests the export
    # (read here through GraphQL): its failed files are the broken files still in the corpus.
    seen = {export_state(base)[0]}

    def export_with(files: int, failed: list[str]):
        def matches():
            state = export_state(base)
            if state[0] not in seen and state[1:] == (files, failed):
                seen.add(state[0])
                return True
            return False
        return matches

    (corpus / "Travel_Novel" / "B904_Blank.txt").write_bytes(b"")
    _wait("the export to list the broken file added alone", export_with(7, ["Travel_Novel/B904_Blank"]), log)
    (corpus / "Travel_Novel" / "B904_Blank.txt").unlink()
    _wait("the export once the broken file is deleted", export_with(6, []), log)
    ui = _exports(tmp_path / "out")

    # the CLI, on a fresh instance, the same corpus and the same flags, writes the same export
    os.environ["DAGSTER_HOME"] = str(tmp_path / "cli_home")
    os.environ["LLAVA_SENSING_STORAGE_DIR"] = str(tmp_path / "cli_storage")
    shutil.copytree(tmp_path / "out", tmp_path / "ui_out")
    assert main(["generate", "--input-dir", str(corpus), "--output-dir", str(tmp_path / "out"),
                 "--num-examples", "12", "--force"]) == 0
    cli = _exports(tmp_path / "out")
    assert cli == ui, _differences(ui, cli)


def export_state(base: str) -> tuple[str | None, int, list[str]]:
    """The latest export's run, number of files covered and failed files, through GraphQL (what the UI reads)."""
    asset = graphql(base, LATEST_EXPORT)["assetOrError"]
    [latest] = asset.get("assetMaterializations") or [None]
    if latest is None:
        return None, 0, []
    meta = {e["label"]: json.loads(e["jsonString"]) for e in latest["metadataEntries"] if "jsonString" in e}
    return latest["runId"], len(meta["partitions"]), meta["failed_partitions"]



