import json

import pytest

from llava_sensing_pipeline.environment import (
    ENV_FIELDS,
    KEYWORDS,
    VOCABULARY,
    EnvironmentFeatures,
    analyze_columns,
    analyze_many,
    analyze_rules,
    inflections,
    merge_with_rules,
    rule_confidence,
    validate_labels,
)
from llava_sensing_pipeline_tests.support.needs import require_corpus

# Tests using the shared sample corpus (../shared/corpus) skip without it, and fail in CI (support/needs.py).


def test_vocabulary_covers_every_field_and_includes_unknown():
    assert tuple(VOCABULARY) == ENV_FIELDS
    for name, values in VOCABULARY.items():
        assert "unknown" in values, name
        assert len(set(values)) == len(values), name
    assert VOCABULARY["weather"] == ("clear", "cloudy", "rain", "snow", "fog", "windy", "storm", "unknown")
    assert VOCABULARY["wind"] == ("calm", "breeze", "strong", "unknown")


def test_keyword_labels_are_in_the_vocabulary():
    assert set(KEYWORDS) == set(ENV_FIELDS)
    for name, table in KEYWORDS.items():
        assert set(table) <= set(VOCABULARY[name]) - {"unknown"}, name


def test_nothing_found_is_unknown_with_zero_confidence():
    for text in ("", "   ", "It was nothing to the point, she said.", "12345 !!! ---"):
        result = analyze_rules(text)
        assert all(value == "unknown" for value in result.labels().values()), text
        assert result.confidence == 0.0
        assert result.cues == {}
        assert result.source == "rules"


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        ("We met in the afternoon.", "time_of_day", "afternoon"),
        ("He waited a fortnight.", "time_of_day", "unknown"),
        ("A knight rode by.", "time_of_day", "unknown"),
        ("Even so, she went on.", "time_of_day", "unknown"),
        ("It was evening.", "time_of_day", "evening"),
        ("We walked down the street.", "location", "city_walking"),
        ("The season was over.", "location", "unknown"),
        ("He climbed onto the chair.", "wind", "unknown"),
        ("A chill crept over him.", "location", "unknown"),
        ("A chill crept over him.", "temperature_hint", "cold"),
        ("They took the train.", "weather", "unknown"),
        ("His brain ached on the rough terrain.", "weather", "unknown"),
        ("Deep in the forest.", "location", "forest_exploration"),
        ("Deep in the forest.", "movement", "unknown"),
        ("The hills rolled away.", "location", "mountain_climbing"),
    ],
)
def test_whole_word_matching_avoids_substring_traps(text, field, expected):
    assert getattr(analyze_rules(text), field) == expected


def test_afternoon_is_not_noon_even_with_both_words():
    result = analyze_rules("By noon the heat rose; all afternoon, long afternoon, we dozed.")
    assert result.time_of_day == "afternoon"
    assert result.cues["time_of_day"] == ["afternoon"]


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        ("It rained all day.", "weather", "rain"),
        ("It was raining hard.", "weather", "rain"),
        ("The rainy season.", "weather", "rain"),
        ("Snowing since dawn.", "weather", "snow"),
        ("A foggy harbour.", "weather", "fog"),
        ("The sky was cloudy.", "weather", "cloudy"),
        ("She walked slowly.", "movement", "walking"),
        ("A lone walker.", "movement", "walking"),
        ("He was running.", "movement", "active"),
        ("He ran.", "movement", "active"),
        ("A hotter day.", "temperature_hint", "hot"),
        ("The breezy bluff.", "wind", "breeze"),
        ("The cities slept.", "location", "city_walking"),
        ("She hurried home.", "movement", "active"),
        ("They sat down.", "movement", "still"),
    ],
)
def test_inflections_match(text, field, expected):
    assert getattr(analyze_rules(text), field) == expected


def test_case_insensitive_and_punctuation_separated():
    assert analyze_rules("RAIN!").weather == "rain"
    assert analyze_rules("the night's end").time_of_day == "night"
    assert analyze_rules("the drawing-room").location == "indoor"


def test_inflections_helper():
    assert {"rains", "rained", "raining", "rainy"} <= inflections("rain")
    assert {"runs", "running", "runner"} <= inflections("run")
    assert "foggy" in inflections("fog")
    assert {"hurries", "hurried", "hurrying"} <= inflections("hurry")
    assert {"breezy", "breezes"} <= inflections("breeze")
    assert {"walks", "walked", "walking", "walker"} <= inflections("walk")


