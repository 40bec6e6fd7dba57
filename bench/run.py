"""Benchmarks of the llava-sensing pipeline: everything measured in one run, printed as one table.

    python bench/run.py [--quick] [--corpus ../shared/corpus] [--scaled-mb 100] [--llm-latency 0.3]

1. Core rule path, no Dagster, in CPU seconds of this single-threaded process: reading, chunking, rule analysis,
   sensor synthesis and example building (the candidates generated_examples keeps), on the corpus and on a copy of
   it scaled by repetition to ``--scaled-mb`` (copies under distinct file names, in a temporary folder removed afterwards).
2. The whole pipeline through the CLI (``python -m llava_sensing_pipeline.cli generate``, a subprocess with its own
   working folder and ``DAGSTER_HOME``) on both corpora: a fresh run, a no-change re-run, a run after one new file
   is added, and (full run, small corpus) a fresh run with one partition per Dagster run. The Dagster event log of
   each run splits the time into the asset functions, the rest of the asset steps (IO manager, events), the
   asset-check steps, run overhead, the export, and the process outside the runs (start-up, staleness check).
3. The LLM path against the scripted test server with a fixed latency per request: calls per accepted example,
   achieved concurrency, wall time with ``--parallel 1`` and ``4``, and the LLM calls of a ``--force`` re-run
   (all cache hits).
4. Peak RSS of every CLI run (``wait4`` of the child).

``--quick`` skips the scaled corpus and the one-partition-per-run run, and runs a smaller LLM part (about two
minutes; the full run takes about nine). Progress goes to stderr, the
table to stdout. The code under test is this checkout's ``llava_sensing_pipeline`` (put first on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def code_root(argv: Sequence[str]) -> Path:
    """The checkout whose package is measured: ``--code DIR`` (read before the package is imported), else this one."""
    for i, arg in enumerate(argv):
        if arg == "--code" and i + 1 < len(argv):
            return Path(argv[i + 1]).resolve()
        if arg.startswith("--code="):
            return Path(arg.split("=", 1)[1]).resolve()
    return REPO


CODE = code_root(sys.argv[1:])
sys.path.insert(0, str(CODE))

from llava_sensing_pipeline.environment import ENV_FIELDS, analyze_columns, analyze_rules, label_hits  # noqa: E402
from llava_sensing_pipeline.assets.generation import CANDIDATE_RESERVE  # noqa: E402
from llava_sensing_pipeline.generation import (  # noqa: E402
    DEFAULT_EXAMPLES_PER_FILE,
    build_example,
    build_generation_prompt,
    is_usable,
    selection_order,
)
from llava_sensing_pipeline.partitions import discover_novels  # noqa: E402
from llava_sensing_pipeline.seeding import chunk_streams, derive_seed  # noqa: E402
from llava_sensing_pipeline.sensor_synthesis import sensor_record, synthesize_sensor_columns  # noqa: E402
from llava_sensing_pipeline.settings import PipelineSettings  # noqa: E402
from llava_sensing_pipeline.style import folder_style, style_for  # noqa: E402
from llava_sensing_pipeline.text import chunk_text, read_novel  # noqa: E402

# The earlier scripts' simple mode (``preprocess_with_args.py --mode simple``) on the shared corpus repeated to about
# 100 MB: 15.3 s, measured once on 2026-12-07 on the project's 2-core machine (issue 22). They are not in this
# repository, so the bench scales that figure to the size of its own copy.
EARLIER_SIMPLE_S_PER_MB = 15.3 / 100.0
EARLIER_TARGET = 6.0  # a fresh simple run at most this many times the earlier scripts' time on the same files
FLOOR_TARGET = 1.25  # ... and at most this many times (the no-work twin's wall + the core work)
CORE_TARGET_MB_PER_S = 20.0
RESULTS = REPO / "bench" / "RESULTS.md"
CORE_STAGES = ("read", "chunk", "analysis", "sensors", "examples")
LLM_MODEL = "smollm2:135m"
LLM_STEPS = ("environment_features", "generated_examples")
PER_FILE_ASSETS = ("novel_files", "text_chunks", "environment_features", "sensor_records", "style_labels",
                   "generated_examples")
# Variables that would point the CLI at storage, caches or servers outside its temporary working folder.
CLEARED_ENV = ("DAGSTER_HOME", "LLAVA_SENSING_STORAGE_DIR", "LLAVA_SENSING_LLM_CACHE", "LLAVA_SENSING_MODEL",
               "OLLAMA_HOST", "OLLAMA_NUM_PARALLEL")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- corpora -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    name: str
    root: Path
    files: int
    bytes: int
    largest: int

    @property
    def mb(self) -> float:
        return self.bytes / 1e6

    def label(self) -> str:
        return f"{self.name} ({self.mb:.1f} MB, {self.files} files)"


def describe(name: str, root: Path) -> Corpus:
    sizes = [(root / f.relative_path).stat().st_size for f in discover_novels(root)]
    if not sizes:
        raise SystemExit(f"bench: no .txt novels under {root}; pass --corpus with a folder of genre sub-folders")
    return Corpus(name, root, len(sizes), sum(sizes), max(sizes))


def mirror(source: Path, target: Path) -> None:
    """``target`` as a tree of symbolic links to ``source``'s files (a writable view of a read-only corpus)."""
    for dirpath, _dirnames, filenames in os.walk(source):
        rel = Path(dirpath).relative_to(source)
        (target / rel).mkdir(parents=True, exist_ok=True)
        for name in filenames:
            (target / rel / name).symlink_to(Path(dirpath, name).resolve())


