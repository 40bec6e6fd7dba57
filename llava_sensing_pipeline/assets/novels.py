"""novel_files and text_chunks: read, decode and cut each novel, then chunk it."""

import json
from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, AssetSpec, Backoff, BackfillPolicy, Jitter, Output, RetryPolicy, asset

from ..checks import CHUNKS_ARE_CLEAN, FINGERPRINT_KEY, IS_ENGLISH_PROSE, book_fingerprint, chunk_problems, prose_problems
from ..partitions import genre_of, novel_partitions, relative_path_for
from ..settings import PipelineSettings
from ..text import chunk_text, read_novel
from ._partitioned import for_each_partition, pick, report_checks, run_check

# Dagster concurrency pool of the LLM-bound steps (see README, "Scaling out": its limit is 1).
LLM_POOL = "ollama"
# The LLM-bound steps retry twice with exponential backoff and jitter (a permanent failure is not retried).
LLM_RETRY = RetryPolicy(max_retries=2, delay=1, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)
# Runs over many partitions (CLI and UI backfills alike) cover ranges of at most this many files: one step per asset
# for the range; the IO manager reads and writes one table per partition.
PARTITIONS_PER_RUN = 50
PER_FILE = dict(partitions_def=novel_partitions, io_manager_key="parquet_io_manager", group_name="per_file",
                backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=PARTITIONS_PER_RUN))

novel_sources = AssetSpec(
    "novel_sources", partitions_def=novel_partitions, group_name="per_file",
    description="The novel files themselves (external): each partition's data version is its file's sha256, "
                "recorded by novel_file_sensor and the CLI when the bytes change. A changed file makes novel_files "
                "stale.",
)


@asset(**PER_FILE, deps=[novel_sources], kinds={"pandas", "parquet"}, check_specs=[IS_ENGLISH_PROSE])
def novel_files(context: AssetExecutionContext, settings: PipelineSettings):
    """One row per novel: decoded body between the START and END markers, header metadata, encoding, sha256; its
    check stops a file that is not English narrative prose."""

    def one(key: str):
        rel = relative_path_for(key).as_posix()
        novel = read_novel(Path(settings.input_dir) / rel)
        row = {
            "partition_key": key,
            "relative_path": rel,
            "genre": genre_of(key),
            "text": novel.text,
            "novel_metadata": json.dumps(novel.metadata, ensure_ascii=False, sort_keys=True),
            "source_format": novel.source_format,
            "encoding": novel.encoding,
            "start_marker": novel.start_marker,
            "end_marker": novel.end_marker,
            "sha256": novel.sha256,
        }
        return pd.DataFrame([row]), {
            "path": rel, "sha256": novel.sha256, "chars": len(novel.text), "encoding": novel.encoding,
            "source_format": novel.source_format, "end_marker_found": novel.end_marker,
            "title": novel.metadata.get("title", ""), FINGERPRINT_KEY: book_fingerprint(novel.text),
        }

    frames = for_each_partition(context, one)
    check = run_check(context, IS_ENGLISH_PROSE, frames, lambda key, frame: prose_problems(frame["text"].iloc[0]),
                      "chars")
    yield Output(frames)
    yield from report_checks(context, [check])


FILE_COLUMNS = ["partition_key", "relative_path", "genre", "novel_metadata", "sha256"]


@asset(**PER_FILE, kinds={"pandas", "parquet"},
       check_specs=[CHUNKS_ARE_CLEAN])
def text_chunks(context: AssetExecutionContext, settings: PipelineSettings, novel_files):
    """Paragraph-aware chunks near ``chunk_chars`` (never above ``max_chunk_chars``) with their source offsets."""

    def one(key: str, novel: pd.DataFrame):
        row = novel.iloc[0]
        chunks = chunk_text(row["text"], settings.chunk_chars, settings.min_chunk_chars, settings.max_chunk_chars)
        frame = pd.DataFrame({
            "chunk_index": [c.index for c in chunks],
            "text": [c.text for c in chunks],
            "char_start": [c.char_start for c in chunks],
            "char_end": [c.char_end for c in chunks],
        })
        frame["chars"] = frame["text"].str.len()
        for col in FILE_COLUMNS:
            frame[col] = row[col]
        return frame, {
            "chunks": len(frame),
            "mean_chars": round(float(frame["chars"].mean()), 1) if len(frame) else 0.0,
            "max_chars": int(frame["chars"].max()) if len(frame) else 0,
        }

    frames = for_each_partition(context, one, novel_files)
    check = run_check(context, CHUNKS_ARE_CLEAN, frames,
                      lambda key, frame: chunk_problems(frame, settings.max_chunk_chars,
                                                        pick(novel_files, key)["text"].iloc[0]), "chunks")
    yield Output(frames)
    yield from report_checks(context, [check])
