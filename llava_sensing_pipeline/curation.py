"""Dataset curation before export: exact and near-duplicate removal, and train/validation/test splits by novel.

**Deduplication.** A target paragraph is *normalised* (lower-cased, punctuation removed, whitespace collapsed);
two paragraphs with the same normalised text are exact duplicates. Near-duplicates are found with MinHash over
word 5-shingles of the normalised text and a MinHash LSH index (``datasketch``; 128 permutations, seeded), and
confirmed when the MinHash estimate of their Jaccard similarity reaches the threshold (0.8 by default), so a
paragraph with one sentence changed is caught while two passages that merely share a phrase are not. Paragraphs are
offered in a stable order (files in sorted order, each by its selection rank) and the first one is kept.

**Splits.** Whole novels go to one split, so no novel, example id or target paragraph is in two splits (after
deduplication no paragraph is in two novels either). Within each genre, novels are put in a seeded order and
sorted by example count, largest first; each goes to the split furthest below its target (ratio x the genre's
examples). With few novels a held-out split can stay empty; it is then given the smallest train novel of the genre
with the most train novels, but only while train keeps at least two novels and half the examples. A split that
is still empty is reported in the warnings (e.g. two novels: both go to train, validation and test are empty).
"""

from __future__ import annotations

import functools
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasketch import MinHash

from .seeding import derive_seed, rng_for

SPLIT_NAMES: tuple[str, ...] = ("train", "validation", "test")
DEFAULT_SPLIT_RATIOS: tuple[float, ...] = (0.8, 0.1, 0.1)
NEAR_DUPLICATE_THRESHOLD = 0.8
NUM_PERM = 128
SHINGLE_WORDS = 5
MINHASH_SCHEME = "affine32"  # explicit, so a future datasketch default cannot change which paragraphs are kept
ROOT_GENRE = "(top level)"



@functools.cache
def _punctuation_to_space() -> dict[int, str]:
    """A ``str.translate`` table mapping every Unicode punctuation character (category P*) to a space (built once,
    in about a quarter of a second, on first use)."""
    return {cp: " " for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)).startswith("P")}


def normalise_text(text: str) -> str:
    """Lower-case, every punctuation character replaced by a space, whitespace collapsed and trimmed."""
    lowered = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(lowered.translate(_punctuation_to_space()).split())


def shingles(normalised: str, size: int = SHINGLE_WORDS) -> set[str]:
    """Word ``size``-shingles of a normalised text; a shorter non-empty text is one shingle."""
    words = normalised.split()
    if len(words) <= size:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + size]) for i in range(len(words) - size + 1)}


@dataclass(frozen=True)
class Duplicate:
    """A removed example: which kept example it duplicates, and how closely (1.0 for exact duplicates)."""

    id: str
    kind: str  # "exact" or "near"
    duplicate_of: str
    similarity: float

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "duplicate_of": self.duplicate_of, "similarity": self.similarity}


class Deduplicator:
    """Accepts paragraphs one at a time and rejects those that duplicate, exactly or nearly, one accepted before."""

    def __init__(self, threshold: float = NEAR_DUPLICATE_THRESHOLD, num_perm: int = NUM_PERM,
                 shingle_words: int = SHINGLE_WORDS, seed: int = 0):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near_duplicate_threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.num_perm = num_perm
        self.shingle_words = shingle_words
        self.minhash_seed = derive_seed(seed, "near-duplicates") % (2**32)
        from datasketch import MinHash, MinHashLSH  # here, not at import: a quarter of a second of every CLI start

        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        # drawn once from the seed instead of for every paragraph (what MinHash does without them)
        self._new_minhash = functools.partial(
            MinHash, num_perm=num_perm, seed=self.minhash_seed, scheme=MINHASH_SCHEME,
            permutations=MinHash(num_perm=num_perm, seed=self.minhash_seed, scheme=MINHASH_SCHEME).permutations)
        self._exact: dict[str, str] = {}
        self._kept: list[tuple[str, MinHash]] = []
        self.removed: list[Duplicate] = []

    def _minhash(self, normalised: str) -> MinHash | None:
        grams = shingles(normalised, self.shingle_words)
        if not grams:
            return None
        mh = self._new_minhash()
        mh.update_batch(sorted(g.encode("utf-8") for g in grams))
        return mh

    def check(self, example_id: str, text: str) -> Duplicate | None:
        """The duplicate found for ``text`` (recorded in ``removed``), or None after accepting it."""
        normalised = normalise_text(text)
        if normalised in self._exact:
            found = Duplicate(example_id, "exact", self._exact[normalised], 1.0)
            self.removed.append(found)
            return found
        mh = self._minhash(normalised)
        if mh is not None:
            # The most similar kept paragraph (the earliest on a tie); LSH candidates are confirmed by their estimate.
            matches = [(mh.jaccard(self._kept[slot][1]), -slot) for slot in self._lsh.query(mh)]
            best = max((m for m in matches if m[0] >= self.threshold), default=None)
            if best is not None:
                found = Duplicate(example_id, "near", self._kept[-best[1]][0], round(best[0], 3))
                self.removed.append(found)
                return found
            self._lsh.insert(len(self._kept), mh)
            self._kept.append((example_id, mh))
        self._exact[normalised] = example_id
        return None

    def summary(self) -> dict:
        """Counts and method, plus every removed example, for the export index."""
        kinds = Counter(d.kind for d in self.removed)
        return {
            "removed": len(self.removed),
            "exact": kinds.get("exact", 0),
            "near": kinds.get("near", 0),
            "method": f"normalised-text equality; MinHash LSH (datasketch) on word {self.shingle_words}-shingles, "
                      f"{self.num_perm} permutations, Jaccard >= {self.threshold}",
            "removed_examples": [d.to_dict() for d in self.removed],
        }