def build_scaled(source: Corpus, target: Path, megabytes: float) -> Corpus:
    """Copies of ``source``'s novels under distinct names (``<stem>__copyNN.txt``) until about ``megabytes``."""
    files = discover_novels(source.root)
    for extra in ("README.md", "MANIFEST.tsv"):
        if (source.root / extra).is_file():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source.root / extra, target / extra)
    written, copy = 0, 0
    while written < megabytes * 1e6:
        for f in files:
            rel = Path(f.relative_path)
            dest = target / rel.parent / f"{rel.stem}__copy{copy:02d}{rel.suffix}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source.root / rel, dest)
            written += dest.stat().st_size
            if written >= megabytes * 1e6:
                break
        copy += 1
    return describe(f"scaled x{copy}", target)


# --- 1. core rule path ---------------------------------------------------------------------------------------


@dataclass
class CoreResult:
    corpus: Corpus
    chunks: int = 0
    usable: int = 0
    built: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CORE_STAGES, 0.0))

    def rule_seconds(self) -> float:
        """Reading, chunking, analysis and sensor synthesis: the per-chunk work of the rule path."""
        return sum(self.seconds[s] for s in ("read", "chunk", "analysis", "sensors"))

    def total_seconds(self) -> float:
        return sum(self.seconds.values())


def core_pass(corpus: Corpus, settings: PipelineSettings) -> CoreResult:
    """One pass of the pure functions over every file, as the assets call them, timed per stage in CPU seconds
    (the code is single-threaded, so this is one core's time; other processes on the machine do not add to it)."""
    result = CoreResult(corpus)
    clock = time.process_time
    for f in discover_novels(corpus.root):
        t0 = clock()
        novel = read_novel(corpus.root / f.relative_path)
        t1 = clock()
        chunks = chunk_text(novel.text, settings.chunk_chars, settings.min_chunk_chars, settings.max_chunk_chars)
        t2 = clock()
        features = analyze_columns([c.text for c in chunks])
        t3 = clock()
        streams = chunk_streams(derive_seed(settings.seed, f.key, "sensors"), [c.index for c in chunks])
        records = synthesize_sensor_columns({name: features[name] for name in ENV_FIELDS}, streams)
        t4 = clock()
        sample = "" if folder_style(f.genre) else " ".join(c.text for c in chunks)[:200_000]
        style, source, _score = style_for(f.genre, sample)
        usable = [i for i in selection_order(len(chunks), settings.seed, f.key)
                  if is_usable(len(chunks[i].text), features["confidence"][i], settings.min_chunk_chars,
                               settings.min_confidence)]
        for i in usable[:CANDIDATE_RESERVE * DEFAULT_EXAMPLES_PER_FILE]:  # what generated_examples keeps
            c = chunks[i]
            labels = {name: features[name][i] for name in ENV_FIELDS}
            record = sensor_record(records, i)
            example = build_example(
                relative_path=f.relative_path, partition_key=f.key,
                chunk={"chunk_index": c.index, "char_start": c.char_start, "char_end": c.char_end},
                features={**labels, "confidence": features["confidence"][i], "cues": features["cues"][i],
                          "source": "rules"},
                normalized=labels, sensor_record=record, style=style,
                novel_metadata=novel.metadata, target_paragraph=c.text,
                prompt=build_generation_prompt(record, style), mode="simple",
                generation={"environment_confidence": features["confidence"][i], "style_source": source})
            json.dumps(example, ensure_ascii=False)
        t5 = clock()
        for stage, seconds in zip(CORE_STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            result.seconds[stage] += seconds
        result.chunks += len(chunks)
        result.usable += len(usable)
        result.built += min(len(usable), CANDIDATE_RESERVE * DEFAULT_EXAMPLES_PER_FILE)
    return result


def core_best_of(corpus: Corpus, settings: PipelineSettings, repeats: int) -> CoreResult:
    """The fastest time per stage over ``repeats`` passes (the machine's noise only ever adds time)."""
    best = core_pass(corpus, settings)
    for _ in range(repeats - 1):
        again = core_pass(corpus, settings)
        best.seconds = {s: min(best.seconds[s], again.seconds[s]) for s in CORE_STAGES}
    return best


# --- 2. the CLI ----------------------------------------------------------------------------------------------


@dataclass
class RunTiming:
    """One Dagster run, from the event log."""

    job: str
    seconds: float
    step_seconds: float
    compute_seconds: float
    steps: dict[str, float]


@dataclass
class CliRun:
    label: str
    wall: float
    rc: int
    peak_rss_mb: float
    output: str
    runs: list[RunTiming] = field(default_factory=list)

    def materialized(self) -> int | None:
        match = re.search(r"(\d+) materialized", self.output)
        return int(match.group(1)) if match else None

    def per_file(self) -> list[RunTiming]:
        return [r for r in self.runs if r.job != "export_job"]

    def export_seconds(self) -> float:
        return sum(r.seconds for r in self.runs if r.job == "export_job")

    def check_step_seconds(self) -> float:
        """Time in separate asset-check steps of the per-file runs (none since the per-file checks became
        ``check_specs`` evaluated inside their asset's step; kept to show it)."""
        return sum(t for r in self.per_file() for step, t in r.steps.items() if step not in PER_FILE_ASSETS)

    def asset_step_overhead(self) -> float:
        """Time in the per-file asset steps outside the asset functions: IO manager load/store, events, checks."""
        return sum(t for r in self.per_file() for step, t in r.steps.items() if step in PER_FILE_ASSETS) - sum(
            r.compute_seconds for r in self.per_file())


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    env["DAGSTER_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(CODE), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def run_cli(label: str, args: Sequence[str], workspace: Path) -> CliRun:
    """``llava-sensing generate ARGS`` in ``workspace`` (its data/ and DAGSTER_HOME land there): wall time, exit
    status, peak RSS of the child and its output."""
    command = [sys.executable, "-m", "llava_sensing_pipeline.cli", "generate", *args]
    return run_child(label, command, workspace, workspace / f"cli-{len(list(workspace.glob('cli-*.log')))}.log")


def run_child(label: str, command: Sequence[str], workspace: Path, out_path: Path) -> CliRun:
    """``command`` in ``workspace`` with its own ``DAGSTER_HOME`` there, its output in ``out_path``: wall time, exit
    status, peak RSS of the child and its output."""
    home = workspace / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w") as out:
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=workspace, env=cli_env(home), stdout=out, stderr=subprocess.STDOUT)
        _pid, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
    output = out_path.read_text(encoding="utf-8", errors="replace")
    # ru_maxrss is in KiB on Linux, bytes on macOS
    rss_mb = usage.ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1 << 10)
    run = CliRun(label, wall, os.waitstatus_to_exitcode(status), rss_mb, output)
    log(f"  {label}: {wall:.1f} s, exit {run.rc}, peak RSS {rss_mb:.0f} MiB")
    if run.rc != 0:
        log("  its output ends with:\n" + "\n".join(output.splitlines()[-15:]))
    return run


