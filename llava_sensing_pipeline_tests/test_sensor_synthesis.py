import itertools
import re

import pytest

from llava_sensing_pipeline.generation import build_generation_prompt

from llava_sensing_pipeline.environment import ENV_FIELDS, VOCABULARY
from llava_sensing_pipeline.seeding import derive_seed
from llava_sensing_pipeline.sensor_synthesis import (
    COMPASS_POINTS,
    IMU_FIELDS,
    ONSHORE_WIND_INDICES,
    SENSOR_RANGES,
    TEMPERATURE_RANGES,
    WIND_PHRASES,
    describe_sensor_record,
    synthesize_sensor_record,
    wind_phrase,
)

UNKNOWN = {name: "unknown" for name in ENV_FIELDS}


def features(**labels):
    return UNKNOWN | labels


def assert_in_ranges(record):
    low, high = SENSOR_RANGES["temperature"]
    assert low <= record["temperature"] <= high
    low, high = SENSOR_RANGES["humidity"]
    assert low <= record["humidity"] <= high
    low, high = SENSOR_RANGES["wind_direction"]
    assert isinstance(record["wind_direction"], int) and low <= record["wind_direction"] <= high
    assert len(record["imu"]) == len(IMU_FIELDS) == 6
    for value, name in zip(record["imu"], IMU_FIELDS):
        low, high = SENSOR_RANGES[name]
        assert low <= value <= high, (name, value)


def test_record_shape_and_rounding():
    record = synthesize_sensor_record(
        features(temperature_hint="warm", weather="rain", time_of_day="night", location="park_stroll",
                 movement="walking"),
        seed=7,
    )
    assert set(record) == {"temperature", "humidity", "wind_direction", "wind_direction_name", "imu",
                           "movement", "context"}
    assert record["context"] == {"scenario": "park_stroll", "time": "night", "weather": "rain", "wind": "unknown"}
    assert record["movement"] == "walking"
    assert record["temperature"] == round(record["temperature"], 1)
    assert record["humidity"] == round(record["humidity"], 1)
    assert all(isinstance(v, float) and v == round(v, 3) for v in record["imu"])
    assert record["wind_direction_name"] == COMPASS_POINTS[record["wind_direction"]]


def test_same_seed_same_record_different_seeds_differ():
    labels = features(temperature_hint="cool", weather="fog", location="forest_exploration", movement="active")
    seed = derive_seed(42, "Travel_Novel/B206", 3, "sensors")
    assert synthesize_sensor_record(labels, seed) == synthesize_sensor_record(dict(labels), seed)
    records = [synthesize_sensor_record(labels, derive_seed(42, "Travel_Novel/B206", i, "sensors")) for i in range(20)]
    assert len({(r["temperature"], r["humidity"], tuple(r["imu"])) for r in records}) == 20


def test_all_values_within_ranges_over_many_seeds_and_label_combos():
    fields = ("temperature_hint", "humidity_hint", "weather", "location", "movement")
    combos = list(itertools.product(*(VOCABULARY[name] for name in fields)))
    for seed, combo in enumerate(combos):  # 6 * 4 * 8 * 10 * 4 = 7680 records
        record = synthesize_sensor_record(features(**dict(zip(fields, combo))), seed)
        assert_in_ranges(record)


def test_extreme_noise_is_clipped():
    # active movement over many seeds exercises the tails; everything stays inside the bounds
    for seed in range(3000):
        assert_in_ranges(synthesize_sensor_record(features(movement="active", weather="fog", humidity_hint="humid"), seed))


@pytest.mark.parametrize("hint", ["cold", "cool", "mild", "warm", "hot", "unknown"])
def test_temperature_follows_hint_for_every_weather_but_snow(hint):
    low, high = TEMPERATURE_RANGES[hint]
    for weather in VOCABULARY["weather"]:
        if weather == "snow":
            continue
        for seed in range(200):
            t = synthesize_sensor_record(features(temperature_hint=hint, weather=weather), seed)["temperature"]
            assert low <= t <= high, (hint, weather, t)


def test_snow_caps_temperature():
    for hint in VOCABULARY["temperature_hint"]:
        for seed in range(100):
            assert synthesize_sensor_record(features(temperature_hint=hint, weather="snow"), seed)["temperature"] <= 2.0


