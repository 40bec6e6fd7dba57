"""The rule analyzer: labels a passage's scene from cues (:mod:`.cues`), precision first.

One implementation serves one text and a file's chunks alike. The texts are joined and read once with numpy: word
boundaries, the trigger and context words (found by a signature prefilter and an exact 16-byte key), sentence and
clause boundaries, quotation spans and capital letters. Then, for every occurrence of a trigger word:

0. **Is the passage a narrated scene?** The scene is told in the past tense. A passage whose narration (outside
   dialogue) has ``PRESENT_SHARE`` or more of its tensed verbs in the present tense (``PRESENT_TENSE_WORDS``
   against ``PAST_TENSE_WORDS`` and words in "-ed") is an essay, a description or a reflection: no label at all.
1. **Is it evidence at all?** An occurrence is dropped when it is part of a hyphenated compound ("sun-bonnet"), a
   name or heading (capitalised inside a sentence, "Mr. Frost", all capitals; a passage mostly in capitals is a
   table of contents), inside dialogue (quotation marks that close within the paragraph; a quotation that runs on
   is a narrated story and counts), in a comparison ("like a ship in a gale"), in a sentence that is not the
   narrated scene (conditional, remembered, dreamt, told or depicted: "if it rained", "he remembered the snow"; or
   with a present-tense verb outside dialogue, a general statement or description: "the town lies on a hill") or
   in a clause that is not (modal, wished or habitual: "it would rain", "every evening"). A negated occurrence ("no
   rain") counts only for the cues written for negation, and a weather or outdoor place cue in a clause that
   describes a view ("snow on the distant peaks") not at all.
2. **Which cue?** Each of the trigger's cues is tried in its immediate context (``"the sun (?:was )?<setting>"``;
   a quick test of the neighbouring words in numpy, then the regex in Python for the few that pass); per occurrence
   and field the first matching cue decides: a veto (weight 0: "good <night>") removes the occurrence from the
   field, else the heaviest matching cue counts. A word counted again for the same label counts half.
3. **Which label?** Per field, a label needs cue weights adding up to ``THRESHOLD`` and at least ``DOMINANCE`` times
   the weight of any other label of the field (``UNCONTESTED``: no other label may have a cue); anything else is
   "unknown", and a field whose threshold is ``NEVER`` is always "unknown". Weather follows the annotation guide's
   order when several kinds hold at once (storm, snow, rain, fog, windy, cloudy, clear): a label over the threshold
   wins over the later ones, whatever their weight. Steps 2 and 3 run on arrays for the whole batch. Threshold and
   dominance of the five hand-labelled fields are fitted on the label-evaluation set with leave-one-book-out
   cross-validation (``label_eval.fit_rule_decisions``, ``llava-sensing eval-labels --cv``).

Confidence: a field's confidence estimates the probability that its label is right (``field_confidence``: the
field's cross-validated precision, ``CONFIDENCE``); the passage's ``confidence`` is the sum of its context fields'
confidences (weather, time of day, location) plus half of the others', over 3, capped at 1: about 0.29 per known
context field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .cues import (
    COMPOUND_HEAD_FIELDS,
    COMPOUND_HEAD_PREFIXES,
    CUES,
    NEGATORS,
    NON_SCENE_CLAUSE_MARKERS,
    NON_SCENE_MARKERS,
    NOT_PAST_ED,
    PAST_TENSE_WORDS,
    PRESENT_TENSE_WORDS,
    SIMILE_MARKERS,
    TIME_UNITS,
    TITLE_ABBREVIATIONS,
    VIEW_MARKERS,
)
from .vocabulary import CONTEXT_FIELDS, ENV_FIELDS, VOCABULARY

# The decision per field: a label needs cue weight THRESHOLD and DOMINANCE times the weight of any other label of the
# field (UNCONTESTED: no other label may have any cue); NEVER: the field is never labelled. For the five fields with
# hand labels both are chosen by ``label_eval.fit_rule_decisions`` on the label-evaluation set (round 1): the
# loosest setting whose labels reach 0.85 precision, estimated by leave-one-book-out cross-validation (README, Label
# quality); a test checks that these values are what the fit gives. Humidity and wind have no hand labels.
NEVER = math.inf
UNCONTESTED = math.inf
THRESHOLD: dict[str, float] = {
    "temperature_hint": NEVER,
    "humidity_hint": 2.0,
    "weather": 2.0,
    "time_of_day": 1.5,
    "location": 4.0,
    "movement": NEVER,
    "wind": 2.0,
}
DOMINANCE: dict[str, float] = {
    "temperature_hint": 2.0,
    "humidity_hint": 2.0,
    "weather": 2.0,
    "time_of_day": UNCONTESTED,
    "location": 2.0,
    "movement": 2.0,
    "wind": 2.0,
}
# A passage with this share of capital letters (of its bytes; prose has 2-5 %) is a heading, a table of contents or
# a list of names: no scene.
MAX_CAPITAL_SHARE = 0.065
# A text whose narration (outside dialogue) has this share or more of its tensed verbs in the present tense is not a
# narrated scene (an essay, a description, a reflection): no label at all.
PRESENT_SHARE = 0.5
REPEAT_WEIGHT = 0.5
WEATHER_PRIORITY: tuple[str, ...] = ("storm", "snow", "rain", "fog", "windy", "cloudy", "clear")


@dataclass(frozen=True)
class EnvironmentFeatures:
    """Environment labels of one chunk, with the evidence behind them.

    ``confidence`` is the passage's; ``field_confidence`` the confidence of each known field (absent: unknown or
    no measure, e.g. for labels that did not come from the rules).
    """

    temperature_hint: str
    humidity_hint: str
    weather: str
    time_of_day: str
    location: str
    movement: str
    wind: str
    confidence: float
    cues: dict[str, list[str]] = field(default_factory=dict)
    source: str = "rules"
    field_confidence: dict[str, float] = field(default_factory=dict)

    def labels(self) -> dict[str, str]:
        """The seven ENV_FIELDS labels."""
        return {name: getattr(self, name) for name in ENV_FIELDS}

    def to_dict(self) -> dict[str, object]:
        """Flat JSON-serialisable dict: the seven labels, confidence, cues, source and field confidences."""
        return {
            **self.labels(),
            "confidence": self.confidence,
            "cues": {name: list(words) for name, words in self.cues.items()},
            "source": self.source,
            "field_confidence": dict(self.field_confidence),
        }


# Confidence estimates the probability that a label is right: per field, the precision of its labels on books the
# decision was not fitted on (leave-one-book-out cross-validation on the label-evaluation set, smoothed: (right + 1)
# / (given + 2)), for labels with cue weight under STRONG times the threshold and for those at or over it (never lower
# than the former). Humidity and wind, which have no hand labels, get 0.5. Fitted with THRESHOLD.
STRONG = 2.0
CONFIDENCE: dict[str, tuple[float, float]] = {
    "temperature_hint": (0.5, 0.5),  # never labelled
    "humidity_hint": (0.5, 0.5),
    "weather": (0.86, 0.86),
    "time_of_day": (0.87, 0.87),
    "location": (0.85, 0.85),
    "movement": (0.5, 0.5),  # never labelled
    "wind": (0.5, 0.5),
}


def field_confidence(name: str, best, second=0.0, threshold: float | None = None,
                     table: Mapping[str, tuple[float, float]] | None = None):
    """Confidence of field ``name``'s label supported by cue weight ``best`` (see ``CONFIDENCE``); numbers or numpy
    arrays. ``second`` (the weight of the field's other labels) is accepted for callers that have it; the decision
    has already weighed it."""
    threshold = THRESHOLD[name] if threshold is None else threshold
    weak, strong = (CONFIDENCE if table is None else table)[name]
    value = np.where(np.asarray(best) >= STRONG * threshold, max(weak, strong), weak)
    return float(value) if value.ndim == 0 else value


def passage_confidence(confidences: Mapping[str, float]) -> float:
    """The passage's confidence from its fields' (see the module docstring)."""
    score = sum(c if name in CONTEXT_FIELDS else 0.5 * c for name, c in confidences.items())
    return round(min(1.0, score / len(CONTEXT_FIELDS)), 3)


# --- compiled cues --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    field: str
    label: str
    weight: float
    prefix: re.Pattern[bytes] | None
    suffix: re.Pattern[bytes] | None
    negation_ok: bool
    before: frozenset[int] | None  # signatures of the words that can end the prefix (None: any), a quick test
    after: frozenset[int] | None  # signatures of the words that can start the suffix
    prefix_words: int  # the most words the prefix can span


_SPEC = re.compile(r"(!?)(.*?)<([a-z|]+)>(.*)", re.S)
_WINDOW = 60  # bytes of context a cue's prefix or suffix may span
_PATTERN_TOKEN = re.compile(r"\(\?[:!]|\)\??|\||\[a-z\]\+|[a-z]+| ")


def _parse(pattern: str) -> list:
    """A cue's prefix or suffix as a sequence of items: ``("word", w)``, ``("any",)``, ``("group", [sequences],
    optional)`` or ``("look",)`` (a lookahead, zero width). Only the cue language is understood: literal words,
    ``[a-z]+``, groups ``(?:...)`` with ``|`` and an optional ``?``, lookaheads ``(?!...)``."""
    tokens = [t for t in _PATTERN_TOKEN.findall(pattern) if t != " "]
    if "".join(tokens).replace(" ", "") != pattern.replace(" ", ""):
        raise ValueError(f"cue context {pattern!r} uses more than the cue language")
    pos = 0

    def sequence() -> list[list]:
        nonlocal pos
        alternatives, current = [], []
        while pos < len(tokens):
            t = tokens[pos]
            pos += 1
            if t in ("(?:", "(?!"):
                inner = sequence()
                closing = tokens[pos - 1]
                current.append(("look",) if t == "(?!" else ("group", inner, closing == ")?"))
            elif t in (")", ")?"):
                break
            elif t == "|":
                alternatives.append(current)
                current = []
            elif t.startswith("["):
                current.append(("any",))
            else:
                current.append(("word", t))
        alternatives.append(current)
        return alternatives

    return sequence()


def _max_words(alternatives: list[list]) -> int:
    """The most words any of ``alternatives`` can span."""
    return max((sum(1 if item[0] in ("word", "any") else _max_words(item[1]) if item[0] == "group" else 0
                    for item in items) for items in alternatives), default=0)


def _edge_words(alternatives: list[list], last: bool) -> frozenset[bytes] | None:
    """The words that can come first (or last) in any of ``alternatives``; None when any word can, or nothing."""
    words: set[bytes] = set()
    for items in alternatives:
        found = False
        for item in (reversed(items) if last else items):
            if item[0] == "look":
                continue
            if item[0] == "any":
                return None
            if item[0] == "word":
                words.add(item[1].encode())
                found = True
                break
            inner = _edge_words(item[1], last)
            if inner is None:
                return None
            words |= inner
            if not item[2]:  # a required group
                found = True
                break
        if not found:
            return None  # this alternative can be empty
    return frozenset(words)


_SIGNATURE_BITS = 20


def _signature(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """A cheap fingerprint of the words ``data[starts[i]:ends[i]]``: their length and their first, third and last
    letters (clamped into short words), hashed in 32-bit arithmetic to a table index."""
    last = ends - 1
    signature = (ends - starts).astype(np.uint32)
    for at in (starts, np.minimum(starts + 2, last), last):
        signature = signature * np.uint32(0x01000193) ^ data[at]  # FNV-1a's prime; wraps around
    return (signature ^ (signature >> np.uint32(_SIGNATURE_BITS))) & np.uint32((1 << _SIGNATURE_BITS) - 1)


def _signatures(words: frozenset[bytes] | None) -> frozenset[int] | None:
    """The :func:`_signature` of each word (None stays None)."""
    if words is None:
        return None
    data = np.frombuffer(b" ".join(sorted(words)), dtype=np.uint8)
    lengths = np.array([len(w) for w in sorted(words)])
    ends = np.cumsum(lengths + 1) - 1
    return frozenset(_signature(data, ends - lengths, ends).tolist())


def _compile_rule(field_name: str, label: str, spec: str, weight: float) -> tuple[list[str], _Rule]:
    match = _SPEC.fullmatch(spec)
    if match is None:
        raise ValueError(f"cue {spec!r} of {field_name}/{label}: expected PREFIX <trigger|trigger> SUFFIX")
    bang, prefix, triggers, suffix = match.groups()
    prefix = prefix.strip()
    prefix_re = (re.compile(rb"(?<![a-z])(?:" + prefix.replace(" ", " +").encode() + rb") *$")
                 if prefix else None)
    suffix_re = re.compile(suffix.replace(" ", " +").encode() + rb"(?![a-z])") if suffix.strip() else None
    before = _signatures(_edge_words(_parse(prefix), last=True)) if prefix else None
    after = _signatures(_edge_words(_parse(suffix.strip()), last=False)) if suffix.strip() else None
    words = _max_words(_parse(prefix)) if prefix else 0
    return triggers.split("|"), _Rule(field_name, label, weight, prefix_re, suffix_re, bool(bang), before, after,
                                      words)


def _compile_rules() -> dict[bytes, tuple[_Rule, ...]]:
    by_trigger: dict[bytes, list[_Rule]] = {}
    for field_name, table in CUES.items():
        for label, cues in table.items():
            if label not in VOCABULARY[field_name] or label == "unknown":
                raise ValueError(f"cue table {field_name}: label {label!r} is not in the vocabulary")
            for spec, weight in cues:
                triggers, rule = _compile_rule(field_name, label, spec, weight)
                for word in triggers:
                    by_trigger.setdefault(word.encode(), []).append(rule)
    # Vetoes first, then the heaviest cues: the first matching cue of a field decides.
    return {w: tuple(sorted(rules, key=lambda r: (r.weight != 0, -r.weight))) for w, rules in by_trigger.items()}


_RULES = _compile_rules()

# The lookup vocabulary: trigger words and context words. Each lookup word has a trigger id (-1: none) and context
# flags.
_NEG, _SIMILE, _NON_SCENE, _MODAL, _VIEW, _TIME_UNIT, _PRESENT, _PAST, _NOT_PAST = 1, 2, 4, 8, 16, 32, 64, 128, 256
_CONTEXT_SETS = ((_NEG, NEGATORS), (_SIMILE, SIMILE_MARKERS), (_NON_SCENE, NON_SCENE_MARKERS),
                 (_MODAL, NON_SCENE_CLAUSE_MARKERS), (_VIEW, VIEW_MARKERS), (_TIME_UNIT, TIME_UNITS),
                 (_PRESENT, PRESENT_TENSE_WORDS), (_PAST, PAST_TENSE_WORDS), (_NOT_PAST, NOT_PAST_ED))
_CONTEXT_FLAGS = _NEG | _SIMILE | _NON_SCENE | _MODAL | _VIEW | _TIME_UNIT
_LOOKUP: list[bytes] = sorted(set(_RULES) | {w.encode() for _, words in _CONTEXT_SETS for w in words})
_LOOKUP_ID: dict[bytes, int] = {w: i for i, w in enumerate(_LOOKUP)}
_TRIGGER_OF = np.array([i if w in _RULES else -1 for i, w in enumerate(_LOOKUP)], dtype=np.int64)
_RULES_BY_ID: list[tuple[_Rule, ...]] = [_RULES.get(w, ()) for w in _LOOKUP]
_FLAGS_OF = np.array([sum(flag for flag, words in _CONTEXT_SETS if w.decode() in words) for w in _LOOKUP],
                     dtype=np.int64)
_T, _THOUGH, _USED, _EVERY, _EACH = (_LOOKUP_ID[w] for w in (b"t", b"though", b"used", b"every", b"each"))

# Every cue as arrays, the cues of each lookup word contiguous (in _RULES_BY_ID order): numpy pairs each occurrence
# with its trigger's cues and drops the pairs whose quick tests fail before Python reads any regex.
_ALL_RULES: list[_Rule] = [rule for rules in _RULES_BY_ID for rule in rules]
_RULE_COUNT = np.array([len(rules) for rules in _RULES_BY_ID], dtype=np.int64)
_RULE_START = np.concatenate([[0], np.cumsum(_RULE_COUNT)[:-1]]).astype(np.int64)
_FIELD_NO = {name: i for i, name in enumerate(ENV_FIELDS)}
_RULE_FIELD = np.array([_FIELD_NO[r.field] for r in _ALL_RULES], dtype=np.int64)
_RULE_WEIGHT = np.array([r.weight for r in _ALL_RULES])
_RULE_NEGATION_OK = np.array([r.negation_ok or r.weight == 0 for r in _ALL_RULES])
_RULE_VIEW_BLIND = np.array([r.weight > 0 and ((r.field == "location" and r.label != "indoor") or r.field == "weather")
                             for r in _ALL_RULES])
_RULE_BEFORE = np.array([r.before is not None for r in _ALL_RULES])
_RULE_AFTER = np.array([r.after is not None for r in _ALL_RULES])
_RULE_PREFIX_WORDS = np.array([r.prefix_words for r in _ALL_RULES], dtype=np.int64)
_BEFORE_KEYS = np.unique(np.array([(i << _SIGNATURE_BITS) | sig for i, r in enumerate(_ALL_RULES) if r.before
                                   for sig in r.before], dtype=np.int64))
_AFTER_KEYS = np.unique(np.array([(i << _SIGNATURE_BITS) | sig for i, r in enumerate(_ALL_RULES) if r.after
                                  for sig in r.after], dtype=np.int64))
_THRESHOLDS = np.array([THRESHOLD[name] for name in ENV_FIELDS])

# --- reading the texts: bytes, words, sentences, clauses, dialogue (numpy) ------------------------------------
# The texts are joined with " \x01 " and encoded as UTF-8; a byte table lower-cases ASCII letters and turns every
# other byte into a space, except the separator \x01, which marks where each text starts. Word boundaries, a
# signature of every word, sentence and clause boundaries and quotation spans come from numpy over the bytes; only
# the words whose signature a lookup word shares are looked up in Python.
_TOKEN_TABLE = bytes(c + 32 if 65 <= c <= 90 else c if 97 <= c <= 122 else 32 for c in range(256))
_SEPARATED_TABLE = _TOKEN_TABLE[:1] + b"\x01" + _TOKEN_TABLE[2:]
_JOINER = " \x01 "
def _signature_table(words: Sequence[bytes]) -> np.ndarray:
    table = np.zeros(1 << _SIGNATURE_BITS, dtype=bool)
    data = np.frombuffer(b" ".join(words), dtype=np.uint8)
    lengths = np.array([len(w) for w in words])
    ends = np.cumsum(lengths + 1) - 1
    table[_signature(data, ends - lengths, ends)] = True
    return table


_LOOKUP_SIGNATURES = _signature_table(_LOOKUP)
# Exact lookup without Python: a word's first 8 bytes and its next 8 as two 64-bit keys (bytes past the word masked
# out), with its length; every lookup word is at most 16 letters long.
_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=np.uint64)
_KEY_WIDTH = 16
if max(map(len, _LOOKUP)) > _KEY_WIDTH:
    raise ValueError("a lookup word is longer than the exact key")


def _word_keys(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first 8 bytes, next 8 bytes, length) of each word, as integers (the bytes read little-endian)."""
    padded = np.concatenate([data, np.zeros(_KEY_WIDTH, dtype=np.uint8)])
    rows = np.lib.stride_tricks.sliding_window_view(padded, _KEY_WIDTH)[starts]
    lengths = ends - starts
    keys = np.ascontiguousarray(rows).view(np.uint64)
    low = keys[:, 0] & _MASKS[np.minimum(lengths, 8)]
    high = keys[:, 1] & _MASKS[np.clip(lengths - 8, 0, 8)]
    return low, high, lengths


