"""Asset checks: boilerplate and length of chunks, label vocabularies, sensor ranges, example text, quotas, export files.

The rules are pure functions (``*_problems``) over the tables or files; each returns a list of short,
human-readable problems (empty when the data is good), so they are tested without Dagster.

The four per-file checks are ``check_specs`` of their assets (:data:`PER_FILE_CHECKS`) and are evaluated inside the
asset's step on the tables it has just computed (:mod:`~llava_sensing_pipeline.assets._partitioned`), with
**one evaluation per partition**, also when a run covers a range of partitions (the CLI's bulk path). They are
blocking: when one fails, the step fails with a :class:`dagster.Failure` that names the failed partitions (the
metadata the CLI's runner reads to isolate them), and nothing downstream of them runs. The export checks are
separate ``@asset_check`` definitions, not blocking (nothing is downstream of the export): an unexplained shortfall
is a warning, files that disagree with the index are an error.
"""

import json
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    MetadataValue,
    PreviewWarning,
    asset_check,
)

from .atomic import storage_path
from .environment import ENV_FIELDS, VOCABULARY
from .export import CHUNK_FILE_RE, INDEX_NAME
from .generation import check_quality
from .partitions import novel_partitions
from .sensors import COMPASS_POINTS, IMU_FIELDS, SENSOR_RANGES
from .settings import PipelineSettings

MAX_LISTED = 20
"""Problems listed in a check's metadata (the count is always complete)."""

FORBIDDEN_IN_CHUNKS: dict[str, tuple[str, re.Pattern[str]]] = {
    # name: (a lower-case literal every match contains, the pattern); the literal skips the regex on clean chunks
    "START/END marker": ("***", re.compile(r"\*{3}\s*(?:START|END)\s+OF\b", re.IGNORECASE)),
    "'Project Gutenberg'": ("gutenberg", re.compile(r"project\s+gutenberg", re.IGNORECASE)),
    "licence text": ("licen", re.compile(r"full\s+licen[cs]e", re.IGNORECASE)),
    "licence link": ("gutenberg", re.compile(r"gutenberg(?:-tm|\.org)", re.IGNORECASE)),
    # a credit line starts a line; "the effect produced by the moon" is prose
    "'Produced by' credit": ("produced", re.compile(r"^[ \t]*Produced\s+by\b", re.MULTILINE)),
    "[Illustration] tag": ("illustration", re.compile(r"\[\s*Illustration", re.IGNORECASE)),
}
_DIGIT = re.compile(r"\d")
# Control characters (C0, DEL, C1) other than the line feeds that join a chunk's paragraphs: cleaning removes them.
_CONTROL_IN_CHUNK = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
_IMU_RANGES = [SENSOR_RANGES[name] for name in IMU_FIELDS]


# ---------------------------------------------------------------- pure rules


def chunk_problems(chunks: pd.DataFrame, max_chars: int) -> list[str]:
    """Chunks that hold Gutenberg markers, licence or credit text, illustration tags or control characters, or are
    empty or too long."""
    problems = []
    texts = chunks["text"].tolist()
    everything = "\n".join(texts).lower()
    if not any(literal in everything for literal, _ in FORBIDDEN_IN_CHUNKS.values()) \
            and all(len(t) <= max_chars and t.strip() for t in texts) and not _CONTROL_IN_CHUNK.search(everything):
        return problems  # the usual case, found in one pass over the file's text
    for index, text in zip(chunks["chunk_index"], texts):
        low = text.lower()
        found = [name for name, (literal, pattern) in FORBIDDEN_IN_CHUNKS.items()
                 if literal in low and pattern.search(text)]
        controls = _CONTROL_IN_CHUNK.findall(text)
        if controls:
            first = f"U+{ord(controls[0]):04X}"
            found.append(f"control character {first}" if len(controls) == 1
                         else f"{len(controls)} control characters, first {first}")
        if not text.strip():
            found.append("empty")
        if len(text) > max_chars:
            found.append(f"{len(text)} chars > max {max_chars}")
        problems.extend(f"chunk {index}: {what}" for what in found)
    return problems