def test_humidity_follows_weather_and_hint():
    def mean_humidity(**labels):
        return sum(synthesize_sensor_record(features(**labels), s)["humidity"] for s in range(400)) / 400

    assert mean_humidity(weather="fog") > mean_humidity(weather="cloudy") > mean_humidity(weather="clear")
    assert mean_humidity(humidity_hint="humid") > mean_humidity() > mean_humidity(humidity_hint="dry")


def test_imu_spread_follows_movement():
    def spread(movement):
        return sum(abs(synthesize_sensor_record(features(movement=movement), s)["imu"][0]) for s in range(400))

    assert spread("active") > spread("walking") > spread("still")
    assert spread("unknown") == spread("still")  # an unknown movement is drawn at rest
    for seed in range(50):
        acc_z = synthesize_sensor_record(features(movement="still"), seed)["imu"][2]
        assert 9.5 < acc_z < 10.1


def test_wind_direction_by_location():
    seen = set()
    for seed in range(500):
        record = synthesize_sensor_record(features(location="city_walking"), seed)
        seen.add(record["wind_direction"])
        assert record["wind_direction_name"] == COMPASS_POINTS[record["wind_direction"]]
        for shore in ("beach_walking", "sea_voyage"):
            assert synthesize_sensor_record(features(location=shore), seed)["wind_direction"] in ONSHORE_WIND_INDICES
        indoor = synthesize_sensor_record(features(location="indoor", wind="strong"), seed)
        assert indoor["wind_direction"] == 0 and indoor["wind_direction_name"] == "N"
    assert seen == set(range(16))


def test_missing_fields_count_as_unknown_and_bad_labels_raise():
    assert synthesize_sensor_record({}, 1) == synthesize_sensor_record(UNKNOWN, 1)
    with pytest.raises(ValueError, match="location='village'.*validate_labels"):
        synthesize_sensor_record(features(location="village"), 1)
    with pytest.raises(ValueError, match="movement='running'"):
        synthesize_sensor_record(features(movement="running"), 1)


def test_compass_and_wind_phrases():
    assert len(COMPASS_POINTS) == len(WIND_PHRASES) == 16
    assert COMPASS_POINTS[0] == "N" and COMPASS_POINTS[4] == "E" and COMPASS_POINTS[8] == "S"
    assert COMPASS_POINTS[12] == "W" and COMPASS_POINTS[15] == "NNW"
    assert wind_phrase(0) == "from the north"
    assert wind_phrase(2) == "from the northeast"
    assert wind_phrase(15) == "from the north-northwest"
    for bad in (-1, 16, 1.0, True, "3"):
        with pytest.raises(ValueError):
            wind_phrase(bad)


def test_describe_uses_words_only():
    fields = ("temperature_hint", "humidity_hint", "weather", "location", "movement", "wind")
    for seed, combo in enumerate(itertools.product(*(VOCABULARY[name] for name in fields))):
        words = describe_sensor_record(synthesize_sensor_record(features(**dict(zip(fields, combo))), seed))
        assert set(words) == {"temperature", "humidity", "wind", "movement"}
        assert not any(re.search(r"\d", text) for text in words.values()), words


def with_context(record, **context):
    return record | {"context": {**record["context"], **context}}


def test_describe_feels():
    base = synthesize_sensor_record(features(location="field_crossing"), 3)
    assert describe_sensor_record(base | {"temperature": -3.0})["temperature"] == "bitterly cold"
    assert describe_sensor_record(base | {"temperature": 9.0})["temperature"] == "cool"
    assert describe_sensor_record(base | {"temperature": 15.0})["temperature"] == "mild"
    assert describe_sensor_record(base | {"temperature": 21.0})["temperature"] == "warm"
    assert describe_sensor_record(base | {"temperature": 31.0})["temperature"] == "hot"
    assert describe_sensor_record(base | {"humidity": 20.0})["humidity"] == "dry"
    assert describe_sensor_record(base | {"humidity": 50.0})["humidity"] == "comfortable"
    assert describe_sensor_record(base | {"humidity": 80.0})["humidity"] == "humid"
    assert describe_sensor_record(base | {"humidity": 97.0})["humidity"] == "damp and saturated"
    north = base | {"wind_direction": 0}
    assert describe_sensor_record(with_context(north, wind="strong"))["wind"] == "a strong wind from the north"
    assert describe_sensor_record(with_context(north, wind="breeze"))["wind"] == "a light breeze from the north"
    assert describe_sensor_record(with_context(north, scenario="indoor", wind="strong"))["wind"].startswith("no wind")
    assert describe_sensor_record(base | {"movement": "still"})["movement"] == "standing still"


