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
from pathlib import Path, PurePosixPath

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
from .export import CHUNK_FILE_RE, INDEX_NAME, SHORTFALL_CAUSES
from .partitions import novel_partitions
from .sensor_synthesis import (
    COMPASS_POINTS,
    IMU_FIELDS,
    INDOOR_WIND_INDEX,
    ONSHORE_LOCATIONS,
    ONSHORE_WIND_INDICES,
    SENSOR_COLUMNS,
    SENSOR_RANGES,
    SNOW_MAX_TEMPERATURE,
    TEMPERATURE_RANGES,
    sensor_record,
)
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
# Control characters (C0, DEL, C1) other than the line feeds that join a chunk's paragraphs: cleaning removes them.
_CONTROL_IN_CHUNK = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
_IMU_RANGES = [SENSOR_RANGES[name] for name in IMU_FIELDS]


# ---------------------------------------------------------------- pure rules


def chunk_problems(chunks: pd.DataFrame, max_chars: int, text: str | None = None) -> list[str]:
    """Chunks that hold Gutenberg markers, licence or credit text, illustration tags or control characters, or are
    empty or too long; with the novel's ``text``, also chunks that are not the text of their span (see
    :func:`span_problems`)."""
    problems = []
    texts = chunks["text"].tolist()
    everything = "\n".join(texts).lower()
    if not any(literal in everything for literal, _ in FORBIDDEN_IN_CHUNKS.values()) \
            and all(len(t) <= max_chars and t.strip() for t in texts) and not _CONTROL_IN_CHUNK.search(everything):
        return span_problems(chunks, text) if text is not None else problems  # the usual case, in one pass
    for index, text_ in zip(chunks["chunk_index"], texts):
        low = text_.lower()
        found = [name for name, (literal, pattern) in FORBIDDEN_IN_CHUNKS.items()
                 if literal in low and pattern.search(text_)]
        controls = _CONTROL_IN_CHUNK.findall(text_)
        if controls:
            first = f"U+{ord(controls[0]):04X}"
            found.append(f"control character {first}" if len(controls) == 1
                         else f"{len(controls)} control characters, first {first}")
        if not text_.strip():
            found.append("empty")
        if len(text_) > max_chars:
            found.append(f"{len(text_)} chars > max {max_chars}")
        problems.extend(f"chunk {index}: {what}" for what in found)
    return problems + (span_problems(chunks, text) if text is not None else [])


def _is_subsequence(needle: str, haystack: str) -> bool:
    remaining = iter(haystack)
    return all(ch in remaining for ch in needle)


def span_problems(chunks: pd.DataFrame, text: str) -> list[str]:
    """Chunks that do not map back to the novel ``text``: indices other than 0..n-1 in order, a span
    ``[char_start, char_end)`` outside the text or overlapping the previous chunk's, or a chunk text that is not
    its span's text: the chunk starts and ends where its span does, and its characters (whitespace aside) are
    the span's, in order, with only the headings and illustration markers inside the span left out."""
    problems = []
    n = len(chunks)
    if chunks["chunk_index"].tolist() != list(range(n)):
        problems.append(f"chunk indices are not 0..{n - 1} in order")
    previous_end = 0
    for index, chunk, start, end in zip(chunks["chunk_index"].tolist(), chunks["text"].tolist(),
                                        chunks["char_start"].tolist(), chunks["char_end"].tolist()):
        if not 0 <= start < end <= len(text):
            problems.append(f"chunk {index}: span [{start}, {end}) is outside the text ({len(text)} chars)")
            continue
        if start < previous_end:
            problems.append(f"chunk {index}: span [{start}, {end}) overlaps the previous chunk, which ends at "
                            f"{previous_end}")
        previous_end = max(previous_end, end)
        words, span = chunk.split(), text[start:end].split()
        if words == span:
            continue  # the usual case: the span's paragraphs, whitespace collapsed
        compact = "".join(words)
        if not (compact and span and compact[0] == span[0][0] and compact[-1] == span[-1][-1]
                and _is_subsequence(compact, "".join(span))):
            problems.append(f"chunk {index}: text is not the text of its span [{start}, {end})")
    return problems