def test_excluded_inflections_are_not_matched():
    assert analyze_rules("The master spoke.").location == "unknown"  # not "mast"
    assert analyze_rules("A winding lane.").weather == "unknown"  # not "wind"
    assert analyze_rules("The parking was full.").location == "unknown"  # not "park"
    assert analyze_rules("The waiter came.").movement == "unknown"  # not "wait"


def test_phrases_are_found_and_absorb_their_words():
    result = analyze_rules("We rose at first light.")
    assert result.time_of_day == "dawn"
    assert result.cues["time_of_day"] == ["first light"]
    # "strong wind" counts as strong, not also as the breeze that "wind" alone means
    assert analyze_rules("A strong wind.").wind == "strong"
    assert analyze_rules("A wind.").wind == "breeze"
    assert analyze_rules("There was no wind at all.").wind == "calm"
    assert analyze_rules("There was no wind at all.").weather == "unknown"
    # a sea breeze is a breeze, not evidence of a sea voyage
    assert analyze_rules("A sea breeze.").location == "unknown"
    assert analyze_rules("It was tea-time.").time_of_day == "afternoon"


def test_most_hits_win_and_ties_follow_vocabulary_order():
    assert analyze_rules("rain and storm").weather == "rain"  # tie: rain comes first
    assert analyze_rules("rain, storm and thunder").weather == "storm"
    assert analyze_rules("rain, rain and a storm").weather == "rain"
    assert analyze_rules("night then morning").time_of_day == "morning"  # tie: morning first


def test_cues_support_the_chosen_label_sorted_and_deduplicated():
    result = analyze_rules("Rain, rain, raining; a storm. The ship's deck.")
    assert result.weather == "rain"
    assert result.cues["weather"] == ["rain", "raining"]
    assert result.cues["location"] == ["deck", "ship"]
    assert set(result.cues) == {name for name in ENV_FIELDS if getattr(result, name) != "unknown"}


def test_indoor_and_sea_voyage_locations():
    assert analyze_rules("She sat in the parlour by the kitchen door.").location == "indoor"
    assert analyze_rules("We went down the staircase into the library.").location == "indoor"
    assert analyze_rules("On deck the sails filled; below, the cabin.").location == "sea_voyage"


def test_confidence_formula_and_monotonicity():
    assert rule_confidence(0, 0) == 0.0
    assert rule_confidence(1, 0) == pytest.approx(0.12)
    assert rule_confidence(7, 100) == 1.0
    previous = -1.0
    for fields in range(8):
        for extra in range(12):
            value = rule_confidence(fields, extra)
            assert 0.0 <= value <= 1.0
            assert value >= rule_confidence(fields, max(extra - 1, 0))
            assert fields == 0 or value > rule_confidence(fields - 1, extra)
        assert rule_confidence(fields, 0) > previous
        previous = rule_confidence(fields, 0)


def test_confidence_grows_with_evidence_in_text():
    texts = [
        "",
        "It rained.",
        "It rained in the morning.",
        "It rained in the morning as we walked down the street.",
        "It rained and rained in the morning as we walked down the street; cold rain.",
        "It rained and rained in the morning as we walked down the street; cold rain, damp, and a gale.",
    ]
    scores = [analyze_rules(t).confidence for t in texts]
    assert scores == sorted(scores)
    assert scores[0] == 0.0 and scores[-1] > scores[1]


def test_to_dict_is_flat_and_json_serialisable():
    result = analyze_rules("A cold foggy morning on the river; we walked.")
    data = result.to_dict()
    assert json.loads(json.dumps(data)) == data
    for name in ENV_FIELDS:
        assert data[name] == getattr(result, name)
    assert data["confidence"] == result.confidence
    assert data["cues"]["weather"] == ["foggy"]
    assert data["source"] == "rules"
    assert (result.temperature_hint, result.time_of_day, result.location, result.movement) == (
        "cold", "morning", "riverside_walking", "walking"
    )


def test_features_are_frozen():
    result = analyze_rules("rain")
    with pytest.raises(AttributeError):
        result.weather = "snow"  # type: ignore[misc]


def test_validate_labels_maps_synonyms_and_rejects_junk():
    labels, invalid = validate_labels(
        {
            "temperature_hint": " HOT ",
            "humidity_hint": 42,
            "weather": "Partly Cloudy",
            "time_of_day": "midday",
            "location": "village",
            "movement": "running",
            "wind": None,
        }
    )
    assert labels == {
        "temperature_hint": "hot",
        "humidity_hint": "unknown",
        "weather": "cloudy",
        "time_of_day": "noon",
        "location": "unknown",
        "movement": "active",
        "wind": "unknown",
    }
    assert invalid == ["humidity_hint", "location", "wind"]


