"""The LLM environment analyzer (hybrid and llm modes), behind the rule analyzer's labels.

The prompt is the annotation guide itself (``environment/GUIDE.md``, the same text the hand labels of the
evaluation set were made with, sections 0-3: which scene to label, what is not a cue, the values of each field),
plus the two fields the guide does not cover (humidity, wind) and the reply format. The model is asked for JSON
constrained by a schema built from a pydantic model whose fields are the label vocabularies; the allowed values are
also listed in the prompt, since the schema constrains sampling but is not shown to the model. Every reply is
validated in code anyway (small models and some servers ignore schemas): values outside the vocabulary become
"unknown", and an "unknown" field is filled from the rule analyzer only where the rule label meets the precision
bar (``environment.validation``). The validated confidence is the model's own confidence scaled by the share of
fields it answered validly, so a garbage reply scores 0 and falls below any threshold.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, create_model

from .environment import ENV_FIELDS, VOCABULARY, EnvironmentFeatures, merge_with_rules, validate_labels

ANALYSIS_NUM_PREDICT = 160
# The guide is about 4,000 tokens; with a passage and the reply the request needs about 5,000.
ANALYSIS_NUM_CTX = 8192
MAX_PASSAGE_CHARS = 4000
GUIDE_PATH = Path(__file__).resolve().parent / "environment" / "GUIDE.md"

EnvironmentReply: type[BaseModel] = create_model(
    "EnvironmentReply",
    **{name: (Literal[tuple(VOCABULARY[name])], ...) for name in ENV_FIELDS},
    confidence=(float, Field(ge=0.0, le=1.0)),
)
ANALYSIS_SCHEMA = EnvironmentReply.model_json_schema()

_EXTRA_FIELDS = """## Two more fields (not in the annotators' guide; same rules: only this scene, only explicit cues)

### humidity_hint — `dry`, `moderate`, `humid`, `unknown`

`dry`: dry, parched, arid or dusty air or land in the scene. `humid`: damp, humid, muggy, moist or steamy air, or
rain, mist or fog soaking the scene. `moderate` only when the passage says the air is neither. Else `unknown`.

### wind — `calm`, `breeze`, `strong`, `unknown`

`calm`: no wind, still air, becalmed. `breeze`: a light or gentle breeze or wind. `strong`: a strong, high or stiff
wind, gusts, a gale or a storm wind. Else `unknown`."""


@lru_cache(maxsize=1)
def guide_text() -> str:
    """Sections 0-3 of the annotation guide (everything before its output format, which is for annotators)."""
    guide = GUIDE_PATH.read_text(encoding="utf-8")
    end = guide.find("\n## 4.")
    return (guide if end < 0 else guide[:end]).strip()


def analysis_messages(passage: str) -> list[dict]:
    """Chat messages: the annotation guide as the system message, then the passage and the reply format with the
    allowed values of the seven fields."""
    allowed = "\n".join(f'- "{name}": one of {", ".join(VOCABULARY[name])}' for name in ENV_FIELDS)
    system = (f"{guide_text()}\n\n{_EXTRA_FIELDS}\n\n## Your reply\n\nYou are the annotator. Label the passage "
              "the user sends by this guide and answer with one JSON object only, no prose.")
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": (
            f"Return a JSON object with these keys and allowed values:\n{allowed}\n"
            '- "confidence": a number from 0.0 to 1.0, how clearly the passage states these details.\n'
            'Use "unknown" for anything the guide does not let you label, and lower the confidence.\n\n'
            f'Passage:\n"""\n{passage[:MAX_PASSAGE_CHARS]}\n"""'
        )},
    ]


def analysis_options(seed: int) -> dict:
    """The request options of an analysis call: greedy, bounded reply, room for the guide, the given seed."""
    return {"temperature": 0, "num_predict": ANALYSIS_NUM_PREDICT, "num_ctx": ANALYSIS_NUM_CTX, "seed": seed}


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


def analysis_problem(raw: str) -> str | None:
    """Why a reply is not an analysis at all (None when it is one): not a JSON object, or one with none of the
    asked fields. Such a reply is a failed request (asked again, never cached); a reply with some fields invalid or
    missing is kept, and its confidence counts only the fields it answered validly."""
    parsed = _parse_json_object(raw)
    if parsed is None:
        return "a reply that is not a JSON object"
    if not any(name in parsed for name in ENV_FIELDS):
        return "a JSON object without any of the asked fields"
    return None


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