def label_problems(features: pd.DataFrame) -> list[str]:
    """Environment labels outside their field's vocabulary (``environment.VOCABULARY``), and missing fields."""
    problems = []
    for name in ENV_FIELDS:
        if name not in features.columns:
            problems.append(f"column {name} is missing")
            continue
        if not set(features[name].unique()) - set(VOCABULARY[name]):
            continue  # the usual case, without a row-by-row comparison
        bad = features.loc[~features[name].isin(VOCABULARY[name]), ["chunk_index", name]]
        problems.extend(f"chunk {i}: {name}={value!r} is not one of {', '.join(VOCABULARY[name])}"
                        for i, value in bad.itertuples(index=False))
    return problems


def _out_of_range(value: object, low: float, high: float) -> bool:
    try:
        return not low <= float(value) <= high  # NaN compares false, so it is out of range too
    except (TypeError, ValueError):
        return True


def _suspect_sensor_rows(records: pd.DataFrame) -> np.ndarray:
    """Rows that may have a sensor problem, found with vectorised tests (every row when they cannot be applied)."""
    suspect = np.zeros(len(records), dtype=bool)
    for name in ("temperature", "humidity", "wind_direction"):
        low, high = SENSOR_RANGES[name]
        values = pd.to_numeric(records[name], errors="coerce").to_numpy(dtype=float)
        suspect |= ~((values >= low) & (values <= high))
    wind = pd.to_numeric(records["wind_direction"], errors="coerce").to_numpy(dtype=float)
    whole = np.where(np.isfinite(wind) & (wind == np.round(wind)) & (wind >= 0) & (wind < len(COMPASS_POINTS)),
                     wind, 0).astype(int)
    suspect |= records["wind_direction_name"].to_numpy() != np.array(COMPASS_POINTS, dtype=object)[whole]
    try:
        imu = np.stack([np.asarray(v, dtype=float) for v in records["imu"]]) if len(records) else np.zeros((0, 6))
    except (TypeError, ValueError):  # ragged or non-numeric vectors: look at every row
        return np.ones(len(records), dtype=bool)
    if imu.ndim != 2 or imu.shape[1] != len(IMU_FIELDS):
        return np.ones(len(records), dtype=bool)
    low, high = np.array(_IMU_RANGES).T
    return suspect | ~((imu >= low) & (imu <= high)).all(axis=1)


def sensor_problems(records: pd.DataFrame) -> list[str]:
    """Sensor values outside ``sensors.SENSOR_RANGES``, a wind name that does not match its index, a bad IMU vector."""
    problems = []
    table = records[["chunk_index", "temperature", "humidity", "wind_direction", "wind_direction_name", "imu"]]
    for row in table[_suspect_sensor_rows(table)].itertuples(index=False):
        where = f"chunk {row.chunk_index}"
        for name in ("temperature", "humidity", "wind_direction"):
            value = getattr(row, name)
            if _out_of_range(value, *SENSOR_RANGES[name]):
                problems.append(f"{where}: {name}={value!r} outside {SENSOR_RANGES[name]}")
        if float(row.wind_direction).is_integer() and 0 <= row.wind_direction < len(COMPASS_POINTS):
            if row.wind_direction_name != COMPASS_POINTS[int(row.wind_direction)]:
                problems.append(f"{where}: wind_direction_name {row.wind_direction_name!r} does not match "
                                f"index {row.wind_direction}")
        else:
            problems.append(f"{where}: wind_direction={row.wind_direction!r} is not a compass index")
        imu = list(row.imu) if row.imu is not None else []
        if len(imu) != len(IMU_FIELDS):
            problems.append(f"{where}: imu has {len(imu)} values, expected {len(IMU_FIELDS)}")
            continue
        problems.extend(f"{where}: {name}={value!r} outside {bounds}"
                        for name, value, bounds in zip(IMU_FIELDS, imu, _IMU_RANGES) if _out_of_range(value, *bounds))
    return problems


