"""The Dagster code location: assets, checks, jobs, sensors, schedule, resources and the executor.

Every entry point builds the same definitions from the same variables: ``dagster dev -w workspace.yaml`` loads
``defs``, the CLI calls :func:`build_definitions` after putting its flags into the environment, and the worker
processes of a multiprocess or distributed executor rebuild the job with :func:`job_from_env`, given the launching
process's variables (:func:`job_env`) so that a worker elsewhere runs the run's settings. The variables are
``LLAVA_SENSING_<SETTING>`` (see :class:`~llava_sensing_pipeline.settings.PipelineSettings`), the LLM server's
(:func:`llm_from_env`), ``LLAVA_SENSING_STORAGE_DIR`` and
``LLAVA_SENSING_EXECUTOR``; where one is unset, the value the CLI last recorded in ``$DAGSTER_HOME`` applies, so the
UI started on the CLI's instance sees the CLI's settings (and the same code versions).
"""

from __future__ import annotations

import hashlib
import json
import os

from dagster import AssetsDefinition, Definitions

from .assets import assets_for, novel_sources
from .checks import EXPORT_CHECKS
from .executors import executor_from_env
from .generation import allocate_quotas
from .io_managers import PartitionedParquetIOManager
from .jobs import export_job, per_file_job
from .llm import APIS, DEFAULT_MODEL, LLMClient
from .partitions import discover_novels
from .progress import LOGGERS
from .schedules import build_refresh_schedule
from .sensors import export_automation_sensor, isolate_failed_partitions, novel_file_sensor
from .settings import PipelineSettings, effective_env, settings_from_env
from .versions import code_versions

DEFAULT_STORAGE_DIR = "data/storage"
DEFAULT_LLM_CACHE = "data/cache/llm_responses.sqlite"


def llm_from_env(env: dict[str, str] | None = None, **overrides) -> LLMClient:
    """The LLM client from the environment: ``LLAVA_SENSING_LLM_API`` (``ollama``, the default, or ``openai``);
    the server from ``LLAVA_SENSING_LLM_URL``, else (Ollama) ``OLLAMA_HOSTS`` / ``OLLAMA_HOST``; requests in flight per
    host from ``OLLAMA_NUM_PARALLEL``; ``LLAVA_SENSING_MODEL``, ``LLAVA_SENSING_OLLAMA_TIMEOUT``,
    ``LLAVA_SENSING_MAX_RETRIES``, ``LLAVA_SENSING_OLLAMA_DOWN_WAIT`` (seconds, in all, to wait for a server that went
    away), ``LLAVA_SENSING_OLLAMA_PROBE_AFTER`` (seconds before an unanswered request gets its host health-checked),
    ``LLAVA_SENSING_OLLAMA_CHECK_TIMEOUT`` (the health check's timeout) and ``LLAVA_SENSING_LLM_CACHE``; keyword
    arguments that are not None override them. The API key (OpenAI API) is read from the environment at each
    request, never stored here."""
    env = os.environ if env is None else env
    api = (overrides.pop("api", None) or env.get("LLAVA_SENSING_LLM_API") or "ollama").strip().lower()
    if api not in APIS:
        raise ValueError(f"LLAVA_SENSING_LLM_API={api!r}: use one of {', '.join(APIS)}")
    url = env.get("LLAVA_SENSING_LLM_URL") or None
    fields = {
        "host": url or (env.get("OLLAMA_HOSTS") or env.get("OLLAMA_HOST") or None if api == "ollama" else None),
        "model": env.get("LLAVA_SENSING_MODEL") or DEFAULT_MODEL,
        "parallel": int(env.get("OLLAMA_NUM_PARALLEL") or 1),
        "cache_path": env.get("LLAVA_SENSING_LLM_CACHE") or DEFAULT_LLM_CACHE,
    }
    if env.get("LLAVA_SENSING_OLLAMA_TIMEOUT"):
        fields["timeout_s"] = float(env["LLAVA_SENSING_OLLAMA_TIMEOUT"])
    if env.get("LLAVA_SENSING_MAX_RETRIES"):
        fields["max_retries"] = int(env["LLAVA_SENSING_MAX_RETRIES"])
    for name, field in (("OLLAMA_DOWN_WAIT", "down_wait_s"), ("OLLAMA_PROBE_AFTER", "probe_after_s"),
                        ("OLLAMA_CHECK_TIMEOUT", "check_timeout_s")):
        if env.get(f"LLAVA_SENSING_{name}"):
            fields[field] = float(env[f"LLAVA_SENSING_{name}"])
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return APIS[api](**fields)


