"""Jobs: the per-file part of the graph (partitioned) and the export."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from .assets import PER_FILE_ASSETS, chunked_json_exports
from .partitions import novel_partitions

PER_FILE_JOB = "per_file_job"
EXPORT_JOB = "export_job"

NO_RUN_RETRY_ON_STEP_FAILURE = {"dagster/retry_on_asset_or_op_failure": "false"}
"""Run tags: a run that failed in a step is not retried as a whole (the LLM-bound assets have their own step
``RetryPolicy``, so the two would multiply); a run whose process died is still retried where the instance enables
``run_retries``."""

per_file_job = define_asset_job(
    PER_FILE_JOB,
    selection=AssetSelection.assets(*PER_FILE_ASSETS),
    partitions_def=novel_partitions,
    description="Read, chunk, analyse, synthesize sensors, label style and generate examples for novel files.",
    tags=NO_RUN_RETRY_ON_STEP_FAILURE,
)
export_job = define_asset_job(
    EXPORT_JOB,
    selection=AssetSelection.assets(chunked_json_exports),
    description="Write the dataset JSON, chunk files, index and Parquet from every file's examples.",
    tags=NO_RUN_RETRY_ON_STEP_FAILURE,
)
