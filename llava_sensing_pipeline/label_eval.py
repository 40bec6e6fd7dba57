"""Measuring environment labels against the hand-labelled evaluation set (``llava-sensing eval-labels``).

The set (``llava_sensing_pipeline_tests/data/label_eval``, its README): three rounds of random chunks of the 14 corpus
books, cut as the pipeline cuts them, each labelled by two independent annotators who followed ``GUIDE.md`` and
adjudicated where they disagreed. Round 1 (340 passages) is the ``dev`` split, which the rule analyzer's decisions
were designed and fitted on; rounds 2 and 3 (400 + 300, drawn after the rules were frozen) are ``heldout``.

Per field, over the passages of a split:

- **precision**: of the labels the analyzer gives (not "unknown"), the share equal to the hand label;
- **recall**: of the passages whose hand label is known, the share the analyzer labels correctly;
- **F1** of the two; **coverage** (share of passages labelled) and **accuracy** (share equal, "unknown" included).

Precision, recall and accuracy carry 95 % Wilson score intervals; F1 a 95 % percentile bootstrap interval (passages
resampled, seeded). The trivial baselines: always "unknown" (no labels: accuracy = the share of unknown hand labels)
and the majority label (always the split's most frequent known hand label). The confusion summary counts, per field,
the wrong labels (known hand label, other label), the labels given where the hand label is unknown, and the misses.
The calibration table pools the given labels of all fields by confidence and shows their precision per bin.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

EVAL_FIELDS: tuple[str, ...] = ("weather", "time_of_day", "location", "movement", "temperature_hint")
SPLITS: tuple[str, ...] = ("heldout", "dev", "all")
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / "llava_sensing_pipeline_tests" / "data" / "label_eval"
# The rounds' folders inside the data folder: round 1 at its root, then round2/ and round3/. The rule decisions were
# designed and fitted on round 1 (``dev``) and frozen before rounds 2 and 3 were drawn (``heldout``, never tuned on).
ROUNDS: tuple[str, ...] = ("", "round2", "round3")
SPLIT_ROUNDS: dict[str, tuple[str, ...]] = {"dev": ("",), "heldout": ("round2", "round3"), "all": ROUNDS}
SPLIT_NAMES: dict[str, str] = {"heldout": "rounds 2 and 3, held out", "dev": "round 1, designed and fitted on",
                               "all": "rounds 1 to 3"}
CALIBRATION_BINS: tuple[float, ...] = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0001)
BOOTSTRAP_RESAMPLES = 2000
Z95 = 1.959964


# --- the data -------------------------------------------------------------------------------------------------


def _round_dirs(data_dir: str | Path, split: str) -> list[Path]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return [Path(data_dir) / name for name in SPLIT_ROUNDS[split]]


def load_passages(data_dir: str | Path = DEFAULT_DATA_DIR, split: str = "all") -> list[dict]:
    """The passages of ``split``, in file order: ``dev`` is round 1 (``passages.json``, the 340 passages the rule
    decisions were designed and fitted on), ``heldout`` rounds 2 and 3 (``round2/`` and ``round3/passages.json``, 700
    passages never tuned on), ``all`` the three. Raises FileNotFoundError when a round is missing."""
    passages: list[dict] = []
    for folder in _round_dirs(data_dir, split):
        path = folder / "passages.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the {'dev' if folder == Path(data_dir) else 'held-out'} "
                                    "set is missing")
        passages += json.loads(path.read_text(encoding="utf-8"))
    return passages


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float:
    """Cohen's kappa of two annotators' labels of the same items (1.0 when chance agreement is already total)."""
    n = len(first)
    observed = sum(a == b for a, b in zip(first, second)) / n
    counts_1, counts_2 = Counter(first), Counter(second)
    chance = sum(counts_1[label] * counts_2[label] for label in counts_1) / (n * n)
    return 1.0 if chance == 1 else (observed - chance) / (1 - chance)


def load_agreement(data_dir: str | Path = DEFAULT_DATA_DIR, split: str = "dev") -> dict[str, dict]:
    """The two annotators' agreement per field over the passages of ``split`` (raw agreement and Cohen's kappa),
    computed from both annotations each round's ``labels.json`` keeps; empty when they are not recorded."""
    rows: list[dict] = []
    for folder in _round_dirs(data_dir, split):
        path = folder / "labels.json"
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        rows += data.get("passages", []) if isinstance(data, dict) else data
    pairs = [(r["annotator_1"], r["annotator_2"]) for r in rows if "annotator_1" in r and "annotator_2" in r]
    if not pairs:
        return {}
    out = {}
    for name in EVAL_FIELDS:
        first, second = [a[name] for a, _ in pairs], [b[name] for _, b in pairs]
        out[name] = {"raw_agreement": round(sum(a == b for a, b in zip(first, second)) / len(pairs), 3),
                     "cohen_kappa": round(cohen_kappa(first, second), 3)}
    return out


