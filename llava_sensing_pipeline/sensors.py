"""Virtual sensor records synthesised from a chunk's environment labels.

Every draw comes from one ``random.Random(seed)``; the caller passes
``derive_seed(global_seed, partition_key, chunk_index, "sensors")``, so a record is reproducible
and no two chunks share a stream. Draw order is fixed: temperature, humidity, wind, IMU.

Units: temperature in degrees Celsius (1 dp), relative humidity in percent (1 dp), wind direction
as a 16-point compass index (0 = north, clockwise in 22.5 degree steps; the direction the wind
comes from), IMU ``[acc_x, acc_y, acc_z, gyro_x, gyro_y, gyro_z]`` in m/s^2 and rad/s (3 dp).
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from llava_sensing_pipeline.environment import VOCABULARY

# Temperature (degrees C) drawn uniformly from the hint's range. An unknown hint uses a broad
# temperate band (10..22): the text gave no evidence, so the reading should be unremarkable and
# neither "cold" nor "hot" in words (upstream used the narrow mild band, 12..18).
TEMPERATURE_RANGES: dict[str, tuple[float, float]] = {
    "cold": (-5.0, 5.0),
    "cool": (5.0, 12.0),
    "mild": (12.0, 18.0),
    "warm": (18.0, 25.0),
    "hot": (25.0, 35.0),
    "unknown": (10.0, 22.0),
}
# Weather nudges the draw (degrees C), and the result is clipped back into the hint's range, so the
# hint always decides the band. Snow is the one override: it caps the temperature at
# SNOW_MAX_TEMPERATURE whatever the hint says.
WEATHER_TEMPERATURE_SHIFT: dict[str, float] = {
    "clear": 1.0,
    "cloudy": -1.0,
    "rain": -2.0,
    "snow": -3.0,
    "fog": -1.0,
    "windy": -2.0,
    "storm": -3.0,
    "unknown": 0.0,
}
SNOW_MAX_TEMPERATURE = 2.0

# Relative humidity (%): base by weather, shifted by the humidity hint, plus N(0, HUMIDITY_NOISE_SD),
# clipped to SENSOR_RANGES["humidity"].
HUMIDITY_BASE: dict[str, float] = {
    "clear": 45.0,
    "cloudy": 65.0,
    "rain": 85.0,
    "snow": 70.0,
    "fog": 95.0,
    "windy": 50.0,
    "storm": 90.0,
    "unknown": 55.0,
}
HUMIDITY_HINT_SHIFT: dict[str, float] = {"dry": -20.0, "moderate": 0.0, "humid": 20.0, "unknown": 0.0}
HUMIDITY_NOISE_SD = 8.0

COMPASS_POINTS: tuple[str, ...] = (
    "N", "NNE", "NE", "ENE", "E", "ESE", "SE", "SSE", "S", "SSW", "SW", "WSW", "W", "WNW", "NW", "NNW",
)
WIND_PHRASES: tuple[str, ...] = tuple(
    "from the " + name
    for name in (
        "north", "north-northeast", "northeast", "east-northeast", "east", "east-southeast",
        "southeast", "south-southeast", "south", "south-southwest", "southwest", "west-southwest",
        "west", "west-northwest", "northwest", "north-northwest",
    )
)
# Shore and sea: the wind comes from the northern sector {NNW, N, NNE, NE} (upstream's "onshore"
# set, kept for continuity). Indoors there is no wind: index 0 and the description says calm.
ONSHORE_WIND_INDICES: tuple[int, ...] = (15, 0, 1, 2)
ONSHORE_LOCATIONS: frozenset[str] = frozenset({"beach_walking", "sea_voyage"})
INDOOR_WIND_INDEX = 0

IMU_FIELDS: tuple[str, ...] = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")
GRAVITY = 9.8
# Standard deviations by movement: (acc_x/acc_y, acc_z around GRAVITY, gyro_x, gyro_y, gyro_z).
# An unknown movement is drawn as walking.
IMU_NOISE: dict[str, tuple[float, float, float, float, float]] = {
    "active": (2.0, 0.5, 0.3, 0.3, 0.1),
    "walking": (0.5, 0.2, 0.1, 0.1, 0.05),
    "still": (0.1, 0.05, 0.02, 0.02, 0.01),
}

# Physical bounds of every value; draws are clipped to them.
SENSOR_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (-5.0, 35.0),
    "humidity": (15.0, 100.0),
    "wind_direction": (0, 15),
    "acc_x": (-20.0, 20.0),
    "acc_y": (-20.0, 20.0),
    "acc_z": (-20.0, 20.0),
    "gyro_x": (-10.0, 10.0),
    "gyro_y": (-10.0, 10.0),
    "gyro_z": (-10.0, 10.0),
}

# Words for the generator prompt (no numbers). Bands are (upper bound exclusive, words).
TEMPERATURE_FEEL: tuple[tuple[float, str], ...] = (
    (0.0, "bitterly cold"),
    (6.0, "cold"),
    (12.0, "cool"),
    (18.0, "mild"),
    (25.0, "warm"),
    (float("inf"), "hot"),
)
HUMIDITY_FEEL: tuple[tuple[float, str], ...] = (
    (35.0, "dry"),
    (65.0, "comfortable"),
    (90.0, "humid"),
    (float("inf"), "saturated"),
)
MOVEMENT_PHRASES: dict[str, str] = {
    "still": "standing still",
    "walking": "walking at an easy pace",
    "active": "moving quickly and energetically",
}
WIND_LEVEL_WORDS: dict[str, str] = {"calm": "barely a breath of air", "breeze": "a light breeze",
                                    "strong": "a strong wind", "unknown": "a wind"}


_TEMPERATURE_LOW, _TEMPERATURE_HIGH = SENSOR_RANGES["temperature"]
_HUMIDITY_LOW, _HUMIDITY_HIGH = SENSOR_RANGES["humidity"]
_IMU_BOUNDS: tuple[tuple[float, float], ...] = tuple(SENSOR_RANGES[name] for name in IMU_FIELDS)
_VOCABULARY_ITEMS = tuple(VOCABULARY.items())


def _checked_labels(features: Mapping[str, str]) -> dict[str, str]:
    labels = {}
    for name, vocabulary in _VOCABULARY_ITEMS:
        value = features.get(name, "unknown")
        if value not in vocabulary:
            raise ValueError(
                f"sensor synthesis: {name}={value!r} is not one of {', '.join(VOCABULARY[name])}; "
                "pass analyzer output through environment.validate_labels first"
            )
        labels[name] = value
    return labels


def synthesize_sensor_record(features: Mapping[str, str], seed: int) -> dict:
    """A sensor record for the ENV_FIELDS labels in ``features`` (missing fields count as "unknown").

    Raises ValueError for a label outside the vocabulary. Same labels and seed give the same record.
    """
    labels = _checked_labels(features)
    rng = random.Random(seed)

    weather = labels["weather"]
    low, high = TEMPERATURE_RANGES[labels["temperature_hint"]]
    temperature = rng.uniform(low, high) + WEATHER_TEMPERATURE_SHIFT[weather]
    temperature = min(max(temperature, low), high)
    if weather == "snow":
        temperature = min(temperature, SNOW_MAX_TEMPERATURE)
    temperature = min(max(temperature, _TEMPERATURE_LOW), _TEMPERATURE_HIGH)

    gauss = rng.gauss
    humidity = HUMIDITY_BASE[weather] + HUMIDITY_HINT_SHIFT[labels["humidity_hint"]] + gauss(0.0, HUMIDITY_NOISE_SD)
    humidity = min(max(humidity, _HUMIDITY_LOW), _HUMIDITY_HIGH)

    location = labels["location"]
    if location == "indoor":
        wind_index = INDOOR_WIND_INDEX
    elif location in ONSHORE_LOCATIONS:
        wind_index = rng.choice(ONSHORE_WIND_INDICES)
    else:
        wind_index = rng.randrange(len(COMPASS_POINTS))

    movement = labels["movement"]
    acc_sd, acc_z_sd, gx_sd, gy_sd, gz_sd = IMU_NOISE.get(movement, IMU_NOISE["walking"])
    draws = (
        gauss(0.0, acc_sd),
        gauss(0.0, acc_sd),
        GRAVITY + gauss(0.0, acc_z_sd),
        gauss(0.0, gx_sd),
        gauss(0.0, gy_sd),
        gauss(0.0, gz_sd),
    )
    imu = [round(min(max(value, lo), hi), 3) for value, (lo, hi) in zip(draws, _IMU_BOUNDS)]

    return {
        "temperature": round(temperature, 1),
        "humidity": round(humidity, 1),
        "wind_direction": wind_index,
        "wind_direction_name": COMPASS_POINTS[wind_index],
        "imu": imu,
        "movement": movement,
        "context": {"scenario": location, "time": labels["time_of_day"], "weather": weather},
    }


def wind_phrase(index: int) -> str:
    """"from the north" ... "from the north-northwest" for a compass index 0..15."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(WIND_PHRASES):
        raise ValueError(f"wind direction index must be an int 0..15, got {index!r}")
    return WIND_PHRASES[index]


def _band(value: float, bands: tuple[tuple[float, str], ...]) -> str:
    return next(words for upper, words in bands if value < upper)


def describe_sensor_record(record: Mapping, wind_level: str = "unknown") -> dict[str, str]:
    """Words (no digits) for a record's temperature, humidity, wind and movement, for a prompt.

    ``wind_level`` is the chunk's wind label (calm/breeze/strong/unknown); indoors is always calm.
    An unknown movement is described as walking, as its IMU values are drawn as walking.
    """
    if record["context"]["scenario"] == "indoor":
        wind = "no wind, the indoor air is still"
    else:
        wind = f"{WIND_LEVEL_WORDS.get(wind_level, WIND_LEVEL_WORDS['unknown'])} {wind_phrase(record['wind_direction'])}"
    return {
        "temperature": _band(record["temperature"], TEMPERATURE_FEEL),
        "humidity": _band(record["humidity"], HUMIDITY_FEEL),
        "wind": wind,
        "movement": MOVEMENT_PHRASES.get(record["movement"], MOVEMENT_PHRASES["walking"]),
    }