def example_problems(examples: pd.DataFrame, chunks: pd.DataFrame, *, min_words: int, max_words: int,
                     min_alignment: float) -> list[str]:
    """Examples whose text does not fit their mode.

    ``llm`` (the record's ``metadata.mode``): the generated paragraph has no digits and passes
    :func:`~llava_sensing_pipeline.generation.check_quality` with the given thresholds. ``simple`` and ``hybrid``:
    the target is exactly the source chunk. Either way ids are unique and match their row.
    """
    problems = []
    source = dict(zip(chunks["chunk_index"], chunks["text"]))
    for id_, n in Counter(examples["id"]).items():
        if n > 1:
            problems.append(f"{id_}: {n} examples share this id")
    for row_id, raw in zip(examples["id"], examples["record_json"]):
        record = json.loads(raw)
        text = record["target_paragraph"]
        if record["id"] != row_id:
            problems.append(f"{row_id}: record id is {record['id']!r}")
        if record["metadata"]["mode"] == "llm":
            if _DIGIT.search(text):
                problems.append(f"{row_id}: generated text contains digits")
            quality = check_quality(text, record["sensor_data"], min_words=min_words, max_words=max_words,
                                    min_alignment=min_alignment)
            if not quality.ok:
                problems.append(f"{row_id}: quality filter rejects it ({', '.join(quality.reasons)})")
        elif text != source.get(record["source_info"]["chunk_index"]):
            problems.append(f"{row_id}: target is not the source passage of chunk {record['source_info']['chunk_index']}")
    return problems


def quota_problems(index: Mapping) -> list[str]:
    """Files of the export index whose exported count neither meets the quota nor carries an explained shortfall."""
    problems = []
    for f in index.get("files", []):
        name, quota, exported = f["source_path"], f["quota"], f["exported"]
        if exported > quota:
            problems.append(f"{name}: {exported} exported, more than its quota {quota}")
        if exported > f["candidates"]:
            problems.append(f"{name}: {exported} exported from only {f['candidates']} candidates")
        if f["shortfall"] != max(0, quota - exported):
            problems.append(f"{name}: shortfall {f['shortfall']} but {exported} of {quota} exported")
        elif exported < quota and not f.get("shortfall_reason"):
            problems.append(f"{name}: {exported} of {quota} exported and no shortfall_reason")
    problems.extend(f"{f['source_path']}: failed without a reason"
                    for f in index.get("failed_files", []) if not f.get("reason"))
    return problems


def export_problems(index: Mapping, dataset: Sequence[Mapping], chunk_files: Mapping[str, Sequence[Mapping] | None],
                    extra_chunk_files: Sequence[str] = ()) -> list[str]:
    """Disagreements between the index, the dataset JSON and the chunk files.

    ``chunk_files`` maps each file name the index lists to its examples (None when the file is missing);
    ``extra_chunk_files`` are chunk files on disk that the index does not list.
    """
    problems = []
    ids = [e["id"] for e in dataset]
    if index["total_examples"] != len(dataset):
        problems.append(f"index says {index['total_examples']} examples, the dataset has {len(dataset)}")
    duplicated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicated:
        problems.append(f"{len(duplicated)} duplicate id(s) in the dataset, e.g. {duplicated[0]}")
    entries = index["chunks"]
    if index["total_chunks"] != len(entries):
        problems.append(f"index says {index['total_chunks']} chunk files but lists {len(entries)}")
    expected_start = 0
    for entry in entries:
        name, start, end = entry["filename"], entry["start_index"], entry["end_index"]
        if start != expected_start or end - start != entry["size"]:
            problems.append(f"{name}: entry covers [{start}, {end}) size {entry['size']}, expected start {expected_start}")
        expected_start = end
        examples = chunk_files.get(name)
        if examples is None:
            problems.append(f"{name}: listed in the index but missing")
        elif [e["id"] for e in examples] != ids[start:end]:
            problems.append(f"{name}: its {len(examples)} ids are not examples {start}..{end - 1} of the dataset")
    if expected_start != len(dataset):
        problems.append(f"chunk files cover {expected_start} examples, the dataset has {len(dataset)}")
    problems.extend(f"{name}: chunk file not listed in the index" for name in extra_chunk_files)
    per_file = Counter(e["source_info"]["partition_key"] for e in dataset)
    files = index.get("files", [])
    if sum(f["exported"] for f in files) != len(dataset):
        problems.append(f"files entries export {sum(f['exported'] for f in files)} examples, "
                        f"the dataset has {len(dataset)}")
    problems.extend(f"{f['source_path']}: index says {f['exported']} exported, the dataset has "
                    f"{per_file[f['partition_key']]}" for f in files if per_file[f["partition_key"]] != f["exported"])
    problems.extend(f"{f['source_path']}: failed but has {per_file[f['partition_key']]} examples in the dataset"
                    for f in index.get("failed_files", []) if per_file[f["partition_key"]])
    return problems


