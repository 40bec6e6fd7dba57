"""The one piece of plumbing the per-file assets share: run a pure function for each partition of the run.

A run covers one partition (failure isolation, the LLM modes, the UI's default) or a range of them (the bulk path
of the CLI). Inputs arrive as a DataFrame or as ``dict[key, DataFrame]`` accordingly, and the output goes back in
the same shape. A partition whose function raises does not stop the others from being tried: after the loop the
step fails with a :class:`dagster.Failure` whose metadata lists every failed partition and its reason, so the
CLI can isolate them and re-run the rest.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
from dagster import AssetExecutionContext, Failure, MetadataValue

from ..ollama_resource import OllamaUnavailable
from ..text import NovelReadError

FAILED_PARTITIONS_KEY = "failed_partitions"
# Failures a step retry cannot fix: a file that cannot be read, an LLM server or model that is not there.
PERMANENT_ERRORS = (NovelReadError, OllamaUnavailable)


def _pick(value: Any, key: str) -> Any:
    return value[key] if isinstance(value, Mapping) else value


def for_each_partition(
    context: AssetExecutionContext,
    fn: Callable[..., tuple[pd.DataFrame, Mapping[str, Any]]],
    *inputs: pd.DataFrame | dict[str, pd.DataFrame],
) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """Calls ``fn(key, *inputs_for_key)`` → ``(frame, metadata)`` for every partition key of the run."""
    keys = list(context.partition_keys)
    results: dict[str, pd.DataFrame] = {}
    failures: dict[str, str] = {}
    permanent = True
    started = time.monotonic()
    step = context.asset_key.to_user_string()
    for i, key in enumerate(keys, start=1):
        t0 = time.monotonic()
        try:
            frame, metadata = fn(key, *(_pick(v, key) for v in inputs))
        except Exception as exc:  # reported per partition below; the step still fails
            failures[key] = f"{type(exc).__name__}: {exc}"
            permanent = permanent and isinstance(exc, PERMANENT_ERRORS)
            context.log.error(f"{step} [{i}/{len(keys)}] {key}: {failures[key]}")
            continue
        results[key] = frame
        context.add_asset_metadata(
            {**metadata, "rows": len(frame), "wall_time_s": round(time.monotonic() - t0, 3),
             "peak_rss_mib": peak_rss_mib()}, partition_key=key
        )
        if len(keys) > 1 and (i % 25 == 0 or i == len(keys)):
            elapsed = time.monotonic() - started
            eta = elapsed / i * (len(keys) - i)
            context.log.info(f"{step}: partition {i} of {len(keys)} done, {elapsed:.1f} s elapsed, ETA {eta:.1f} s")
    if failures:
        raise Failure(
            description=f"{step} failed for {len(failures)} of {len(keys)} partition(s): "
            + "; ".join(f"{k}: {v}" for k, v in failures.items()),
            metadata={FAILED_PARTITIONS_KEY: MetadataValue.json(failures)},
            allow_retries=not permanent,
        )
    return results if len(keys) > 1 else results[keys[0]]


def peak_rss_mib() -> float:
    """The process's peak resident memory so far, in MiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def progress_logger(context, what: str, total: int, every: int = 10) -> Callable[[int, int], None]:
    """A callback for long per-chunk loops: logs "chunk j of m" with the accepted count and an ETA."""
    started = time.monotonic()

    def log(done: int, accepted: int) -> None:
        if done % every == 0 or done == total:
            elapsed = time.monotonic() - started
            eta = elapsed / done * (total - done) if done else 0.0
            context.log.info(f"{what}: chunk {done} of at most {total}, {accepted} accepted, "
                             f"{elapsed:.1f} s elapsed, ETA at most {eta:.1f} s")

    return log


def json_column(values) -> list[str]:
    """Nested values stored as JSON strings in a Parquet column."""
    return [json.dumps(v, ensure_ascii=False, sort_keys=True) for v in values]