def _key_table(words: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    data = np.frombuffer(b" ".join(words), dtype=np.uint8)
    lengths = np.array([len(w) for w in words])
    ends = np.cumsum(lengths + 1) - 1
    low, high, lengths = _word_keys(data, ends - lengths, ends)
    order = np.lexsort((high, low))
    return low[order], high[order], lengths[order], order


_KEY_LOW, _KEY_HIGH, _KEY_LENGTH, _KEY_ID = _key_table(_LOOKUP)


def _lookup_ids(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The lookup id of each word (-1: not a lookup word)."""
    low, high, lengths = _word_keys(data, starts, ends)
    at = np.minimum(np.searchsorted(_KEY_LOW, low), len(_KEY_LOW) - 1)
    ids = np.full(len(starts), -1, dtype=np.int64)
    for _ in range(3):  # lookup words that share their first 8 letters lie next to each other
        hit = (_KEY_LOW[at] == low) & (_KEY_HIGH[at] == high) & (_KEY_LENGTH[at] == lengths) & (ids < 0)
        ids[hit] = _KEY_ID[at[hit]]
        at = np.minimum(at + 1, len(_KEY_LOW) - 1)
    return ids


def _byte_set(chars: bytes) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[list(chars)] = True
    return table


_IS_LETTER = _byte_set(bytes(range(65, 91)) + bytes(range(97, 123)))
_IS_UPPER = _byte_set(bytes(range(65, 91)))
_AFTER_SENTENCE = _byte_set(b" \n\r\t\"')_\x01\xe2")  # \xe2: a closing curly quote or a dash follows
_BEFORE_OPENING = _byte_set(b" \n\t([\x01\x94\x9c")  # \x94, \x9c: the last bytes of a dash and of an opening quote
_AFTER_CLOSING = _byte_set(b".,!?;:-\x94")
_SKIP_BEFORE_WORD = _byte_set(b" \t\"'([_-\x80\x98\x9c\x94\xe2")  # spaces, opening quotes, brackets, dashes
_SENTENCE_START_BEFORE = _byte_set(b".!?:;\n\x01")
# Byte classes, found in one pass: sentence ends, paragraph breaks (newline, separator), clause marks, quotes.
_STOP, _BREAK, _CLAUSE, _DQUOTE, _SQUOTE, _E2, _CAPITAL = 1, 2, 4, 8, 16, 32, 64
_CLASS = np.zeros(256, dtype=np.uint8)
for _chars, _cls in ((b".!?", _STOP), (b"\n\x01", _BREAK), (b",;:()[]", _CLAUSE), (b'"', _DQUOTE | _CLAUSE),
                     (b"'", _SQUOTE), (b"\xe2", _E2 | _CLAUSE), (bytes(range(65, 91)), _CAPITAL)):
    _CLASS[list(_chars)] = _cls
_CLASS_TABLE = _CLASS.tobytes()
_LETTER_TABLE = bytes(1 if 97 <= c <= 122 else 0 for c in range(256))


@dataclass
class _Reading:
    """The joined texts as bytes and the lookup words found in them, with the context of each."""

    raw: bytes
    buffer: bytes
    starts: np.ndarray  # of the lookup words found, in reading order
    ends: np.ndarray
    text: np.ndarray  # text number of each
    lookup: np.ndarray  # lookup id of each
    keep: np.ndarray  # a trigger that may be evidence (not a name, compound part, dialogue, non-scene, comparison)
    negated: np.ndarray
    view: np.ndarray
    compound_head: np.ndarray
    headings: np.ndarray  # per text: mostly capitalised words (a heading, a table of contents)
    scene: np.ndarray  # per text: its narration is mostly in the past tense (a narrated scene)
    before: np.ndarray  # signature of the word before each lookup word found
    after: np.ndarray  # signature of the word after it
    separators: np.ndarray  # where the texts are joined
    word: np.ndarray  # word number of each lookup word found
    all_starts: np.ndarray  # of every word


def _paragraph_pairs(opens: np.ndarray, closes: np.ndarray, breaks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spans from each opening mark to the next closing mark after it in the same paragraph."""
    if not len(opens) or not len(closes):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    nxt = np.searchsorted(closes, opens)
    ok = nxt < len(closes)
    opens, ends = opens[ok], closes[nxt[ok]]
    same = np.searchsorted(breaks, opens) == np.searchsorted(breaks, ends)
    return opens[same], ends[same]


def _dialogue_spans(r: np.ndarray, marks: np.ndarray, cls: np.ndarray, breaks: np.ndarray):
    """Quotation spans that close within their paragraph: curly double, straight double and single quotes. A
    quotation left open at the end of its paragraph is a narrated story and is not dialogue."""
    n = len(r)
    e2 = marks[(cls & _E2) != 0]
    e2 = e2[(e2 + 2 < n) & (r[np.minimum(e2 + 1, n - 1)] == 0x80)]
    kind = r[e2 + 2]
    spans = [_paragraph_pairs(e2[kind == 0x9C], e2[kind == 0x9D], breaks)]
    straight = marks[(cls & _DQUOTE) != 0]
    if len(straight):
        para = np.searchsorted(breaks, straight)
        first = np.r_[True, para[1:] != para[:-1]]
        group_start = np.maximum.accumulate(np.where(first, np.arange(len(straight)), 0))
        rank = np.arange(len(straight)) - group_start
        spans.append(_paragraph_pairs(straight[rank % 2 == 0], straight[rank % 2 == 1], breaks))
    apostrophes = marks[(cls & _SQUOTE) != 0]
    singles = np.r_[e2[(kind == 0x98) | (kind == 0x99)], apostrophes]
    singles = singles[singles + 3 < n]
    if len(singles):
        after = np.where(r[singles] == 0x27, singles + 1, singles + 3)
        opening = (r[singles] == 0x27) | (r[np.minimum(singles + 2, n - 1)] == 0x98)
        closing = (r[singles] == 0x27) | (r[np.minimum(singles + 2, n - 1)] == 0x99)
        before = np.where(singles > 0, r[np.maximum(singles - 1, 0)], 10)  # the buffer's start opens a line
        opens = singles[opening & _BEFORE_OPENING[before] & _IS_LETTER[r[after]]]
        closes = singles[closing & _AFTER_CLOSING[before] & ~_IS_LETTER[r[after]]]
        spans.append(_paragraph_pairs(np.sort(opens), np.sort(closes), breaks))
    starts = np.concatenate([a for a, _ in spans])
    ends = np.concatenate([b for _, b in spans])
    order = np.argsort(starts, kind="stable")
    return starts[order], ends[order]


def _read(texts: Sequence[str]) -> _Reading:
    n = len(texts)
    raw = _JOINER.join(texts).encode("utf-8", "replace")
    if raw.count(b"\x01") != n - 1:  # a text holds the separator itself: read it as a space
        raw = _JOINER.join(t.replace("\x01", " ") for t in texts).encode("utf-8", "replace")
    buffer = raw.translate(_SEPARATED_TABLE)
    r = np.frombuffer(raw, dtype=np.uint8)
    data = np.frombuffer(buffer, dtype=np.uint8)
    size = len(r)
    letter = np.frombuffer(b"\0" + buffer.translate(_LETTER_TABLE) + b"\0", dtype=np.int8)
    edges = np.diff(letter)
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)

    # Marks: every byte of a class, in one pass; sentence ends are stops followed by a space, quote or dash.
    classes = np.frombuffer(raw.translate(_CLASS_TABLE), dtype=np.uint8)
    marks = np.flatnonzero(classes)
    cls = classes[marks]
    breaks = marks[(cls & _BREAK) != 0]
    separators = breaks[r[breaks] == 1]
    stops = marks[(cls & _STOP) != 0]
    stops = stops[_AFTER_SENTENCE[r[np.minimum(stops + 1, size - 1)]]]
    sentence_bounds = np.sort(np.r_[stops, breaks])
    clause_bounds = marks[(cls & (_STOP | _BREAK | _CLAUSE)) != 0]

    # Headings: the share of capital letters per text.
    capitals = np.bincount(np.searchsorted(separators, marks[(cls & _CAPITAL) != 0]), minlength=n)
    headings = (capitals > MAX_CAPITAL_SHARE * np.diff(np.r_[0, separators, size])) & (capitals > 5)

    # Lookup words: the few whose signature a lookup word shares are looked up in Python.
    index = np.flatnonzero(_LOOKUP_SIGNATURES[_signature(data, starts, ends)])
    ids = _lookup_ids(data, starts[index], ends[index])
    found = ids >= 0
    index, ids = index[found], ids[found]
    w_start, w_end = starts[index], ends[index]
    m = len(ids)
    flags = _FLAGS_OF[ids]
    # "t" negates only after n ("didn't"); "though" compares only after "as"; "used" marks habit only before "to".
    before2 = data[np.maximum(w_start - 2, 0)]
    flags[(ids == _T) & (before2 != 110)] = 0
    flags[(ids == _THOUGH) & ~((data[np.maximum(w_start - 3, 0)] == 97) & (before2 == 115))] = 0
    used = np.flatnonzero(ids == _USED)
    if len(used):
        at = w_end[used]
        to = (data[np.minimum(at + 1, size - 1)] == 116) & (data[np.minimum(at + 2, size - 1)] == 111) & (
            data[np.minimum(at + 3, size - 1)] < 97)
        flags[used[~to]] &= ~_MODAL
    # "every"/"each" mark habit only before a time word within two words.
    every = np.flatnonzero((ids == _EVERY) | (ids == _EACH))
    if len(every):
        unit = (flags & _TIME_UNIT) != 0
        near = np.zeros(len(every), dtype=bool)
        for ahead in (1, 2):
            j = np.minimum(every + ahead, m - 1)
            near |= unit[j] & (index[j] - index[every] >= 1) & (index[j] - index[every] <= 2)
        flags[every[~near]] &= ~_MODAL

    # Dialogue: quotation spans that close within their paragraph.
    d_start, d_end = _dialogue_spans(r, marks, cls, breaks)

    def narrated(positions: np.ndarray) -> np.ndarray:
        if not len(d_start):
            return np.ones(len(positions), dtype=bool)
        last = np.searchsorted(d_start, positions) - 1
        return ~((last >= 0) & (d_end[np.maximum(last, 0)] > positions))

    # Tense of the narration: a sentence with a present-tense verb outside dialogue is not the scene; a text whose
    # narration has PRESENT_SHARE or more of its tensed verbs in the present has no scene at all.
    sentence = np.searchsorted(sentence_bounds, w_start)
    present = ((flags & _PRESENT) != 0) & narrated(w_start)
    present_sentence = np.zeros(len(sentence_bounds) + 1, dtype=bool)
    present_sentence[sentence[present]] = True
    ed = (ends - starts > 3) & (data[np.maximum(ends - 1, 0)] == 100) & (data[np.maximum(ends - 2, 0)] == 101)
    ed[index[(flags & _NOT_PAST) != 0]] = False
    ed[index[(flags & _PAST) != 0]] = True
    past_at = starts[ed]
    past_at = past_at[narrated(past_at)]
    past_count = np.bincount(np.searchsorted(separators, past_at), minlength=n)
    present_count = np.bincount(np.searchsorted(separators, w_start[present]), minlength=n)
    scene = (present_count == 0) | (present_count < PRESENT_SHARE * (present_count + past_count))
    # From here on only the triggers and the context words matter (not the words read for the tense alone).
    relevant = np.flatnonzero((_TRIGGER_OF[ids] >= 0) | ((flags & _CONTEXT_FLAGS) != 0))
    index, ids, flags, w_start, w_end, sentence = (a[relevant] for a in (index, ids, flags, w_start, w_end, sentence))
    m = len(ids)

    # Clauses of each lookup word; which sentences and clauses hold markers.
    clause = np.searchsorted(clause_bounds, w_start)
    non_scene = np.zeros(len(sentence_bounds) + 1, dtype=bool)
    non_scene[sentence[(flags & _NON_SCENE) != 0]] = True
    modal = np.zeros(len(clause_bounds) + 1, dtype=bool)
    modal[clause[(flags & _MODAL) != 0]] = True
    view = np.zeros(len(clause_bounds) + 1, dtype=bool)
    view[clause[(flags & _VIEW) != 0]] = True

    keep = _TRIGGER_OF[ids] >= 0
    keep &= ~non_scene[sentence] & ~modal[clause] & ~present_sentence[sentence]
    # Names and headings: capitalised inside a sentence, or in capitals.
    upper = _IS_UPPER[r[w_start]]
    heading_word = upper & ((w_end - w_start) > 1) & _IS_UPPER[r[np.minimum(w_start + 1, size - 1)]]
    k = w_start - 1
    for _ in range(4):
        k = np.where((k > 0) & _SKIP_BEFORE_WORD[r[np.maximum(k, 0)]], k - 1, k)
    previous = r[np.maximum(k, 0)]
    name = upper & ~(_SENTENCE_START_BEFORE[previous] | (k <= 0))
    for i in np.flatnonzero(upper & (previous == 46) & keep).tolist():  # "Mr. Frost": a title before the stop
        j = int(k[i])
        word_start = j
        while word_start > 0 and _IS_LETTER[r[word_start - 1]]:
            word_start -= 1
        if buffer[word_start:j].decode("ascii") in TITLE_ABBREVIATIONS:
            name[i] = True
    keep &= ~(name | heading_word)
    # Compounds: the first part of a hyphenated compound is never evidence; a last part is marked for the rules.
    keep &= ~((r[np.minimum(w_end, size - 1)] == 45) & _IS_LETTER[r[np.minimum(w_end + 1, size - 1)]])
    compound_head = (r[np.maximum(w_start - 1, 0)] == 45) & _IS_LETTER[r[np.maximum(w_start - 2, 0)]]
    keep &= narrated(w_start)
    # Comparison: a marker earlier in the same clause ("like a ship in a gale").
    simile = np.flatnonzero((flags & _SIMILE) != 0)
    if len(simile):
        first_simile = np.full(len(clause_bounds) + 1, size + 1, dtype=np.int64)
        np.minimum.at(first_simile, clause[simile], w_start[simile])
        keep &= ~(first_simile[clause] < w_start)
    # Negation: a negator among the four words before, in the same clause.
    negated = np.zeros(m, dtype=bool)
    positions = np.arange(m)
    for back in range(1, 5):
        j = np.maximum(positions - back, 0)
        negated |= (clause[j] == clause) & (index - index[j] <= 4) & (positions >= back) & ((flags[j] & _NEG) != 0)
    text = np.searchsorted(separators, w_start)
    previous, following = np.maximum(index - 1, 0), np.minimum(index + 1, len(starts) - 1)
    return _Reading(raw, buffer, w_start, w_end, text, ids, keep, negated, view[clause], compound_head, headings, scene,
                    _signature(data, starts[previous], ends[previous]).astype(np.int64),
                    _signature(data, starts[following], ends[following]).astype(np.int64), separators, index, starts)


def _cue_text(buffer: bytes, start: int, end: int) -> str:
    return b" ".join(buffer[start:end].split()).decode("ascii")


def _foreign_head(raw: bytes, p: int, field_name: str) -> bool:
    """The last part of a hyphenated compound that names another thing for this field ("sea-room",
    "rain-water"); "drawing-room" is still a room and "to-night" still night."""
    if field_name in COMPOUND_HEAD_FIELDS:
        return False
    k = p - 1
    while k > 0 and _IS_LETTER[raw[k - 1]]:
        k -= 1
    return raw[k:p - 1].decode("ascii", "replace").lower() not in COMPOUND_HEAD_PREFIXES


def _member(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``values`` in the sorted ``table``."""
    at = np.minimum(np.searchsorted(table, values), len(table) - 1)
    return table[at] == values


_LABELS: list[tuple[str, str]] = [(name, label) for name in ENV_FIELDS for label in VOCABULARY[name]]
_LABEL_NO = {pair: i for i, pair in enumerate(_LABELS)}
_RULE_LABEL = np.array([_LABEL_NO[(r.field, r.label)] for r in _ALL_RULES], dtype=np.int64)
_RULE_CONTEXT = np.array([r.prefix is not None or r.suffix is not None for r in _ALL_RULES])
_FIELD_LABELS = {name: (_LABEL_NO[(name, VOCABULARY[name][0])], len(VOCABULARY[name])) for name in ENV_FIELDS}
_LABEL_FIELD = np.array([ENV_FIELDS.index(name) for name, _ in _LABELS])
_WEATHER_ORDER = np.array([VOCABULARY["weather"].index(label) for label in WEATHER_PRIORITY])


@dataclass
class _Evidence:
    """The cues that count, as arrays (one entry per counted occurrence of a cue), and the cue weight of every text
    and label."""

    text: np.ndarray
    label: np.ndarray  # global label number (_LABELS)
    weight: np.ndarray
    start: np.ndarray  # the cue's span in the buffer
    end: np.ndarray
    scores: np.ndarray  # texts x labels
    buffer: bytes


def _evidence(texts: Sequence[str], floor: np.ndarray | None = None) -> _Evidence | None:
    """Read the texts and weigh their cues; None when no text has a cue that counts. A text whose cue weights reach
    no field's ``floor`` (default: the fields' thresholds) is dropped early."""
    n = len(texts)
    if not n:
        return None
    floor = _THRESHOLDS if floor is None else floor
    reading = _read(texts)
    hits = np.flatnonzero(reading.keep & ~reading.headings[reading.text] & reading.scene[reading.text])
    # Pair each occurrence with its trigger's cues; drop the pairs that cannot count (the word before or after is
    # not one the cue allows, a negated or viewed occurrence), then the texts whose remaining cue weights cannot
    # reach any field's threshold.
    lookup = reading.lookup[hits]
    counts = _RULE_COUNT[lookup]
    occurrence = np.repeat(np.arange(len(hits)), counts)
    rule = np.repeat(_RULE_START[lookup], counts) + np.arange(len(occurrence)) - np.repeat(np.cumsum(counts) - counts,
                                                                                          counts)
    hit = hits[occurrence]
    ok = ~reading.negated[hit] | _RULE_NEGATION_OK[rule]
    ok &= ~(reading.view[hit] & _RULE_VIEW_BLIND[rule])
    before = _RULE_BEFORE[rule]
    ok[before] &= _member((rule[before] << _SIGNATURE_BITS) | reading.before[hit[before]], _BEFORE_KEYS)
    after = _RULE_AFTER[rule]
    ok[after] &= _member((rule[after] << _SIGNATURE_BITS) | reading.after[hit[after]], _AFTER_KEYS)
    occurrence, rule, hit = occurrence[ok], rule[ok], hit[ok]
    text = reading.text[hit]
    fields = len(ENV_FIELDS)
    bound = np.bincount(text * fields + _RULE_FIELD[rule], weights=_RULE_WEIGHT[rule], minlength=n * fields)
    keep = (bound.reshape(n, fields) >= floor).any(axis=1)[text]
    if not keep.any():
        return None
    occurrence, rule, hit, text = occurrence[keep], rule[keep], hit[keep], text[keep]

    # The cues with a context (a prefix or suffix regex), and compound heads, are read in Python; the others match.
    buffer, raw = reading.buffer, reading.raw
    start, end = reading.starts[hit], reading.ends[hit]
    weight = _RULE_WEIGHT[rule]
    matched = np.ones(len(rule), dtype=bool)
    head = reading.compound_head[hit]
    need = np.flatnonzero(_RULE_CONTEXT[rule] | head)
    if len(need):
        first_word = np.searchsorted(reading.all_starts, np.r_[0, reading.separators][text[need]])
        window = reading.all_starts[np.maximum(reading.word[hit[need]] - _RULE_PREFIX_WORDS[rule[need]], first_word)]
        text_end = np.r_[reading.separators, len(buffer)][text[need]]
        for i, number, p, q, lo, hi, compound in zip(need.tolist(), rule[need].tolist(), start[need].tolist(),
                                                     end[need].tolist(), window.tolist(), text_end.tolist(),
                                                     head[need].tolist()):
            cue = _ALL_RULES[number]
            if cue.prefix is not None:
                match = cue.prefix.search(buffer, lo, p)
                if match is None:
                    matched[i] = False
                    continue
                start[i] = match.start()
            if cue.suffix is not None:
                match = cue.suffix.match(buffer, q, min(hi, q + _WINDOW))
                if match is None:
                    matched[i] = False
                    continue
                end[i] = match.end()
            if compound and _foreign_head(raw, p, cue.field):
                weight[i] = 0.0  # a compound naming another thing: no evidence for the field, like a veto
    # Per occurrence and field the first matching cue decides (vetoes come first, then the heaviest).
    index = np.flatnonzero(matched)
    _, first = np.unique(occurrence[index] * fields + _RULE_FIELD[rule[index]], return_index=True)
    index = index[first]
    index = index[weight[index] > 0]
    text, label, weight = text[index], _RULE_LABEL[rule[index]], weight[index]
    # A word counted again for the same label of the same text counts REPEAT_WEIGHT.
    word = reading.lookup[hit[index]]
    group = (text * len(_LABELS) + label) * len(_LOOKUP) + word
    order = np.lexsort((index, group))
    repeated = np.zeros(len(index), dtype=bool)
    repeated[order[1:]] = group[order[1:]] == group[order[:-1]]
    weight = np.where(repeated, weight * REPEAT_WEIGHT, weight)
    scores = np.bincount(text * len(_LABELS) + label, weights=weight, minlength=n * len(_LABELS)).reshape(n, -1)
    return _Evidence(text, label, weight, start[index], end[index], scores, buffer)


def decide_field(name: str, segment: np.ndarray, threshold: float, dominance: float) -> tuple[np.ndarray, np.ndarray]:
    """Field ``name``'s decision on its label weights ``segment`` (texts x the field's labels): the chosen label's
    number within the field (-1: unknown) and its weight, for every text."""
    count = segment.shape[1]
    rows = np.arange(len(segment))
    if name == "weather":  # the guide's order when several kinds hold at once
        over = segment[:, _WEATHER_ORDER] >= threshold
        best = _WEATHER_ORDER[over.argmax(axis=1)]
        second = np.where(segment < threshold, segment, 0.0).max(axis=1)
    else:
        best = segment.argmax(axis=1)
        second = np.partition(segment, count - 2, axis=1)[:, count - 2]
    best_score = segment[rows, best]
    known = (best_score >= threshold) & ((second <= 0) | (best_score >= dominance * np.maximum(second, 1e-9)))
    return np.where(known, best, -1), best_score


def field_scores(scores: np.ndarray, name: str) -> np.ndarray:
    """The columns of field ``name`` in an evidence score matrix (texts x all labels)."""
    first, count = _FIELD_LABELS[name]
    return scores[:, first:first + count]


def _decide(scores: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per field, the chosen label's number within the field (-1: unknown) and its confidence, for every text."""
    chosen: dict[str, np.ndarray] = {}
    confidence: dict[str, np.ndarray] = {}
    for name in ENV_FIELDS:
        chosen[name], best_score = decide_field(name, field_scores(scores, name), THRESHOLD[name], DOMINANCE[name])
        confidence[name] = field_confidence(name, best_score)
    return chosen, confidence


