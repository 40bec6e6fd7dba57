"""A distributed run on Dagster's Celery executor, end to end: the README's "Distributed runs" set-up, tested here.

Each test starts what a deployment has: PostgreSQL instance storage (``deploy/dagster-postgres.yaml``, a database
of its own), a Redis broker on loopback (Debian's ``redis-server``), and Celery worker processes started with the
README's command (``celery -A llava_sensing_pipeline.celery_app worker -Q dagster --concurrency 1 -n NAME@%h``),
each in a working folder of its own and with only the broker and database variables: the pipeline's settings come
with each step from the run. The CLI runs as its own process with ``LLAVA_SENSING_EXECUTOR=celery`` and two runs at
once (``LLAVA_SENSING_CONCURRENT_RUNS=2``); the per-partition storage, the exports and the LLM response cache (a
table in the instance's PostgreSQL database) are shared by all. The LLM is the scripted test server with a fixed
latency per reply (``faithful_script`` of ``test_llm_mode``), which records every request it answers.

- ``test_distributed_simple_mode``: the whole graph over ``Novel/``; per-file steps ran on both workers; every
  partition materialized exactly once; the dataset is byte-identical to an in-process run's.
- ``test_distributed_llm_mode_one_vs_two_workers``: the same LLM-mode run on one worker, then on two; both give the
  in-process dataset; two workers take less time (the figures the README quotes); every request was answered once
  and cached under the key the server's request gives; a ``--force`` re-run makes no request at all.
- ``test_distributed_worker_killed_mid_run``: one worker is killed with SIGKILL (its whole process group) in the
  middle of an LLM step; the broker hands the step to the other worker; the run completes with every partition
  materialized once, the in-process dataset, and no request that had been answered (cached) before the kill sent
  again.

Set ``LLAVA_SENSING_TEST_FIGURES`` to a file to append the measured figures there as JSON lines.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from llava_sensing_pipeline.llm.cache import request_key
from llava_sensing_pipeline_tests.support.celery_cluster import base_env, redis_server, start_workers
from llava_sensing_pipeline_tests.support.ollama_test_server import OllamaTestServer
from llava_sensing_pipeline_tests.test_llm_mode import faithful_script, passage_of

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2:135m"
LATENCY_S = 0.8  # per scripted reply: the LLM steps' time is mostly waiting on the server, as with a real one
VISIBILITY_TIMEOUT_S = 20  # above any step of these tests (a step of a lost worker is redelivered after this)
PER_FILE_ASSETS = ("novel_files", "text_chunks", "environment_features", "sensor_records", "style_labels",
                   "generated_examples")
LLM_STEPS = ("environment_features", "generated_examples")
LLM_FLAGS = ("--mode", "llm", "--model", MODEL, "--parallel", "1", "--max-retries", "1", "--max-files", "1",
             "--num-examples", "12", "--min-alignment", "0.5")
CLI_TIMEOUT_S = 400


class RecordingScript:
    """``faithful_script``, recording the cache key of every request the server answers and, for an analysis
    request, the partition (novel file) whose passage it asks about. A request is recorded as the server starts its
    reply (after the latency): with one request at a time per step, the step's earlier replies are cached by then."""

    def __init__(self):
        self.digest = ""
        self.keys: list[str] = []
        self.partitions: list[str] = []  # of the analysis requests
        self.texts: dict[str, str] = {}  # partition key → the file's text, whitespace collapsed
        self._lock = threading.Lock()

    def read_corpus(self, corpus: Path) -> None:
        from llava_sensing_pipeline.partitions import discover_novels

        self.texts = {f.key: " ".join((corpus / f.relative_path).read_text(encoding="utf-8").split())
                      for f in discover_novels(corpus)}

    def partition_of(self, passage: str) -> str:
        probe = " ".join(passage.split())[:80]
        return next((key for key, text in self.texts.items() if probe in text), "?")

    def __call__(self, request) -> str:
        key = request_key("ollama", MODEL, self.digest, [dict(m) for m in request.messages], request.format,
                          dict(request.options))
        with self._lock:
            self.keys.append(key)
            if request.format:
                self.partitions.append(self.partition_of(passage_of(request)))
        return faithful_script(request)


def scripted_server(latency: float) -> tuple[OllamaTestServer, RecordingScript]:
    script = RecordingScript()
    server = OllamaTestServer(backend="scripted", script=script, latency=latency).start()
    script.digest = server.digest
    return server, script


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def corpus(tmp_path) -> Path:
    target = tmp_path / "Novel"
    shutil.copytree(REPO / "Novel", target, ignore=shutil.ignore_patterns("*.md"))
    return target


