"""The plumbing the per-file assets share: run a pure function for each partition of the run, check the result.

A run covers one partition (failure isolation, the LLM modes, the UI's default) or a range of them (the bulk path
of the CLI). Inputs arrive as a DataFrame or as ``dict[key, DataFrame]`` accordingly, and the output goes back in
the same shape (a :class:`~llava_sensing_pipeline.io_managers.PartitionTables`). A partition whose function raises
does not stop the others from being tried: after the loop the step fails with a :class:`dagster.Failure` whose
metadata lists every failed partition and its reason, so the CLI can isolate them and re-run the rest.

Each asset's checks (its ``check_specs``, see :mod:`~llava_sensing_pipeline.checks`) run in the same step on the
tables it has just computed (:func:`run_check` before the output is yielded, :func:`report_checks` after), so a check
costs no extra step and no reload.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Failure,
    MetadataValue,
    Output,
)
# Not exported at the top level in dagster 1.13; without it the UI shows range-run evaluations as out of date.
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from ..checks import MAX_LISTED, summary
from ..io_managers import PartitionTables
from ..llm import BudgetExhausted, PromptTooLong, ServerUnavailable
from ..partitions import latest_records
from ..planning import FAILED_PARTITIONS
from ..progress import report_progress
from ..text import NovelReadError

# Failures a step retry cannot fix: a file that cannot be read, an LLM server or model that is not there, a prompt
# longer than the server's context, a file's request budget spent.
PERMANENT_ERRORS = (NovelReadError, ServerUnavailable, PromptTooLong, BudgetExhausted)


def pick(value: Any, key: str) -> Any:
    return value[key] if isinstance(value, Mapping) else value


def for_each_partition(
    context: AssetExecutionContext,
    fn: Callable[..., tuple[pd.DataFrame, Mapping[str, Any]]],
    *inputs: pd.DataFrame | dict[str, pd.DataFrame],
    figures: dict[str, Mapping[str, Any]] | None = None,
) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """Calls ``fn(key, *inputs_for_key)`` → ``(frame, metadata)`` for every partition key of the run; the metadata
    is recorded once per partition, and kept in ``figures`` (partition -> metadata) when given, for its checks."""
    keys = list(context.partition_keys)
    results: dict[str, pd.DataFrame] = {}
    failures: dict[str, str] = {}
    permanent = True
    started = time.monotonic()
    step = context.asset_key.to_user_string()
    for i, key in enumerate(keys, start=1):
        t0 = time.monotonic()
        try:
            frame, metadata = fn(key, *(pick(v, key) for v in inputs))
        except Exception as exc:  # reported per partition below; the step still fails
            failures[key] = str(exc) if isinstance(exc, Failure) else f"{type(exc).__name__}: {exc}"
            permanent = permanent and (isinstance(exc, PERMANENT_ERRORS)
                                       or isinstance(exc, Failure) and not exc.allow_retries)
            context.log.error(f"{step} [{i}/{len(keys)}] {key}: {failures[key]}")
            continue
        results[key] = frame
        if figures is not None:
            figures[key] = metadata
        context.add_asset_metadata({**metadata, "rows": len(frame),
                                    "wall_time_s": round(time.monotonic() - t0, 3),
                                    "peak_rss_mib": peak_rss_mib()}, partition_key=key)
        report_progress(context, step, i, len(keys), started)
    if failures:
        raise Failure(
            description=f"{step} failed for {len(failures)} of {len(keys)} partition(s): "
            + "; ".join(f"{k}: {v}" for k, v in failures.items()),
            metadata={FAILED_PARTITIONS: MetadataValue.json(failures)},
            allow_retries=not permanent,
        )
    return PartitionTables(results) if len(keys) > 1 else results[keys[0]]


def _targets(instance, asset_key: AssetKey,
             keys: Sequence[str]) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """The latest materialization of each partition, which each evaluation refers to (so the UI shows it current)."""
    return {key: AssetCheckEvaluationTargetMaterializationData(storage_id=r.storage_id, run_id=r.run_id,
                                                               timestamp=r.timestamp)
            for key, r in latest_records(instance, asset_key, keys).items()}


@dataclass
class CheckRun:
    """The problems an asset check found in each partition of a step's output, to report once it is stored."""

    spec: AssetCheckSpec
    counted: str
    results: dict[str, tuple[int, list[str], float]]  # partition -> (rows, problems, seconds the rule took)

    def report(self, targets: Mapping[str, AssetCheckEvaluationTargetMaterializationData]
               ) -> Iterator[AssetCheckEvaluation | Output]:
        """One evaluation per partition, each referring to its partition's new materialization (``targets``), then
        the check's output. A blocking check that failed fails the step with a :class:`dagster.Failure` naming the
        failed partitions (nothing downstream runs); another one is a warning."""
        spec = self.spec
        failed: dict[str, str] = {}
        for key, (rows, problems, seconds) in self.results.items():
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                failed[key] = f"check {spec.name} failed: {problems[0]}{more}"
            yield AssetCheckEvaluation(
                asset_key=spec.asset_key, check_name=spec.name, passed=not problems, partition=key,
                blocking=spec.blocking, metadata={self.counted: rows, "check_s": round(seconds, 4), **summary(problems)},
                target_materialization_data=targets.get(key), description=failed.get(key),
                severity=AssetCheckSeverity.ERROR if spec.blocking else AssetCheckSeverity.WARN,
            )
        yield Output(None, output_name=spec.get_python_identifier())
        if failed and spec.blocking:
            raise Failure(
                description=f"{len(failed)} of {len(self.results)} partition(s) failed check {spec.name} on "
                            f"{spec.asset_key.to_user_string()}; fix the data or the code and re-run them: "
                            + "; ".join(f"{k}: {v}" for k, v in list(failed.items())[:MAX_LISTED]),
                metadata={FAILED_PARTITIONS: MetadataValue.json(failed)},
                allow_retries=False,
            )


