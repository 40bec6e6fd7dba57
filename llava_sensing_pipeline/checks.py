"""Asset checks: the faults real corpora have, and an export that is not whole or disagrees with itself.

The rules are pure functions (``*_problems``) over a text, a table or the export's files; each returns a list of
short, human-readable problems (empty when the data is good), so they are tested without Dagster. Each guards
against something the producing code cannot rule out, measured on the shared corpus (the bounds are documented
beside them): a file that is not English narrative prose, chunks that are not the text they claim, labels that are
all one value, an LLM whose replies are mostly rejected, the same book under two names, a file missing from the
export, export files that disagree with the index.

The per-file checks are ``check_specs`` of their assets and are evaluated inside the asset's step on the tables it
has just computed (:mod:`~llava_sensing_pipeline.assets._partitioned`), one evaluation per partition, also when a
run covers a range of partitions. A blocking one (``is_english_prose``, ``chunks_are_clean``) fails the step with a
:class:`dagster.Failure` that names the failed partitions, and nothing downstream of them runs (the file is listed
as failed, with the check's words); the others are warnings. The export checks are separate ``@asset_check``
definitions: an incomplete export and export files that disagree with the index are errors, a duplicate book a
warning.
"""

import hashlib
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
from .environment import ENV_FIELDS
from .export import CHUNK_FILE_RE, INDEX_NAME
from .partitions import latest_records, novel_partitions
from .settings import PipelineSettings

MAX_LISTED = 20
"""Problems listed in a check's metadata (the count is always complete)."""

def _in_lower(pattern: str):
    """A test of the lower-cased text (no IGNORECASE: the same matches, found much faster)."""
    regex = re.compile(pattern)
    return lambda text, low: regex.search(low) is not None


_PRODUCED_BY = re.compile(r"Produced\s+by\b")


def _credit_line(text: str, low: str) -> bool:
    """A line that starts (after blanks) with "Produced by": a credit, where "the effect produced by the moon" is
    prose. The literal is found first, then its line start is checked (a line-anchored regex is slow)."""
    for match in _PRODUCED_BY.finditer(text):
        line_start = text.rfind("\n", 0, match.start()) + 1
        if not text[line_start:match.start()].strip(" \t"):
            return True
    return False


FORBIDDEN_IN_CHUNKS = {
    # name: (a lower-case literal every match contains, the test of (text, its lower case)); the literal skips the
    # test on clean chunks
    "START/END marker": ("***", _in_lower(r"\*{3}\s*(?:start|end)\s+of\b")),
    "'Project Gutenberg'": ("gutenberg", _in_lower(r"project\s+gutenberg")),
    "licence text": ("licen", _in_lower(r"full\s+licen[cs]e")),
    "licence link": ("gutenberg", _in_lower(r"gutenberg(?:-tm|\.org)")),
    "'Produced by' credit": ("produced", _credit_line),
    "[Illustration] tag": ("illustration", _in_lower(r"\[\s*illustration")),
}
# Control characters (C0, DEL, C1) other than the line feeds that join a chunk's paragraphs: cleaning removes them.
_CONTROL_IN_CHUNK = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


# ---------------------------------------------------------------- pure rules


SPAN_SAMPLE = 8
"""The chunk texts compared with their spans: every eighth chunk (the indices and spans of all are checked): the
comparison costs as much as the chunking, and a chunker that shifts spans shifts many."""


