"""Rule-based environment analysis of a text chunk (the fallback behind the LLM analyzer).

A chunk is tokenised once into lower-case ASCII words (anything that is not a letter separates
words, so "tea-time" is "tea" + "time" and "night's" is "night" + "s"). Each word is looked up in a
lexicon built from the keyword tables below, expanded with simple inflections; a few multi-word
phrases ("first light", "sea breeze") are found with small regexes and their words are not also
counted on their own. Matching is therefore by whole word only: "afternoon" never matches "noon",
"street" never matches "tree", "train" never matches "rain".

Decision per field: count the hits (occurrences) of each label; the label with the most hits wins,
ties go to the label that comes first in the field's vocabulary, and a field with no hit is
"unknown". So "rain ... storm" is ``rain`` (rain comes first), "rain ... storm ... thunder" is
``storm``. Negation ("there was no rain") is out of scope and counts as a hit; the only exception is
the phrase "no wind", which is a cue for calm air.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field

import numpy as np

TEMPERATURE_HINTS: tuple[str, ...] = ("cold", "cool", "mild", "warm", "hot", "unknown")
HUMIDITY_HINTS: tuple[str, ...] = ("dry", "moderate", "humid", "unknown")
WEATHERS: tuple[str, ...] = ("clear", "cloudy", "rain", "snow", "fog", "windy", "storm", "unknown")
TIMES_OF_DAY: tuple[str, ...] = ("dawn", "morning", "noon", "afternoon", "evening", "night", "unknown")
LOCATIONS: tuple[str, ...] = (
    "city_walking",
    "forest_exploration",
    "beach_walking",
    "mountain_climbing",
    "park_stroll",
    "riverside_walking",
    "field_crossing",
    "sea_voyage",
    "indoor",
    "unknown",
)
MOVEMENTS: tuple[str, ...] = ("still", "walking", "active", "unknown")
WIND_LEVELS: tuple[str, ...] = ("calm", "breeze", "strong", "unknown")

ENV_FIELDS: tuple[str, ...] = (
    "temperature_hint",
    "humidity_hint",
    "weather",
    "time_of_day",
    "location",
    "movement",
    "wind",
)
VOCABULARY: dict[str, tuple[str, ...]] = {
    "temperature_hint": TEMPERATURE_HINTS,
    "humidity_hint": HUMIDITY_HINTS,
    "weather": WEATHERS,
    "time_of_day": TIMES_OF_DAY,
    "location": LOCATIONS,
    "movement": MOVEMENTS,
    "wind": WIND_LEVELS,
}

# Keyword tables: label -> words. A plain word also matches its inflections (see
# ``inflections``); a word written "=word" matches only itself; an entry with a space is a phrase
# (its words may be separated by any run of non-letters, e.g. "tea-time" matches "tea time").
TEMPERATURE_KEYWORDS: dict[str, tuple[str, ...]] = {
    "cold": ("cold", "freeze", "=froze", "=frozen", "frost", "ice", "icicle", "chill", "frigid",
             "winter", "=wintry", "shiver"),
    "cool": ("cool", "brisk", "nippy", "crisp"),
    "mild": ("mild", "temperate", "clement", "tepid", "lukewarm"),
    "warm": ("warm", "warmth", "balmy", "summer"),
    "hot": ("hot", "heat", "sultry", "swelter", "scorch", "torrid", "tropical", "sweat", "perspire"),
}
HUMIDITY_KEYWORDS: dict[str, tuple[str, ...]] = {
    "dry": ("dry", "arid", "parch", "=dusty", "drought"),
    # "moderate" humidity has no cue in prose; only the LLM analyzer can report it.
    "moderate": (),
    "humid": ("humid", "humidity", "moist", "moisture", "damp", "dank", "muggy", "clammy", "=steamy",
              "sodden", "soggy", "dew", "wet", "drench", "soak"),
}
WEATHER_KEYWORDS: dict[str, tuple[str, ...]] = {
    "clear": ("sun", "sunshine", "sunlight", "sunlit", "sunbeam", "cloudless", "clear sky", "blue sky"),
    "cloudy": ("cloud", "overcast", "grey sky", "gray sky"),
    "rain": ("rain", "drizzle", "downpour", "raindrop", "rainfall", "rainwater", "shower", "umbrella"),
    "snow": ("snow", "snowflake", "snowfall", "snowdrift", "blizzard", "sleet"),
    "fog": ("fog", "mist", "haze", "murk"),
    "windy": ("wind", "gale", "gust", "blustery", "windswept", "strong wind", "high wind"),
    "storm": ("storm", "thunder", "lightning", "tempest", "hurricane", "squall", "typhoon", "cyclone",
              "thunderstorm"),
}
TIME_KEYWORDS: dict[str, tuple[str, ...]] = {
    "dawn": ("dawn", "daybreak", "sunrise", "cockcrow", "first light", "break of day"),
    "morning": ("morning", "=morn", "forenoon", "breakfast"),
    "noon": ("noon", "midday", "noonday", "noontide", "lunch", "luncheon"),
    "afternoon": ("afternoon", "teatime", "tea time"),
    "evening": ("evening", "dusk", "twilight", "sunset", "sundown", "nightfall", "supper", "gloaming"),
    "night": ("night", "=nightly", "midnight", "nighttime", "moon", "moonlight", "moonlit", "starlight",
              "starlit", "=starry"),
}
LOCATION_KEYWORDS: dict[str, tuple[str, ...]] = {
    "city_walking": ("street", "avenue", "boulevard", "city", "town", "pavement", "sidewalk", "alley",
                     "market", "shop", "traffic", "omnibus", "tram", "plaza", "piazza", "lamppost"),
    "forest_exploration": ("forest", "=woods", "woodland", "tree", "grove", "pine", "thicket",
                           "undergrowth", "jungle", "copse", "glade"),
    "beach_walking": ("beach", "shore", "sand", "coast", "surf", "dune", "seaside", "seashore", "pebble",
                      "seaweed"),
    "mountain_climbing": ("mountain", "hill", "hillside", "climb", "peak", "summit", "slope", "ridge",
                          "crag", "cliff", "glacier", "ascent", "ascend", "precipice", "boulder", "canyon"),
    "park_stroll": ("park", "garden", "lawn", "hedge", "shrubbery", "flowerbed", "pond"),
    "riverside_walking": ("river", "riverside", "riverbank", "stream", "creek", "brook", "canal",
                          "rivulet", "towpath", "weir"),
    "field_crossing": ("field", "meadow", "pasture", "heath", "moor", "moorland", "prairie", "farmland",
                       "cornfield", "hayfield", "furrow"),
    "sea_voyage": ("sea", "ocean", "ship", "deck", "sail", "voyage", "cabin", "mast", "boat", "vessel",
                   "steamer", "helm", "hull", "anchor", "crew", "rigging", "keel", "tiller", "starboard",
                   "schooner", "yacht", "sloop", "aboard"),
    "indoor": ("room", "indoors", "parlour", "parlor", "kitchen", "hall", "hallway", "library", "chamber",
               "staircase", "stair", "corridor", "bedroom", "ceiling", "fireplace", "hearth", "mantelpiece",
               "sofa", "armchair", "chair", "carpet", "curtain", "wallpaper", "cellar", "attic", "upstairs",
               "downstairs"),
}
MOVEMENT_KEYWORDS: dict[str, tuple[str, ...]] = {
    # "still" and "rest" are left out on purpose: "still" is mostly the adverb and "rest" mostly
    # "the rest of"; their unambiguous forms are listed instead.
    "still": ("sit", "=sat", "seated", "stand", "=stood", "motionless", "stationary", "=rested",
              "=resting", "pause", "linger", "wait", "idle", "recline", "lounge"),
    "walking": ("walk", "stroll", "step", "stride", "=strode", "wander", "saunter", "amble", "tramp",
                "hike", "trudge", "footstep", "ramble", "trek", "pace"),
    "active": ("run", "=ran", "sprint", "rush", "dash", "=raced", "=racing", "gallop", "leap", "=leapt",
               "jump", "scramble", "clamber", "climb", "hurry", "swim", "=swam", "paddle", "chase"),
}
WIND_KEYWORDS: dict[str, tuple[str, ...]] = {
    "calm": ("=calm", "windless", "becalmed", "still air", "dead calm", "no wind"),
    "breeze": ("breeze", "zephyr", "wind", "light wind", "gentle wind", "soft wind", "sea breeze"),
    "strong": ("gale", "gust", "storm", "hurricane", "tempest", "squall", "typhoon", "cyclone", "whirlwind",
               "windstorm", "blustery", "strong wind", "high wind"),
}
KEYWORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "temperature_hint": TEMPERATURE_KEYWORDS,
    "humidity_hint": HUMIDITY_KEYWORDS,
    "weather": WEATHER_KEYWORDS,
    "time_of_day": TIME_KEYWORDS,
    "location": LOCATION_KEYWORDS,
    "movement": MOVEMENT_KEYWORDS,
    "wind": WIND_KEYWORDS,
}

# Generated inflections that are different words in practice ("mast" -> "master", "wind" ->
# "winding", "park" -> "parking"); they are never matched unless listed as keywords themselves.
EXCLUDED_INFLECTIONS: frozenset[str] = frozenset({
    "master", "masters", "winding", "winded", "winder", "winders", "parked", "parking", "parker",
    "parkers", "waiter", "waiters", "mister", "misters", "steamer", "steamers", "streamer",
    "streamers", "dashing", "pined", "pining", "shored", "shoring", "peaked", "peaky", "hedged",
    "hedging", "brooked", "moored", "mooring", "furrowed", "decked", "dusky", "icing", "sander",
    "sanders", "ponder", "ponders", "keeled", "keeling", "jumper", "jumpers", "idly",
})

# Synonyms accepted by ``validate_labels`` (after lower-casing, with spaces/hyphens as "_").
LABEL_SYNONYMS: dict[str, dict[str, str]] = {
    "temperature_hint": {
        "freezing": "cold", "icy": "cold", "frosty": "cold", "chilly": "cool", "crisp": "cool",
        "temperate": "mild", "pleasant": "mild", "balmy": "warm", "scorching": "hot", "sweltering": "hot",
    },
    "humidity_hint": {
        "arid": "dry", "normal": "moderate", "medium": "moderate", "damp": "humid", "moist": "humid",
        "muggy": "humid", "wet": "humid",
    },
    "weather": {
        "sunny": "clear", "fair": "clear", "bright": "clear", "cloudless": "clear", "overcast": "cloudy",
        "partly_cloudy": "cloudy", "clouds": "cloudy", "rainy": "rain", "raining": "rain",
        "drizzle": "rain", "showers": "rain", "shower": "rain", "snowy": "snow", "snowing": "snow",
        "blizzard": "snow", "sleet": "snow", "foggy": "fog", "misty": "fog", "mist": "fog",
        "hazy": "fog", "haze": "fog", "wind": "windy", "breezy": "windy", "gusty": "windy",
        "stormy": "storm", "thunderstorm": "storm", "thunder": "storm",
    },
    "time_of_day": {
        "daybreak": "dawn", "sunrise": "dawn", "early_morning": "morning", "forenoon": "morning",
        "midday": "noon", "lunchtime": "noon", "late_afternoon": "afternoon", "dusk": "evening",
        "twilight": "evening", "sunset": "evening", "midnight": "night", "nighttime": "night",
        "late_night": "night",
    },
    "location": {
        "indoors": "indoor", "inside": "indoor", "city": "city_walking", "street": "city_walking",
        "town": "city_walking", "forest": "forest_exploration", "woods": "forest_exploration",
        "beach": "beach_walking", "shore": "beach_walking", "coast": "beach_walking",
        "mountain": "mountain_climbing", "mountains": "mountain_climbing", "park": "park_stroll",
        "garden": "park_stroll", "river": "riverside_walking", "riverside": "riverside_walking",
        "field": "field_crossing", "meadow": "field_crossing", "sea": "sea_voyage",
        "at_sea": "sea_voyage", "ship": "sea_voyage", "boat": "sea_voyage",
    },
    "movement": {
        "stationary": "still", "sitting": "still", "standing": "still", "resting": "still",
        "walk": "walking", "strolling": "walking", "hiking": "walking", "running": "active",
        "run": "active", "jogging": "active", "climbing": "active", "swimming": "active",
    },
    "wind": {
        "none": "calm", "still": "calm", "windless": "calm", "light": "breeze", "gentle": "breeze",
        "breezy": "breeze", "moderate": "breeze", "windy": "strong", "gusty": "strong", "gale": "strong",
        "high": "strong", "stormy": "strong",
    },
}

# Confidence: CONFIDENCE_PER_FIELD for each field found, plus CONFIDENCE_PER_EXTRA_HIT for each
# supporting hit beyond the first of a found field (at most CONFIDENCE_MAX_EXTRA_HITS), capped at 1.
CONFIDENCE_PER_FIELD = 0.12
CONFIDENCE_PER_EXTRA_HIT = 0.02
CONFIDENCE_MAX_EXTRA_HITS = 8

_VOWELS = frozenset("aeiou")
_SYLLABLE = re.compile(r"[aeiouy]+")
# bytes.translate table: ASCII letters -> lower case, every other byte -> space.
_TOKEN_TABLE = bytes(
    c + 32 if 65 <= c <= 90 else c if 97 <= c <= 122 else 32 for c in range(256)
)


def inflections(word: str) -> set[str]:
    """``word`` plus its simple inflections: -s/-es, -ed, -ing, -y, -er/-ers/-est.

    Handles a final silent e (breeze -> breezy), consonant + y (hurry -> hurried) and the doubled
    final consonant of one-syllable words (run -> running, fog -> foggy, hot -> hotter). -ly is
    not generated (coldly, clearly are manner words); list such forms explicitly where wanted.
    """
    forms = {word}
    if word.endswith(("s", "x", "z", "ch", "sh")):
        forms.add(word + "es")
    elif len(word) > 1 and word.endswith("y") and word[-2] not in _VOWELS:
        forms.add(word[:-1] + "ies")
    else:
        forms.add(word + "s")
    if len(word) > 1 and word.endswith("y") and word[-2] not in _VOWELS:
        stem = word[:-1]
        forms.update({stem + "ied", word + "ing", stem + "ier", stem + "iers", stem + "iest"})
        return forms
    if word.endswith("e"):
        stem = word[:-1]
        ing = word[:-2] + "ying" if word.endswith("ie") else (word + "ing" if word.endswith("ee") else stem + "ing")
        forms.update({word + "d", ing, stem + "y", word + "r", word + "rs", word + "st"})
        return forms
    doubled = word
    if (
        len(word) >= 3
        and word[-1] not in _VOWELS
        and word[-1] not in "wxy"
        and word[-2] in _VOWELS
        and word[-3] not in _VOWELS
        and len(_SYLLABLE.findall(word)) == 1
    ):
        doubled = word + word[-1]
    forms.update({doubled + "ed", doubled + "ing", doubled + "er", doubled + "ers", doubled + "est"})
    if not word.endswith("y"):
        forms.add(doubled + "y")
    return forms


def _keyword_forms(entry: str) -> set[str]:
    if entry.startswith("="):
        return {entry[1:]}
    return {entry} | (inflections(entry) - EXCLUDED_INFLECTIONS)


def _build_lexicon() -> tuple[dict[bytes, tuple[tuple[str, str], ...]], dict[str, tuple[tuple[str, str], ...]]]:
    """Word -> (field, label) pairs and phrase -> (field, label) pairs; one label per field per word."""
    words: dict[str, dict[str, str]] = {}
    phrases: dict[str, dict[str, str]] = {}
    for field_name, table in KEYWORDS.items():
        for label, entries in table.items():
            if label not in VOCABULARY[field_name] or label == "unknown":
                raise ValueError(f"keyword table {field_name}: label {label!r} is not in the vocabulary")
            for entry in entries:
                targets = [(phrases, entry)] if " " in entry else [(words, f) for f in _keyword_forms(entry)]
                for store, key in targets:
                    previous = store.setdefault(key, {}).setdefault(field_name, label)
                    if previous != label:
                        raise ValueError(
                            f"keyword tables: {key!r} maps {field_name} to both {previous!r} and {label!r}"
                        )
    lexicon = {w.encode(): tuple(m.items()) for w, m in sorted(words.items())}
    return lexicon, {p: tuple(m.items()) for p, m in sorted(phrases.items())}


_LEXICON, _PHRASES = _build_lexicon()
# A phrase's regex runs only on a text that holds its trigger words: its lexicon words, or for a phrase without
# any, one uncommon word of it (counting "of" or "first" in every chunk would cost more than the phrases).
_TRIGGER_OVERRIDES: dict[str, str] = {"break of day": "break", "first light": "light", "tea time": "tea"}


def _triggers(phrase: str) -> frozenset[bytes]:
    words = [w.encode() for w in phrase.split()]
    in_lexicon = [w for w in words if w in _LEXICON]
    return frozenset(in_lexicon or [_TRIGGER_OVERRIDES.get(phrase, phrase.split()[-1]).encode()])


_PhraseRule = tuple[str, frozenset[bytes], re.Pattern[bytes], tuple[bytes, ...]]
# phrase -> (its trigger words, regex over the translated buffer, lexicon words whose count it absorbs)
_PHRASE_RULES: tuple[_PhraseRule, ...] = tuple(
    (
        phrase,
        _triggers(phrase),
        re.compile(rb"\b" + rb" +".join(re.escape(w.encode()) for w in phrase.split()) + rb"\b"),
        tuple(w.encode() for w in phrase.split() if w.encode() in _LEXICON),
    )
    for phrase in _PHRASES
)
# The phrase rules under their smallest trigger word (each rule once).
_PHRASES_BY_TRIGGER: dict[bytes, tuple[_PhraseRule, ...]] = {
    word: tuple(rule for rule in _PHRASE_RULES if min(rule[1]) == word)
    for word in sorted({min(rule[1]) for rule in _PHRASE_RULES})
}
# Words worth counting: lexicon words and phrase triggers.
_LOOKUP_WORDS = frozenset(_LEXICON).union(*(rule[1] for rule in _PHRASE_RULES))
_RANK: dict[str, dict[str, int]] = {name: {lb: i for i, lb in enumerate(vocab)} for name, vocab in VOCABULARY.items()}


def tokenize(text: str) -> tuple[bytes, list[bytes]]:
    """The text as a lower-case ASCII buffer with non-letters as spaces, and its words."""
    buffer = text.encode("ascii", "replace").translate(_TOKEN_TABLE)
    return buffer, buffer.split()


def count_words(tokens: list[bytes], vocabulary: Set[bytes]) -> dict[bytes, int]:
    """Occurrences in ``tokens`` of each word of ``vocabulary`` that occurs at least once (first-seen order)."""
    counts: dict[bytes, int] = {}
    get = counts.get
    for word in filter(vocabulary.__contains__, tokens):
        counts[word] = get(word, 0) + 1
    return counts


@dataclass(frozen=True)
class EnvironmentFeatures:
    """Environment labels of one chunk, with the evidence behind them."""

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

    def labels(self) -> dict[str, str]:
        """The seven ENV_FIELDS labels."""
        return {name: getattr(self, name) for name in ENV_FIELDS}

    def to_dict(self) -> dict[str, object]:
        """Flat JSON-serialisable dict: the seven labels, confidence, cues and source."""
        return {
            **self.labels(),
            "confidence": self.confidence,
            "cues": {name: list(words) for name, words in self.cues.items()},
            "source": self.source,
        }


def rule_confidence(fields_found: int, extra_hits: int) -> float:
    """0.12 per field found + 0.02 per extra supporting hit (at most 8), capped at 1.0; 3 dp."""
    score = CONFIDENCE_PER_FIELD * fields_found + CONFIDENCE_PER_EXTRA_HIT * min(
        extra_hits, CONFIDENCE_MAX_EXTRA_HITS
    )
    return round(min(1.0, score), 3)


def _evidence(text: str) -> tuple[dict[str, dict[str, int]], dict[tuple[str, str], list[str]]]:
    """Hits per field and label, and the words behind each (field, label)."""
    buffer, tokens = tokenize(text)
    return _evidence_from(count_words(tokens, _LOOKUP_WORDS), buffer, 0, len(buffer))


def _evidence_from(
    counts: dict[bytes, int], buffer: bytes, start: int, end: int
) -> tuple[dict[str, dict[str, int]], dict[tuple[str, str], list[str]]]:
    """:func:`_evidence` from the lookup-word counts of a text that is ``buffer[start:end]`` (for the phrases)."""
    hits: dict[str, dict[str, int]] = {}
    words_for: dict[tuple[str, str], list[str]] = {}
    if not counts:
        return hits, words_for
    present = counts.keys()
    evidence: list[tuple[str, tuple[tuple[str, str], ...], int]] = []
    for trigger in [w for w in present if w in _PHRASES_BY_TRIGGER]:
        for phrase, triggers, pattern, absorbed in _PHRASES_BY_TRIGGER[trigger]:
            if triggers <= present:
                n = len(pattern.findall(buffer, start, end))
                if n:
                    evidence.append((phrase, _PHRASES[phrase], n))
                    for word in absorbed:
                        counts[word] -= n
    for word, n in counts.items():
        if n > 0:
            pairs = _LEXICON.get(word)
            if pairs:
                evidence.append((word.decode(), pairs, n))

    for key, pairs, n in evidence:
        for pair in pairs:
            field_hits = hits.get(pair[0])
            if field_hits is None:
                hits[pair[0]] = {pair[1]: n}
            else:
                field_hits[pair[1]] = field_hits.get(pair[1], 0) + n
            found = words_for.get(pair)
            if found is None:
                words_for[pair] = [key]
            else:
                found.append(key)
    return hits, words_for


def label_hits(text: str) -> dict[str, dict[str, int]]:
    """Whole-word keyword hits per field and label (e.g. ``{"weather": {"rain": 2, "fog": 1}}``), used to check
    a generated paragraph against its sensor record."""
    return _evidence(text)[0]


def _decide(hits: dict[str, dict[str, int]], words_for: dict[tuple[str, str], list[str]]) -> EnvironmentFeatures:
    labels: dict[str, str] = {}
    cues: dict[str, list[str]] = {}
    fields_found = extra_hits = 0
    for name in ENV_FIELDS:
        field_hits = hits.get(name)
        if field_hits:
            if len(field_hits) == 1:
                best = next(iter(field_hits))
            else:
                rank = _RANK[name]
                best = min(field_hits, key=lambda lb: (-field_hits[lb], rank[lb]))
            labels[name] = best
            cues[name] = sorted(words_for[(name, best)])
            fields_found += 1
            extra_hits += field_hits[best] - 1
        else:
            labels[name] = "unknown"
    return EnvironmentFeatures(
        **labels, confidence=rule_confidence(fields_found, extra_hits), cues=cues, source="rules"
    )


def analyze_rules(text: str) -> EnvironmentFeatures:
    """Label a chunk from keyword hits (see the module docstring for the decision rule).

    ``cues[field]`` lists the matched words (or phrases) that support the chosen label, sorted and
    deduplicated; an "unknown" field has no entry. Confidence is :func:`rule_confidence` of the
    number of fields found and the hits beyond the first that support each chosen label.
    """
    return _decide(*_evidence(text))


# --- batch analysis -------------------------------------------------------------------------------
# A file's chunks are analysed together with numpy, with the same results as analyze_rules on each:
# the texts are joined with " \x01 " (the token table keeps \x01, so the separators mark where each
# text starts), word boundaries and a signature of every word come from numpy over the bytes, and only
# the words whose signature a lookup word shares are looked up in Python. Then: (chunk, key) counts,
# phrase hits found by regex in the chunks that hold their triggers, hits per (chunk, label) and a
# per-field argmax (the first maximum in vocabulary order is the tie-break).
_SEPARATOR = b"\x01"
_JOINER = " \x01 "
_SEPARATED_TABLE = _TOKEN_TABLE[:1] + _SEPARATOR + _TOKEN_TABLE[2:]
_FIELD_START: dict[str, int] = {}
_GLOBAL_LABELS: list[tuple[str, str]] = []  # (field, label) of each global label index
for _name in ENV_FIELDS:
    _FIELD_START[_name] = len(_GLOBAL_LABELS)
    _GLOBAL_LABELS.extend((_name, _label) for _label in VOCABULARY[_name])
_GLOBAL_INDEX = {pair: i for i, pair in enumerate(_GLOBAL_LABELS)}
_FIELD_OF_LABEL = np.array([ENV_FIELDS.index(f) for f, _ in _GLOBAL_LABELS])
# Evidence keys: the lookup words (lexicon words and phrase triggers), then the phrases.
_KEY_NAMES: list[str] = [w.decode() for w in sorted(_LOOKUP_WORDS)] + list(_PHRASES)
_KEY_ID: dict[bytes, int] = {w.encode(): i for i, w in enumerate(_KEY_NAMES) if " " not in w}
_PHRASE_ID = {p: i for i, p in enumerate(_KEY_NAMES) if " " in p}
_KEY_PAIRS = [
    [_GLOBAL_INDEX[pair] for pair in (_PHRASES[name] if " " in name else _LEXICON.get(name.encode(), ()))]
    for name in _KEY_NAMES
]
_PAIR_COUNT = np.array([len(p) for p in _KEY_PAIRS])
_KEY_RANK = np.argsort(np.argsort(np.array(_KEY_NAMES, dtype=object)))  # each key's place in sorted order
_PAIR_START = np.concatenate([[0], np.cumsum(_PAIR_COUNT)[:-1]])
_PAIR_LABEL = np.array([g for p in _KEY_PAIRS for g in p])
_CONFIDENCE = np.array([[rule_confidence(found, extra) for extra in range(CONFIDENCE_MAX_EXTRA_HITS + 1)]
                        for found in range(len(ENV_FIELDS) + 1)])


_SIGNATURE_BITS = 23  # the table takes 8 MB


def _signature(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """A cheap fingerprint of the words ``data[starts[i]:ends[i]]``: their length and their first, second, third,
    next-to-last and last letters (clamped into short words), hashed in 32-bit arithmetic to a table index."""
    last = ends - 1
    signature = (ends - starts).astype(np.uint32)
    for at in (starts, np.minimum(starts + 1, last), np.minimum(starts + 2, last), np.maximum(last - 1, starts), last):
        signature = signature * np.uint32(0x01000193) ^ data[at]  # FNV-1a's prime; wraps around
    return (signature ^ (signature >> np.uint32(_SIGNATURE_BITS))) & np.uint32((1 << _SIGNATURE_BITS) - 1)


def _signature_table(words) -> np.ndarray:
    table = np.zeros(1 << _SIGNATURE_BITS, dtype=bool)
    data = np.frombuffer(b" ".join(words), dtype=np.uint8)
    lengths = np.array([len(w) for w in words])
    ends = np.cumsum(lengths + 1) - 1
    table[_signature(data, ends - lengths, ends)] = True
    return table


_LOOKUP_SIGNATURES = _signature_table(sorted(_LOOKUP_WORDS))


def _lookup_words(buffer: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(text number, key id) of each lookup word of a separated buffer, in reading order.

    Word boundaries come from numpy over the bytes; only words whose signature (:func:`_signature`) some lookup
    word shares are cut out of the buffer and looked up, a small share of all words."""
    data = np.frombuffer(buffer, dtype=np.uint8)
    letter = (data >= 97).view(np.int8)  # after the token table: letters a-z, spaces, separators
    edges = np.diff(letter, prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    candidates = np.flatnonzero(_LOOKUP_SIGNATURES[_signature(data, starts, ends)])
    get = _KEY_ID.get
    ids = np.fromiter((get(buffer[a:b], -1) for a, b in zip(starts[candidates].tolist(), ends[candidates].tolist())),
                      dtype=np.int64, count=len(candidates))
    found = ids >= 0
    text = np.searchsorted(np.flatnonzero(data == 1), starts[candidates][found])
    return text, ids[found]


def _key_counts(buffer: bytes, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chunk, key, count) of every lookup word in each text, phrases counted and their words' counts absorbed."""
    chunk, ids = _lookup_words(buffer)
    stride = len(_KEY_NAMES)  # (chunk, key) as one integer
    combined, counts = np.unique(chunk * stride + ids, return_counts=True)
    chunk, key = np.divmod(combined, stride)

    extra: list[tuple[int, int, int]] = []
    starts = None
    for phrase, triggers, pattern, absorbed in _PHRASE_RULES:
        candidates = None
        for word in triggers:
            having = chunk[key == _KEY_ID[word]]
            candidates = having if candidates is None else np.intersect1d(candidates, having, assume_unique=True)
        if candidates is None or not len(candidates):
            continue
        if starts is None:
            lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)) + len(_JOINER)
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        first = phrase.split()[0].encode()
        for c in candidates.tolist():
            start = int(starts[c])
            end = start + len(texts[c])
            if buffer.find(first, start, end) < 0:  # a cheap test before the regex
                continue
            n = len(pattern.findall(buffer, start, end))
            if n:
                extra.append((c, _PHRASE_ID[phrase], n))
                for word in absorbed:
                    counts[np.searchsorted(combined, c * stride + _KEY_ID[word])] -= n
    if extra:
        more = np.array(extra, dtype=np.int64)
        chunk, key, counts = (np.concatenate([chunk, more[:, 0]]), np.concatenate([key, more[:, 1]]),
                              np.concatenate([counts, more[:, 2]]))
    keep = (counts > 0) & (_PAIR_COUNT[key] > 0)
    return chunk[keep], key[keep], counts[keep]