def _coverage(what: str, chunks: Sequence, other: str, expected: Sequence) -> str | None:
    """A problem when two per-chunk tables do not hold the same chunks in the same order."""
    chunks, expected = [int(c) for c in chunks], [int(c) for c in expected]
    if chunks == expected:
        return None

    def span(values):
        return f"{len(values)} ({values[0]}..{values[-1]})" if values else "0"

    return f"{what} cover {span(chunks).replace(' (', ' chunk(s) (', 1)}, {other} has {span(expected)}"


def label_problems(features: pd.DataFrame, chunk_indices: Sequence[int]) -> list[str]:
    """Environment labels outside their field's vocabulary (``environment.VOCABULARY``), missing fields, a
    confidence outside [0, 1], and labels for other chunks than the ``chunk_indices`` of ``text_chunks``."""
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
    if problems:
        return problems
    if "confidence" not in features.columns:
        return ["column confidence is missing"]
    confidence = pd.to_numeric(features["confidence"], errors="coerce").to_numpy(dtype=float)
    outside = ~((confidence >= 0.0) & (confidence <= 1.0))
    problems.extend(f"chunk {i}: confidence {c!r} is outside [0, 1]"
                    for i, c in zip(features["chunk_index"][outside], features["confidence"][outside]))
    covered = _coverage("labels", features["chunk_index"].tolist(), "text_chunks", chunk_indices)
    return problems + ([covered] if covered else [])


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


def sensor_problems(records: pd.DataFrame, features: pd.DataFrame) -> list[str]:
    """Sensor records that do not follow from their chunk's environment labels (``features``, the
    ``environment_features`` table) as ``sensors`` documents it, or are not physical values:

    - the records cover the labels' chunks, in the same order;
    - the context (scenario, time, weather) and the movement are the chunk's labels;
    - the temperature lies in the band of the chunk's ``temperature_hint`` (``sensors.TEMPERATURE_RANGES``), capped
      at ``SNOW_MAX_TEMPERATURE`` in snow;
    - no wind indoors (index 0), shore and sea winds from the northern sector (``ONSHORE_WIND_INDICES``);
    - every value within ``sensors.SENSOR_RANGES``, a wind name that matches its index, six IMU values.
    """
    covered = _coverage("sensor records", records["chunk_index"].tolist(), "environment_features",
                        features["chunk_index"].tolist())
    if covered:
        return [covered]
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
    return problems + _label_agreement_problems(records.reset_index(drop=True), features.reset_index(drop=True))


# sensor_records column -> the environment_features label it copies
_CONTEXT_LABELS = {"scenario": "location", "time": "time_of_day", "weather": "weather", "movement": "movement"}


def _label_agreement_problems(records: pd.DataFrame, features: pd.DataFrame) -> list[str]:
    """The per-chunk rules of :func:`sensor_problems` that compare a record with its chunk's labels."""
    problems: list[list[str]] = [[] for _ in range(len(records))]
    for column, label in _CONTEXT_LABELS.items():
        differ = records[column].to_numpy() != features[label].to_numpy()
        for pos in np.flatnonzero(differ):
            what = "movement" if column == "movement" else f"context {column}"
            problems[pos].append(f"{what}={records[column][pos]!r} but the chunk's {label} is {features[label][pos]!r}")
    temperature = pd.to_numeric(records["temperature"], errors="coerce").to_numpy(dtype=float)
    hints, weather = features["temperature_hint"].to_numpy(), features["weather"].to_numpy()
    low = np.array([TEMPERATURE_RANGES.get(h, (np.nan, np.nan))[0] for h in hints], dtype=float)
    high = np.array([TEMPERATURE_RANGES.get(h, (np.nan, np.nan))[1] for h in hints], dtype=float)
    snow = weather == "snow"
    low = np.where(snow, np.minimum(low, SNOW_MAX_TEMPERATURE), low)
    high = np.where(snow, np.minimum(high, SNOW_MAX_TEMPERATURE), high)
    for pos in np.flatnonzero(~((temperature >= low - 1e-9) & (temperature <= high + 1e-9))):
        problems[pos].append(f"temperature {temperature[pos]} is outside the band of its temperature_hint "
                             f"{hints[pos]!r}{' with snow' if snow[pos] else ''} ({low[pos]} to {high[pos]})")
    location = features["location"].to_numpy()
    wind = pd.to_numeric(records["wind_direction"], errors="coerce").to_numpy(dtype=float)
    for pos in np.flatnonzero((location == "indoor") & (wind != INDOOR_WIND_INDEX)):
        problems[pos].append(f"wind_direction {records['wind_direction'][pos]} indoors, where it is always "
                             f"{INDOOR_WIND_INDEX}")
    onshore = np.isin(location, sorted(ONSHORE_LOCATIONS)) & ~np.isin(wind, ONSHORE_WIND_INDICES)
    for pos in np.flatnonzero(onshore):
        problems[pos].append(f"wind_direction {records['wind_direction'][pos]} at {location[pos]}, which takes only "
                             f"{', '.join(map(str, ONSHORE_WIND_INDICES))}")
    return [f"chunk {records['chunk_index'][pos]}: {p}" for pos, found in enumerate(problems) for p in found]