def load_gold(data_dir: str | Path = DEFAULT_DATA_DIR) -> dict[str, dict]:
    """The adjudicated hand labels by passage id, of every round present (``labels.json``, ``round2/labels.json``,
    ``round3/labels.json``); raises FileNotFoundError without round 1's."""
    gold: dict[str, dict] = {}
    for name in ROUNDS:
        path = Path(data_dir) / name / "labels.json"
        if name and not path.is_file():
            continue
        rows = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(rows, dict):
            rows = rows.get("labels", rows.get("passages", []))
        gold.update({row["id"]: row for row in rows})
    return gold


def book_of(passage: Mapping) -> str:
    """The book a passage comes from (its source file)."""
    return str(passage.get("source_path") or passage["id"].rsplit("_", 1)[0])


# --- statistics -----------------------------------------------------------------------------------------------


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``k / n`` (``(0, 1)`` when ``n`` is 0)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _f1(correct: int, given: int, known: int) -> float:
    return 2 * correct / (given + known) if given + known else 0.0


@dataclass
class FieldMetrics:
    """One field's figures on ``n`` passages (see the module docstring)."""

    n: int
    given: int
    correct: int
    known: int
    equal: int
    precision: float | None
    precision_ci: tuple[float, float]
    recall: float
    recall_ci: tuple[float, float]
    f1: float
    f1_ci: tuple[float, float]
    coverage: float
    accuracy: float
    accuracy_ci: tuple[float, float]


def field_metrics(predicted: Sequence[str], gold: Sequence[str], seed: int = 0,
                  resamples: int = BOOTSTRAP_RESAMPLES) -> FieldMetrics:
    """Precision, recall, F1, coverage and accuracy of ``predicted`` against ``gold`` ("unknown" = no label)."""
    if len(predicted) != len(gold):
        raise ValueError("predicted and gold differ in length")
    n = len(gold)
    given_flags = [p != "unknown" for p in predicted]
    known_flags = [g != "unknown" for g in gold]
    correct_flags = [gv and p == g for gv, p, g in zip(given_flags, predicted, gold)]
    given, known, correct = sum(given_flags), sum(known_flags), sum(correct_flags)
    equal = sum(p == g for p, g in zip(predicted, gold))
    rng = random.Random(seed)
    f1s = []
    if n:
        for _ in range(resamples):
            sample = [rng.randrange(n) for _ in range(n)]
            f1s.append(_f1(sum(correct_flags[i] for i in sample), sum(given_flags[i] for i in sample),
                           sum(known_flags[i] for i in sample)))
        f1s.sort()
    f1_ci = (f1s[int(0.025 * len(f1s))], f1s[min(len(f1s) - 1, int(0.975 * len(f1s)))]) if f1s else (0.0, 0.0)
    return FieldMetrics(
        n=n, given=given, correct=correct, known=known, equal=equal,
        precision=correct / given if given else None, precision_ci=wilson(correct, given),
        recall=correct / known if known else 0.0, recall_ci=wilson(correct, known),
        f1=_f1(correct, given, known), f1_ci=f1_ci,
        coverage=given / n if n else 0.0, accuracy=equal / n if n else 0.0, accuracy_ci=wilson(equal, n),
    )