def load_index(output_dir: str | Path) -> dict:
    """The export's ``chunks/chunks_index.json`` under ``output_dir`` (a local folder or an fsspec URL)."""
    index_path = storage_path(output_dir) / "chunks" / INDEX_NAME
    if not index_path.exists():
        raise FileNotFoundError(f"{index_path} is missing: materialize chunked_json_exports (or run "
                                "`llava-sensing generate`) with this output folder first")
    return json.loads(index_path.read_text(encoding="utf-8"))


def load_export(output_dir: str | Path, mode: str) -> tuple[dict, list[dict], dict[str, list[dict] | None], list[str]]:
    """The index, the dataset, the chunk files the index lists (None where missing) and unlisted chunk files."""
    index = load_index(output_dir)
    out = storage_path(output_dir)
    chunks_dir = out / "chunks"
    dataset = json.loads((out / f"{mode}_dataset.json").read_text(encoding="utf-8"))
    listed = {e["filename"] for e in index["chunks"]}
    chunk_files = {name: json.loads((chunks_dir / name).read_text(encoding="utf-8"))
                   if (chunks_dir / name).exists() else None for name in sorted(listed)}
    extra = sorted(p.name for p in chunks_dir.iterdir() if CHUNK_FILE_RE.match(p.name) and p.name not in listed)
    return index, dataset, chunk_files, extra


# ---------------------------------------------------------------- Dagster definitions


def summary(problems: Sequence[str]) -> dict:
    """A check's metadata: the number of problems and the first few."""
    return {"problems": len(problems), "first_problems": MetadataValue.json(list(problems[:MAX_LISTED]))}


with warnings.catch_warnings():  # partitioned checks are a preview feature in dagster 1.13
    warnings.simplefilter("ignore", PreviewWarning)
    CHUNKS_ARE_CLEAN = AssetCheckSpec(
        "chunks_are_clean", asset="text_chunks", blocking=True, partitions_def=novel_partitions,
        description="No START/END markers, licence text, 'Project Gutenberg', 'Produced by' credits, [Illustration] "
                    "tags or control characters in any chunk, and no chunk longer than max_chunk_chars.")
    LABELS_IN_VOCABULARY = AssetCheckSpec(
        "labels_in_vocabulary", asset="environment_features", blocking=True, partitions_def=novel_partitions,
        description="Every environment label is in its field's vocabulary.")
    VALUES_IN_DOCUMENTED_RANGES = AssetCheckSpec(
        "values_in_documented_ranges", asset="sensor_records", blocking=True, partitions_def=novel_partitions,
        description="Temperature, humidity, wind direction and IMU values within sensors.SENSOR_RANGES.")
    TEXT_FITS_MODE = AssetCheckSpec(
        "text_fits_mode", asset="generated_examples", blocking=True, partitions_def=novel_partitions,
        description="llm mode: no digits and the quality filter passes; simple and hybrid modes: the target is the "
                    "source passage. Unique ids.")
PER_FILE_CHECKS = (CHUNKS_ARE_CLEAN, LABELS_IN_VOCABULARY, VALUES_IN_DOCUMENTED_RANGES, TEXT_FITS_MODE)
EXPORT_ASSET = AssetKey("chunked_json_exports")


@asset_check(asset=EXPORT_ASSET, description="Each file exports its quota, or its shortfall has a reason.")
def quotas_met_or_explained(settings: PipelineSettings) -> AssetCheckResult:
    index = load_index(settings.output_dir)
    problems = quota_problems(index)
    return AssetCheckResult(passed=not problems, severity=AssetCheckSeverity.WARN,
                            metadata={"files": len(index.get("files", [])), **summary(problems)})


@asset_check(asset=EXPORT_ASSET,
             description="The dataset's count and ids, the chunk files and the per-file counts agree with the index.")
def files_agree_with_index(settings: PipelineSettings) -> AssetCheckResult:
    index, dataset, chunk_files, extra = load_export(settings.output_dir, settings.mode)
    problems = export_problems(index, dataset, chunk_files, extra)
    return AssetCheckResult(passed=not problems, metadata={"examples": len(dataset), "chunk_files": len(chunk_files),
                                                           **summary(problems)})


EXPORT_CHECKS = [quotas_met_or_explained, files_agree_with_index]