def chunk_problems(chunks: pd.DataFrame, max_chars: int, text: str | None = None,
                   span_sample: int = SPAN_SAMPLE) -> list[str]:
    """Chunks that hold Gutenberg markers, licence or credit text, illustration tags or control characters, or are
    empty or too long; with the novel's ``text``, also chunks that are not the text of their span (see
    :func:`span_problems`)."""
    problems = []
    texts = chunks["text"].tolist()
    joined = "\n".join(texts)  # a pattern matches here where it matches in a chunk ("^" after each line feed)
    everything = joined.lower()
    if not any(literal in everything and found(joined, everything) for literal, found in FORBIDDEN_IN_CHUNKS.values()) \
            and all(len(t) <= max_chars and t.strip() for t in texts) and not _CONTROL_IN_CHUNK.search(joined):
        return span_problems(chunks, text, span_sample) if text is not None else problems  # the usual case
    for index, text_ in zip(chunks["chunk_index"], texts):
        low = text_.lower()
        found = [name for name, (literal, test) in FORBIDDEN_IN_CHUNKS.items() if literal in low and test(text_, low)]
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
    return problems + (span_problems(chunks, text, span_sample) if text is not None else [])


def _is_subsequence(needle: str, haystack: str) -> bool:
    remaining = iter(haystack)
    return all(ch in remaining for ch in needle)


def span_problems(chunks: pd.DataFrame, text: str, sample: int = SPAN_SAMPLE) -> list[str]:
    """Chunks that do not map back to the novel ``text``: indices other than 0..n-1 in order, a span
    ``[char_start, char_end)`` outside the text or overlapping the previous chunk's, or (every ``sample``-th chunk)
    a chunk text that is not its span's text: the chunk starts and ends where its span does, and its characters
    (whitespace aside) are the span's, in order, with only the headings and illustration markers inside the span
    left out."""
    problems = []
    n = len(chunks)
    indices = chunks["chunk_index"].tolist()
    if indices != list(range(n)):
        problems.append(f"chunk indices are not 0..{n - 1} in order")
    starts, ends = chunks["char_start"].to_numpy(dtype=np.int64), chunks["char_end"].to_numpy(dtype=np.int64)
    outside = ~((starts >= 0) & (starts < ends) & (ends <= len(text)))
    # the end of the furthest span before each chunk (spans outside the text left out)
    furthest = np.maximum.accumulate(np.where(outside, 0, ends)) if n else ends
    previous_end = np.concatenate([[0], furthest[:-1]]) if n else ends
    overlaps = ~outside & (starts < previous_end)
    sampled = np.array([i % sample == 0 for i in indices], dtype=bool) & ~outside
    texts = chunks["text"].tolist()
    for pos in np.flatnonzero(outside | overlaps | sampled):
        index, chunk, start, end = indices[pos], texts[pos], int(starts[pos]), int(ends[pos])
        if outside[pos]:
            problems.append(f"chunk {index}: span [{start}, {end}) is outside the text ({len(text)} chars)")
            continue
        if overlaps[pos]:
            problems.append(f"chunk {index}: span [{start}, {end}) overlaps the previous chunk, which ends at "
                            f"{int(previous_end[pos])}")
        if not sampled[pos]:
            continue
        words, span = chunk.split(), text[start:end].split()
        if words == span:
            continue  # the usual case: the span's paragraphs, whitespace collapsed
        compact = "".join(words)
        if not (compact and span and compact[0] == span[0][0] and compact[-1] == span[-1][-1]
                and _is_subsequence(compact, "".join(span))):
            problems.append(f"chunk {index}: text is not the text of its span [{start}, {end})")
    return problems


# English function words: four in ten words of English prose are among them (0.41-0.50 on the shared corpus and the
# samples), a few in a hundred of French, German or Italian prose.
ENGLISH_WORDS = frozenset(
    "the and of to a in that was he it his her i with as had for she you at not but on be is him my by all have so "
    "from they were which this me we there said one or an would their no been when out if what them then into could "
    "up who".split())
MIN_ENGLISH_SHARE = 0.2
"""Below this share of English function words a file is not English (prose measured 0.41-0.50, see ENGLISH_WORDS)."""
MIN_LOWERCASE_SHARE = 0.6
"""Prose is mostly lower-case words (0.86-0.96 on the corpus and samples); a table of contents, an index or a list
of names is mostly capitalised words and numbers."""
MAX_NUMBER_SHARE = 0.15
"""Prose has almost no numbers (at most 0.6 % of its words on the corpus); an index or a table has many."""
MIN_WORDS_JUDGED = 150
"""A text with fewer words is too short to judge (it passes)."""
SAMPLE_WINDOWS, SAMPLE_CHARS = 20, 2_000
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?|\d+")


