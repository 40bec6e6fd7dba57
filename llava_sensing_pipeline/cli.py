"""``llava-sensing``: the command line.

``llava-sensing generate`` mirrors the earlier scripts' flags (``--mode``, ``--max-files``, ``--num-examples``,
``--chunk-size``) and materializes the asset graph through Dagster against a persistent ``DAGSTER_HOME`` (default
``data/dagster_home``), so its runs appear in ``dagster dev`` afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path

DEFAULT_DAGSTER_HOME = "data/dagster_home"
DAGSTER_YAML = "telemetry:\n  enabled: false\n"


def ensure_dagster_home() -> Path:
    """Uses ``$DAGSTER_HOME`` or ``data/dagster_home``; creates it with a ``dagster.yaml`` if needed."""
    home = Path(os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def add_server_flags(group) -> None:
    """The flags that choose the LLM server and model (``generate``, ``backfill`` and ``eval-labels``)."""
    group.add_argument("--llm-api", choices=["ollama", "openai"], default=None,
                       help="ollama: Ollama's native API (sets the context per request); openai: any "
                            "OpenAI-compatible server: vLLM, SGLang, llama-server, LM Studio, Ollama's /v1 "
                            "(default: $LLAVA_SENSING_LLM_API or ollama)")
    group.add_argument("--llm-url", default=None,
                       help="the server's URL, comma-separated for a pool, e.g. http://gpu:8000/v1 (default: "
                            "$LLAVA_SENSING_LLM_URL, else for ollama $OLLAMA_HOST or http://localhost:11434, for "
                            "openai http://localhost:8000/v1); the API key comes from $LLAVA_SENSING_LLM_API_KEY or "
                            "$OPENAI_API_KEY")
    group.add_argument("--ollama-host", default=None, help="the same as --llm-url (kept for Ollama users)")
    group.add_argument("--model", default=None,
                       help="model name as the server lists it (default: $LLAVA_SENSING_MODEL or llama3.1:8b)")
    group.add_argument("--parallel", type=int, default=None,
                       help="requests in flight per server: Ollama's OLLAMA_NUM_PARALLEL, llama-server's --parallel, "
                            "64-256 for vLLM or SGLang (default: $OLLAMA_NUM_PARALLEL or 1)")
    group.add_argument("--ollama-timeout", type=float, default=120.0, help="seconds per request (default: 120)")
    group.add_argument("--max-retries", type=int, default=3,
                       help="retries per request on timeouts, 429 and 5xx (default: 3)")


def server_env(args: argparse.Namespace) -> dict[str, str]:
    """The variables :func:`~.definitions.llm_from_env` reads, for the server flags given."""
    env = {"LLAVA_SENSING_OLLAMA_TIMEOUT": f"{args.ollama_timeout:g}", "LLAVA_SENSING_MAX_RETRIES": str(args.max_retries)}
    if args.llm_api:
        env["LLAVA_SENSING_LLM_API"] = args.llm_api
    if args.llm_url or args.ollama_host:
        env["LLAVA_SENSING_LLM_URL"] = args.llm_url or args.ollama_host
    if args.model:
        env["LLAVA_SENSING_MODEL"] = args.model
    if args.parallel:
        env["OLLAMA_NUM_PARALLEL"] = str(args.parallel)
    return env


def _run_options() -> argparse.ArgumentParser:
    """The options ``generate`` and ``backfill`` share (the earlier scripts' flags, kebab-case)."""
    opts = argparse.ArgumentParser(add_help=False)
    opts.add_argument("--mode", choices=["simple", "hybrid", "llm"], default="simple",
                      help="simple: rule analysis, source passage as target; hybrid: LLM analysis, source passage; "
                           "llm: LLM analysis and an LLM-written paragraph")
    opts.add_argument("--input-dir", default="Novel",
                      help="folder with Modernist_Novel/ and Travel_Novel/ (default: Novel)")
    opts.add_argument("--output-dir", default="data/processed", help="export folder (default: data/processed)")
    opts.add_argument("--max-files", type=int, default=None, help="files per genre folder, first in sorted order")
    opts.add_argument("--num-examples", type=int, default=None,
                      help="examples in the export, spread evenly over the files (default: 100 per file)")
    opts.add_argument("--chunk-size", type=int, default=100, help="examples per export chunk file (default: 100)")
    opts.add_argument("--chunk-chars", type=int, default=500,
                      help="target characters per text chunk (default: 500)")
    opts.add_argument("--min-chunk-chars", type=int, default=None, help="default: 40%% of --chunk-chars")
    opts.add_argument("--max-chunk-chars", type=int, default=None, help="default: 200%% of --chunk-chars")
    opts.add_argument("--min-confidence", type=float, default=0.15,
                      help="minimum rule-analysis confidence for a chunk to become an example (default: 0.15)")
    opts.add_argument("--seed", type=int, default=42, help="global seed of every random draw, 0 or more (default: 42)")
    opts.add_argument("--split-ratios", default="80,10,10",
                      help="train,validation,test shares by example count; whole novels go to one split "
                           "(default: 80,10,10)")
    opts.add_argument("--near-duplicate-threshold", type=float, default=0.8,
                      help="MinHash Jaccard similarity above which a target paragraph is a near-duplicate (default: 0.8)")
    opts.add_argument("--batch-size", type=int, default=None,
                      help="partitions per Dagster run (default: 50 in simple mode, 1 in the LLM modes)")
    opts.add_argument("--verbose", "-v", action="store_true", help="show Dagster's step logs")
    llm = opts.add_argument_group("LLM modes (hybrid, llm)")
    add_server_flags(llm)
    llm.add_argument("--ollama-down-wait", type=float, default=300.0,
                     help="seconds, in all, to wait for a server that went away (crashed, restarted, hung) to come "
                          "back before the partition fails and the run stops; re-running resumes (default: 300)")
    llm.add_argument("--max-requests-per-example", type=float, default=10.0,
                     help="hard cap on requests (analysis, generation, retries, resends) per asked example of a "
                          "file; a file that reaches it stops (default: 10)")
    llm.add_argument("--min-quota-share", type=float, default=0.5,
                     help="a file that reaches its request cap succeeds, with its shortfall stated, only if it got "
                          "this share of its quota; else it fails (default: 0.5)")
    llm.add_argument("--confidence-threshold", type=float, default=0.3,
                     help="minimum validated LLM analysis confidence for a chunk to be used (default: 0.3)")
    llm.add_argument("--min-alignment", type=float, default=0.3,
                     help="minimum keyword alignment of a generated paragraph with its sensor record (default: 0.3)")
    llm.add_argument("--min-words", type=int, default=120, help="shortest accepted paragraph (default: 120)")
    llm.add_argument("--max-words", type=int, default=300, help="longest accepted paragraph (default: 300)")
    return opts


COUNT_FLAGS = ("num_examples", "max_files", "chunk_size", "chunk_chars", "min_chunk_chars", "max_chunk_chars",
               "batch_size", "parallel", "min_words", "max_words")
"""Flags that count something: at least 1 when given."""
SHARE_FLAGS = ("min_confidence", "confidence_threshold", "min_alignment", "min_quota_share")
"""Flags that are a share or a score: between 0 and 1."""


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def validate_args(args: argparse.Namespace) -> str | None:
    """The first problem with the flags of ``generate`` or ``backfill`` (``--flag value: what is wrong and what to
    pass``), or None when they are all usable. Runs before anything is read or written."""
    import math

    from .curation import normalise_ratios

    for dest in COUNT_FLAGS:
        value = getattr(args, dest, None)
        if value is not None and value < 1:
            return f"{_flag(dest)}: must be at least 1, got {value}"
    for dest in SHARE_FLAGS:
        value = getattr(args, dest)
        if not 0.0 <= value <= 1.0:  # NaN fails too
            return f"{_flag(dest)}: must be between 0 and 1, got {value}"
    if not 0.0 < args.near_duplicate_threshold <= 1.0:
        return (f"--near-duplicate-threshold: must be above 0 and at most 1, got {args.near_duplicate_threshold} "
                "(the MinHash similarity above which a paragraph counts as a near-duplicate)")
    try:
        normalise_ratios([float(part) for part in args.split_ratios.replace("/", ",").split(",") if part.strip()])
    except ValueError:
        return ("--split-ratios: need three numbers for train,validation,test, none negative and train above 0 "
                f"(e.g. 80,10,10), got {args.split_ratios!r}")
    if args.seed < 0:
        return f"--seed: must be 0 or more, got {args.seed}"
    if args.min_words > args.max_words:
        return f"--min-words ({args.min_words}) must not exceed --max-words ({args.max_words})"
    if not (args.ollama_timeout > 0 and math.isfinite(args.ollama_timeout)):
        return f"--ollama-timeout: must be a number of seconds above 0, got {args.ollama_timeout}"
    if not (args.ollama_down_wait >= 0 and math.isfinite(args.ollama_down_wait)):
        return f"--ollama-down-wait: must be a number of seconds, 0 or more, got {args.ollama_down_wait}"
    if args.max_retries < 0:
        return f"--max-retries: must be 0 or more, got {args.max_retries}"
    if not (args.max_requests_per_example >= 1 and math.isfinite(args.max_requests_per_example)):
        return (f"--max-requests-per-example: must be at least 1 (a request per asked example), got "
                f"{args.max_requests_per_example}")
    problem = input_dir_problem(args.input_dir)
    if problem:
        return problem
    out = Path(args.output_dir)
    if "://" not in args.output_dir and out.exists() and not out.is_dir():
        return f"--output-dir {args.output_dir}: is a file, not a folder; pass a folder for the export"
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llava-sensing", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    opts = _run_options()
    gen = sub.add_parser("generate", parents=[opts],
                         help="materialize what is missing or stale for the novels in --input-dir, then export")
    gen.add_argument("--force", action="store_true", help="re-materialize every selected partition")
    back = sub.add_parser("backfill", parents=[opts],
                          help="re-materialize all partitions, one genre, or only the failed and missing ones")
    which = back.add_mutually_exclusive_group()
    which.add_argument("--genre", help="only this genre folder, e.g. Travel_Novel")
    which.add_argument("--failed", action="store_true", help="only partitions that failed or were never materialized")
    status = sub.add_parser("status", help="a table of partitions: last state, up to date or why not, examples")
    status.add_argument("--genre", help="only this genre folder")
    status.add_argument("--input-dir", default=None,
                        help="only the files of this folder, new ones included (default: every registered partition, "
                             "whichever folder it came from)")
    prune = sub.add_parser("prune", help="delete the partitions whose file is gone from --input-dir (never done "
                                         "implicitly: several corpora can share one DAGSTER_HOME)")
    prune.add_argument("--input-dir", default="Novel", help="the corpus whose files are kept (default: Novel)")
    add_eval_labels_parser(sub)
    return parser


def cmd_generate(args: argparse.Namespace) -> int:
    """``generate`` and ``backfill``: materialize the selected partitions through Dagster, then export."""
    from .settings import PipelineSettings, chunk_bounds

    min_chars, max_chars = chunk_bounds(args.chunk_chars, args.min_chunk_chars, args.max_chunk_chars)
    if not min_chars <= args.chunk_chars <= max_chars:
        print(f"error: need --min-chunk-chars ({min_chars}) <= --chunk-chars ({args.chunk_chars}) "
              f"<= --max-chunk-chars ({max_chars})", file=sys.stderr)
        return 2
    settings = PipelineSettings(
        input_dir=str(Path(args.input_dir).resolve()), output_dir=args.output_dir, mode=args.mode, seed=args.seed,
        chunk_chars=args.chunk_chars, min_chunk_chars=min_chars, max_chunk_chars=max_chars,
        min_confidence=args.min_confidence, num_examples=args.num_examples, max_files=args.max_files,
        export_chunk_size=args.chunk_size, llm_confidence_threshold=args.confidence_threshold,
        min_alignment=args.min_alignment, min_words=args.min_words, max_words=args.max_words,
        split_ratios=args.split_ratios, near_duplicate_threshold=args.near_duplicate_threshold,
        max_requests_per_example=args.max_requests_per_example, min_quota_share=args.min_quota_share,
    )
    from .settings import record_env, recorded_env

    recorded_env()  # an unreadable settings file is an error before anything else (SettingsUnreadable)
    env = run_env(args, settings)
    with scoped_env(env):  # what the definitions (and any worker process) are built from, for this command only
        files = _preflight(args, settings)
        if isinstance(files, int):  # failed before it started: the instance and its settings are left as they were
            return files
        home = ensure_dagster_home()
        record_env({**env, "LLAVA_SENSING_STORAGE_DIR": str(storage_dir())}, str(home))
        return _generate(args, settings, home, files)


def _preflight(args: argparse.Namespace, settings):
    """The LLM server and model (LLM modes) and the selected files, checked before anything is written: the files,
    or the exit status of a command that cannot start."""
    from .definitions import llm_from_env
    from .llm import ModelNotAvailable, ServerUnavailable
    from .runner import select_files

    llm = llm_from_env()
    if args.mode != "simple":
        try:
            digest = llm.check_ready()
        except ModelNotAvailable as exc:  # a flag to fix: --model
            print(f"error: --model {llm.model}: {exc}\nNothing was written.", file=sys.stderr)
            return 2
        except ServerUnavailable as exc:  # the server is down: start it and re-run
            print(f"error: --mode {args.mode} needs an LLM: {exc}\nNothing was written.", file=sys.stderr)
            return 1
        print(f"llm: {llm.model} ({digest[:12]}) through the {llm.api} API at {llm.url}, "
              f"{llm.parallel} in flight per host, {llm.total_slots} in all")

    try:
        files = select_files(settings)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not files:
        print(f"error: no .txt novels under {settings.input_dir}: expected Modernist_Novel/*.txt and "
              "Travel_Novel/*.txt", file=sys.stderr)
        return 2
    return files


def _generate(args: argparse.Namespace, settings, home: Path, files) -> int:
    from dagster import DagsterInstance

    from .definitions import build_definitions
    from .runner import Runner

    batch = args.batch_size or (50 if args.mode == "simple" else 1)
    print(f"llava-sensing: {len(files)} file(s) from {args.input_dir}, mode {args.mode}, seed {args.seed}, "
          f"DAGSTER_HOME={home}")
    with DagsterInstance.get() as instance:
        targets = None
        if args.command == "backfill":
            targets = backfill_targets(args, files, instance)
            if not targets:
                print("backfill: nothing to do (no partition matches)")
        log_path = new_log_path(home)
        runner = Runner(build_definitions(), instance, settings, batch_size=batch, log_path=str(log_path),
                        verbose=args.verbose)
        report = runner.run(files, force=getattr(args, "force", False), only=targets)
    status = print_summary(report, settings, getattr(args, "argv", None))
    print(f"log:     {log_path} (Dagster's full output; the runs are also in the UI)")
    return status


def new_log_path(home: Path) -> Path:
    """``$DAGSTER_HOME/logs/llava-sensing-<UTC time>.log`` for this command's Dagster output."""
    import time

    folder = home / "logs"
    folder.mkdir(exist_ok=True)
    return folder / time.strftime("llava-sensing-%Y%m%d-%H%M%S.log", time.gmtime())


@contextmanager
def scoped_env(env: dict[str, str]):
    """``os.environ`` updated with ``env`` inside the block, as it was after it."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def storage_dir() -> str:
    """Where the per-partition tables are (``$LLAVA_SENSING_STORAGE_DIR``, default ``data/storage``), absolute for a
    local folder so that ``dagster dev`` started elsewhere finds them."""
    raw = os.environ.get("LLAVA_SENSING_STORAGE_DIR") or "data/storage"
    return raw if "://" in raw else str(Path(raw).resolve())


def run_env(args: argparse.Namespace, settings) -> dict[str, str]:
    """The variables the definitions are built from, for this command's flags (the same the UI reads)."""
    from .settings import settings_env

    env = {**settings_env(settings), **server_env(args)}
    env["LLAVA_SENSING_OLLAMA_DOWN_WAIT"] = f"{args.ollama_down_wait:g}"
    return env


def resume_command(argv: list[str] | None) -> str:
    """The command that resumes a run stopped by an outage: the same one (without ``--force``, which would redo
    what this run finished; the LLM replies are cached either way)."""
    import shlex

    argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--force"]
    return shlex.join(["llava-sensing", *argv])


MAX_PRINTED = 10
"""Shortfalls and warnings printed one per line in the summary; the rest are counted (the index lists them all)."""


def print_summary(report, settings, argv: list[str] | None = None) -> int:
    import json

    from .atomic import storage_path
    from .export import INDEX_NAME

    out = storage_path(settings.output_dir)
    done = len(report.stale)
    gone = len(report.not_started)
    print(f"\nfiles: {len(report.selected)} selected, {done - gone} materialized ({done - gone - len(report.failures)} "
          f"ok, {len(report.failures)} failed){f', {gone} not started' if gone else ''}, "
          f"{len(report.selected) - done} up to date; {report.runs} Dagster run(s) in {report.seconds:.1f} s")
    if report.outage:
        print(f"export skipped: {report.export_error}", file=sys.stderr)
    elif report.export_ok:
        index = json.loads((out / "chunks" / INDEX_NAME).read_text(encoding="utf-8"))
        chunks = sum(f["candidates"] for f in index["files"])
        short = [f for f in index["files"] if f["shortfall"]]
        print(f"examples: {index['total_examples']} of {index['requested_examples']} requested "
              f"(from {chunks} candidate chunks); {index['total_chunks']} chunk file(s) of {index['chunk_size']}")
        for f in short[:MAX_PRINTED]:
            print(f"  shortfall: {f['source_path']}: {f['exported']} of {f['quota']} ({f['shortfall_reason']})")
        if len(short) > MAX_PRINTED:
            print(f"  … and {len(short) - MAX_PRINTED} more file(s) short of their quota (the index's files list them)")
        warnings = index.get("warnings", [])
        for warning in warnings[:MAX_PRINTED]:
            print(f"warning: {warning}", file=sys.stderr)
        if len(warnings) > MAX_PRINTED:
            print(f"warning: … and {len(warnings) - MAX_PRINTED} more file(s) with no examples (the index's warnings "
                  "list them all)", file=sys.stderr)
        print(f"dataset: {out / (settings.mode + '_dataset.json')}\n"
              f"chunks:  {out / 'chunks'}/novel_dataset_chunk_NNN.json\nindex:   {out / 'chunks' / INDEX_NAME}")
    else:
        print(f"export FAILED: {report.export_error}", file=sys.stderr)
    # export_is_complete fails with the failed files, listed below once (the UI shows it as the failed check)
    checks = {name: v for name, v in report.export_checks.items() if name != "export_is_complete"}
    for name, (error, why) in sorted(checks.items()):
        print(f"{'check failed' if error else 'check warning'}: {name}: {why}", file=sys.stderr)
    for name, why in sorted(report.check_warnings.items()):
        print(f"check warning: {name}: {why}", file=sys.stderr)
    errors = [name for name, (error, _) in checks.items() if error]
    if report.failures:
        why = ("re-running redoes them, paying only for the LLM requests not yet answered" if report.outage else
               "listed in the index as failed_files; fix them and re-run, only these will be redone")
        print(f"\n{len(report.failures)} file(s) failed ({why}):", file=sys.stderr)
        for key, reason in sorted(report.failures.items()):
            print(f"  {key}: {reason}", file=sys.stderr)
    if report.not_started:
        print(f"\n{gone} file(s) not started (the run stopped; left as they were):", file=sys.stderr)
        for key in report.not_started:
            print(f"  {key}", file=sys.stderr)
    if report.failed_before:
        print(f"\n{len(report.failed_before)} file(s) still failed from an earlier run (not retried: nothing they "
              "depend on changed; fix the file, or `llava-sensing backfill --failed`):", file=sys.stderr)
        for key, reason in sorted(report.failed_before.items()):
            print(f"  {key}: {reason}", file=sys.stderr)
    if report.outage:
        from .llm import is_outage, stop_text

        when = "Once the server is back" if is_outage(report.outage) else "Once the server is fixed"
        print(f"\nThe run stopped: {stop_text(report.outage)}\n{when}, resume with:\n"
              f"  {resume_command(argv)}", file=sys.stderr)
        return 1
    return 0 if report.export_ok and not report.failures and not report.failed_before and not errors else 1


def backfill_targets(args: argparse.Namespace, files, instance) -> list[str]:
    """The partitions a backfill covers: all selected ones, one genre's, or those that failed or never ran."""
    keys = [f.key for f in files]
    if args.genre:
        keys = [f.key for f in files if f.genre == args.genre]
        if not keys:
            genres = sorted({f.genre for f in files})
            raise SystemExit(f"error: no files in genre {args.genre!r}; genres here: {', '.join(genres)}")
    if args.failed:
        from .planning import partition_states

        states = partition_states(instance, keys)
        keys = [k for k in keys if states[k] in ("failed", "missing")]
    return keys


def input_dir_problem(input_dir: str) -> str | None:
    """Why ``input_dir`` cannot be read as a corpus folder, or None."""
    root = Path(input_dir)
    if not root.exists():
        return (f"--input-dir {input_dir}: no such folder; pass the folder that holds Modernist_Novel/ and "
                "Travel_Novel/ sub-folders of .txt files")
    if not root.is_dir():
        return (f"--input-dir {input_dir}: is a file, not a folder; pass the folder that holds "
                "Modernist_Novel/ and Travel_Novel/ sub-folders of .txt files")
    return None


def cmd_status(args: argparse.Namespace) -> int:
    """A table of the registered partitions and the files of the input folder (``--input-dir``, else the one the
    settings record), the folder's new files included: last state, whether Dagster sees them up to date, and
    figures. A registered partition whose file is gone is shown so, with ``prune`` to delete it, not as failed;
    with ``--input-dir`` only that folder's files are listed."""
    problem = args.input_dir and input_dir_problem(args.input_dir)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    ensure_dagster_home()
    from dagster import AssetKey, DagsterInstance

    from .definitions import build_definitions
    from .partitions import discover_novels, genre_of, latest_records, registered_keys
    from .planning import out_of_date, partition_states
    from .settings import effective_env, settings_from_env

    defs = build_definitions()
    folder = args.input_dir or settings_from_env(effective_env()).input_dir
    try:
        present = [f.key for f in discover_novels(folder) if not args.genre or genre_of(f.key) == args.genre]
    except FileNotFoundError:
        folder, present = None, []
    with DagsterInstance.get() as instance:
        keys = [k for k in registered_keys(instance) if not args.genre or genre_of(k) == args.genre]
        registered, wanted = set(keys), set(present)
        new = [k for k in present if k not in registered]
        gone = [k for k in keys if folder and k not in wanted] if not args.input_dir else []
        keys = [k for k in keys if k in wanted] if args.input_dir or folder else keys
        states = partition_states(instance, keys)
        stale = out_of_date(instance, defs.resolve_asset_graph(), keys)
        examples = {k: {m: v.value for m, v in r.asset_materialization.metadata.items()}
                    for k, r in latest_records(instance, AssetKey("generated_examples"), keys).items()}
    states.update({k: "not registered" for k in new})
    states.update({k: "file gone" for k in gone})
    why = {**{k: "no: " + v for k, v in stale.items()}, **{k: "no: a new file" for k in new},
           **{k: f"- (no such file in {folder}: `llava-sensing prune` deletes it)" for k in gone}}
    keys = keys + new + gone
    if not keys:
        print("no partitions registered yet: run `llava-sensing generate` (or start the sensor in the UI)")
        return 0
    width = max(len(k) for k in keys)
    print(f"{'partition':<{width}}  {'state':<14}  {'chunks':>7}  {'candidates':>10}  {'accepted':>8}  up to date?")
    for key in sorted(keys):
        ex = examples.get(key, {})
        print(f"{key:<{width}}  {states[key]:<14}  {ex.get('chunks', '-')!s:>7}  {ex.get('candidates', '-')!s:>10}  "
              f"{ex.get('accepted', '-')!s:>8}  {why.get(key, 'yes')}")
    counts = {s: list(states.values()).count(s) for s in sorted(set(states.values()))}
    print("\n" + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"; {len(stale) + len(new)} not up to date for "
          "the current settings (see why above; `llava-sensing generate` does them)"
          + (f"; {len(gone)} whose file is gone (`llava-sensing prune --input-dir {folder}`)" if gone else ""))
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """Deletes the partitions whose file is no longer in ``--input-dir`` (their history stays in the event log)."""
    ensure_dagster_home()
    from dagster import DagsterInstance

    from .partitions import discover_novels
    from .planning import prune_partitions

    try:
        present = {f.key for f in discover_novels(args.input_dir)}
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with DagsterInstance.get() as instance:
        gone = prune_partitions(instance, present)
    for key in gone:
        print(f"deleted partition {key} (no such file under {args.input_dir})")
    print(f"{len(gone)} partition(s) deleted, {len(present)} kept")
    return 0


def add_eval_labels_parser(sub) -> None:
    """``eval-labels``: the environment labels of simple or hybrid mode against the hand-labelled evaluation set."""
    ev = sub.add_parser("eval-labels", help="measure the environment labels (rules, or your Ollama model in hybrid "
                                            "mode) against the hand-labelled evaluation set")
    ev.add_argument("--mode", choices=["simple", "hybrid"], default="simple",
                    help="simple: the rule analyzer; hybrid: the LLM analyzer, its gaps filled from trustworthy rule "
                         "labels")
    ev.add_argument("--split", choices=["heldout", "dev", "all"], default="heldout",
                    help="heldout: rounds 2 and 3, the 700 passages drawn after the rules were frozen, never used to "
                         "design or fit them (default); dev: round 1, the 340 they were designed and fitted on; all: "
                         "the three rounds")
    ev.add_argument("--cv", action="store_true",
                    help="instead: fit the rules' per-field decisions on dev and print their expected quality by "
                         "leave-one-book-out cross-validation (the figures the fit gives must be the analyzer's)")
    ev.add_argument("--data", default=None,
                    help="folder with passages.json and labels.json (round 1), and round2/ and round3/ (default: the "
                         "bundled set)")
    ev.add_argument("--limit", type=_positive, default=None, help="only the first N passages of the split")
    ev.add_argument("--json", dest="json_path", default=None, help="also write the figures as JSON to this file")
    ev.add_argument("--seed", type=int, default=42, help="seed of the LLM requests (default: 42)")
    add_server_flags(ev.add_argument_group("LLM (hybrid mode)"))


def cmd_eval_labels(args: argparse.Namespace) -> int:
    """Prints per field precision, recall and F1 with 95 % intervals, the baselines, a confusion summary and a
    calibration table, for the rules (``--mode simple``) or the LLM analyzer (``--mode hybrid``)."""
    import json

    from . import label_eval

    data = Path(args.data) if args.data else label_eval.DEFAULT_DATA_DIR
    split = "dev" if args.cv else args.split
    try:
        passages = label_eval.load_passages(data, split)
        gold = label_eval.load_gold(data)
    except FileNotFoundError as exc:
        print(f"error: evaluation set not found: {exc}", file=sys.stderr)
        return 2
    if args.limit:
        passages = passages[: args.limit]
    if args.cv:
        fit = label_eval.fit_rule_decisions(passages, gold)
        fit["in_use"] = label_eval.rule_decisions_in_use()
        print(label_eval.format_fit_report(fit))
        if args.json_path:
            Path(args.json_path).write_text(json.dumps(fit, indent=2) + "\n", encoding="utf-8")
        return 0
    if args.mode == "simple":
        predictions = label_eval.rule_predictions(passages)
        analyzer = "rules (simple mode)"
    else:
        from .definitions import llm_from_env
        from .llm import ServerUnavailable

        llm = llm_from_env({**os.environ, **server_env(args)})
        try:
            predictions = label_eval.llm_predictions(
                passages, llm, seed=args.seed,
                progress=lambda done, total: print(f"\ranalysed {done}/{total}", end="", file=sys.stderr, flush=True))
        except ServerUnavailable as exc:
            print(f"error: --mode hybrid needs an LLM: {exc}", file=sys.stderr)
            return 1
        print(file=sys.stderr)
        analyzer = (f"LLM analyzer {llm.model} through the {llm.api} API at {llm.url} (hybrid mode; gaps filled "
                    "from rule labels)")
        failed = int(predictions.notes.get("failed_requests", 0))
        if failed:  # no usable reply is not an "unknown" prediction: left out of the figures, and a failed command
            passages, predictions = label_eval.without_unanswered(passages, predictions)
            print(f"warning: {failed} of {failed + len(passages)} passage(s) got no usable reply (a failed request or "
                  f"a rejected reply): left out of the figures, which cover {len(passages)}; check the server and "
                  "the model, then re-run (answered passages come from the cache)", file=sys.stderr)
            if not passages:
                return 1
    report = label_eval.evaluate(passages, predictions, gold, agreement=label_eval.load_agreement(data, split))
    report.update(mode=args.mode, split=split, analyzer=analyzer)
    title = (f"eval-labels: {analyzer}; split {split} ({label_eval.SPLIT_NAMES[split]}), {len(passages)} passages; "
             f"hand labels of two annotators, adjudicated ({data})")
    print(label_eval.format_report(report, title))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 1 if report["notes"].get("failed_requests") else 0


def main(argv: list[str] | None = None) -> int:
    import warnings

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed its message (or the help): its status is ours
        return exc.code if isinstance(exc.code, int) else 2
    # Dagster marks backfill policies and partitioned checks as beta or preview; nothing for the user to act on.
    warnings.filterwarnings("ignore", message=r".*(beta|preview)", category=Warning)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # for the resume command in the summary
    from .settings import SettingsUnreadable

    try:
        return _dispatch(args)
    except SettingsUnreadable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: what finished is recorded; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception:  # an internal bug: one trace, and where to report it
        import traceback

        traceback.print_exc()
        print("\ninternal error in llava-sensing (not a problem with your files or flags): please report it with "
              "the trace above and the command you ran", file=sys.stderr)
        return 3


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in ("generate", "backfill"):
        from .progress import new_session

        new_session()
        problem = validate_args(args)
        if problem:
            print(f"error: {problem}\nNothing was written.", file=sys.stderr)
            return 2
        return cmd_generate(args)
    if args.command == "status":
        return cmd_status(args)
    if args.command == "prune":
        return cmd_prune(args)
    if args.command == "eval-labels":
        return cmd_eval_labels(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
