"""Environment labels of a passage: weather, time of day, place, temperature and humidity cues, movement, wind.

The package is split by concern:

- :mod:`.vocabulary`: the label vocabularies, the broad keyword tables and the LLM label synonyms (data);
- :mod:`.cues`: the rule analyzer's scene cues and context word lists (data);
- :mod:`.lexicon`: whole-word keyword hits (:func:`label_hits`, for generated paragraphs) and the tokenizer;
- :mod:`.rules`: the precision-first rule analyzer of source passages (:func:`analyze_columns`);
- :mod:`.validation`: labels from an LLM mapped onto the vocabularies, gaps filled from trustworthy rule labels.
"""

from .lexicon import count_words, inflections, label_hits, tokenize
from .rules import (
    DOMINANCE,
    THRESHOLD,
    EnvironmentFeatures,
    analyze_columns,
    analyze_many,
    analyze_rules,
    features_at,
    field_confidence,
    passage_confidence,
    rule_scores,
)
from .validation import RULE_FILL_MIN_CONFIDENCE, merge_with_rules, rule_label_fills, validate_labels
from .vocabulary import (
    CONTEXT_FIELDS,
    ENV_FIELDS,
    HUMIDITY_HINTS,
    KEYWORDS,
    LABEL_SYNONYMS,
    LOCATIONS,
    MOVEMENTS,
    TEMPERATURE_HINTS,
    TIMES_OF_DAY,
    VOCABULARY,
    WEATHERS,
    WIND_LEVELS,
)

__all__ = [
    "CONTEXT_FIELDS", "DOMINANCE", "ENV_FIELDS", "HUMIDITY_HINTS", "KEYWORDS", "LABEL_SYNONYMS", "LOCATIONS",
    "MOVEMENTS", "RULE_FILL_MIN_CONFIDENCE", "TEMPERATURE_HINTS", "THRESHOLD", "TIMES_OF_DAY", "VOCABULARY",
    "WEATHERS", "WIND_LEVELS", "EnvironmentFeatures", "analyze_columns", "analyze_many", "analyze_rules",
    "count_words", "features_at", "field_confidence", "inflections", "label_hits", "merge_with_rules",
    "passage_confidence", "rule_label_fills", "rule_scores", "tokenize", "validate_labels",
]
