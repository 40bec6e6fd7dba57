"""Whole-word keyword matching: the tokenizer, inflections, and :func:`label_hits` over the broad keyword tables.

A text is tokenised into lower-case ASCII words (anything that is not a letter separates words, so "tea-time" is
"tea" + "time" and "night's" is "night" + "s"). Each word is looked up in a lexicon built from
``vocabulary.KEYWORDS``, expanded with simple inflections; a few multi-word phrases ("first light", "sea breeze")
are found with small regexes and their words are not also counted on their own. Matching is by whole word only:
"afternoon" never matches "noon", "street" never matches "tree", "train" never matches "rain".

:func:`label_hits` counts these hits per label. It checks that a *generated* paragraph expresses its sensor record
(``generation.check_quality``), where every mention counts; labelling a *source passage* needs evidence about its
scene, which is the rule analyzer's job (:mod:`.rules`).
"""

from __future__ import annotations

import re
from collections.abc import Set

from .vocabulary import EXCLUDED_INFLECTIONS, KEYWORDS, VOCABULARY

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


def _evidence(text: str) -> dict[str, dict[str, int]]:
    """Hits per field and label."""
    buffer, tokens = tokenize(text)
    counts = count_words(tokens, _LOOKUP_WORDS)
    hits: dict[str, dict[str, int]] = {}
    if not counts:
        return hits
    present = counts.keys()
    evidence: list[tuple[tuple[tuple[str, str], ...], int]] = []
    for trigger in [w for w in present if w in _PHRASES_BY_TRIGGER]:
        for phrase, triggers, pattern, absorbed in _PHRASES_BY_TRIGGER[trigger]:
            if triggers <= present:
                n = len(pattern.findall(buffer))
                if n:
                    evidence.append((_PHRASES[phrase], n))
                    for word in absorbed:
                        counts[word] -= n
    for word, n in counts.items():
        if n > 0:
            pairs = _LEXICON.get(word)
            if pairs:
                evidence.append((pairs, n))
    for pairs, n in evidence:
        for field_name, label in pairs:
            field_hits = hits.setdefault(field_name, {})
            field_hits[label] = field_hits.get(label, 0) + n
    return hits


def label_hits(text: str) -> dict[str, dict[str, int]]:
    """Whole-word keyword hits per field and label (e.g. ``{"weather": {"rain": 2, "fog": 1}}``), used to check
    a generated paragraph against its sensor record."""
    return _evidence(text)