def quota_version(settings: PipelineSettings) -> str:
    """What the per-file quotas are: fixed per file by default; with ``num_examples``, its spread over the files
    now selected (adding a file then changes every file's quota)."""
    if settings.num_examples is None:
        return "default"
    try:
        keys = [f.key for f in discover_novels(settings.input_dir, settings.max_files)]
    except FileNotFoundError:
        keys = []
    quotas = allocate_quotas(keys, settings.num_examples)
    return hashlib.sha256(json.dumps(quotas, sort_keys=True).encode()).hexdigest()[:16]


def versioned(assets: list[AssetsDefinition], versions: dict[str, str]) -> list[AssetsDefinition]:
    """``assets`` with each one's code version (code and stage settings, see :mod:`versions`)."""
    return [a.map_asset_specs(lambda spec: spec.replace_attributes(code_version=versions[spec.key.path[-1]]))
            for a in assets]


def build_definitions(env: dict[str, str] | None = None, *, settings: PipelineSettings | None = None,
                      storage_dir: str | None = None, llm: LLMClient | None = None) -> Definitions:
    """The definitions from ``env`` (default: the process environment over what the CLI recorded in
    ``$DAGSTER_HOME``); ``settings``, ``storage_dir`` and ``llm``, when given, take the place of what the
    variables say (for programs and tests that build them directly)."""
    env = effective_env(env)
    settings = settings or settings_from_env(env)
    llm = llm or llm_from_env(env)
    storage_dir = storage_dir or env.get("LLAVA_SENSING_STORAGE_DIR") or DEFAULT_STORAGE_DIR
    versions = code_versions({**settings.model_dump(), "model": llm.model, "llm_api": llm.api,
                              "quotas": quota_version(settings)})
    return Definitions(
        assets=[novel_sources, *versioned(assets_for(settings.mode), versions)],
        asset_checks=EXPORT_CHECKS,
        jobs=[per_file_job, export_job],
        schedules=[build_refresh_schedule(env)],
        sensors=[novel_file_sensor, export_automation_sensor, isolate_failed_partitions],
        resources={
            "settings": settings,
            "llm": llm,
            "parquet_io_manager": PartitionedParquetIOManager(base_dir=storage_dir),
        },
        executor=executor_from_env(env),
        loggers=LOGGERS,
    )


JOB_ENV_PREFIXES = ("LLAVA_SENSING_", "OLLAMA_")


def job_env(env: dict[str, str] | None = None) -> str:
    """The variables that define the jobs (``LLAVA_SENSING_*``, ``OLLAMA_*``, over what the CLI recorded), as JSON,
    for :func:`job_from_env` in the processes that run the steps: Celery workers on other machines, started before
    the run with their own environment, then build the job with the run's settings, not their own.

    Local paths that are not part of a code version (the per-partition storage, the LLM cache) are made absolute
    here, so a worker started in another folder uses the same ones; the cache's default is the one this process
    would use. They must be paths every worker mounts (or URLs) for a run on several machines.
    """
    env = effective_env(env)
    values = {k: v for k, v in env.items() if k.startswith(JOB_ENV_PREFIXES)}
    for name, default in (("LLAVA_SENSING_STORAGE_DIR", DEFAULT_STORAGE_DIR),
                          ("LLAVA_SENSING_LLM_CACHE", DEFAULT_LLM_CACHE)):
        location = values.get(name) or default
        if "://" not in location:
            location = os.path.abspath(location)
        values[name] = location
    # Not a variable: the per-file quotas as the files now selected give them. A worker keeps the last job it built
    # (Dagster caches it by these arguments), so a corpus that changed the quotas must change the arguments too.
    values["_quotas"] = quota_version(settings_from_env(env))
    return json.dumps(values, sort_keys=True)


_BUILT: dict[tuple, Definitions] = {}


def job_from_env(name: str, env_json: str | None = None):
    """The job ``name`` of the definitions built from the environment (for executors that rebuild it in workers),
    with the variables of ``env_json`` (from :func:`job_env` in the process that launched the run) over it."""
    env = effective_env()
    if env_json:
        env.update({k: v for k, v in json.loads(env_json).items() if not k.startswith("_")})
    key = tuple(sorted(env.items()))
    if key not in _BUILT:  # Dagster reconstructs a job several times per run: build the definitions once
        _BUILT.clear()
        _BUILT[key] = build_definitions(env)
    return _BUILT[key].resolve_job_def(name)


defs = build_definitions()