def baselines(gold: Sequence[str]) -> dict[str, dict]:
    """The always-"unknown" and majority-label baselines of one field."""
    known = [g for g in gold if g != "unknown"]
    out = {"always_unknown": {"label": "unknown", **_summary(field_metrics(["unknown"] * len(gold), gold,
                                                                          resamples=0))}}
    if known:
        label = Counter(known).most_common(1)[0][0]
        out["majority"] = {"label": label, **_summary(field_metrics([label] * len(gold), gold, resamples=0))}
    return out


def confusion(predicted: Sequence[str], gold: Sequence[str]) -> dict[str, object]:
    """Wrong labels (gold known, another label), labels where the gold is unknown, and misses, with counts."""
    wrong = Counter((g, p) for p, g in zip(predicted, gold) if p != "unknown" and g != "unknown" and p != g)
    spurious = Counter(p for p, g in zip(predicted, gold) if p != "unknown" and g == "unknown")
    missed = Counter(g for p, g in zip(predicted, gold) if p == "unknown" and g != "unknown")
    return {
        "wrong": sum(wrong.values()),
        "wrong_pairs": [[g, p, n] for (g, p), n in wrong.most_common()],
        "labelled_unknown": sum(spurious.values()),
        "labelled_unknown_by_label": dict(spurious.most_common()),
        "missed": sum(missed.values()),
        "missed_by_label": dict(missed.most_common()),
    }


def calibration(rows: Sequence[tuple[float, bool]], bins: Sequence[float] = CALIBRATION_BINS) -> list[dict]:
    """Precision of the given labels per confidence bin; ``rows`` are (confidence, correct) of each given label."""
    table = []
    for lo, hi in zip(bins, bins[1:]):
        inside = [ok for c, ok in rows if lo <= c < hi]
        if inside:
            k = sum(inside)
            table.append({"bin": [lo, min(hi, 1.0)], "labels": len(inside), "correct": k,
                          "precision": k / len(inside), "precision_ci": list(wilson(k, len(inside)))})
    return table


def _summary(m: FieldMetrics) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(m).items()}


# --- evaluation -----------------------------------------------------------------------------------------------


@dataclass
class Predictions:
    """The labels an analyzer gave each passage, the confidence of each given label, and notes on the run."""

    labels: list[dict[str, str]]
    confidences: list[dict[str, float]]
    notes: dict[str, object] = field(default_factory=dict)


def without_unanswered(passages: Sequence[dict], predictions: Predictions) -> tuple[list[dict], Predictions]:
    """The passages the analyzer answered, and their predictions (an LLM request that failed gives no labels: it is
    not a prediction of "unknown", and must not be scored as one)."""
    keep = [i for i, labels in enumerate(predictions.labels) if labels]
    return ([passages[i] for i in keep],
            Predictions([predictions.labels[i] for i in keep], [predictions.confidences[i] for i in keep],
                        dict(predictions.notes)))


def evaluate(passages: Sequence[dict], predictions: Predictions, gold: Mapping[str, dict],
             fields: Sequence[str] = EVAL_FIELDS, seed: int = 0, agreement: Mapping[str, dict] | None = None) -> dict:
    """The report of ``predictions`` against the hand labels (JSON-serialisable; :func:`format_report` prints it)."""
    missing = [p["id"] for p in passages if p["id"] not in gold]
    if missing:
        raise ValueError(f"{len(missing)} passage(s) have no hand label, e.g. {missing[0]}")
    report: dict = {"passages": len(passages), "fields": {}, "notes": dict(predictions.notes),
                    "annotator_agreement": dict(agreement or {})}
    calibration_rows: list[tuple[float, bool]] = []
    for name in fields:
        truth = [gold[p["id"]][name] for p in passages]
        guess = [labels.get(name, "unknown") for labels in predictions.labels]
        metrics = field_metrics(guess, truth, seed=seed)
        report["fields"][name] = {
            **_summary(metrics),
            "baselines": baselines(truth),
            "confusion": confusion(guess, truth),
        }
        for g, t, conf in zip(guess, truth, predictions.confidences):
            if g != "unknown":
                calibration_rows.append((conf.get(name, 0.0), g == t))
    report["calibration"] = calibration(calibration_rows)
    return report