def _sample(text: str) -> str:
    """``SAMPLE_WINDOWS`` windows of ``SAMPLE_CHARS`` spread evenly over ``text`` (all of it when shorter): the
    check costs the same for any size of novel."""
    if len(text) <= SAMPLE_WINDOWS * SAMPLE_CHARS:
        return text
    step = len(text) // SAMPLE_WINDOWS
    return "\n".join(text[i * step:i * step + SAMPLE_CHARS] for i in range(SAMPLE_WINDOWS))


def prose_figures(text: str) -> dict[str, float | int]:
    """The figures :func:`prose_problems` judges: words sampled, and the shares of English function words,
    lower-case words and numbers among them."""
    tokens = _WORD.findall(_sample(text))
    words = [t for t in tokens if not t.isdigit()]
    return {
        "words_sampled": len(tokens),
        "english_share": round(sum(w.lower() in ENGLISH_WORDS for w in words) / max(1, len(words)), 3),
        "lowercase_share": round(sum(w[0].islower() for w in words) / max(1, len(words)), 3),
        "number_share": round((len(tokens) - len(words)) / max(1, len(tokens)), 3),
    }


def prose_problems(text: str) -> list[str]:
    """A novel's text that is not English narrative prose: another language, or a table of contents, an index or a
    table (few lower-case words, many numbers). Judged on a sample of the text (see :func:`_sample`)."""
    figures = prose_figures(text)
    if figures["words_sampled"] < MIN_WORDS_JUDGED:
        return []
    problems = []
    if figures["english_share"] < MIN_ENGLISH_SHARE:
        problems.append(f"not English: {figures['english_share']:.0%} of its words are common English words "
                        f"(English prose: over 40 %, the bound {MIN_ENGLISH_SHARE:.0%}); remove the file or translate it")
    if figures["lowercase_share"] < MIN_LOWERCASE_SHARE or figures["number_share"] > MAX_NUMBER_SHARE:
        problems.append(f"not narrative prose: {figures['lowercase_share']:.0%} of its words are lower-case and "
                        f"{figures['number_share']:.0%} are numbers (prose: over 80 % and under 1 %); it reads "
                        "like a table of contents, an index or a table: remove it from the input folder")
    return problems


MIN_CHUNKS_FOR_VARIETY = 10
MAX_SAME_LABEL_SHARE = 0.9
"""A known label on more than this share of a file's passages is degenerate: on the shared corpus no known label
covers more than 11 % of a file's passages (rule analysis)."""


def label_variety_problems(features: pd.DataFrame) -> list[str]:
    """A file whose environment labels are (nearly) all one known value for a field: the analysis keyed on something
    repeated throughout (a page scraped many times over, a model answering every passage alike)."""
    if len(features) < MIN_CHUNKS_FOR_VARIETY:
        return []
    problems = []
    for name in ENV_FIELDS:
        counts = features[name][features[name] != "unknown"].value_counts()
        if len(counts) and counts.iloc[0] / len(features) > MAX_SAME_LABEL_SHARE:
            problems.append(f"{name} is {counts.index[0]!r} in {counts.iloc[0]} of {len(features)} passages: "
                            "check the file for text repeated throughout, or the model's answers")
    return problems


MAX_REJECTED_SHARE = 0.5
"""Above this share of a file's LLM replies rejected (empty, cut off, off the schema) the model wastes more GPU time
than it uses: try a stronger model, a larger --num-predict, or check the server's template."""


