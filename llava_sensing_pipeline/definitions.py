"""The Dagster code location: assets, checks, jobs, sensors, schedule, resources and the executor.

``dagster dev -w workspace.yaml`` loads ``defs``; its settings come from ``LLAVA_SENSING_*`` environment variables
(:func:`~llava_sensing_pipeline.settings.settings_from_env`). The CLI builds its own with
:func:`build_definitions` from its flags, over the same assets and the same ``DAGSTER_HOME``.
"""

from __future__ import annotations

import os

from dagster import Definitions

from .assets import ALL_ASSETS
from .checks import EXPORT_CHECKS
from .executors import executor_from_env
from .io_managers import PartitionedParquetIOManager
from .jobs import export_job, per_file_job
from .ollama_resource import DEFAULT_MODEL, OllamaResource
from .partitions import novel_file_sensor
from .schedules import build_refresh_schedule, export_after_per_file_runs
from .settings import PipelineSettings, settings_from_env

DEFAULT_STORAGE_DIR = "data/storage"
DEFAULT_LLM_CACHE = "data/cache/llm_responses.sqlite"


def ollama_from_env(env: dict[str, str] | None = None, **overrides) -> OllamaResource:
    """The Ollama resource from ``OLLAMA_HOST``, ``OLLAMA_NUM_PARALLEL``, ``LLAVA_SENSING_MODEL`` and
    ``LLAVA_SENSING_LLM_CACHE``; keyword arguments that are not None override them."""
    env = os.environ if env is None else env
    fields = {
        "host": env.get("OLLAMA_HOST") or None,
        "model": env.get("LLAVA_SENSING_MODEL") or DEFAULT_MODEL,
        "parallel": int(env.get("OLLAMA_NUM_PARALLEL") or 1),
        "cache_path": env.get("LLAVA_SENSING_LLM_CACHE") or DEFAULT_LLM_CACHE,
    }
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return OllamaResource(**fields)


def build_definitions(settings: PipelineSettings | None = None, storage_dir: str | None = None,
                      ollama: OllamaResource | None = None) -> Definitions:
    settings = settings or settings_from_env()
    ollama = ollama or ollama_from_env()
    storage_dir = storage_dir or os.environ.get("LLAVA_SENSING_STORAGE_DIR", DEFAULT_STORAGE_DIR)
    return Definitions(
        assets=ALL_ASSETS,
        asset_checks=EXPORT_CHECKS,
        jobs=[per_file_job, export_job],
        schedules=[build_refresh_schedule()],
        sensors=[novel_file_sensor, export_after_per_file_runs],
        resources={
            "settings": settings,
            "ollama": ollama,
            "parquet_io_manager": PartitionedParquetIOManager(base_dir=storage_dir),
        },
        executor=executor_from_env(),
    )


defs = build_definitions()
