"""Where a fresh CLI run spends its time: the run in this process, with timers around the parts that cost.

    python bench/where_time_goes.py [--corpus ../shared/corpus] [--copies 4]

Builds a corpus of ``--copies`` copies of every novel of ``--corpus`` (distinct file names, in a temporary folder),
runs ``llava-sensing generate`` on it once in this process with a fresh ``DAGSTER_HOME``, and prints one table:
the wall time, and the seconds (and calls) spent in Dagster's event storage (every event the run records: planned
and recorded materializations, check evaluations, step and log events), in ``add_asset_metadata`` (the per-partition
metadata, which makes Dagster list the dynamic partitions on each call), in the asset functions (the pure functions
and the tables around them), in the per-file checks, in the Parquet IO manager, and in the export step. The parts
nest (the asset functions include their metadata calls; the event storage is called from everywhere), so they do
not add up to the wall time.

The timers wrap Dagster's SQLite event storage and step context (internal classes): this script measures, the
pipeline does not depend on them.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import importlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from run import build_scaled, describe  # noqa: E402  (bench/run.py, beside this script)

SECONDS: dict[str, float] = collections.defaultdict(float)
CALLS: collections.Counter = collections.Counter()


def timed(owner, name: str, label: str) -> None:
    """Replaces ``owner.name`` by a wrapper that adds its wall time to ``label``."""
    inner = getattr(owner, name)

    @functools.wraps(inner)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            SECONDS[label] += time.perf_counter() - started
            CALLS[label] += 1

    setattr(owner, name, wrapper)


def instrument() -> None:
    from dagster._core.execution.context.system import StepExecutionContext
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    from llava_sensing_pipeline import io_managers, runner

    timed(SqliteEventLogStorage, "store_event", "Dagster event storage (store_event)")
    timed(StepExecutionContext, "add_asset_metadata", "per-partition metadata (add_asset_metadata)")
    timed(io_managers.PartitionedParquetIOManager, "handle_output", "Parquet IO manager: store")
    timed(io_managers.LazyPartitions, "__getitem__", "Parquet IO manager: load (lazy, per partition)")
    timed(runner.Runner, "_export", "export run (chunked_json_exports and its checks)")
    for name in ("novels", "environment", "sensor_records", "generation"):
        module = importlib.import_module(f"llava_sensing_pipeline.assets.{name}")
        timed(module, "for_each_partition", "asset functions (incl. their metadata calls)")
        if hasattr(module, "run_check"):
            timed(module, "run_check", "per-file checks (computing them)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    parser.add_argument("--copies", type=int, default=4)
    args = parser.parse_args(argv)
    if not any(args.corpus.glob("*/*.txt")):
        print(f"error: no novels under {args.corpus}/<genre>/; pass --corpus", file=sys.stderr)
        return 2
    corpus = describe("corpus", args.corpus)
    with tempfile.TemporaryDirectory(prefix="llava-bench-") as tmp:
        work = Path(tmp)
        scaled = build_scaled(corpus, work / "corpus", args.copies * corpus.mb)  # whole copies, as bench/run.py
        os.environ["DAGSTER_HOME"] = str(work / "home")
        os.environ["LLAVA_SENSING_STORAGE_DIR"] = str(work / "storage")
        instrument()
        from llava_sensing_pipeline.cli import main as cli

        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the run's own summary: not what is measured here
            status = cli(["generate", "--input-dir", str(work / "corpus"), "--output-dir", str(work / "out")])
        wall = time.perf_counter() - started
    print(f"fresh run on {scaled.label()}, exit {status}: {wall:.1f} s wall\n")
    print("| part | seconds | share of wall | calls | ms per call |\n|---|---|---|---|---|")
    for label, seconds in sorted(SECONDS.items(), key=lambda item: -item[1]):
        print(f"| {label} | {seconds:.1f} | {seconds / wall:.0%} | {CALLS[label]} | "
              f"{1000 * seconds / CALLS[label]:.1f} |")
    return status


if __name__ == "__main__":
    sys.exit(main())