def attach_run_timings(home: Path, cli_runs: Sequence[CliRun], windows: Sequence[tuple[float, float]]) -> None:
    """Reads every Dagster run from ``home``'s event log and gives each CLI invocation the runs it launched."""
    from dagster import DagsterEventType, DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        for record in instance.get_run_records():
            created = record.create_timestamp.timestamp()
            owner = next((c for c, (a, b) in zip(cli_runs, windows) if a <= created <= b), None)
            if owner is None:
                continue
            run_id = record.dagster_run.run_id
            stats = instance.get_run_stats(run_id)
            steps = instance.get_run_step_stats(run_id)
            compute = 0.0
            for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
                wall = entry.asset_materialization.metadata.get("wall_time_s") if entry.asset_materialization else None
                compute += float(wall.value) if wall is not None else 0.0
            durations = {s.step_key: s.end_time - s.start_time for s in steps if s.start_time and s.end_time}
            step_seconds = sum(durations.values())
            if record.dagster_run.job_name == "export_job":
                compute = step_seconds
            seconds = (stats.end_time or created) - created  # from creation: planning logs an event per asset
            owner.runs.append(RunTiming(record.dagster_run.job_name, seconds, step_seconds, compute, durations))


@dataclass
class CliSeries:
    corpus: Corpus
    fresh: CliRun
    again: CliRun
    new_file: CliRun
    one_per_run: CliRun | None = None
    twin: CliRun | None = None


def cli_series(corpus: Corpus, workspace: Path, batch_size: int | None) -> CliSeries:
    """Fresh run, no-change re-run, and a run after one new file (a copy of the first novel under a new name)."""
    if corpus.root.is_relative_to(workspace):
        input_dir = corpus.root
    else:
        input_dir = workspace / "corpus"
        mirror(corpus.root, input_dir)
    args = ["--input-dir", str(input_dir), "--output-dir", "out",
            *(["--batch-size", str(batch_size)] if batch_size else [])]
    log(f"CLI on {corpus.label()}")
    windows, runs = [], []
    twin = None
    for label in ("fresh", "no change", "new file"):
        if label == "new file":
            twin = run_twin(input_dir, workspace / "twin")  # the fresh run's files
            first = discover_novels(input_dir)[0]
            src = input_dir / first.relative_path
            shutil.copyfile(src, src.with_name(f"{src.stem}__bench_new{src.suffix}"))
        start = time.time()
        runs.append(run_cli(label, args, workspace))
        windows.append((start, time.time()))
    attach_run_timings(workspace / "dagster_home", runs, windows)
    return CliSeries(corpus, *runs, twin=twin)


def run_twin(input_dir: Path, workspace: Path) -> CliRun:
    """``bench/twin.py``, the no-work twin of the graph, on the same files in its own process and ``DAGSTER_HOME``
    (before the new file of the series was added): Dagster's floor for this graph, measured like the CLI."""
    workspace.mkdir(parents=True)
    command = [sys.executable, str(REPO / "bench" / "twin.py"), "--input-dir", str(input_dir),
               "--storage", str(workspace / "storage")]
    return run_child("no-work twin", command, workspace, workspace / "twin.out")