def analyze_columns(texts: Sequence[str]) -> dict[str, list]:
    """:func:`analyze_rules` of each text, as columns: one list per ENV_FIELD, ``confidence`` and ``cues``.

    Equal to analysing each text on its own, and several times faster for a file's chunks."""
    n = len(texts)
    joined = _JOINER.join(texts)
    if joined.count("\x01") != max(n - 1, 0):  # a text holds the separator itself: one by one
        results = [analyze_rules(t) for t in texts]
        return {**{name: [getattr(r, name) for r in results] for name in ENV_FIELDS},
                "confidence": [r.confidence for r in results], "cues": [r.cues for r in results]}
    buffer = joined.encode("ascii", "replace").translate(_SEPARATED_TABLE)
    chunk, key, counts = _key_counts(buffer, texts)

    # Expand each (chunk, key, count) to the labels its key supports, then sum hits per (chunk, label).
    reps = _PAIR_COUNT[key]
    entry = np.repeat(np.arange(len(key)), reps)
    offset = np.arange(len(entry)) - np.repeat(np.cumsum(reps) - reps, reps)
    label = _PAIR_LABEL[_PAIR_START[key][entry] + offset]
    e_chunk = chunk[entry]
    hits = np.bincount(e_chunk * len(_GLOBAL_LABELS) + label, weights=counts[entry],
                       minlength=n * len(_GLOBAL_LABELS)).reshape(n, len(_GLOBAL_LABELS))

    columns: dict[str, list] = {}
    chosen = np.full((n, len(ENV_FIELDS)), -1, dtype=np.int64)
    found = np.zeros(n, dtype=np.int64)
    extra = np.zeros(n, dtype=np.int64)
    for f, name in enumerate(ENV_FIELDS):
        start = _FIELD_START[name]
        segment = hits[:, start:start + len(VOCABULARY[name])]
        best = segment.argmax(axis=1)
        top = segment.max(axis=1).astype(np.int64)
        has = top > 0
        chosen[has, f] = start + best[has]
        found += has
        extra += np.where(has, top - 1, 0)
        vocabulary = VOCABULARY[name]
        columns[name] = [vocabulary[i] for i in np.where(has, best, len(vocabulary) - 1).tolist()]
    columns["confidence"] = _CONFIDENCE[found, np.minimum(extra, CONFIDENCE_MAX_EXTRA_HITS)].tolist()

    # Cue words: the keys behind each chosen label, sorted by chunk, field and word.
    supports = chosen[e_chunk, _FIELD_OF_LABEL[label]] == label
    s_chunk, s_key, s_label = e_chunk[supports], key[entry][supports], label[supports]
    order = np.lexsort((_KEY_RANK[s_key], _FIELD_OF_LABEL[s_label], s_chunk))
    cues: list[dict[str, list[str]]] = [{} for _ in range(n)]
    for c, k, g in zip(s_chunk[order].tolist(), s_key[order].tolist(), s_label[order].tolist()):
        words = cues[c].get(_GLOBAL_LABELS[g][0])
        if words is None:
            cues[c][_GLOBAL_LABELS[g][0]] = [_KEY_NAMES[k]]
        else:
            words.append(_KEY_NAMES[k])
    columns["cues"] = cues
    return columns