def evidence_scores(texts: Sequence[str]) -> np.ndarray:
    """The summed cue weight of every text and label (texts x all labels, ``field_scores`` selects a field's), before
    any threshold: what :func:`decide_field` decides on (for fitting the decision)."""
    evidence = _evidence(texts, floor=np.zeros(len(ENV_FIELDS)))
    return np.zeros((len(texts), len(_LABELS))) if evidence is None else evidence.scores


def analyze_columns(texts: Sequence[str]) -> dict[str, list]:
    """The rule analysis of each text, as columns: one list per ENV_FIELD, ``confidence``, ``cues`` (field ->
    sorted cue texts behind the chosen label) and ``field_confidence`` (field -> confidence, known fields only)."""
    n = len(texts)
    columns: dict[str, list] = {name: ["unknown"] * n for name in ENV_FIELDS}
    columns["confidence"] = [0.0] * n
    columns["cues"] = [{} for _ in range(n)]
    columns["field_confidence"] = [{} for _ in range(n)]
    evidence = _evidence(texts)
    if evidence is None:
        return columns
    chosen, confidence = _decide(evidence.scores)
    chosen_label = np.full((n, len(ENV_FIELDS)), -1, dtype=np.int64)
    for f, name in enumerate(ENV_FIELDS):
        known = chosen[name] >= 0
        chosen_label[:, f] = np.where(known, _FIELD_LABELS[name][0] + chosen[name], -1)
        vocabulary = VOCABULARY[name]
        column, confidences = columns[name], columns["field_confidence"]
        for c, label, value in zip(np.flatnonzero(known).tolist(), chosen[name][known].tolist(),
                                   confidence[name][known].tolist()):
            column[c] = vocabulary[label]
            confidences[c][name] = value
    for c in np.flatnonzero((chosen_label >= 0).any(axis=1)).tolist():
        columns["confidence"][c] = passage_confidence(columns["field_confidence"][c])
    # Cue texts: the spans behind each chosen label.
    label_field = _LABEL_FIELD[evidence.label]
    behind = chosen_label[evidence.text, label_field] == evidence.label
    buffer = evidence.buffer
    for c, g, a, b in sorted(zip(evidence.text[behind].tolist(), evidence.label[behind].tolist(),
                                 evidence.start[behind].tolist(), evidence.end[behind].tolist())):
        cues = columns["cues"][c].setdefault(_LABELS[g][0], [])
        cue = _cue_text(buffer, a, b)
        if cue not in cues:
            cues.append(cue)
    for cues in columns["cues"]:
        for name in cues:
            cues[name].sort()
    return columns


