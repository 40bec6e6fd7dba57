"""Labels from elsewhere (an LLM's reply): mapped onto the vocabularies, and their gaps filled from the rules only
where the rule label is trustworthy."""

from __future__ import annotations

import re
from collections.abc import Mapping

from .rules import EnvironmentFeatures
from .vocabulary import ENV_FIELDS, LABEL_SYNONYMS, VOCABULARY

# The precision bar for filling an LLM's gap with a rule label: 0.85, the precision the rules aim at. A field is
# listed here, with the least rule confidence (rules.field_confidence) to take, only once its rule labels have been
# measured at that precision on the held-out rounds of the label-evaluation set (rounds 2 and 3, ``llava-sensing
# eval-labels``). None is today (README, "Label quality": 0.52-0.72 on them), so an LLM's gaps stay "unknown".
PRECISION_BAR = 0.85
RULE_FILL_MIN_CONFIDENCE: dict[str, float] = {}


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


def rule_label_fills(name: str, rules: EnvironmentFeatures) -> bool:
    """Whether the rule label of field ``name`` meets the precision bar for filling another analyzer's gap."""
    bar = RULE_FILL_MIN_CONFIDENCE.get(name)
    return (bar is not None and getattr(rules, name) != "unknown"
            and rules.field_confidence.get(name, 0.0) >= bar)


def merge_with_rules(primary: Mapping[str, str], rules: EnvironmentFeatures) -> tuple[dict[str, str], list[str]]:
    """Fill each field of ``primary`` that is "unknown" (or missing or outside the vocabulary) from ``rules``, where
    the rule label meets the precision bar (:func:`rule_label_fills`); else the field stays "unknown".

    Returns the merged labels and the fields whose value was taken from the rule result.
    """
    merged: dict[str, str] = {}
    taken: list[str] = []
    for name in ENV_FIELDS:
        value = primary.get(name, "unknown")
        if value == "unknown" or value not in VOCABULARY[name]:
            value = "unknown"
            if rule_label_fills(name, rules):
                value = getattr(rules, name)
                taken.append(name)
        merged[name] = value
    return merged, taken