class Cluster:
    """One distributed set-up: a Dagster instance in a database of its own, workers, and the CLI that launches runs.

    ``shared/`` stands for what every machine mounts (storage, exports); each worker and the CLI have a folder of
    their own besides.
    """

    def __init__(self, pg, broker: str, root: Path, name: str):
        self.pg, self.root = pg, root
        self.db = pg.create_database(name)
        self.home = root / "home"
        self.home.mkdir(parents=True)
        yaml = (REPO / "deploy" / "dagster-postgres.yaml").read_text()
        assert "default_limit: 1" in yaml
        # two workers, each LLM step one request at a time (--parallel 1): two LLM steps at once fill the server's
        # two slots (the README's rule: pool limit = total slots / slots per step)
        (self.home / "dagster.yaml").write_text(yaml.replace("default_limit: 1", "default_limit: 2"))
        self.shared = root / "shared"
        self.storage, self.out = self.shared / "storage", self.shared / "out"
        self.cache_url = pg.url(self.db)  # the LLM cache: a table in the instance's database
        # what every process of the set-up gets: the broker, the instance's database
        self.env = base_env(
            LLAVA_SENSING_CELERY_BROKER=broker,
            LLAVA_SENSING_CELERY_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT_S),
            DAGSTER_PG_HOST=pg.host, DAGSTER_PG_PORT=str(pg.port), DAGSTER_PG_USER=pg.user,
            DAGSTER_PG_PASSWORD=pg.password, DAGSTER_PG_DB=self.db, PGPASSWORD=pg.password,
        )
        self.workers = []

    def start_workers(self, *names: str):
        self.workers += start_workers(list(names), self.env, self.root / "workers")
        return self.workers

    def stop(self):
        for worker in self.workers:
            worker.stop()

    def cli_env(self) -> dict[str, str]:
        return {**self.env, "DAGSTER_HOME": str(self.home), "LLAVA_SENSING_EXECUTOR": "celery",
                "LLAVA_SENSING_CONCURRENT_RUNS": "2", "LLAVA_SENSING_STORAGE_DIR": str(self.storage),
                "LLAVA_SENSING_LLM_CACHE": self.cache_url}

    def launch(self, corpus: Path, *flags: str) -> subprocess.Popen:
        launcher = self.root / "launcher"
        launcher.mkdir(exist_ok=True)
        return subprocess.Popen(cli_command(corpus, self.out, *flags), env=self.cli_env(), cwd=launcher,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def generate(self, corpus: Path, *flags: str) -> tuple[subprocess.CompletedProcess, float]:
        started = time.monotonic()
        proc = self.launch(corpus, *flags)
        return finish(proc, self.workers), time.monotonic() - started

    def query(self, sql: str) -> list[list[str]]:
        return self.pg.query(sql, db=self.db)

    def step_workers(self) -> list[tuple[str, str, str]]:
        """(run id, step key, worker) for each step a worker took: dagster-celery's "Executing steps … in celery
        worker" engine event names the worker."""
        rows = self.query("SELECT run_id, step_key, event FROM event_logs WHERE dagster_event_type = 'ENGINE_EVENT' "
                          "AND event LIKE '%in celery worker%' ORDER BY id")
        found = []
        for run_id, step, event in rows:
            names = [w.hostname for w in self.workers if f'"{w.hostname}"' in event]
            assert len(names) == 1, event
            found.append((run_id, step, names[0]))
        return found

    def step_pids(self) -> dict[str, set[int]]:
        """Step key → the pids its STEP_START events came from."""
        pids: dict[str, set[int]] = {}
        for step, event in self.query("SELECT step_key, event FROM event_logs WHERE dagster_event_type = "
                                      "'STEP_START'"):
            pids.setdefault(step, set()).add(int(re.search(r'"pid": (\d+)', event).group(1)))
        return pids

    def materializations(self) -> Counter:
        """(asset, partition) → ASSET_MATERIALIZATION events."""
        rows = self.query("SELECT asset_key, partition FROM event_logs WHERE dagster_event_type = "
                          "'ASSET_MATERIALIZATION'")
        return Counter((json.loads(asset)[0], partition or None) for asset, partition in rows)

    def per_file_seconds(self) -> float:
        """From the first per-file step's start to the last one's success: the part a second worker shares."""
        steps = "', '".join(PER_FILE_ASSETS)
        (first, last), = self.query(
            "SELECT extract(epoch from min(timestamp)), extract(epoch from max(timestamp)) FROM event_logs WHERE "
            f"dagster_event_type IN ('STEP_START', 'STEP_SUCCESS') AND step_key IN ('{steps}')")
        return float(last) - float(first)

    def metadata(self, asset: str, run_id: str | None = None) -> list[dict]:
        """The metadata of ``asset``'s materializations (of one run, or the latest per partition), as plain values."""
        from dagster import EventLogEntry
        from dagster._serdes import deserialize_value

        where = f"AND run_id = '{run_id}'" if run_id else ""
        rows = self.query("SELECT partition, event FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
                          f"AND asset_key = '[\"{asset}\"]' {where} ORDER BY id")
        latest = {}
        for partition, event in rows:
            entry = deserialize_value(event, EventLogEntry)
            latest[partition] = {k: v.value for k, v in entry.asset_materialization.metadata.items()}
        return list(latest.values())

    def has_table(self, name: str) -> bool:
        return self.query(f"SELECT to_regclass('{name}') IS NOT NULL") == [["t"]]

    def cached_keys(self) -> list[str]:
        """The LLM cache's keys (none before the first step that asks the LLM has created the table)."""
        if not self.has_table("llava_sensing_llm_replies"):
            return []
        return [row[0] for row in self.query("SELECT key FROM llava_sensing_llm_replies")]


def cli_command(corpus: Path, out: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "llava_sensing_pipeline.cli", "generate", "--input-dir", str(corpus),
            "--output-dir", str(out), *flags]


def finish(proc: subprocess.Popen, workers=()) -> subprocess.CompletedProcess:
    try:
        stdout, stderr = proc.communicate(timeout=CLI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        logs = "\n".join(f"--- {w.name}\n{w.tail()}" for w in workers)
        raise AssertionError(f"the CLI did not finish in {CLI_TIMEOUT_S} s:\n{stdout[-3000:]}\n{stderr[-3000:]}\n"
                             f"{logs}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def ok(done: subprocess.CompletedProcess, cluster: Cluster | None = None, workers=None) -> str:
    """The CLI's output; on a failure the assertion names the failed steps' errors and the workers' logs."""
    if done.returncode == 0:
        return done.stdout
    errors = ""
    if cluster is not None:
        from dagster import EventLogEntry
        from dagster._serdes import deserialize_value

        for (event,) in cluster.query("SELECT event FROM event_logs WHERE dagster_event_type IN ('STEP_FAILURE', "
                                      "'RUN_FAILURE', 'PIPELINE_FAILURE') ORDER BY id"):
            entry = deserialize_value(event, EventLogEntry)
            data = entry.dagster_event.event_specific_data if entry.dagster_event else None
            error = getattr(data, "error", None)
            errors += f"\n--- {entry.step_key or 'run'}: {entry.user_message}\n{error.to_string() if error else ''}"
    logs = "\n".join(f"--- {w.name}\n{w.tail()}" for w in (workers if workers is not None else
                                                            cluster.workers if cluster else ()))
    raise AssertionError(f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n{errors[-8000:]}\n"
                         f"{logs}")


_REFERENCES: dict[tuple[str, ...], bytes] = {}


def in_process_reference(corpus: Path, root: Path, *flags: str) -> bytes:
    """The dataset of the same command on one machine (in-process executor, SQLite instance and cache), against a
    scripted server without latency in the LLM mode (same replies, same digest). Made once per set of flags."""
    if flags in _REFERENCES:
        return _REFERENCES[flags]
    root.mkdir()
    env = base_env(DAGSTER_HOME=str(root / "home"), LLAVA_SENSING_STORAGE_DIR=str(root / "storage"),
                   LLAVA_SENSING_LLM_CACHE=str(root / "cache.sqlite"))
    mode = flags[flags.index("--mode") + 1] if "--mode" in flags else "simple"
    server = scripted_server(0)[0] if mode != "simple" else None
    try:
        host = ("--ollama-host", server.url) if server else ()
        done = subprocess.run(cli_command(corpus, root / "out", *flags, *host), env=env, cwd=root,
                              capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    finally:
        if server:
            server.stop()
    ok(done)
    _REFERENCES[flags] = (root / "out" / f"{mode}_dataset.json").read_bytes()
    return _REFERENCES[flags]


def without_latency(dataset: bytes) -> list[dict]:
    """A dataset's examples less each one's measured LLM latency (``metadata.latency_s``), the one figure that
    differs between two runs of the same command."""
    examples = json.loads(dataset)
    for example in examples:
        example["metadata"].pop("latency_s", None)
    return examples


def record_figures(**figures) -> None:
    print("distributed figures:", json.dumps(figures))
    target = os.environ.get("LLAVA_SENSING_TEST_FIGURES")
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(figures) + "\n")


def assert_each_partition_once(cluster: Cluster, corpus: Path, max_files: int | None = None):
    from llava_sensing_pipeline.partitions import discover_novels

    keys = [f.key for f in discover_novels(corpus, max_files)]
    materialized = cluster.materializations()
    for asset in PER_FILE_ASSETS:
        assert {k: materialized[(asset, k)] for k in keys} == {k: 1 for k in keys}, asset
    assert materialized[("chunked_json_exports", None)] == 1


@pytest.fixture
def cluster_factory(postgres_server, broker, tmp_path):
    made = []

    def make(name: str) -> Cluster:
        for earlier in made:  # one set-up at a time
            earlier.stop()
        # a Redis database of its own, so no earlier set-up's task or worker is ever seen
        url = broker.rsplit("/", 1)[0] + f"/{len(made) + 1}"
        made.append(Cluster(postgres_server, url, tmp_path / name, f"distributed_{name}"))
        return made[-1]

    yield make
    for cluster in made:
        cluster.stop()


def test_distributed_simple_mode(cluster_factory, corpus, tmp_path):
    cluster = cluster_factory("simple")
    w1, w2 = cluster.start_workers("w1", "w2")
    flags = ("--batch-size", "3")  # two runs of three partitions, at once
    done, seconds = cluster.generate(corpus, *flags)
    out = ok(done, cluster)
    assert "files: 6 selected, 6 materialized (6 ok, 0 failed)" in out

    # per-file steps ran on both workers, in the workers' pool processes (not in the CLI's)
    taken = cluster.step_workers()
    per_file = Counter(worker for _, step, worker in taken if step in PER_FILE_ASSETS)
    assert set(per_file) == {w1.hostname, w2.hostname}, per_file
    pids = set().union(*(cluster.step_pids()[a] for a in PER_FILE_ASSETS))
    assert len(pids) >= 2 and pids <= w1.pids() | w2.pids()
    assert_each_partition_once(cluster, corpus)

    # the shared storage has every table; the workers' own folders stay empty
    assert len(list((cluster.storage / "generated_examples").rglob("*.parquet"))) == 6
    assert not any(p.is_file() for w in (w1, w2) for p in w.folder.rglob("*"))
    dataset = (cluster.out / "simple_dataset.json").read_bytes()
    assert dataset == in_process_reference(corpus, tmp_path / "reference", *flags)
    record_figures(test="simple", seconds=round(seconds, 1), per_file_steps=dict(per_file))


def test_distributed_llm_mode_one_vs_two_workers(cluster_factory, corpus, tmp_path):
    server, script = scripted_server(LATENCY_S)
    flags = (*LLM_FLAGS, "--ollama-host", server.url)
    try:
        seconds, per_file, datasets = {}, {}, {}
        for n in (1, 2):
            cluster = cluster_factory(f"llm{n}")
            workers = cluster.start_workers(*[f"w{i}" for i in range(1, n + 1)])
            script.keys.clear()
            done, seconds[n] = cluster.generate(corpus, *flags)
            assert "files: 2 selected, 2 materialized (2 ok, 0 failed)" in ok(done, cluster)
            per_file[n] = cluster.per_file_seconds()
            datasets[n] = (cluster.out / "llm_dataset.json").read_bytes()
            taken = {worker for _, step, worker in cluster.step_workers() if step in LLM_STEPS}
            assert taken == {w.hostname for w in workers}  # with two, both ran LLM steps
            assert_each_partition_once(cluster, corpus, 1)
            # each request answered once, and cached under the key the request gives
            cached = cluster.cached_keys()
            assert sorted(cached) == sorted(script.keys) and len(set(script.keys)) == len(script.keys)

        # a re-run of everything on the two workers: every reply from the shared cache
        script.keys.clear()
        rerun, rerun_seconds = cluster.generate(corpus, *flags, "--force")
        assert "2 materialized (2 ok, 0 failed)" in ok(rerun, cluster)
        assert script.keys == []
        for asset, prefix in zip(LLM_STEPS, ("analysis", "generation")):
            for meta in cluster.metadata(asset):
                assert meta[f"{prefix}_llm_calls"] == 0 and meta[f"{prefix}_cache_hits"] > 0, meta
        assert (cluster.out / "llm_dataset.json").read_bytes() == datasets[2]
    finally:
        server.stop()

    record_figures(test="llm", latency_s=LATENCY_S, cli_seconds={1: round(seconds[1], 1), 2: round(seconds[2], 1)},
                   per_file_seconds={1: round(per_file[1], 1), 2: round(per_file[2], 1)},
                   per_file_ratio=round(per_file[1] / per_file[2], 2), cli_ratio=round(seconds[1] / seconds[2], 2),
                   rerun_seconds=round(rerun_seconds, 1), rerun_requests=0)
    reference = without_latency(in_process_reference(corpus, tmp_path / "reference", *LLM_FLAGS))
    assert without_latency(datasets[1]) == without_latency(datasets[2]) == reference
    assert per_file[2] < per_file[1] / 1.2, per_file  # a second worker shares the per-file work


def test_distributed_worker_killed_mid_run(cluster_factory, corpus, tmp_path):
    server, script = scripted_server(LATENCY_S)
    script.read_corpus(corpus)
    flags = (*LLM_FLAGS, "--ollama-host", server.url)
    try:
        cluster = cluster_factory("fault")
        workers = cluster.start_workers("w1", "w2")
        proc = cluster.launch(corpus, *flags)
        victim, lost, snapshot = wait_and_kill_mid_llm_step(cluster, proc, script)
        done = finish(proc, workers)
    finally:
        server.stop()
    survivor = next(w for w in workers if w is not victim)
    assert "files: 2 selected, 2 materialized (2 ok, 0 failed)" in ok(done, cluster, [survivor])

    # the lost step was handed to the other worker, which ran it to success
    run_id, step = lost
    takers = [worker for r, s, worker in cluster.step_workers() if (r, s) == lost]
    assert takers == [victim.hostname, survivor.hostname], takers
    assert cluster.query(f"SELECT count(*) FROM event_logs WHERE run_id = '{run_id}' AND step_key = '{step}' "
                         "AND dagster_event_type = 'STEP_SUCCESS'") == [["1"]]
    assert script.partitions and "?" not in script.partitions  # every analysis request was told apart by its file
    # ... and found what the victim had paid for in the shared cache
    (redone,) = cluster.metadata(step, run_id)
    assert redone["analysis_cache_hits"] >= 2, redone
    # no partition lost or duplicated, and the dataset is the one-machine dataset
    assert_each_partition_once(cluster, corpus, 1)
    reference = without_latency(in_process_reference(corpus, tmp_path / "reference", *LLM_FLAGS))
    assert without_latency((cluster.out / "llm_dataset.json").read_bytes()) == reference
    ids = [e["id"] for e in reference]
    assert len(ids) == len(set(ids)) == 12
    # no request answered (and cached) before the kill was sent again; at most the one in flight on the victim
    # (answered by the server, never received) was
    sent = Counter(script.keys)
    assert snapshot and all(sent[key] == 1 for key in snapshot)
    assert sum(n - 1 for n in sent.values()) <= 1
    assert sorted(set(script.keys)) == sorted(cluster.cached_keys())
    record_figures(test="fault", killed=victim.name, lost_step=step, cached_before_kill=len(snapshot),
                   requests=len(script.keys), repeated=sum(n - 1 for n in sent.values()))


def wait_and_kill_mid_llm_step(cluster: Cluster, proc: subprocess.Popen, script: RecordingScript,
                               timeout_s: float = 240):
    """Waits until a worker is in the middle of an ``environment_features`` step (started, not finished, at least
    three of its passages answered, so at least two replies cached), kills that worker with SIGKILL and returns it,
    the (run id, step) it lost, and the cache keys at that moment."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before a worker could be killed:\n{proc.stderr.read()[-3000:]}"
        if not cluster.has_table("event_logs"):  # the CLI has not set up the instance's tables yet
            time.sleep(0.5)
            continue
        finished = {tuple(r) for r in cluster.query(
            "SELECT run_id, step_key FROM event_logs WHERE dagster_event_type IN ('STEP_SUCCESS', 'STEP_FAILURE')")}
        partitions = dict(cluster.query("SELECT run_id, value FROM run_tags WHERE key = 'dagster/partition'"))
        with script._lock:
            answered = Counter(script.partitions)
        for run_id, step, worker in cluster.step_workers():
            if step != "environment_features" or (run_id, step) in finished:
                continue
            if answered[partitions.get(run_id)] >= 3:
                victim = next(w for w in cluster.workers if w.hostname == worker)
                victim.kill()
                return victim, (run_id, step), cluster.cached_keys()
        time.sleep(0.1)
    raise AssertionError("no worker was seen in the middle of an LLM step")