def rule_predictions(passages: Sequence[dict]) -> Predictions:
    """The rule analyzer's labels (simple mode) and field confidences."""
    from .environment import ENV_FIELDS, analyze_columns

    columns = analyze_columns([p["text"] for p in passages])
    labels = [{name: columns[name][i] for name in ENV_FIELDS} for i in range(len(passages))]
    return Predictions(labels, [dict(c) for c in columns["field_confidence"]], {"analyzer": "rules"})


def llm_predictions(passages: Sequence[dict], llm, seed: int = 42,
                    progress: Callable[[int, int], None] | None = None) -> Predictions:
    """Hybrid mode's labels: the LLM analyzer through ``llm`` (any :class:`~.llm.LLMClient`),
    validated and gap-filled from rule labels that meet the precision bar, exactly as ``environment_features``
    does; each given label's confidence is the validated LLM confidence of its passage."""
    from .environment import analyze_columns, features_at
    from .environment_llm import (
        ANALYSIS_SCHEMA,
        analysis_messages,
        analysis_options,
        analysis_problem,
        interpret_analysis,
    )
    from .llm import LLMCallFailed
    from .seeding import derive_seed

    columns = analyze_columns([p["text"] for p in passages])
    digest = llm.check_ready()

    def one(i: int) -> dict | None:
        p = passages[i]
        try:
            reply = llm.chat(analysis_messages(p["text"]), options=analysis_options(
                derive_seed(seed, p["id"], "analysis") % 2**31), fmt=ANALYSIS_SCHEMA, validate=analysis_problem)
        except LLMCallFailed:
            return None
        return interpret_analysis(reply.text, features_at(columns, i))

    results: list[dict | None] = [None] * len(passages)
    with ThreadPoolExecutor(max_workers=max(1, llm.total_slots)) as pool:
        for i, result in enumerate(pool.map(one, range(len(passages)))):
            results[i] = result
            if progress is not None:
                progress(i + 1, len(passages))
    labels, confidences = [], []
    failed = invalid_json = filled = 0
    for r in results:
        if r is None:
            failed += 1
            labels.append({})
            confidences.append({})
            continue
        invalid_json += not r["valid_json"]
        filled += len(r["rule_fields"])
        labels.append(r["labels"])
        confidences.append({name: r["confidence"] for name in r["labels"]})
    return Predictions(labels, confidences, {
        "analyzer": "llm", "model": llm.model, "llm_api": llm.api, "model_digest": digest, "failed_requests": failed,
        "invalid_json_replies": invalid_json, "fields_filled_by_rules": filled})


# --- fitting the rule decisions (leave-one-book-out cross-validation) ---------------------------------------------
# The rule analyzer's data-driven choices are, per field, the cue weight a label needs (THRESHOLD) and whether other
# labels of the field may have cues (DOMINANCE 2, or UNCONTESTED), and the confidence of its labels. They are fitted on
# the dev set (round 1) and their quality on unseen books is estimated by leave-one-book-out cross-validation: the
# whole fit is repeated without each book and applied to it.

GRID_THRESHOLDS: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
GRID_DOMINANCE: tuple[float, ...] = (2.0, math.inf)
TARGET_PRECISION = 0.85
MIN_LABELS = 3  # a setting is judged on at least this many labels


@dataclass
class _FieldGrid:
    """One field's decisions at every setting of the grid, on every passage."""

    settings: list[tuple[float, float]]  # (threshold, dominance), strictest first
    given: np.ndarray  # passages x settings
    correct: np.ndarray
    strong: np.ndarray  # cue weight at least STRONG times the threshold


