import json

from llava_sensing_pipeline.environment import ENV_FIELDS, VOCABULARY, analyze_rules
from llava_sensing_pipeline.environment_llm import ANALYSIS_SCHEMA, analysis_messages, interpret_analysis

RULES = analyze_rules("It rained all night; I walked down the street, cold and wet.")


def test_schema_enumerates_the_vocabularies():
    props = ANALYSIS_SCHEMA["properties"]
    for field in ENV_FIELDS:
        assert props[field]["enum"] == list(VOCABULARY[field])
    assert set(ANALYSIS_SCHEMA["required"]) >= set(ENV_FIELDS) | {"confidence"}


def test_prompt_lists_the_allowed_values_and_the_passage():
    user = analysis_messages("A foggy quay at dawn.")[-1]["content"]
    for field in ENV_FIELDS:
        assert field in user and all(v in user for v in VOCABULARY[field])
    assert "A foggy quay at dawn." in user


def test_valid_reply_is_kept_and_gaps_filled_from_rules():
    reply = {f: "unknown" for f in ENV_FIELDS} | {"weather": "storm", "time_of_day": "dawn", "confidence": 0.9}
    result = interpret_analysis(json.dumps(reply), RULES)
    assert result["labels"]["weather"] == "storm" and result["labels"]["time_of_day"] == "dawn"
    assert result["labels"]["location"] == RULES.location == "city_walking"
    assert "location" in result["rule_fields"] and result["invalid_fields"] == []
    assert result["confidence"] == 0.9 and result["valid_json"]


def test_out_of_vocabulary_values_become_unknown_then_rules():
    reply = {"weather": "partly sunny with meatballs", "location": "village", "time_of_day": 7, "confidence": "0.8"}
    result = interpret_analysis(json.dumps(reply), RULES)
    assert result["llm_labels"]["location"] == "unknown" and "location" in result["invalid_fields"]
    assert result["labels"]["location"] == "city_walking"
    assert all(result["labels"][f] in VOCABULARY[f] for f in ENV_FIELDS)
    assert result["llm_confidence"] == 0.8 and result["confidence"] < 0.8  # scaled by the valid share


def test_garbage_scores_zero_and_keeps_the_raw_reply():
    for raw in ["", "not json at all", '{"weather": "rain", "conf', "[1, 2]", '{"confidence": "high"}']:
        result = interpret_analysis(raw, RULES)
        assert result["confidence"] == 0.0 and result["raw"] == raw
        assert result["labels"]["weather"] == RULES.weather


def test_json_inside_prose_is_found():
    raw = 'Sure! {"weather": "fog", "confidence": 1.5} hope this helps'
    result = interpret_analysis(raw, RULES)
    assert result["llm_labels"]["weather"] == "fog" and result["llm_confidence"] == 1.0