@pytest.mark.parametrize(
    ("field", "raw", "expected"),
    [
        ("weather", "sunny", "clear"),
        ("weather", "rainy", "rain"),
        ("weather", "foggy", "fog"),
        ("movement", "stationary", "still"),
        ("time_of_day", "dusk", "evening"),
        ("time_of_day", "twilight", "evening"),
        ("time_of_day", "daybreak", "dawn"),
        ("time_of_day", "sunrise", "dawn"),
        ("time_of_day", "midnight", "night"),
        ("location", "City Walking", "city_walking"),
        ("location", "sea-voyage", "sea_voyage"),
        ("weather", "unknown", "unknown"),
    ],
)
def test_validate_labels_synonyms(field, raw, expected):
    labels, invalid = validate_labels({name: "unknown" for name in ENV_FIELDS} | {field: raw})
    assert labels[field] == expected
    assert invalid == []


def test_validate_labels_missing_fields_are_invalid():
    labels, invalid = validate_labels({"weather": "snow", "confidence": 0.9})
    assert labels["weather"] == "snow"
    assert invalid == [name for name in ENV_FIELDS if name != "weather"]
    assert all(labels[name] == "unknown" for name in invalid)


def test_merge_with_rules_fills_only_unknown_fields():
    rules = analyze_rules("On a cold rainy night we walked along the beach in a strong wind.")
    primary = {
        "temperature_hint": "mild",
        "humidity_hint": "unknown",
        "weather": "unknown",
        "time_of_day": "evening",
        "location": "unknown",
        "movement": "unknown",
        # "wind" missing
    }
    merged, taken = merge_with_rules(primary, rules)
    assert merged == {
        "temperature_hint": "mild",
        "humidity_hint": "unknown",
        "weather": "rain",
        "time_of_day": "evening",
        "location": "beach_walking",
        "movement": "walking",
        "wind": "strong",
    }
    assert taken == ["weather", "location", "movement", "wind"]


def test_merge_with_rules_nothing_to_take():
    labels = {name: VOCABULARY[name][0] for name in ENV_FIELDS}
    merged, taken = merge_with_rules(labels, analyze_rules("rain at night"))
    assert merged == labels and taken == []
    empty = EnvironmentFeatures(*["unknown"] * 7, confidence=0.0)
    merged, taken = merge_with_rules({}, empty)
    assert merged == {name: "unknown" for name in ENV_FIELDS} and taken == []


def test_real_corpus_chunks_are_labelled_with_vocabulary_values():
    files = sorted(require_corpus().glob("*/*.txt"))
    text = files[0].read_text(encoding="utf-8-sig")[20000:120000]
    found = 0
    for start in range(0, len(text), 2000):
        result = analyze_rules(text[start:start + 2000])
        for name in ENV_FIELDS:
            assert getattr(result, name) in VOCABULARY[name]
        found += result.confidence > 0
    assert found > 40


BATCH_TEXTS = [
    "",
    "Nothing here at all.",
    "The rain fell at noon; rain again in the afternoon, and a storm with thunder by night.",
    "A dead calm at sea. No wind, no wind at all, then a sea breeze and a high wind by evening.",
    "We walked along the street under a blue sky; the clear sky at first light, the break of day.",
    "Tea time in the drawing room, warm and dry by the fire.",
    "Fog, fog and more fog on the river; the damp air, still air, still.",
    "rain",
    "RAIN!!! Snow? Sleet; foggy, misty -- cold",
    "He ran and ran, hurrying up the mountain path through the forest at dawn.",
    "Café au lait — naïve façade, the soirée at dusk in the garden; it was humid.",
]


def test_batch_analysis_equals_one_by_one():
    assert analyze_many(BATCH_TEXTS) == [analyze_rules(t) for t in BATCH_TEXTS]
    assert analyze_many([]) == [] and analyze_columns([])["confidence"] == []
    # a single text, and texts that hold the batch separator themselves, give the same results too
    assert analyze_many(BATCH_TEXTS[2:3]) == [analyze_rules(BATCH_TEXTS[2])]
    odd = ["rain\x01 at noon", "fog \x01\x01 night"]
    assert analyze_many(odd) == [analyze_rules(t) for t in odd]


def test_batch_analysis_equals_one_by_one_on_the_corpus():
    from llava_sensing_pipeline.text import chunk_text, read_novel

    files = sorted(require_corpus().glob("*/*.txt"))
    for path in files[:4]:
        texts = [c.text for c in chunk_text(read_novel(path).text)]
        assert analyze_many(texts) == [analyze_rules(t) for t in texts], path.name