def one_partition_per_run(series: CliSeries, workspace: Path) -> None:
    """A fresh run with ``--batch-size 1`` (one Dagster run per partition, as the LLM modes do): the price of
    per-partition failure isolation."""
    workspace.mkdir(parents=True)
    args = ["--input-dir", str(series.corpus.root), "--output-dir", "out", "--batch-size", "1"]
    log(f"CLI on {series.corpus.label()} with one partition per run")
    start = time.time()
    series.one_per_run = run_cli("fresh, --batch-size 1", args, workspace)
    attach_run_timings(workspace / "dagster_home", [series.one_per_run], [(start, time.time())])


# --- 3. the LLM path -----------------------------------------------------------------------------------------

# Neutral first-person sentences (no keyword of the rule analyzer), ten of them picked per request by its seed, so
# every generated paragraph is distinct and the export's near-duplicate filter keeps it.
SENTENCES = (
    "I notice the texture of the ground beneath me, the grit and give of it, and the faint sound of my joints.",
    "My attention turns slowly from one small thing to the next, a leaf, a stone, the edge of a shadow.",
    "Somewhere behind me a door closes, and I wonder who lives there and what they think of a machine like me.",
    "I think of the people who came here before me, of their voices and their errands and their long days.",
    "Every surface tells me something: the roughness of bark, the patience of old walls, the polish of a railing.",
    "I record it all, yet what I keep is not the record but the feeling of passing through.",
    "I listen to the quiet settle around me, and I am grateful to be here, sensing, awake.",
    "A bird calls once and then thinks better of it, and the silence that follows seems larger than before.",
    "My sensors hum with a patience I have learned from watching how slowly the world changes.",
    "I catch the smell of old paper and iron, and for a moment I cannot tell which of them is mine.",
    "The edges of things seem sharper to me now, as if the world had been drawn again with a finer pen.",
    "I have no heart to quicken, yet something in my circuits leans toward the scene like a plant toward a window.",
    "A child once asked me whether I dream, and I think of the question every time the world goes quiet like this.",
    "I count the colours I can name and then the ones I cannot, and the second list is always longer.",
    "Far off, a bell marks an hour I do not need, and I keep it anyway, as a courtesy to those who do.",
    "My joints tick softly as they settle, a small clock of my own that no one else can hear.",
    "I let my gaze rest on a single stone until it becomes a whole country of folds and shallow hollows.",
    "There is a kind of music in the way the world arranges itself when nobody is watching but me.",
    "I wonder whether the old builders of this place ever pictured a machine where they once worked.",
    "The scene asks nothing of me, and I find that I want to give it my full attention anyway.",
    "I hold the moment the way one holds a cup that is too full, carefully, afraid to spill any of it.",
    "Some part of me wants to name everything, and another part is content simply to let it be.",
    "I feel the slight vibration of distant machinery through my frame, a cousin I have never met.",
    "My lenses adjust with a soft mechanical sigh, and the world blurs for a moment before it steadies.",
    "I think of the long list of places I have yet to see, and this one quietly moves to the top of it.",
    "A faint scent of resin and smoke reaches me, and I file it among the memories I mean to keep.",
    "I am built to measure, yet here I find myself simply noticing, which is a different and gentler thing.",
    "The small sounds around me braid together into something like a voice, patient and unhurried.",
    "I trace the outline of a distant roof with my eyes and imagine the lives folded beneath it.",
    "My memory grows heavier with each detail, and I am glad of the weight.",
    "Nothing here is remarkable, and that is exactly what makes me want to remember it.",
    "I quiet my internal chatter and let the world speak for itself for a while.",
    "The colours shift at the edges of my vision, and I let them, curious where they will settle.",
    "Somewhere inside me a log file fills with numbers, but what I carry away is a feeling.",
    "I imagine describing this to another machine and realise that the words would never be enough.",
    "For a moment I forget my purpose entirely, and it is the most peaceful moment of my day.",
)
# Words of the analyzer's vocabularies for the prompt's readings, as a faithful model would use them.
WEATHER_WORDS = {"clear": "sunshine", "cloudy": "clouds", "windy": "wind"}
MOVEMENT_WORDS = {"standing still": "I stand still", "moving quickly and energetically": "I hurry along"}