# --- Splits by novel --------------------------------------------------------------------------------------------


def novel_of(record: Mapping) -> str:
    """The novel an example comes from: its source file path, relative to the input folder."""
    return str(record["source_info"]["source_path"])


def genre_of_path(source_path: str) -> str:
    """The genre folder of a source path (``(top level)`` for files directly in the input folder)."""
    parent = PurePosixPath(source_path).parent.as_posix()
    return ROOT_GENRE if parent == "." else parent


def normalise_ratios(ratios: Sequence[float]) -> dict[str, float]:
    """``(train, validation, test)`` shares scaled to sum to 1 (``80/10/10`` and ``0.8/0.1/0.1`` are the same)."""
    values = [float(r) for r in ratios]
    if len(values) != len(SPLIT_NAMES) or any(v < 0 for v in values) or values[0] <= 0:
        raise ValueError(f"split_ratios must be three non-negative numbers for train, validation and test with a "
                         f"positive train share (e.g. 80,10,10 in LLAVA_SENSING_SPLIT_RATIOS), got {list(ratios)}")
    total = sum(values)
    return {name: round(v / total, 6) for name, v in zip(SPLIT_NAMES, values)}


@dataclass(frozen=True)
class SplitPlan:
    """Which split each novel went to, the per-split summary for the index, and warnings."""

    assignment: dict[str, str]
    ratios: dict[str, float]
    summary: dict[str, dict]
    warnings: list[str] = field(default_factory=list)

    def split_records(self, records: Iterable[Mapping]) -> dict[str, list]:
        """``records`` (order kept) grouped by the split of their novel."""
        out: dict[str, list] = {name: [] for name in SPLIT_NAMES}
        for r in records:
            out[self.assignment[novel_of(r)]].append(r)
        return out


def _move_to_empty_splits(assignment: dict[str, str], counts: Mapping[str, int], genres: Mapping[str, str],
                          order: Sequence[str], ratios: Mapping[str, float]) -> None:
    """Fills empty held-out splits (test first) with the smallest train novel of the genre with most train
    novels, while train keeps at least two novels and half the examples."""
    total = sum(counts.values())
    for split in reversed(SPLIT_NAMES[1:]):
        if ratios[split] <= 0 or split in assignment.values():
            continue
        train = [n for n in order if assignment[n] == "train"]
        per_genre = Counter(genres[n] for n in train)
        genre = min(per_genre, key=lambda g: (-per_genre[g], g))
        novel = min((n for n in reversed(train) if genres[n] == genre), key=lambda n: counts[n])
        if len(train) - 1 < 2 or 2 * (sum(counts[n] for n in train) - counts[novel]) < total:
            continue
        assignment[novel] = split


def plan_splits(records: Sequence[Mapping], ratios: Sequence[float], seed: int) -> SplitPlan:
    """Assigns every novel of ``records`` to train, validation or test (see the module docstring)."""
    shares = normalise_ratios(ratios)
    counts = Counter(novel_of(r) for r in records)
    genres = {n: genre_of_path(n) for n in counts}
    total = sum(counts.values())
    assignment: dict[str, str] = {}
    order: list[str] = []
    current = Counter()
    open_splits = [s for s in SPLIT_NAMES if shares[s] > 0]
    for genre in sorted(set(genres.values())):
        novels = sorted(n for n in counts if genres[n] == genre)
        rng_for(seed, "splits", genre).shuffle(novels)
        novels.sort(key=lambda n: -counts[n])
        genre_total = sum(counts[n] for n in novels)
        in_genre = Counter()
        for novel in novels:
            split = max(open_splits, key=lambda s: (shares[s] * genre_total - in_genre[s],
                                                     shares[s] * total - current[s], -SPLIT_NAMES.index(s)))
            assignment[novel] = split
            in_genre[split] += counts[novel]
            current[split] += counts[novel]
            order.append(novel)
    if assignment:
        _move_to_empty_splits(assignment, counts, genres, order, shares)
    summary, warnings = {}, []
    for split in SPLIT_NAMES:
        novels = sorted(n for n in order if assignment[n] == split)
        per_genre = Counter()
        for n in novels:
            per_genre[genres[n]] += counts[n]
        examples = sum(per_genre.values())
        summary[split] = {
            "novels": novels,
            "examples": examples,
            "share": round(examples / total, 4) if total else 0.0,
            "genres": dict(sorted(per_genre.items())),
        }
        if shares[split] > 0 and not novels:
            warnings.append(f"{split} is empty: {len(counts)} novel(s) are too few for a {shares[split]:.0%} "
                            f"{split} share when whole novels go to one split; add novels to the input folder")
    return SplitPlan(assignment, shares, summary, warnings)
