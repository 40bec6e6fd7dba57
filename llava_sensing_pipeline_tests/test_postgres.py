"""Dagster instance storage on a real PostgreSQL server (``deploy/dagster-postgres.yaml``), through the CLI, and the
LLM response cache in PostgreSQL.

The ``postgres_server`` fixture (``conftest.py``, ``support/postgres.py``) starts Debian's ``postgresql`` server
binaries on a free loopback port for the session. Without them the tests are skipped, except in CI (``CI`` set),
where they fail: install them with ``apt-get install -y postgresql``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus

from llava_sensing_pipeline.cli import main
from llava_sensing_pipeline.schedules import partition_states

REPO = Path(__file__).resolve().parents[1]


def test_runs_and_materializations_are_recorded_in_postgres(postgres_server, tmp_path, monkeypatch, capsys):
    corpus = tmp_path / "Novel"
    shutil.copytree(REPO / "Novel", corpus, ignore=shutil.ignore_patterns("*.md"))
    empty = corpus / "Modernist_Novel" / "A000_Empty.txt"  # sorts first, so --max-files 2 selects it
    empty.write_bytes(b"")
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster-postgres.yaml", home / "dagster.yaml")
    for name, value in postgres_server.dagster_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("LLAVA_SENSING_STORAGE_DIR", str(tmp_path / "storage"))
    monkeypatch.chdir(tmp_path)
    flags = ["--input-dir", str(corpus), "--output-dir", str(tmp_path / "out"), "--max-files", "2",
             "--num-examples", "12"]
    keys = ["Modernist_Novel/A000_Empty", "Modernist_Novel/A901_The_Glass_Weather", "Travel_Novel/B901_Salt_Roads",
            "Travel_Novel/B902_North by Rail!"]

    assert main(["generate", *flags]) == 1
    assert "Modernist_Novel/A000_Empty" in capsys.readouterr().err
    assert main(["status"]) == 0
    assert "1 failed, 3 materialized" in capsys.readouterr().out  # read back from PostgreSQL

    shutil.copy(corpus / "Modernist_Novel" / "A903_Tidewater_Hours.txt", empty)  # fix the file
    assert main(["backfill", "--failed", *flags]) == 0
    assert "[1/1] Modernist_Novel/A000_Empty: ok" in capsys.readouterr().out

    with DagsterInstance.get() as instance:
        from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        latest = instance.get_latest_storage_id_by_partition(AssetKey("generated_examples"),
                                                             DagsterEventType.ASSET_MATERIALIZATION)
        assert sorted(latest) == keys
        assert partition_states(instance, keys) == {k: "materialized" for k in keys}
        statuses = [run.status for run in instance.get_runs()]
        assert DagsterRunStatus.FAILURE in statuses and DagsterRunStatus.SUCCESS in statuses

    # the same facts, read straight from PostgreSQL's tables
    materialized = postgres_server.query(
        "SELECT partition, count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
        "AND asset_key = '[\"generated_examples\"]' GROUP BY partition ORDER BY partition")
    assert [row[0] for row in materialized] == keys
    assert dict(materialized)["Modernist_Novel/A000_Empty"] == "1"  # once, by the backfill
    failures = postgres_server.query(
        "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'STEP_FAILURE'")
    assert int(failures[0][0]) >= 1
    runs = dict(postgres_server.query("SELECT status, count(*) FROM runs GROUP BY status"))
    assert int(runs["FAILURE"]) >= 1 and int(runs["SUCCESS"]) >= 3  # per-file runs and the exports
    registered = postgres_server.query("SELECT partition FROM dynamic_partitions ORDER BY partition")
    assert [row[0] for row in registered] == keys
    assert not list(home.rglob("*.db"))  # no SQLite storage beside it


def test_llm_cache_in_postgres_is_keyed_like_sqlite_and_shared(postgres_server, scripted_ollama, tmp_path,
                                                               monkeypatch):
    from llava_sensing_pipeline.llm import OllamaResource
    from llava_sensing_pipeline.llm.cache import PostgresResponseCache, SQLiteResponseCache, open_cache

    db = postgres_server.create_database("llm_cache_test")
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)  # libpq's variable: no password in the URL
    url = postgres_server.url(db)
    messages = [{"role": "user", "content": "Describe the rain."}]
    replies = {}
    for location in (str(tmp_path / "cache.sqlite"), url):
        llm = OllamaResource(host=scripted_ollama.url, model="smollm2:135m", cache_path=location)
        first = llm.chat(messages, options={"seed": 7, "temperature": 0})
        again = llm.chat(messages, options={"seed": 7, "temperature": 0})
        assert not first.cached and again.cached and again.text == first.text
        replies[location] = first.text
        llm.teardown_after_execution(None)
    assert scripted_ollama.stats()["chat"] == 2  # one per cache, the repeats were hits

    sqlite_keys = [row[0] for row in SQLiteResponseCache(tmp_path / "cache.sqlite")._db.execute(
        "SELECT key FROM replies")]
    pg_keys = [row[0] for row in postgres_server.query("SELECT key FROM llava_sensing_llm_replies", db=db)]
    assert pg_keys == sqlite_keys and len(pg_keys) == 1  # the same key for the same request

    # another connection (another worker) sees what one put, at once
    writer, reader = open_cache(url), open_cache(url)
    assert isinstance(writer, PostgresResponseCache)
    writer.put("k", "m", {"text": "t", "eval_count": 3, "eval_duration_s": 0.5})
    assert reader.get("k")["eval_count"] == 3 and reader.get("missing") is None and len(reader) == 2
    writer.put("k", "m", {"text": "u", "eval_count": 4, "eval_duration_s": 0.5})  # a repeat replaces
    assert reader.get("k")["text"] == "u"
    # a dropped connection (server restart, idle timeout) is opened again
    postgres_server.query(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' "
                          "AND pid <> pg_backend_pid()", db=db)
    assert reader.get("k")["text"] == "u"
    writer.close()
    reader.close()
    secret = open_cache(postgres_server.url(db, password=True))
    assert postgres_server.password not in secret.location and "***" in secret.location
    secret.close()