def example_problems(examples: pd.DataFrame, *, chunks: pd.DataFrame, sensors: pd.DataFrame,
                     features: pd.DataFrame, styles: pd.DataFrame, mode: str) -> list[str]:
    """Examples that are not their chunk's: each example names a chunk of ``text_chunks`` and carries that chunk's
    span, sensor record (``sensor_records``), environment labels (``environment_features``) and style
    (``style_labels``); its id is ``<file stem>_<chunk index>``, unique, and the row's; its mode is the run's; in
    ``simple`` and ``hybrid`` modes its target is the chunk's text, in ``llm`` mode a non-empty paragraph."""
    problems = []
    # Only the rows of the examples' chunks are read (a file has many more chunks than examples).
    wanted = set(pd.to_numeric(examples["chunk_index"]).tolist())

    def rows_of(table: pd.DataFrame) -> pd.DataFrame:
        return table[table["chunk_index"].isin(wanted)]

    chunks, sensors, features, styles = map(rows_of, (chunks, sensors, features, styles))
    text_of = dict(zip(chunks["chunk_index"].tolist(), chunks["text"].tolist()))
    span_of = dict(zip(chunks["chunk_index"].tolist(), zip(chunks["char_start"].tolist(), chunks["char_end"].tolist())))
    sensor_of = {int(row.chunk_index): row for row in sensors.itertuples(index=False)}
    labels_of = {int(row.chunk_index): row for row in features.itertuples(index=False)}
    style_of = dict(zip(styles["chunk_index"].tolist(), styles["literary_style"].tolist()))
    for id_, n in Counter(examples["id"]).items():
        if n > 1:
            problems.append(f"{id_}: {n} examples share this id")
    for row_id, row_chunk, raw in zip(examples["id"], examples["chunk_index"], examples["record_json"]):
        record = json.loads(raw)
        info = record["source_info"]
        index = int(info["chunk_index"])
        found = []
        if record["id"] != row_id or index != int(row_chunk):
            found.append(f"the record is {record['id']!r} of chunk {index}, its row {row_id!r} of chunk {row_chunk}")
        if index not in text_of:
            problems.append(f"{row_id}: chunk {index} is not in text_chunks")
            continue
        expected_id = f"{PurePosixPath(info['source_path']).stem}_{index}"
        if row_id != expected_id:
            found.append(f"the id does not match its file and chunk ({expected_id})")
        if record["metadata"]["mode"] != mode:
            found.append(f"metadata.mode is {record['metadata']['mode']!r}, the run's mode is {mode!r}")
        if (info["char_start"], info["char_end"]) != span_of[index]:
            found.append(f"source span [{info['char_start']}, {info['char_end']}) is not chunk {index}'s "
                         f"[{span_of[index][0]}, {span_of[index][1]})")
        if mode == "llm":
            if not record["target_paragraph"].strip():
                found.append("empty target_paragraph")
        elif record["target_paragraph"] != text_of[index]:
            found.append(f"target is not the text of chunk {index}")
        if index not in sensor_of or record["sensor_data"] != sensor_record(
                {name: (getattr(sensor_of[index], name),) for name in SENSOR_COLUMNS}, 0):
            found.append(f"sensor_data is not chunk {index}'s sensor record")
        if record["literary_style"] != style_of.get(index):
            found.append(f"literary_style {record['literary_style']!r} is not chunk {index}'s "
                         f"{style_of.get(index)!r}")
        labels = labels_of.get(index)
        normalized = info["environmental_analysis_normalized"]
        differ = [f for f in ENV_FIELDS if labels is None or normalized.get(f) != getattr(labels, f)]
        if differ:
            found.append(f"environment labels are not chunk {index}'s ({', '.join(differ)})")
        problems.extend(f"{row_id}: {what}" for what in found)
    return problems