def rejection_problems(figures: Mapping, prefix: str) -> list[str]:
    """A step whose LLM replies were rejected more often than :data:`MAX_REJECTED_SHARE` (``figures``: the step's
    partition metadata, with ``<prefix>_rejected_replies`` and ``<prefix>_answered``)."""
    rejected, answered = int(figures.get(f"{prefix}_rejected_replies", 0)), int(figures.get(f"{prefix}_answered", 0))
    if rejected + answered and rejected / (rejected + answered) > MAX_REJECTED_SHARE:
        return [f"{rejected} of {rejected + answered} {prefix} replies rejected ({rejected / (rejected + answered):.0%}"
                f" > {MAX_REJECTED_SHARE:.0%}): try a stronger --model, or check the server's chat template"]
    return []


FINGERPRINT_SIZE = 64
FINGERPRINT_WINDOW = 50_000
"""Characters in the middle of a text that its fingerprint reads: two editions whose lengths differ by up to a third
of this (front matter, notes) still share over half of their fingerprints; it costs about 4 ms per file."""
MIN_FINGERPRINT_WORDS = 8
SAME_BOOK_SHARE = 0.5
"""Two files whose sentences overlap by this share (Jaccard, estimated from their fingerprints) are one book."""
_SENTENCE_END = re.compile(r"[.!?;]+")
_NOT_LETTERS = str.maketrans({c: " " for c in map(chr, range(128)) if not c.isalpha()})  # ASCII: spaces