def _field_grids(passages: Sequence[dict], gold: Mapping[str, dict]) -> dict[str, _FieldGrid]:
    from .environment import VOCABULARY, rules

    scores = rules.evidence_scores([p["text"] for p in passages])
    settings = sorted(((t, d) for t in GRID_THRESHOLDS for d in GRID_DOMINANCE), reverse=True)
    grids = {}
    for name in EVAL_FIELDS:
        vocabulary = np.array(VOCABULARY[name])
        truth = np.array([gold[p["id"]][name] for p in passages])
        segment = rules.field_scores(scores, name)
        shape = (len(passages), len(settings))
        given, correct, strong = np.zeros(shape, bool), np.zeros(shape, bool), np.zeros(shape, bool)
        for j, (threshold, dominance) in enumerate(settings):
            chosen, best = rules.decide_field(name, segment, threshold, dominance)
            given[:, j] = chosen >= 0
            correct[:, j] = given[:, j] & (vocabulary[np.maximum(chosen, 0)] == truth)
            strong[:, j] = best >= rules.STRONG * threshold
        grids[name] = _FieldGrid(settings, given, correct, strong)
    return grids


def _choose(grid: _FieldGrid, rows: np.ndarray) -> int | None:
    """The setting with the most right labels among those whose labels on ``rows`` reach TARGET_PRECISION (at least
    MIN_LABELS of them); the strictest on a tie; None when no setting does (the field is never labelled)."""
    given = grid.given[rows].sum(axis=0)
    correct = grid.correct[rows].sum(axis=0)
    ok = (given >= MIN_LABELS) & (correct >= TARGET_PRECISION * given)
    if not ok.any():
        return None
    return int(np.argmax(np.where(ok, correct, -1)))


def _confidence_table(strong: np.ndarray, correct: np.ndarray) -> tuple[float, float]:
    """(weak, strong) confidence from labels' strength and correctness: smoothed precision (k + 1) / (n + 2) of each
    group; pooled when the strong labels are not the more precise (so confidence never falls with evidence)."""
    def smoothed(k: int, n: int) -> float:
        return round((k + 1) / (n + 2), 2)

    weak = smoothed(int(correct[~strong].sum()), int((~strong).sum()))
    high = smoothed(int(correct[strong].sum()), int(strong.sum()))
    if high < weak:
        weak = high = smoothed(int(correct.sum()), len(correct))
    return weak, high


def _out_of_fold(grid: _FieldGrid, books: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                                 list]:
    """Leave-one-book-out over ``rows``: each book's labels at the setting chosen without it. Returns, per row, given,
    correct and strong, and the setting chosen for each book."""
    given, correct, strong = (np.zeros(len(books), bool) for _ in range(3))
    chosen = []
    for book in sorted(set(books[rows])):
        held = rows & (books == book)
        j = _choose(grid, rows & ~held)
        chosen.append((book, None if j is None else grid.settings[j]))
        if j is not None:
            given[held], correct[held], strong[held] = grid.given[held, j], grid.correct[held, j], grid.strong[held, j]
    return given, correct, strong, chosen


def _fit(grid: _FieldGrid, books: np.ndarray, rows: np.ndarray) -> tuple[int | None, tuple[float, float]]:
    """The whole fit on ``rows``: the setting (None: never label) and the confidence table. The setting is
    :func:`_choose`'s, dropped when leave-one-book-out over ``rows`` shows that its labels clearly miss
    TARGET_PRECISION on unseen books (the upper end of the 95 % interval of their precision is below it); the
    confidence is the precision of those out-of-fold labels."""
    given, correct, strong, _ = _out_of_fold(grid, books, rows)
    n, k = int(given.sum()), int(correct.sum())
    j = _choose(grid, rows) if wilson(k, n)[1] >= TARGET_PRECISION else None
    return j, _confidence_table(strong[given], correct[given])


def _setting_name(setting: tuple[float, float] | None) -> str:
    if setting is None:
        return "never"
    return f"{setting[0]:g}/{'uncontested' if setting[1] == math.inf else f'{setting[1]:g}'}"