class FaithfulScript:
    """Scripted replies that pass validation and the quality filter; counts analysis and generation calls.

    Analysis requests (they carry a JSON schema) get the rule labels with confidence 0.9. Generation requests get
    a first-person paragraph that names the prompt's readings in the analyzer's words (so it aligns with the sensor
    record), then ten neutral sentences picked by the request's seed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.analysis = 0
        self.generation = 0
        self.sentences = [s for s in SENTENCES if not label_hits(s)]

    def reset(self) -> None:
        with self._lock:
            self.analysis = self.generation = 0

    def __call__(self, request) -> str:
        prompt = request.messages[-1]["content"]
        if request.format:
            with self._lock:
                self.analysis += 1
            passage = prompt.split('"""')[1] if prompt.count('"""') >= 2 else prompt
            return json.dumps({**analyze_rules(passage).labels(), "confidence": 0.9})
        with self._lock:
            self.generation += 1

        def reading(name: str) -> str:
            match = re.search(rf"- {name}: (.+)", prompt)
            return match.group(1).strip() if match else ""

        weather = reading("Weather")
        cues = [reading("Temperature"), reading("Humidity").replace("saturated", "saturated, humid"),
                WEATHER_WORDS.get(weather, weather), reading("Time of day")]
        movement = reading("Movement")
        body = " ".join(random.Random(f"{request.options.get('seed')}|{prompt}").sample(self.sentences, 10))
        return (f"Here is the paragraph:\n\nI register {', '.join(c for c in cues if c)} around me. "
                f"{MOVEMENT_WORDS.get(movement, 'I go on ' + movement)}. {body}")


@dataclass
class LlmRun:
    parallel: int
    cli: CliRun
    analysis_calls: int
    generation_calls: int
    chat_calls: int
    max_in_flight: int
    accepted: int
    dataset: list

    def llm_step_seconds(self) -> float:
        """Time in the steps that call the LLM (analysis and generation)."""
        return sum(seconds for r in self.cli.per_file() for step, seconds in r.steps.items()
                   if step in LLM_STEPS)

    def examples(self) -> list[tuple[str, str]]:
        """(id, generated paragraph) of each exported example: what must not depend on the parallelism."""
        return [(e["id"], e["target_paragraph"]) for e in self.dataset]


def llm_series(corpus: Corpus, workspace: Path, latency: float, examples_per_file: int) -> list[LlmRun]:
    """--parallel 1 and 4 from scratch (own cache each), then --parallel 4 --force (every reply cached)."""
    from llava_sensing_pipeline_tests.support.ollama_test_server import OllamaTestServer

    input_dir = workspace / "corpus"
    mirror(corpus.root, input_dir)
    n_files = len(discover_novels(input_dir, 1))
    script = FaithfulScript()
    results: list[LlmRun] = []
    log(f"LLM path: {n_files} files (--max-files 1), {examples_per_file} examples each, latency {latency} s")
    with OllamaTestServer(backend="scripted", latency=latency, script=script) as server:
        for parallel, force in ((1, False), (4, False), (4, True)):
            ws = workspace / f"p{parallel}"
            ws.mkdir(exist_ok=True)
            args = ["--mode", "llm", "--model", LLM_MODEL, "--ollama-host", server.url, "--parallel", str(parallel),
                    "--input-dir", str(input_dir), "--output-dir", "out", "--max-files", "1",
                    "--num-examples", str(examples_per_file * n_files), *(["--force"] if force else [])]
            server.reset()
            script.reset()
            start = time.time()
            run = run_cli(f"--parallel {parallel}{' --force (cached)' if force else ''}", args, ws)
            attach_run_timings(ws / "dagster_home", [run], [(start, time.time())])
            stats = server.stats()
            data_path = ws / "out" / "llm_dataset.json"
            data = json.loads(data_path.read_text(encoding="utf-8")) if data_path.is_file() else []
            results.append(LlmRun(parallel, run, script.analysis, script.generation, stats["chat"],
                                  stats["max_in_flight"], len(data), data))
    return results


# --- the table -----------------------------------------------------------------------------------------------


@dataclass
class Row:
    area: str
    measurement: str
    values: tuple[str, str]
    target: str = ""
    status: str = ""


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "MISSED")


def fmt(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"


def core_rows(results: Sequence[CoreResult | None]) -> list[Row]:
    rows = []

    def both(fn: Callable[[CoreResult], str]) -> tuple[str, str]:
        return tuple(fn(r) if r else "—" for r in results)  # type: ignore[return-value]

    def rate(stage_seconds: Callable[[CoreResult], float]) -> Callable[[CoreResult], str]:
        return lambda r: (f"{fmt(r.corpus.mb / stage_seconds(r))} MB/s, "
                          f"{fmt(r.chunks / stage_seconds(r), 0)} chunks/s")

    rows.append(Row("core", "chunks (usable for examples)", both(lambda r: f"{r.chunks:,} ({r.usable:,})")))
    rows.append(Row("core", "read + chunk", both(rate(lambda r: r.seconds["read"] + r.seconds["chunk"]))))
    rows.append(Row("core", "rule analysis", both(rate(lambda r: r.seconds["analysis"]))))
    rows.append(Row("core", "sensor synthesis", both(rate(lambda r: r.seconds["sensors"]))))
    rows.append(Row("core", "example building (the candidates kept: 2 x quota per file)",
                    both(lambda r: f"{r.built:,}, {fmt(r.built / r.seconds['examples'], 0)} examples/s")))
    last = next((r for r in reversed(results) if r), None)
    rows.append(Row("core", "rule path: read+chunk+analysis+sensors", both(rate(CoreResult.rule_seconds)),
                    f">= {CORE_TARGET_MB_PER_S:.0f} MB/s",
                    verdict(last.corpus.mb / last.rule_seconds() >= CORE_TARGET_MB_PER_S) if last else ""))
    rows.append(Row("core", "all core work (+ example building)",
                    both(lambda r: f"{fmt(r.total_seconds(), 2)} s, {fmt(r.corpus.mb / r.total_seconds())} MB/s")))
    return rows


def cli_rows(series: Sequence[CliSeries | None], cores: Sequence[CoreResult | None]) -> list[Row]:
    rows = []

    def both(fn: Callable[[CliSeries, CoreResult | None], str]) -> tuple[str, str]:
        return tuple(fn(s, c) if s else "—" for s, c in zip(series, cores))  # type: ignore[return-value]

    def runs(run: CliRun) -> str:
        return f"{len(run.per_file())}+{len(run.runs) - len(run.per_file())}"

    rows.append(Row("CLI", "fresh run: wall (Dagster runs per-file+export)",
                    both(lambda s, c: f"{fmt(s.fresh.wall)} s ({runs(s.fresh)}), {fmt(s.corpus.mb / s.fresh.wall, 2)} "
                                      f"MB/s")))
    scaled = series[-1] if len(series) > 1 else None
    largest = next(s for s in reversed(series) if s)
    rows.append(Row("CLI", "fresh run / the earlier scripts' simple mode on the same files (scaled from 15.3 s per "
                    "100 MB)", both(lambda s, c: f"x{s.fresh.wall / (EARLIER_SIMPLE_S_PER_MB * s.corpus.mb):.1f} "
                                                 f"({fmt(EARLIER_SIMPLE_S_PER_MB * s.corpus.mb)} s)")))
    if scaled:
        limit = EARLIER_TARGET * EARLIER_SIMPLE_S_PER_MB * scaled.corpus.mb
        rows[-1].target = f"<= x{EARLIER_TARGET:g} (scaled: <= {fmt(limit)} s)"
        rows[-1].status = verdict(scaled.fresh.wall <= limit and scaled.fresh.rc == 0)
    rows.append(Row("CLI", "Dagster floor: the no-work twin (same assets, partitions, checks, metadata calls)",
                    both(lambda s, c: f"{fmt(s.twin.wall)} s" + ("" if s.twin.rc == 0 else " (FAILED)"))))
    rows.append(Row("CLI", "fresh run = twin + core work + the rest",
                    both(lambda s, c: f"{fmt(s.fresh.wall)} = {fmt(s.twin.wall)} + {fmt(c.total_seconds())} + "
                                      f"{fmt(s.fresh.wall - s.twin.wall - c.total_seconds())} s; "
                                      f"x{s.fresh.wall / (s.twin.wall + c.total_seconds()):.2f} of twin + core"
                                      if c else "—")))
    if scaled and cores[-1]:
        ratio = scaled.fresh.wall / (scaled.twin.wall + cores[-1].total_seconds())
        rows[-1].target = f"<= x{FLOOR_TARGET:g} of twin + core (scaled)"
        rows[-1].status = verdict(ratio <= FLOOR_TARGET and scaled.twin.rc == 0)
    rows.append(Row("CLI", "fresh: outside runs (start-up, discovery, staleness)",
                    both(lambda s, c: f"{fmt(s.fresh.wall - sum(r.seconds for r in s.fresh.runs))} s")))
    rows.append(Row("CLI", "fresh: asset compute in per-file runs",
                    both(lambda s, c: f"{fmt(sum(r.compute_seconds for r in s.fresh.per_file()))} s")))
    rows.append(Row("CLI", "fresh: of which the core functions (section 1)",
                    both(lambda s, c: f"{fmt(c.total_seconds())} s" if c else "—")))
    rows.append(Row("CLI", "fresh: asset steps outside the asset functions (IO manager, events, checks)",
                    both(lambda s, c: f"{fmt(s.fresh.asset_step_overhead())} s")))
    rows.append(Row("CLI", "fresh: separate asset-check steps",
                    both(lambda s, c: f"{fmt(s.fresh.check_step_seconds())} s")))
    rows.append(Row("CLI", "fresh: run overhead (create + plan events, launch, run events)",
                    both(lambda s, c: f"{fmt(sum(r.seconds - r.step_seconds for r in s.fresh.runs))} s")))
    rows.append(Row("CLI", "fresh: export run",
                    both(lambda s, c: f"{fmt(s.fresh.export_seconds())} s")))
    rows.append(Row("CLI", "fresh: not core work (wall - core functions)",
                    both(lambda s, c: f"{fmt(s.fresh.wall - c.total_seconds())} s "
                                      f"({100 * (1 - c.total_seconds() / s.fresh.wall):.0f} %)" if c else "—")))
    rows.append(Row("CLI", "fresh: cost per partition (per-file runs / files)",
                    both(lambda s, c: f"{fmt(sum(r.seconds for r in s.fresh.per_file()) / s.corpus.files, 2)} s")))
    rows.append(Row("CLI", "fresh, one partition per run (--batch-size 1)",
                    both(lambda s, c: f"{fmt(s.one_per_run.wall)} s ({len(s.one_per_run.per_file())} runs), "
                                      f"{fmt(sum(r.seconds for r in s.one_per_run.per_file()) / s.corpus.files, 2)} "
                                      f"s per partition" if s.one_per_run else "—")))
    rows.append(Row("CLI", "no-change re-run: wall (share of fresh)",
                    both(lambda s, c: f"{fmt(s.again.wall)} s ({100 * s.again.wall / s.fresh.wall:.0f} %), "
                                      f"{s.again.materialized()} materialized"),
                    "<= 10 % of fresh (largest corpus)", verdict(largest.again.wall <= 0.1 * largest.fresh.wall)))
    rows.append(Row("CLI", "one new file: wall (extra over no-change)",
                    both(lambda s, c: f"{fmt(s.new_file.wall)} s (+{fmt(s.new_file.wall - s.again.wall)} s), "
                                      f"{s.new_file.materialized()} materialized"),
                    "about one partition", verdict(all(s.new_file.materialized() == 1 for s in series if s))))
    rows.append(Row("memory", "peak RSS: fresh / no change / new file",
                    both(lambda s, c: f"{s.fresh.peak_rss_mb:.0f} / {s.again.peak_rss_mb:.0f} / "
                                      f"{s.new_file.peak_rss_mb:.0f} MiB (largest file "
                                      f"{s.corpus.largest / 1e6:.1f} MB)")))
    if scaled and series[0]:
        ratio = scaled.fresh.peak_rss_mb / series[0].fresh.peak_rss_mb
        rows[-1].target = "not growing with corpus size"
        rows[-1].status = verdict(ratio <= 1.5) + f" (x{ratio:.1f} for x{scaled.corpus.mb / series[0].corpus.mb:.0f} data)"
    failed = [f"{s.corpus.name} {r.label}" for s in series if s for r in (s.fresh, s.again, s.new_file) if r.rc]
    if failed:
        rows.append(Row("CLI", "runs that exited non-zero", (", ".join(failed), ""), "none", "MISSED"))
    return rows


def llm_rows(runs: Sequence[LlmRun], latency: float, examples_per_file: int) -> list[Row]:
    p1, p4, cached = runs
    rows = []
    label = f"(latency {latency} s, {examples_per_file} examples/file)"

    def per_example(run: LlmRun) -> str:
        n = max(run.accepted, 1)
        return (f"{run.analysis_calls / n:.2f} analysis + {run.generation_calls / n:.2f} generation "
                f"= {run.chat_calls / n:.2f} calls per example ({run.accepted} accepted)")

    ok = max(p1.analysis_calls, p1.generation_calls) <= 1.3 * max(p1.accepted, 1)
    rows.append(Row("LLM", f"calls per accepted example {label}", (per_example(p1), ""),
                    "<= 1.3 per call kind", verdict(ok and p1.accepted > 0)))
    rows.append(Row("LLM", "achieved concurrency: max in flight at --parallel 1 / 4",
                    (f"{p1.max_in_flight} / {p4.max_in_flight}", ""), "1 / 4", verdict(p4.max_in_flight >= 4)))
    speedup = p1.cli.wall / p4.cli.wall
    step_speedup = p1.llm_step_seconds() / max(p4.llm_step_seconds(), 1e-9)
    rows.append(Row("LLM", "wall --parallel 1 vs 4 (speed-up)",
                    (f"{fmt(p1.cli.wall)} s vs {fmt(p4.cli.wall)} s (x{speedup:.1f}); in the LLM steps "
                     f"{fmt(p1.llm_step_seconds())} vs {fmt(p4.llm_step_seconds())} s (x{step_speedup:.1f})", ""),
                    ">= 3x in the LLM steps", verdict(step_speedup >= 3)))
    same = p1.examples() == p4.examples() and bool(p1.dataset)
    rows.append(Row("LLM", "same examples (ids, paragraphs) with --parallel 1 and 4",
                    ("yes" if same else "NO", ""), "yes", verdict(same)))
    rows.append(Row("LLM", "--force re-run: LLM calls (all cached), wall",
                    (f"{cached.chat_calls} calls, {fmt(cached.cli.wall)} s", ""), "0 calls",
                    verdict(cached.chat_calls == 0 and cached.cli.rc == 0)))
    rows.append(Row("memory", "peak RSS of the LLM runs (p1 / p4 / cached)",
                    (f"{p1.cli.peak_rss_mb:.0f} / {p4.cli.peak_rss_mb:.0f} / {cached.cli.peak_rss_mb:.0f} MiB", "")))
    failed = [r.cli.label for r in runs if r.cli.rc]
    if failed:
        rows.append(Row("LLM", "runs that exited non-zero", (", ".join(failed), ""), "none", "MISSED"))
    return rows


def render(rows: Sequence[Row], headers: tuple[str, str]) -> str:
    table = [("area", "measurement", *headers, "target", "status")]
    table += [(r.area, r.measurement, *r.values, r.target, r.status) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |" for line in table]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def git_revision() -> str:
    if CODE != REPO:
        return f"at {CODE}"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "llava_sensing_pipeline"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+local changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --- main ----------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="no scaled corpus, a small LLM part (about two minutes)")
    parser.add_argument("--corpus", default=None,
                        help="corpus root with genre sub-folders (default: ../shared/corpus beside the checkout)")
    parser.add_argument("--scaled-mb", type=float, default=100.0, help="size of the repeated corpus (default: 100)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="passed to the CLI: partitions per Dagster run (default: the CLI's)")
    parser.add_argument("--llm-latency", type=float, default=0.3,
                        help="seconds the test server waits per request (default: 0.3)")
    parser.add_argument("--llm-examples", type=int, default=None,
                        help="examples per file in the LLM part (default: 8 with --quick, else 24)")
    parser.add_argument("--code", default=str(REPO),
                        help="root of another checkout to measure (its llava_sensing_pipeline package), e.g. to "
                             "compare before and after a change on the same machine (default: this checkout)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    corpus_root = Path(args.corpus) if args.corpus else REPO.parent / "shared" / "corpus"
    if not corpus_root.is_dir():
        raise SystemExit(f"bench: corpus folder {corpus_root} not found; pass --corpus")
    shared = describe("corpus", corpus_root.resolve())
    settings = PipelineSettings()
    llm_examples = args.llm_examples or (8 if args.quick else 24)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llava-bench-") as tmp:
        scratch = Path(tmp)
        scaled = None if args.quick else build_scaled(shared, scratch / "scaled" / "corpus", args.scaled_mb)
        corpora = [shared, scaled]

        log(f"core functions on {shared.label()} (best of 3)")
        cores: list[CoreResult | None] = [core_best_of(shared, settings, 3)]
        if scaled:
            log(f"core functions on {scaled.label()} (best of 2)")
            cores.append(core_best_of(scaled, settings, 2))
        else:
            cores.append(None)

        series: list[CliSeries | None] = [cli_series(shared, scratch / "cli-corpus", args.batch_size)]
        if not args.quick:
            one_partition_per_run(series[0], scratch / "cli-one-per-run")
        series.append(cli_series(scaled, scratch / "scaled", args.batch_size) if scaled else None)

        llm = llm_series(shared, scratch / "llm", args.llm_latency, llm_examples)

    headers = tuple(c.label() if c else "— (skipped by --quick)" for c in corpora)
    rows = core_rows(cores) + cli_rows(series, cores) + llm_rows(llm, args.llm_latency, llm_examples)
    header = (f"{time.strftime('%Y-%m-%d')}, code {git_revision()}, {machine()}, "
              f"{'quick' if args.quick else 'full'} run in {time.perf_counter() - started:.0f} s")
    parts = where_time_goes(corpus_root, round(args.scaled_mb / shared.mb)) if not args.quick else ""
    report = results_text(header, rows, headers, parts)  # type: ignore[arg-type]
    print(report)
    if not args.quick and CODE == REPO:
        RESULTS.write_text(report, encoding="utf-8")
        readme = REPO / "README.md"
        readme.write_text(quote_summary(readme.read_text(encoding="utf-8"), report), encoding="utf-8")
        log(f"written to {RESULTS.relative_to(REPO)}, its targets and verdicts quoted in README.md")
    return 0


def summary_block(text: str) -> str:
    """The text between the summary markers (markers included)."""
    start, end = text.index(SUMMARY_START), text.index(SUMMARY_END) + len(SUMMARY_END)
    return text[start:end]


def quote_summary(readme: str, results: str) -> str:
    """``readme`` with its summary block replaced by the one of ``results``."""
    return readme.replace(summary_block(readme), summary_block(results))


SUMMARY_START, SUMMARY_END = "<!-- bench summary: start -->", "<!-- bench summary: end -->"


def summary_table(rows: Sequence[Row], headers: tuple[str, str]) -> str:
    """The rows that have a target, with their verdicts: what the README quotes (between the markers)."""
    lines = [f"| measurement | {headers[0]} | {headers[1]} | target | verdict |", "|---|---|---|---|---|"]
    lines += [f"| {r.measurement} | {r.values[0]} | {r.values[1]} | {r.target} | {r.status} |" for r in rows if r.target]
    return "\n".join(lines)


def results_text(header: str, rows: Sequence[Row], headers: tuple[str, str], parts: str = "") -> str:
    where = f"\n## Where a fresh run's time goes (`bench/where_time_goes.py`)\n\n{parts.strip()}\n" if parts else ""
    return (f"# Benchmark results\n\nWritten by `python bench/run.py` ({header}); `bench/README.md` explains each "
            f"figure.\n\n## Targets\n\n{SUMMARY_START}\nMeasured {header}.\n\n{summary_table(rows, headers)}\n"
            f"{SUMMARY_END}\n\n## Every figure\n\n{render(rows, headers)}\n{where}")


def where_time_goes(corpus: Path, copies: int) -> str:
    """``bench/where_time_goes.py`` on ``copies`` copies of the corpus (the scaled corpus' size): its table."""
    log(f"where the time goes: one fresh run on {copies} copies of the corpus, timed by part")
    done = subprocess.run([sys.executable, str(REPO / "bench" / "where_time_goes.py"), "--corpus", str(corpus),
                           "--copies", str(copies)], env=cli_env(Path(tempfile.gettempdir())), capture_output=True,
                          text=True)
    return done.stdout if done.returncode == 0 else f"(failed: {done.stderr.strip().splitlines()[-1:]})"


def machine() -> str:
    """The CPU model, its cores, the memory and Python: what the figures were measured on."""
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                     "")
    except OSError:
        pass
    try:
        memory = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        memory = ""
    return (f"{model or platform.machine()}, {os.cpu_count()} CPUs{memory}, {platform.python_implementation()} "
            f"{platform.python_version()}")


if __name__ == "__main__":
    sys.exit(main())