def run_check(context: AssetExecutionContext, spec: AssetCheckSpec, output: pd.DataFrame | Mapping[str, pd.DataFrame],
              rule: Callable[[str, pd.DataFrame], list[str]], counted: str) -> CheckRun:
    """Applies the rule of the asset check ``spec`` to each partition of the step's ``output``, before the output
    is yielded (a multi-partition output is released once written); ``CheckRun.report`` reports it after."""
    frames = output if isinstance(output, Mapping) else {context.partition_key: output}
    results = {}
    for key in sorted(frames):
        started = time.perf_counter()
        problems = rule(key, frames[key])
        results[key] = (len(frames[key]), problems, time.perf_counter() - started)
    return CheckRun(spec, counted, results)


def report_checks(context: AssetExecutionContext, checks: Sequence[CheckRun]) -> Iterator[AssetCheckEvaluation | Output]:
    """The evaluations of the step's checks (one lookup of the new materializations for all of them); a failed
    blocking check fails the step once the others are reported."""
    if not checks:
        return
    targets = _targets(context.instance, checks[0].spec.asset_key, list(checks[0].results))
    failure = None
    for check in checks:
        try:
            yield from check.report(targets)
        except Failure as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


def peak_rss_mib() -> float:
    """The process's peak resident memory so far, in MiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def progress_logger(context, what: str, total: int) -> Callable[[int, int], None]:
    """A callback for long per-chunk loops (the LLM steps): progress with the accepted count and an ETA."""
    started = time.monotonic()

    def log(done: int, accepted: int) -> None:
        report_progress(context, what, done, total, started, "chunks at most", f" ({accepted} accepted)")

    return log


def json_column(values) -> list[str]:
    """Nested values stored as JSON strings in a Parquet column."""
    return [json.dumps(v, ensure_ascii=False, sort_keys=True) for v in values]