def fit_rule_decisions(passages: Sequence[dict], gold: Mapping[str, dict]) -> dict:
    """Fit the rule analyzer's decisions on ``passages`` and estimate their quality by leave-one-book-out
    cross-validation of the whole fit (see the section comment). Per field: ``threshold`` and ``dominance`` (None:
    never labelled, because no setting reaches the target precision or its labels clearly miss it on unseen books),
    ``confidence`` (weak, strong: the cross-validated precision of the labels), ``cv`` (each book labelled by the fit
    made without it, an inner cross-validation included: given, correct, known, precision and recall with Wilson
    intervals, and the setting chosen without each book), and the ``calibration`` table of those labels by the
    confidence fitted without their book."""
    from .environment import rules

    grids = _field_grids(passages, gold)
    books = np.array([book_of(p) for p in passages])
    everything = np.ones(len(passages), bool)
    result: dict = {"passages": len(passages), "books": len(set(books)), "target_precision": TARGET_PRECISION,
                    "fields": {}}
    calibration_rows: list[tuple[float, bool]] = []
    for name, grid in grids.items():
        given, correct = np.zeros(len(books), bool), np.zeros(len(books), bool)
        chosen = []
        for book in sorted(set(books)):
            held = books == book
            j, table = _fit(grid, books, ~held)
            chosen.append(None if j is None else grid.settings[j])
            if j is None:
                continue
            given[held], correct[held] = grid.given[held, j], grid.correct[held, j]
            for ok, is_strong in zip(grid.correct[held & given, j], grid.strong[held & given, j]):
                calibration_rows.append((table[1] if is_strong else table[0], bool(ok)))
        j, table = _fit(grid, books, everything)
        known = sum(gold[p["id"]][name] != "unknown" for p in passages)
        k, n = int(correct.sum()), int(given.sum())
        result["fields"][name] = {
            "threshold": None if j is None else grid.settings[j][0],
            "dominance": None if j is None else ("uncontested" if grid.settings[j][1] == math.inf
                                                 else grid.settings[j][1]),
            "confidence": table,
            "cv": {"given": n, "correct": k, "known": known, "precision": k / n if n else None,
                   "precision_ci": wilson(k, n), "recall": k / known if known else 0.0,
                   "recall_ci": wilson(k, known), "f1": _f1(k, n, known),
                   "settings": Counter(map(_setting_name, chosen)).most_common()},
        }
    result["calibration"] = calibration(calibration_rows)
    result["strong_factor"] = rules.STRONG
    return result


def rule_decisions_in_use() -> dict[str, dict]:
    """The rule analyzer's decisions per evaluated field, in :func:`fit_rule_decisions`' terms."""
    from .environment import rules

    out = {}
    for name in EVAL_FIELDS:
        threshold = rules.THRESHOLD[name]
        never = threshold == rules.NEVER
        dominance = rules.DOMINANCE[name]
        out[name] = {"threshold": None if never else threshold,
                     "dominance": None if never else ("uncontested" if dominance == math.inf else dominance),
                     "confidence": rules.CONFIDENCE[name]}
    return out


def _calibration_lines(rows: Sequence[dict]) -> list[str]:
    """A calibration table (:func:`calibration`'s rows) as report lines: labels and precision per confidence bin."""
    lines = []
    for row in rows:
        lo, hi = row["bin"]
        lines.append(f"  [{lo:.2f}, {hi:.2f}{']' if hi >= 1.0 else ')'}  {row['labels']:>4} labels  "
                     f"precision {row['precision']:.2f} {_ci(row['precision_ci'])}")
    return lines or ["  (no labels given)"]