def features_at(columns: Mapping[str, Sequence], i: int) -> EnvironmentFeatures:
    """Text ``i`` of :func:`analyze_columns`' output as :class:`EnvironmentFeatures`."""
    return EnvironmentFeatures(**{name: columns[name][i] for name in ENV_FIELDS},
                               confidence=columns["confidence"][i], cues=columns["cues"][i], source="rules")


def analyze_many(texts: Sequence[str]) -> list[EnvironmentFeatures]:
    """:func:`analyze_rules` of each text (equal results), from :func:`analyze_columns`."""
    columns = analyze_columns(texts)
    return [features_at(columns, i) for i in range(len(texts))]


def _normalise_label(value: str) -> str:
    return re.sub(r"[\s\-]+", "_", value.strip().lower())


def validate_labels(values: Mapping[str, object]) -> tuple[dict[str, str], list[str]]:
    """Map each ENV_FIELD of ``values`` onto its vocabulary.

    A value is lower-cased and stripped, with spaces and hyphens read as "_", then accepted if it
    is in the field's vocabulary or in ``LABEL_SYNONYMS`` ("sunny" -> "clear"). Anything else
    (missing, None, numbers, "village") becomes "unknown" and the field is listed as invalid.
    """
    labels: dict[str, str] = {}
    invalid: list[str] = []
    for name in ENV_FIELDS:
        raw = values.get(name)
        label = None
        if isinstance(raw, str):
            key = _normalise_label(raw)
            label = key if key in VOCABULARY[name] else LABEL_SYNONYMS[name].get(key)
        if label is None:
            invalid.append(name)
            label = "unknown"
        labels[name] = label
    return labels, invalid


def merge_with_rules(primary: Mapping[str, str], rules: EnvironmentFeatures) -> tuple[dict[str, str], list[str]]:
    """Fill each field of ``primary`` that is "unknown" (or missing or outside the vocabulary) from ``rules``.

    Returns the merged labels and the fields whose value was taken from the rule result.
    """
    merged: dict[str, str] = {}
    taken: list[str] = []
    rule_labels = rules.labels()
    for name in ENV_FIELDS:
        value = primary.get(name, "unknown")
        if value == "unknown" or value not in VOCABULARY[name]:
            value = rule_labels[name]
            if value != "unknown":
                taken.append(name)
        merged[name] = value
    return merged, taken
