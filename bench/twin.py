"""The no-work twin of the per-file graph: Dagster's floor for this pipeline.

    python bench/twin.py --input-dir DIR     # prints {"wall_s": ..., "files": ..., "runs": ...} as JSON

The same assets as the pipeline (names, dynamic partitions, backfill policy, the Parquet IO manager), the same
per-file checks evaluated in their asset's step with the package's own plumbing (``for_each_partition``,
``run_check``, ``report_checks``), one metadata call per partition per step, and the export with its three asset
checks; every function returns at once (a one-row table, no problems). It runs the way ``llava-sensing generate``
runs the real graph, in this process with the ``DAGSTER_HOME`` it is given: sources registered and observed, Dagster's
staleness asked, ranges of 50 partitions with one planned event per range, then the export. ``bench/run.py`` runs it
beside the real CLI on the same files, so a fresh run reads as this floor + the core work + the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd
from dagster import (
    AllPartitionMapping,
    AssetCheckResult,
    AssetIn,
    AssetSelection,
    DagsterInstance,
    Definitions,
    Output,
    asset,
    asset_check,
    define_asset_job,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llava_sensing_pipeline.assets._partitioned import for_each_partition, report_checks, run_check  # noqa: E402
from llava_sensing_pipeline.assets.novels import PARTITIONS_PER_RUN, PER_FILE  # noqa: E402
from llava_sensing_pipeline.checks import CHUNKS_ARE_CLEAN, IS_ENGLISH_PROSE, LABELS_ARE_VARIED  # noqa: E402
from llava_sensing_pipeline.io_managers import PartitionedParquetIOManager  # noqa: E402
from llava_sensing_pipeline.partitions import discover_novels, registered_keys  # noqa: E402
from llava_sensing_pipeline.planning import (  # noqa: E402
    RANGE_END,
    RANGE_START,
    contiguous_ranges,
    out_of_date,
    sync_sources,
)
from llava_sensing_pipeline.progress import LOGGERS, cli_run_config  # noqa: E402
from llava_sensing_pipeline.runner import SUBSET_PLANNED_EVENTS  # noqa: E402


def nothing(key: str, *_inputs) -> tuple[pd.DataFrame, dict]:
    return pd.DataFrame({"chunk_index": [0]}), {"chunks": 1}


def twin_asset(name: str, inputs: tuple[str, ...], check=None):
    """A per-file asset named ``name`` reading ``inputs``, with the real asset's check spec, doing nothing."""

    def compute(context, **loaded):
        frames = for_each_partition(context, nothing, *(loaded[i] for i in inputs))
        checks = [run_check(context, check, frames, lambda key, frame: [], "chunks")] if check else []
        yield Output(frames)
        yield from report_checks(context, checks)

    return asset(name=name, ins={i: AssetIn() for i in inputs}, check_specs=[check] if check else None,
                 **PER_FILE)(compute)


PER_FILE_TWINS = [
    twin_asset("novel_files", (), IS_ENGLISH_PROSE),
    twin_asset("text_chunks", ("novel_files",), CHUNKS_ARE_CLEAN),
    twin_asset("environment_features", ("text_chunks",), LABELS_ARE_VARIED),
    twin_asset("sensor_records", ("environment_features",)),
    twin_asset("style_labels", ("sensor_records",)),
    twin_asset("generated_examples", ("style_labels", "text_chunks", "environment_features", "sensor_records")),
]


@asset(name="chunked_json_exports", group_name="export", io_manager_key="parquet_io_manager",
       ins={"generated_examples": AssetIn(partition_mapping=AllPartitionMapping(),
                                          metadata={"allow_missing_partitions": True})})
def export_twin(generated_examples) -> pd.DataFrame:
    return pd.DataFrame({"files": [len(generated_examples)]})


def _passing_check(name: str):
    @asset_check(asset=export_twin, name=name)
    def check() -> AssetCheckResult:
        return AssetCheckResult(passed=True, metadata={"problems": 0})

    return check


def definitions(storage: Path) -> Definitions:
    return Definitions(
        assets=[*PER_FILE_TWINS, export_twin],
        asset_checks=[_passing_check(n) for n in ("export_is_complete", "files_agree_with_index",
                                                  "no_duplicate_books")],
        jobs=[define_asset_job("per_file_job", AssetSelection.assets(*PER_FILE_TWINS)),
              define_asset_job("export_job", AssetSelection.assets(export_twin))],
        resources={"parquet_io_manager": PartitionedParquetIOManager(base_dir=str(storage))},
        loggers=LOGGERS,
    )


def run(input_dir: Path, storage: Path) -> dict:
    started = time.perf_counter()
    defs = definitions(storage)
    per_file, export = defs.resolve_job_def("per_file_job"), defs.resolve_job_def("export_job")
    runs = 0
    config = cli_run_config(str(storage.parent / "twin.log"), verbose=False, tty=False)  # the CLI's loggers
    with DagsterInstance.get() as instance:
        files = discover_novels(input_dir)
        sync_sources(instance, input_dir, files)
        stale = out_of_date(instance, defs.resolve_asset_graph(), [f.key for f in files])
        for keys in contiguous_ranges(registered_keys(instance), set(stale), PARTITIONS_PER_RUN):
            os.environ[SUBSET_PLANNED_EVENTS] = "true"
            try:
                result = per_file.execute_in_process(run_config=config, instance=instance,
                                                     tags={RANGE_START: keys[0], RANGE_END: keys[-1]})
            finally:
                os.environ.pop(SUBSET_PLANNED_EVENTS, None)
            runs += 1
            assert result.success
        assert export.execute_in_process(run_config=config, instance=instance).success
    return {"wall_s": round(time.perf_counter() - started, 2), "files": len(files), "runs": runs + 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input-dir", type=Path, required=True)
    parser.add_argument("--storage", type=Path, default=Path("twin_storage"))
    args = parser.parse_args(argv)
    print(json.dumps(run(args.input_dir, args.storage)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