def format_fit_report(fit: dict) -> str:
    """The fit as text: the chosen decisions and the cross-validated figures per field, and the calibration."""
    lines = [f"rule decisions fitted on {fit['passages']} passages of {fit['books']} books; expected quality by "
             f"leave-one-book-out cross-validation (target precision {fit['target_precision']:.2f})", ""]
    header = (f"{'field':<17}{'threshold':>10}{'dominance':>13}{'confidence':>12}   {'CV labels':>9}{'right':>6}"
              f"{'known':>6}  {'precision [95% CI]':<20}{'recall [95% CI]':<20}settings chosen per book")
    lines += [header, "-" * len(header)]
    for name, f in fit["fields"].items():
        cv = f["cv"]
        threshold = "never" if f["threshold"] is None else f"{f['threshold']:g}"
        dominance = "-" if f["dominance"] is None else str(f["dominance"])
        confidence = "-" if f["threshold"] is None else "/".join(f"{c:.2f}" for c in f["confidence"])
        settings = ", ".join(f"{s} x{k}" for s, k in cv["settings"])
        lines.append(f"{name:<17}{threshold:>10}{dominance:>13}{confidence:>12}   {cv['given']:>9}{cv['correct']:>6}"
                     f"{cv['known']:>6}  {_pct(cv['precision']) + ' ' + _ci(cv['precision_ci']):<20}"
                     f"{_pct(cv['recall']) + ' ' + _ci(cv['recall_ci']):<20}{settings}")
    lines += ["", "calibration of the out-of-fold labels (confidence fitted without their book):",
              *_calibration_lines(fit["calibration"])]
    if "in_use" in fit:
        def same(name: str) -> bool:
            fitted, used = fit["fields"][name], fit["in_use"][name]
            if fitted["threshold"] is None or used["threshold"] is None:
                return fitted["threshold"] is used["threshold"]
            return all(fitted[k] == used[k] for k in ("threshold", "dominance")) and \
                tuple(fitted["confidence"]) == tuple(used["confidence"])

        same_all = all(same(name) for name in fit["fields"])
        lines += ["", "the analyzer's decisions (environment/rules.py) " + (
            "are this fit's" if same_all else "DIFFER from this fit: update THRESHOLD, DOMINANCE and CONFIDENCE")]
    return "\n".join(lines)


# --- printing -------------------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "   -" if value is None else f"{value:.2f}"


def _ci(ci: Sequence[float]) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def format_report(report: dict, title: str) -> str:
    """The report as text: a table per field, baselines, confusion summary and calibration table."""
    lines = [title, ""]
    header = (f"{'field':<17}{'labels':>7}{'right':>6}{'known':>6}  {'precision [95% CI]':<20}"
              f"{'recall [95% CI]':<20}{'F1 [95% CI]':<20}{'accuracy':>8}")
    lines += [header, "-" * len(header)]
    for name, f in report["fields"].items():
        lines.append(f"{name:<17}{f['given']:>7}{f['correct']:>6}{f['known']:>6}  "
                     f"{_pct(f['precision']) + ' ' + _ci(f['precision_ci']):<20}"
                     f"{_pct(f['recall']) + ' ' + _ci(f['recall_ci']):<20}"
                     f"{_pct(f['f1']) + ' ' + _ci(f['f1_ci']):<20}{f['accuracy']:>8.2f}")
    lines += ["", "baselines (same passages):"]
    for name, f in report["fields"].items():
        b = f["baselines"]
        text = f"  {name:<17}always unknown: accuracy {b['always_unknown']['accuracy']:.2f}, F1 0.00"
        if "majority" in b:
            m = b["majority"]
            text += (f"; always {m['label']!r}: precision {_pct(m['precision'])}, recall {m['recall']:.2f}, "
                     f"F1 {m['f1']:.2f}, accuracy {m['accuracy']:.2f}")
        lines.append(text)
    if report.get("annotator_agreement"):
        lines += ["", "the two annotators (this set's passages, before adjudication): " + "; ".join(
            f"{name} {a.get('raw_agreement', 0):.1%} agree, kappa {a.get('cohen_kappa', 0):.2f}"
            for name, a in report["annotator_agreement"].items())]
    lines += ["", "confusion (hand label -> given label):"]
    for name, f in report["fields"].items():
        c = f["confusion"]
        wrong = ", ".join(f"{g}->{p} {n}" for g, p, n in c["wrong_pairs"][:4]) or "none"
        spurious = ", ".join(f"{lb} {n}" for lb, n in list(c["labelled_unknown_by_label"].items())[:4]) or "none"
        missed = ", ".join(f"{lb} {n}" for lb, n in list(c["missed_by_label"].items())[:4]) or "none"
        lines.append(f"  {name:<17}wrong {c['wrong']} ({wrong}); labelled where unknown {c['labelled_unknown']} "
                     f"({spurious}); missed {c['missed']} ({missed})")
    lines += ["", "calibration (given labels of all fields, by confidence):",
              *_calibration_lines(report["calibration"])]
    notes = {k: v for k, v in report["notes"].items() if k != "analyzer"}
    if notes:
        lines += ["", "run: " + ", ".join(f"{k} {v}" for k, v in notes.items())]
    return "\n".join(lines)