def test_a_record_claims_nothing_the_passage_does_not_show():
    """Issue 22, reproduction 3: an unknown movement was drawn and described as walking (1,075 of 1,075 examples of
    the shared corpus), and the analysed wind never reached the prompt ("That night there was no wind at all" got
    "a wind from the west-northwest")."""
    import numpy as np

    from llava_sensing_pipeline.sensor_synthesis import IMU_NOISE

    unknown = [synthesize_sensor_record(features(), seed) for seed in range(200)]
    acc_xy = np.array([r["imu"][:2] for r in unknown])
    assert acc_xy.std() < 2 * IMU_NOISE["still"][0] < IMU_NOISE["walking"][0]  # at rest, not walking
    words = describe_sensor_record(unknown[0])
    assert words["movement"] == "" and words["wind"] == ""  # nothing said of either
    calm = synthesize_sensor_record(features(wind="calm", location="field_crossing"), 1)
    assert calm["context"]["wind"] == "calm"
    assert describe_sensor_record(calm)["wind"] == "no wind, the air is still"
    prompt = build_generation_prompt(calm, "travel_novel")
    assert "Wind: no wind, the air is still" in prompt and "from the" not in prompt
    assert "Movement:" not in prompt and "the way I move" not in prompt


def test_prompt_words_carry_the_cue_of_their_label():
    """The quality filter expects a paragraph to express each band's label; the words the prompt gives for the
    band must contain a cue word of that label, or a faithful paragraph is rejected."""
    from llava_sensing_pipeline.environment import label_hits
    from llava_sensing_pipeline.sensor_synthesis import HUMIDITY_FEEL, MOVEMENT_PHRASES, TEMPERATURE_FEEL

    for field, bands in (("temperature_hint", TEMPERATURE_FEEL), ("humidity_hint", HUMIDITY_FEEL)):
        for _upper, words, label in bands:
            if label != "moderate":  # "comfortable" air has no opposite, nothing to check
                assert label in label_hits(words).get(field, {}), (words, label)
    for movement, words in MOVEMENT_PHRASES.items():
        assert movement in label_hits(words).get("movement", {}), (words, movement)


def test_file_columns_equal_single_records_and_do_not_depend_on_other_chunks():
    import numpy as np

    from llava_sensing_pipeline.seeding import chunk_streams, uniforms
    from llava_sensing_pipeline.sensor_synthesis import sensor_record, synthesize_sensor_columns

    rows = [features(temperature_hint=t, weather=w, location=loc, movement=m)
            for t, w, loc, m in itertools.product(("cold", "hot", "unknown"), ("snow", "clear"),
                                                  ("indoor", "beach_walking", "city_walking"), ("still", "active"))]
    file_seed = derive_seed(42, "Travel_Novel/B206", "sensors")
    streams = chunk_streams(file_seed, range(len(rows)))
    columns = synthesize_sensor_columns({name: [r[name] for r in rows] for name in ENV_FIELDS}, streams)
    for i, labels in enumerate(rows):
        record = sensor_record(columns, i)
        assert record == synthesize_sensor_record(labels, int(streams[i]))
        assert_in_ranges(record)
    # chunk 5 drawn alone, or among other chunks, gets the same record
    alone = synthesize_sensor_columns({name: [rows[5][name]] for name in ENV_FIELDS}, chunk_streams(file_seed, [5]))
    assert sensor_record(alone, 0) == sensor_record(columns, 5)
    # streams differ per chunk and per file; draws are in (0, 1) and look uniform
    assert len(set(streams.tolist())) == len(rows)
    assert not set(streams.tolist()) & set(chunk_streams(derive_seed(42, "Travel_Novel/B207", "sensors"),
                                                         range(len(rows))).tolist())
    u = uniforms(chunk_streams(file_seed, range(20000)), 3)
    assert 0 < u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03
