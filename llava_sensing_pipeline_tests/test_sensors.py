"""The Dagster sensors (sensors.py): the file sensor plans with Dagster's staleness, failed ranges are isolated."""

import json
import shutil
from pathlib import Path

from dagster import DagsterInstance, SkipReason, build_run_status_sensor_context, build_sensor_context

from llava_sensing_pipeline.definitions import build_definitions
from llava_sensing_pipeline.partitions import PARTITIONS_NAME
from llava_sensing_pipeline.planning import RANGE_END, RANGE_START
from llava_sensing_pipeline.sensors import isolate_failed_partitions, novel_file_sensor

REPO = Path(__file__).resolve().parents[1]


def _env(tmp_path):
    corpus = tmp_path / "Novel"
    shutil.copytree(REPO / "Novel", corpus, ignore=shutil.ignore_patterns("*.md"))
    return corpus, {"LLAVA_SENSING_INPUT_DIR": str(corpus), "LLAVA_SENSING_OUTPUT_DIR": str(tmp_path / "out"),
                    "LLAVA_SENSING_STORAGE_DIR": str(tmp_path / "storage"), "LLAVA_SENSING_NUM_EXAMPLES": "12"}


def _tick(defs, instance):
    with build_sensor_context(instance=instance, resources=dict(defs.resources), definitions=defs) as context:
        return novel_file_sensor(context)


def test_the_file_sensor_registers_observes_and_requests_only_what_is_out_of_date(tmp_path):
    corpus, env = _env(tmp_path)
    defs = build_definitions(env)
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(PARTITIONS_NAME, ["Travel_Novel/Gone"])
        first = _tick(defs, instance)
        keys = sorted(instance.get_dynamic_partitions(PARTITIONS_NAME))
        assert "Travel_Novel/Gone" in keys and len(keys) == 7  # never deleted implicitly
        [request] = first.run_requests  # the six files in one range run
        assert request.tags[RANGE_START] == "Modernist_Novel/A901_The_Glass_Weather"
        assert request.tags[RANGE_END] == "Travel_Novel/B903_The_Lantern_Coast"
        assert _tick(defs, instance).run_requests[0].run_key == request.run_key  # same plan: deduplicated
        job = defs.resolve_job_def("per_file_job")
        assert job.execute_in_process(instance=instance, tags=request.tags).success
        assert isinstance(_tick(defs, instance), SkipReason)
        path = corpus / "Travel_Novel" / "B901_Salt_Roads.txt"
        path.write_text(path.read_text(encoding="utf-8") + "\nAnd then it rained.\n", encoding="utf-8")
        [again] = _tick(defs, instance).run_requests
        assert again.partition_key == "Travel_Novel/B901_Salt_Roads"


def test_a_failed_range_run_is_split_into_the_failed_partition_alone_and_the_rest(tmp_path):
    corpus, env = _env(tmp_path)
    (corpus / "Modernist_Novel" / "A902_A_Room_Facing_North.txt").write_bytes(b"")  # unreadable: empty
    defs = build_definitions(env)
    with DagsterInstance.ephemeral() as instance:
        [request] = _tick(defs, instance).run_requests
        result = defs.resolve_job_def("per_file_job").execute_in_process(instance=instance, tags=request.tags,
                                                                         raise_on_error=False)
        assert not result.success
        context = build_run_status_sensor_context(
            sensor_name=isolate_failed_partitions.name, dagster_event=result.get_run_failure_event(),
            dagster_instance=instance, dagster_run=result.dagster_run).for_run_failure()
        requests = list(isolate_failed_partitions._run_status_sensor_fn(context))
    runs = [r.partition_key or (r.tags[RANGE_START], r.tags[RANGE_END]) for r in requests]
    assert runs == ["Modernist_Novel/A902_A_Room_Facing_North",  # the failed one alone, then the rest in ranges
                    "Modernist_Novel/A901_The_Glass_Weather",
                    ("Modernist_Novel/A903_Tidewater_Hours", "Travel_Novel/B903_The_Lantern_Coast")]


def _tick_with_cursor(defs, instance, cursor):
    with build_sensor_context(instance=instance, resources=dict(defs.resources), definitions=defs,
                              cursor=cursor) as context:
        return novel_file_sensor(context)


def test_the_export_follows_a_file_that_fails_alone_and_a_file_deleted(tmp_path):
    """Issue 22, item 2: no example changes when a file added alone fails, or when a file is deleted, so the export's
    automation never ran and the export kept listing the wrong failed files. The file sensor now requests the
    export once the new state held for two ticks with nothing running."""
    corpus, env = _env(tmp_path)
    defs = build_definitions(env)
    per_file, export = defs.resolve_job_def("per_file_job"), defs.resolve_job_def("export_job")
    broken = corpus / "Travel_Novel" / "B904_Blank.txt"

    def failed_files():
        index = json.loads((tmp_path / "out" / "chunks" / "chunks_index.json").read_text())
        return [f["source_path"] for f in index["failed_files"]]

    launched = set()  # run keys, which the daemon launches once each

    def settle(cursor=None):
        """Ticks (and runs what the sensor requests, as the daemon would) until a tick requests nothing new."""
        ran = []
        for _ in range(5):
            result = _tick_with_cursor(defs, instance, cursor)
            cursor = getattr(result, "cursor", None) or cursor
            new = [r for r in getattr(result, "run_requests", None) or [] if r.run_key not in launched]
            for request in new:
                launched.add(request.run_key)
                job = export if request.job_name == "export_job" else per_file
                tags = {**request.tags, **({"dagster/partition": request.partition_key} if request.partition_key
                                           else {})}
                job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
                ran.append(request.job_name)
        return ran, cursor

    with DagsterInstance.ephemeral() as instance:
        [request] = _tick(defs, instance).run_requests
        assert per_file.execute_in_process(instance=instance, tags=request.tags).success
        assert export.execute_in_process(instance=instance).success
        assert failed_files() == []

        broken.write_bytes(b"")  # added alone, and fails: no example changes
        ran, cursor = settle()
        assert ran == ["per_file_job", "export_job"]
        assert failed_files() == ["Travel_Novel/B904_Blank.txt"]

        broken.unlink()  # deleted: no example changes either
        ran, cursor = settle(cursor)
        assert ran == ["export_job"]
        assert failed_files() == []

        broken.write_bytes(b"")  # the same states again: each needs the export again (the run key covers it)
        ran, cursor = settle(cursor)
        assert ran == ["export_job"] and failed_files() == ["Travel_Novel/B904_Blank.txt"]
        broken.unlink()
        ran, cursor = settle(cursor)
        assert ran == ["export_job"] and failed_files() == []