def rule_scores(text: str) -> dict[str, dict[str, tuple[float, list[str]]]]:
    """Why the analyzer labels ``text`` as it does: per field and label, the summed cue weight and the cues that
    counted (before the threshold and dominance tests of :func:`analyze_columns`)."""
    evidence = _evidence([text])
    if evidence is None:
        return {}
    found: dict[str, dict[str, tuple[float, list[str]]]] = {}
    for g, a, b in zip(evidence.label.tolist(), evidence.start.tolist(), evidence.end.tolist()):
        name, label = _LABELS[g]
        score, cues = found.setdefault(name, {}).get(label, (round(float(evidence.scores[0, g]), 3), []))
        cue = _cue_text(evidence.buffer, a, b)
        found[name][label] = (score, sorted(set(cues) | {cue}))
    return found


def features_at(columns: Mapping[str, Sequence], i: int) -> EnvironmentFeatures:
    """Text ``i`` of :func:`analyze_columns`' output as :class:`EnvironmentFeatures`."""
    return EnvironmentFeatures(**{name: columns[name][i] for name in ENV_FIELDS},
                               confidence=columns["confidence"][i], cues=columns["cues"][i], source="rules",
                               field_confidence=columns["field_confidence"][i])


def analyze_many(texts: Sequence[str]) -> list[EnvironmentFeatures]:
    """:func:`analyze_rules` of each text."""
    columns = analyze_columns(texts)
    return [features_at(columns, i) for i in range(len(texts))]


def analyze_rules(text: str) -> EnvironmentFeatures:
    """The rule analysis of one text (see the module docstring)."""
    return features_at(analyze_columns([text]), 0)
