"""The LLM environment analyzer (hybrid and llm modes), behind the rule analyzer's labels.

The model is asked for JSON constrained by a schema built from a pydantic model whose fields are the label
vocabularies; the allowed values are also listed in the prompt, since the schema constrains sampling but is not
shown to the model. Every reply is validated in code anyway (small models and some servers ignore schemas):
values outside the vocabulary become "unknown" and are filled from the rule analyzer field by field. The
validated confidence is the model's own confidence scaled by the share of fields it answered validly, so a
garbage reply scores 0 and falls below any threshold.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import BaseModel, Field, create_model

from .environment import ENV_FIELDS, VOCABULARY, EnvironmentFeatures, merge_with_rules, validate_labels

ANALYSIS_NUM_PREDICT = 160
MAX_PASSAGE_CHARS = 4000

EnvironmentReply: type[BaseModel] = create_model(
    "EnvironmentReply",
    **{name: (Literal[tuple(VOCABULARY[name])], ...) for name in ENV_FIELDS},
    confidence=(float, Field(ge=0.0, le=1.0)),
)
ANALYSIS_SCHEMA = EnvironmentReply.model_json_schema()

_SYSTEM = ("You analyse passages of fiction for their physical environment. Answer with one JSON object only, "
           "no prose.")


def analysis_messages(passage: str) -> list[dict]:
    """Chat messages asking for the seven labels and a confidence, listing the allowed values."""
    allowed = "\n".join(f'- "{name}": one of {", ".join(VOCABULARY[name])}' for name in ENV_FIELDS)
    return [
        {"role": "system", "content": _SYSTEM},
        {"role": "user", "content": (
            "Read the passage and report the environment a robot standing in it would sense.\n"
            f"Return a JSON object with these keys and allowed values:\n{allowed}\n"
            '- "confidence": a number from 0.0 to 1.0, how clearly the passage states these details.\n'
            'Use "unknown" for anything the passage does not clearly indicate, and lower the confidence.\n\n'
            f'Passage:\n"""\n{passage[:MAX_PASSAGE_CHARS]}\n"""'
        )},
    ]


def _parse_json_object(raw: str) -> dict | None:
    try:
        value = json.loads(raw)
    except ValueError:
        match = re.search(r"\{.*\}", raw, re.S)
        if not match:
            return None
        try:
            value = json.loads(match.group(0))
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def _confidence(value: object) -> float:
    if isinstance(value, bool):
        return 0.0
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip().rstrip("%")) / (100 if value.strip().endswith("%") else 1)
        except ValueError:
            return 0.0
    else:
        return 0.0
    return min(1.0, max(0.0, number)) if number == number else 0.0  # NaN -> 0


def interpret_analysis(raw: str, rules: EnvironmentFeatures) -> dict:
    """Validates a raw model reply and fills its gaps from the rule result.

    Returns ``labels`` (merged, all in the vocabulary), ``llm_labels`` (validated model labels), ``invalid_fields``,
    ``rule_fields`` (taken from the rules), ``llm_confidence`` (as the model said, clipped), ``confidence``
    (validated), ``valid_json`` and ``raw``.
    """
    parsed = _parse_json_object(raw)
    values = parsed or {}
    llm_labels, invalid = validate_labels(values)
    llm_confidence = _confidence(values.get("confidence"))
    answered = sum(1 for f in ENV_FIELDS if f not in invalid)
    merged, rule_fields = merge_with_rules(llm_labels, rules)
    return {
        "labels": merged,
        "llm_labels": llm_labels,
        "invalid_fields": invalid,
        "rule_fields": rule_fields,
        "llm_confidence": llm_confidence,
        "confidence": round(llm_confidence * answered / len(ENV_FIELDS), 3),
        "valid_json": parsed is not None,
        "raw": raw,
    }