def quota_problems(index: Mapping) -> list[str]:
    """Files of the export index whose exported count is not their quota and is not explained.

    Quotas are an even spread (they differ by at most one). A file exports at most its quota and its candidates;
    one that falls short used every candidate (exported or removed as a duplicate), has a ``shortfall_cause`` from
    :data:`~llava_sensing_pipeline.export.SHORTFALL_CAUSES` that fits its counts and a ``shortfall_reason``; a
    file with no example is named in the index's ``warnings``; a failed file has a reason."""
    problems = []
    files = index.get("files", [])
    quotas = [f["quota"] for f in files]
    if quotas and max(quotas) - min(quotas) > 1:
        problems.append(f"quotas are not spread evenly over the files: {min(quotas)} to {max(quotas)}")
    warned = " ".join(index.get("warnings", []))
    for f in files:
        name, quota, exported, candidates = f["source_path"], f["quota"], f["exported"], f["candidates"]
        duplicates = f.get("duplicates_removed", 0)
        if exported > quota:
            problems.append(f"{name}: {exported} exported, more than its quota {quota}")
        if exported > candidates:
            problems.append(f"{name}: {exported} exported from only {candidates} candidates")
        if f["shortfall"] != max(0, quota - exported):
            problems.append(f"{name}: shortfall {f['shortfall']} but {exported} of {quota} exported")
        if exported >= quota:
            continue
        cause = f.get("shortfall_cause")
        if cause not in SHORTFALL_CAUSES:
            problems.append(f"{name}: shortfall_cause {cause!r} is not one of {', '.join(SHORTFALL_CAUSES)}")
        elif cause != ("no_usable_passages" if candidates == 0 else
                       "few_usable_passages" if candidates < quota else "duplicates_removed"):
            problems.append(f"{name}: shortfall_cause {cause} does not fit {candidates} candidates for a quota "
                            f"of {quota}")
        if not str(f.get("shortfall_reason") or "").strip():
            problems.append(f"{name}: {exported} of {quota} exported and no shortfall_reason")
        if exported + duplicates != candidates:
            problems.append(f"{name}: {exported} of {quota} exported, yet only {exported + duplicates} of its "
                            f"{candidates} candidates were used or removed as duplicates")
        if exported == 0 and quota and name not in warned:
            problems.append(f"{name}: no examples and no warning names it")
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
                    "tags or control characters in any chunk, no chunk longer than max_chunk_chars, and each chunk "
                    "is the text of its span of the novel (spans in order, inside the text, not overlapping).")
    LABELS_IN_VOCABULARY = AssetCheckSpec(
        "labels_in_vocabulary", asset="environment_features", blocking=True, partitions_def=novel_partitions,
        description="Every environment label is in its field's vocabulary, every confidence in [0, 1], and the "
                    "labels cover the file's chunks in order.")
    SENSORS_MATCH_LABELS = AssetCheckSpec(
        "sensors_match_labels", asset="sensor_records", blocking=True, partitions_def=novel_partitions,
        description="Each sensor record follows from its chunk's labels as sensors.py documents it: context and "
                    "movement are the labels, the temperature lies in its temperature hint's band, no wind "
                    "indoors, shore and sea winds from the north; values physical, wind names matching.")
    EXAMPLES_MATCH_SOURCES = AssetCheckSpec(
        "examples_match_sources", asset="generated_examples", blocking=True, partitions_def=novel_partitions,
        description="Each example is its chunk's: the chunk exists, and the example carries its span, sensor "
                    "record, labels and style; simple and hybrid modes: the target is the chunk's text. Ids "
                    "<stem>_<chunk> and unique.")
PER_FILE_CHECKS = (CHUNKS_ARE_CLEAN, LABELS_IN_VOCABULARY, SENSORS_MATCH_LABELS, EXAMPLES_MATCH_SOURCES)
EXPORT_ASSET = AssetKey("chunked_json_exports")


@asset_check(asset=EXPORT_ASSET, description="Quotas are an even spread; each file exports its quota, or used up its "
                                             "candidates and has a known shortfall cause and a reason; a file with "
                                             "no example is a warning.")
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