def book_fingerprint(text: str) -> list[str]:
    """A bottom-k sketch of a book's sentences: the ``FINGERPRINT_SIZE`` smallest hashes of the sentences of at
    least ``MIN_FINGERPRINT_WORDS`` words in the middle ``FINGERPRINT_WINDOW`` characters of its text, each reduced
    to its lower-case letters (so line wrapping, paragraphs, quotes and headers do not matter). Two editions of one
    book share most of them."""
    middle = max(0, (len(text) - FINGERPRINT_WINDOW) // 2)
    hashes = set()
    for sentence in _SENTENCE_END.split(text[middle:middle + FINGERPRINT_WINDOW].lower()):
        words = sentence.translate(_NOT_LETTERS).split()
        if len(words) >= MIN_FINGERPRINT_WORDS:
            hashes.add(hashlib.blake2b(" ".join(words).encode(), digest_size=8).hexdigest())
    return sorted(hashes)[:FINGERPRINT_SIZE]


def overlap(a: Sequence[str], b: Sequence[str]) -> float:
    """The Jaccard similarity of two books' sentences, estimated from their fingerprints."""
    union = sorted(set(a) | set(b))[:FINGERPRINT_SIZE]
    both = set(a) & set(b)
    return sum(h in both for h in union) / len(union) if union else 0.0


def duplicate_book_problems(fingerprints: Mapping[str, Sequence[str]]) -> list[str]:
    """Pairs of files (partition -> :func:`book_fingerprint`) that hold the same book under two names; only pairs
    that share a hash are compared."""
    holders: dict[str, list[str]] = {}
    for key in sorted(fingerprints):
        for h in fingerprints[key]:
            holders.setdefault(h, []).append(key)
    pairs = sorted({(a, b) for keys in holders.values() for i, a in enumerate(keys) for b in keys[i + 1:]})
    problems = []
    for first, second in pairs:
        share = overlap(fingerprints[first], fingerprints[second])
        if share >= SAME_BOOK_SHARE:
            problems.append(f"{second} is the same book as {first} ({share:.0%} of their sentences shared): "
                            "remove one of them")
    return problems


def incomplete_export_problems(index: Mapping) -> list[str]:
    """The files of the corpus that the export could not include (``failed_files``), with their reasons."""
    return [f"{f['source_path']}: {f['reason']}" for f in index.get("failed_files", [])]


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


def _spec(name: str, asset: str, description: str, blocking: bool) -> AssetCheckSpec:
    with warnings.catch_warnings():  # partitioned checks are a preview feature in dagster 1.13
        warnings.simplefilter("ignore", PreviewWarning)
        return AssetCheckSpec(name, asset=asset, blocking=blocking, partitions_def=novel_partitions,
                              description=description)


IS_ENGLISH_PROSE = _spec(
    "is_english_prose", "novel_files", blocking=True,
    description=f"The file is English narrative prose: at least {MIN_ENGLISH_SHARE:.0%} common English words, at "
                f"least {MIN_LOWERCASE_SHARE:.0%} lower-case words and at most {MAX_NUMBER_SHARE:.0%} numbers in a "
                "sample of its text (not another language, not a table of contents, an index or a table).")
CHUNKS_ARE_CLEAN = _spec(
    "chunks_are_clean", "text_chunks", blocking=True,
    description="No START/END markers, licence text, 'Project Gutenberg', 'Produced by' credits, [Illustration] tags "
                "or control characters in any chunk, no chunk longer than max_chunk_chars, and each chunk is the text "
                "of its span of the novel (spans in order, inside the text, not overlapping).")
LABELS_ARE_VARIED = _spec(
    "labels_are_varied", "environment_features", blocking=False,
    description=f"No known environment label on more than {MAX_SAME_LABEL_SHARE:.0%} of a file's passages (text "
                "repeated throughout the file, or a model answering every passage alike); a warning.")


def replies_usable(asset: str) -> AssetCheckSpec:
    """The rejection bound of an LLM step (present in the modes where the step asks the LLM)."""
    return _spec("replies_usable", asset, blocking=False,
                 description=f"At most {MAX_REJECTED_SHARE:.0%} of the step's LLM replies rejected (empty, cut off, "
                             "off the schema); a warning.")


EXPORT_ASSET = AssetKey("chunked_json_exports")


@asset_check(asset=EXPORT_ASSET, description="Every file of the corpus is in the export: a file that failed (listed "
                                             "in the index's failed_files) makes the export incomplete.")
def export_is_complete(settings: PipelineSettings) -> AssetCheckResult:
    index = load_index(settings.output_dir)
    problems = incomplete_export_problems(index)
    return AssetCheckResult(passed=not problems, metadata={"files": len(index.get("files", [])) + len(problems),
                                                           "failed_files": len(problems), **summary(problems)})


@asset_check(asset=EXPORT_ASSET,
             description="The dataset's count and ids, the chunk files and the per-file counts agree with the index.")
def files_agree_with_index(settings: PipelineSettings) -> AssetCheckResult:
    index, dataset, chunk_files, extra = load_export(settings.output_dir, settings.mode)
    problems = export_problems(index, dataset, chunk_files, extra)
    return AssetCheckResult(passed=not problems, metadata={"examples": len(dataset), "chunk_files": len(chunk_files),
                                                           **summary(problems)})


@asset_check(asset=EXPORT_ASSET, description=f"No two files of the export hold the same book (at least "
                                             f"{SAME_BOOK_SHARE:.0%} of their sentences shared); a warning.")
def no_duplicate_books(context, settings: PipelineSettings) -> AssetCheckResult:
    index = load_index(settings.output_dir)
    keys = [f["partition_key"] for f in index.get("files", [])]
    records = latest_records(context.instance, AssetKey("novel_files"), keys)
    fingerprints = {k: r.asset_materialization.metadata[FINGERPRINT_KEY].value for k, r in records.items()
                    if FINGERPRINT_KEY in r.asset_materialization.metadata}
    problems = duplicate_book_problems(fingerprints)
    return AssetCheckResult(passed=not problems, severity=AssetCheckSeverity.WARN,
                            metadata={"files": len(fingerprints), **summary(problems)})


FINGERPRINT_KEY = "fingerprint"  # novel_files' metadata: the file's book_fingerprint
EXPORT_CHECKS = [export_is_complete, files_agree_with_index, no_duplicate_books]
