"""The CLI's runs: a front end on the same definitions, the same instance and the same notion of "up to date" as
the UI (:mod:`~llava_sensing_pipeline.planning`).

1. Register new files and record changed ones (``novel_sources`` observations).
2. Ask Dagster which partitions are missing or stale (``planning.out_of_date``), or take the ones asked for.
3. Launch ``per_file_job`` over contiguous ranges of at most ``batch_size`` partitions, the runs a UI backfill
   launches under the assets' backfill policy, with the executor of the code location (``execute_job`` on the
   reconstructable job, so ``LLAVA_SENSING_EXECUTOR=multiprocess`` runs steps in worker processes). Up to
   ``LLAVA_SENSING_CONCURRENT_RUNS`` runs (default 1) at once, each launched from a process of its own (Dagster's
   run setup reconfigures Python's logging, which deadlocks runs launched from threads of one process): with a
   distributed executor (Celery workers) that keeps several workers busy. A range run records one planned event per
   asset for its whole range (:data:`SUBSET_PLANNED_EVENTS`), not one per asset and partition.
4. **Failure isolation.** A range run whose step fails names the partitions that raised (the step failure's
   metadata); they are re-run alone, so each shows as its own failed partition, and the rest are re-run in ranges.
5. **Server gone, or no request can succeed.** In the LLM modes, once a partition failed because the server stayed
   unreachable past ``--ollama-down-wait`` (:class:`~llava_sensing_pipeline.llm.ServerDown`), or refused or cut the
   prompt as longer than its context (:class:`~llava_sensing_pipeline.llm.PromptTooLong`), the remaining partitions
   are not started (each would only fail the same way) but left as they are, listed as not started, and no export
   is written: re-running the same command once the server is fixed resumes, paying only for the requests not yet
   answered (cached).
6. Materialize ``chunked_json_exports`` when it is out of date (``planning.export_out_of_date``).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from dagster import (
    AssetCheckSeverity,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    build_reconstructable_job,
    execute_job,
)

from .assets.novels import LLM_POOL
from .definitions import job_env
from .jobs import EXPORT_JOB, PER_FILE_JOB
from .llm import stops_run
from .partitions import NovelFile, discover_novels, registered_keys
from .planning import (
    PER_FILE_KEYS,
    RANGE_END,
    RANGE_START,
    contiguous_ranges,
    export_out_of_date,
    failed_partitions,
    failure_reasons,
    out_of_date,
    partition_states,
    run_failure_message,
    sync_sources,
)
from .progress import cli_run_config
from .settings import PipelineSettings

LAUNCHED_BY = {"llava_sensing/launched_by": "cli"}
SUBSET_PLANNED_EVENTS = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"
"""Dagster's switch for one planned materialization per asset for a range run's whole partition subset, instead of
one per asset and partition (a fifth of a fresh run's events, each written to two SQLite databases). Set for the
CLI's range runs only: a failed run with such events does not mark its partitions failed, and the CLI re-runs each
failed partition alone (per-partition events), which marks it, as the UI shows it."""


@dataclass
class RunReport:
    selected: list[NovelFile]
    added: list[str]
    changed: list[str]
    stale: dict[str, str]
    succeeded: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    failed_before: dict[str, str] = field(default_factory=dict)
    not_started: list[str] = field(default_factory=list)  # left as they were: the LLM server was gone
    outage: str | None = None  # why the run stopped early: the ServerDown or PromptTooLong failure
    runs: int = 0
    export_ok: bool = False
    export_error: str | None = None
    export_reason: str | None = None
    export_checks: dict[str, tuple[bool, str]] = field(default_factory=dict)  # failed check -> (is an error, why)
    check_warnings: dict[str, str] = field(default_factory=dict)  # "<check> <partition>" -> why (per-file warnings)
    seconds: float = 0.0


def reason_summary(reasons: dict[str, str]) -> str:
    """"3 × text_chunks missing, 1 × novel_files has a new dependency data version (novel_sources)"."""
    counts = Counter(reasons.values())
    return ", ".join(f"{n} × {why}" for why, n in counts.most_common())


def _reconstructable(job_name: str):
    """The job, rebuilt in each step's process from this process's settings (``definitions.job_env``)."""
    return build_reconstructable_job("llava_sensing_pipeline.definitions", "job_from_env",
                                     reconstructable_args=(job_name, job_env()))


def _run_processes(count: int) -> ProcessPoolExecutor:
    """``count`` processes to launch runs from. Forked when the platform can (at once, from this thread, before any
    other is started: a fork copies the imports and costs milliseconds, where a spawned process imports Dagster and
    the pipeline again, seconds each), else spawned."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(count, mp_context=multiprocessing.get_context(method))
    pool.submit(int).result()  # with fork, every process of the pool starts here
    return pool


def _execute_run(job_name: str, run_config: dict, tags: dict[str, str], assets: list | None,
                 instance: DagsterInstance | None = None) -> tuple[str, bool]:
    """Executes one run of ``job_name``; returns its id and whether it succeeded. Without ``instance`` (in a process
    of the concurrent runs' pool) it opens ``$DAGSTER_HOME``'s."""
    if instance is None:
        with DagsterInstance.get() as own:
            return _execute_run(job_name, run_config, tags, assets, own)
    if RANGE_START in tags:
        os.environ[SUBSET_PLANNED_EVENTS] = "true"
    try:
        with execute_job(_reconstructable(job_name), instance, run_config=run_config, tags=tags,
                         asset_selection=assets) as result:
            return result.run_id, result.success
    finally:
        os.environ.pop(SUBSET_PLANNED_EVENTS, None)


class Runner:
    """Runs the per-file job and the export for one CLI invocation."""

    def __init__(self, defs: Definitions, instance: DagsterInstance, settings: PipelineSettings, batch_size: int,
                 log_path: str, verbose: bool = False, echo: Callable[[str], None] = print,
                 concurrency: int | None = None):
        self.asset_graph = defs.resolve_asset_graph()
        self.concurrency = max(1, concurrency or int(os.environ.get("LLAVA_SENSING_CONCURRENT_RUNS") or 1))
        self._lock = threading.Lock()  # guards the report when runs go on at once
        self._processes: ProcessPoolExecutor | None = None  # launches the runs when several go on at once
        self.instance = instance
        self.settings = settings
        self.batch_size = max(1, batch_size)
        self.run_config = cli_run_config(log_path, verbose)
        self.echo = echo

    def _execute(self, job_name: str, tags: dict[str, str], assets: list | None = None) -> tuple[str, bool]:
        args = (job_name, self.run_config, {**LAUNCHED_BY, **tags}, assets)
        if self._processes is not None:
            return self._processes.submit(_execute_run, *args).result()
        return _execute_run(*args, instance=self.instance)

    def _note_warnings(self, report: RunReport, run_id: str) -> None:
        """The per-file checks that warned in a run (the blocking ones fail their file, reported as failures)."""
        warned = {f"{name} {key}": why for (name, key), (error, why) in failed_checks(self.instance, run_id).items()
                  if not error}
        with self._lock:
            report.check_warnings.update(warned)

    def _run(self, keys: list[str]):
        """One run over ``keys``: the per-file assets from the first one that is out of date in any of them on
        (those before it are up to date in all of them)."""
        first = min((getattr(self.stale.get(k), "first", 0) for k in keys), default=0)
        assets = PER_FILE_KEYS[first:] if first else None
        if len(keys) == 1:
            return self._execute(PER_FILE_JOB, {"dagster/partition": keys[0]}, assets)
        return self._execute(PER_FILE_JOB, {RANGE_START: keys[0], RANGE_END: keys[-1]}, assets)

    def _materialize(self, keys: list[str], report: RunReport) -> None:
        """Runs ``keys`` (contiguous) in one run; on failure isolates the failed partitions and retries the rest."""
        with self._lock:
            report.runs += 1
        run_id, success = self._run(keys)
        self._note_warnings(report, run_id)
        failed = failed_partitions(self.instance, run_id) if not success else None
        message = run_failure_message(self.instance, run_id) if not success else ""
        if success:
            with self._lock:
                report.succeeded.extend(keys)
            return
        if len(keys) == 1:
            with self._lock:
                report.failures[keys[0]] = (failed or {}).get(keys[0]) or message
                if stops_run(report.failures[keys[0]]):
                    report.outage = report.failures[keys[0]]
            return
        gone = {k: why for k, why in (failed or {}).items() if stops_run(why)}
        if gone or stops_run(message):  # the server is gone (or too small): one by one would only fail again
            with self._lock:
                report.failures.update(gone)
                report.not_started.extend(k for k in keys if k not in gone)
                report.outage = next(iter(gone.values()), message)
            return
        suspects = [k for k in keys if k in failed] if failed else keys
        for key in suspects:  # alone, so each failure is recorded against its own partition
            self._materialize([key], report)
        rest = set(keys) - set(suspects)
        for part in contiguous_ranges(self.order, rest, self.batch_size):
            self._materialize(part, report)

    def plan(self, files: list[NovelFile], force: bool = False, only: list[str] | None = None) -> RunReport:
        sync = sync_sources(self.instance, self.settings.input_dir, files)
        keys = [f.key for f in files]
        if only is not None:
            stale = {k: "asked for" for k in only}
        elif force:
            stale = {k: "--force" for k in keys}
        else:
            stale = out_of_date(self.instance, self.asset_graph, keys)
        return RunReport(selected=files, added=sync.added, changed=sync.changed, stale=stale)

    def run(self, files: list[NovelFile], force: bool = False, only: list[str] | None = None) -> RunReport:
        """Materializes what is out of date among ``files`` (all of them with ``force``, or exactly ``only``), then
        exports ``files`` if the export is out of date."""
        started = time.monotonic()
        report = self.plan(files, force, only)
        self.stale = report.stale
        if report.stale:
            self.echo(f"to materialize: {len(report.stale)} of {len(files)} file(s): {reason_summary(report.stale)}")
        self.order = registered_keys(self.instance)
        batches = contiguous_ranges(self.order, set(report.stale), self.batch_size)
        done = 0

        def finished(batch: list[str]) -> None:
            nonlocal done
            done += len(batch)
            failed = sum(k in report.failures for k in batch)
            status = "ok" if not failed else f"{failed} failed"
            label = batch[0] if len(batch) == 1 else f"{batch[0]} … {batch[-1]}"
            elapsed = time.monotonic() - started
            eta = elapsed / done * (len(report.stale) - done)
            self.echo(f"[{done}/{len(report.stale)}] {label}: {status} ({elapsed:.0f} s, ETA {eta:.0f} s)")

        if self.concurrency == 1 or len(batches) < 2:
            for n, batch in enumerate(batches):
                if report.outage and self.settings.mode != "simple":
                    left = [k for b in batches[n:] for k in b]
                    report.not_started.extend(left)
                    self.echo(f"the run stops: not starting the remaining {len(left)} partition(s) (each would "
                              "only fail the same way); they are left as they are")
                    break
                self._materialize(batch, report)
                finished(batch)
        else:
            self._init_pools()
            self._processes = _run_processes(self.concurrency)
            try:
                with ThreadPoolExecutor(self.concurrency, thread_name_prefix="llava-run") as threads:
                    runs = {threads.submit(self._materialize, batch, report): batch for batch in batches}
                    for future in as_completed(runs):
                        future.result()
                        finished(runs[future])
            finally:
                self._processes.shutdown()
                self._processes = None
        if report.outage:  # an unfinished dataset is not written; re-running resumes and then exports
            report.export_error = "not written: the run stopped early (re-running resumes)"
        else:
            self._export(files, report)
        report.seconds = time.monotonic() - started
        return report

    def _init_pools(self) -> None:
        """Creates the LLM pool's concurrency limit before runs start at once: Dagster creates it when a run first
        needs it, and on PostgreSQL two runs that try at the same moment make one fail (the second insert aborts its
        transaction)."""
        storage = self.instance.event_log_storage
        if storage.supports_global_concurrency_limits and LLM_POOL not in storage.get_concurrency_keys():
            storage.initialize_concurrency_limit_to_default(LLM_POOL)  # (only when missing: its update path is
            # broken on PostgreSQL too, which Dagster's own claim avoids the same way)

    def _export(self, files: list[NovelFile], report: RunReport) -> None:
        keys = [f.key for f in files]
        states = partition_states(self.instance, keys)
        failed = [k for k in keys if states[k] != "materialized"]
        report.failed_before = {k: v for k, v in failure_reasons(self.instance, failed).items()
                                if k not in report.failures}
        if len(failed) == len(keys):
            report.export_error = "every selected file failed; no dataset was written"
            return
        report.export_reason = export_out_of_date(self.instance, self.asset_graph, keys, failed,
                                                  self.settings.output_dir, self.settings.mode)
        if report.export_reason is None:
            self.echo("export: up to date (Dagster: no newer examples, same code, settings and files)")
            report.export_ok = True
            return
        report.runs += 1
        run_id, report.export_ok = self._execute(EXPORT_JOB, {})
        if not report.export_ok:
            report.export_error = run_failure_message(self.instance, run_id)
        report.export_checks = {name: v for (name, _), v in failed_checks(self.instance, run_id).items()}


def failed_checks(instance: DagsterInstance, run_id: str) -> dict[tuple[str, str | None], tuple[bool, str]]:
    """The asset checks that failed in a run, as the UI shows them: (name, partition) -> (an error, not a warning;
    the first problem and how many)."""
    failed = {}
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = record.dagster_event.event_specific_data
        if evaluation.passed:
            continue
        problems = evaluation.metadata.get("first_problems")
        first = problems.value[0] if problems and problems.value else ""
        count = evaluation.metadata.get("problems")
        more = f" (and {count.value - 1} more)" if count and count.value > 1 else ""
        failed[(evaluation.check_name, evaluation.partition)] = (evaluation.severity == AssetCheckSeverity.ERROR,
                                                                 f"{first}{more}")
    return failed


def select_files(settings: PipelineSettings) -> list[NovelFile]:
    """The files this run covers: ``max_files`` per genre, sorted."""
    return discover_novels(settings.input_dir, settings.max_files)
