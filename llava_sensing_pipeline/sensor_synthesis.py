"""Virtual sensor records synthesised from a chunk's environment labels.

A file's records are drawn together, vectorised: each chunk's draws come from its own stream,
``chunk_streams(derive_seed(global_seed, partition_key, "sensors"), chunk_index)`` (see
:mod:`~llava_sensing_pipeline.seeding`), so a record is reproducible, does not depend on the other
chunks, and no two chunks share a stream. Draw order is fixed: temperature, humidity, wind, IMU.

Units: temperature in degrees Celsius (1 dp), relative humidity in percent (1 dp), wind direction
as a 16-point compass index (0 = north, clockwise in 22.5 degree steps; the direction the wind
comes from), IMU ``[acc_x, acc_y, acc_z, gyro_x, gyro_y, gyro_z]`` in m/s^2 and rad/s (3 dp).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from llava_sensing_pipeline.environment import ENV_FIELDS, MOVEMENTS, VOCABULARY
from llava_sensing_pipeline.seeding import uniforms

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
# An unknown movement is drawn at rest (IMU_AT_REST): gravity and sensor noise only. A record claims nothing the
# passage does not show, and motion in the IMU is a claim (a narrator sitting by the fire used to be paired with a
# walking IMU); a robot at rest is the reading that asserts least, and the prompt then says nothing of movement.
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

# Words for the generator prompt (no numbers), and the label a faithful paragraph then expresses (the quality
# filter checks the paragraph for that label's cue words, so each band's words contain one of them).
# Bands are (upper bound exclusive, words, label).
TEMPERATURE_FEEL: tuple[tuple[float, str, str], ...] = (
    (0.0, "bitterly cold", "cold"),
    (6.0, "cold", "cold"),
    (12.0, "cool", "cool"),
    (18.0, "mild", "mild"),
    (25.0, "warm", "warm"),
    (float("inf"), "hot", "hot"),
)
HUMIDITY_FEEL: tuple[tuple[float, str, str], ...] = (
    (35.0, "dry", "dry"),
    (65.0, "comfortable", "moderate"),
    (90.0, "humid", "humid"),
    (float("inf"), "damp and saturated", "humid"),
)
MOVEMENT_PHRASES: dict[str, str] = {
    "still": "standing still",
    "walking": "walking at an easy pace",
    "active": "hurrying, moving quickly and energetically",
}
WIND_LEVEL_WORDS: dict[str, str] = {"breeze": "a light breeze", "strong": "a strong wind"}
CALM_WORDS = "no wind, the air is still"
INDOOR_WIND_WORDS = "no wind, the indoor air is still"


_TEMPERATURE_LOW, _TEMPERATURE_HIGH = SENSOR_RANGES["temperature"]
_HUMIDITY_LOW, _HUMIDITY_HIGH = SENSOR_RANGES["humidity"]
_IMU_LOW = np.array([SENSOR_RANGES[name][0] for name in IMU_FIELDS])
_IMU_HIGH = np.array([SENSOR_RANGES[name][1] for name in IMU_FIELDS])
_CODES: dict[str, dict[str, int]] = {name: {label: i for i, label in enumerate(vocab)}
                                     for name, vocab in VOCABULARY.items()}


def _table(field: str, values: Mapping[str, object]) -> np.ndarray:
    """``values[label]`` for each label of ``field``'s vocabulary, indexable by label code."""
    return np.array([values[label] for label in VOCABULARY[field]])


_T_LOW = _table("temperature_hint", {k: v[0] for k, v in TEMPERATURE_RANGES.items()})
_T_HIGH = _table("temperature_hint", {k: v[1] for k, v in TEMPERATURE_RANGES.items()})
_T_SHIFT = _table("weather", WEATHER_TEMPERATURE_SHIFT)
_H_BASE = _table("weather", HUMIDITY_BASE)
_H_SHIFT = _table("humidity_hint", HUMIDITY_HINT_SHIFT)
IMU_AT_REST = "still"
_IMU_SD = np.array([IMU_NOISE.get(m, IMU_NOISE[IMU_AT_REST]) for m in MOVEMENTS])  # by movement code
_IMU_SD = _IMU_SD[:, [0, 0, 1, 2, 3, 4]]  # acc_x and acc_y share a deviation
_ONSHORE = np.array(ONSHORE_WIND_INDICES)
_SNOW, _INDOOR = _CODES["weather"]["snow"], _CODES["location"]["indoor"]
_ONSHORE_CODES = [_CODES["location"][name] for name in sorted(ONSHORE_LOCATIONS)]
# Uniform draws per record, in this order: temperature, humidity (a Box-Muller pair), wind, IMU (three pairs).
DRAWS_PER_RECORD = 10


def _codes(field: str, values: Sequence[str]) -> np.ndarray:
    codes = _CODES[field]
    try:
        return np.fromiter((codes[v] for v in values), dtype=np.int64, count=len(values))
    except KeyError:
        bad = next(v for v in values if v not in codes)
        raise ValueError(
            f"sensor synthesis: {field}={bad!r} is not one of {', '.join(VOCABULARY[field])}; "
            "pass analyzer output through environment.validate_labels first"
        ) from None


def _normals(u1: np.ndarray, u2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two independent standard normal arrays from two uniform arrays in (0, 1) (Box-Muller)."""
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * np.pi * u2
    return radius * np.cos(angle), radius * np.sin(angle)


def synthesize_sensor_columns(labels: Mapping[str, Sequence[str]], streams: np.ndarray) -> dict[str, object]:
    """Sensor records for many chunks at once, as columns: one record per element of ``streams``.

    ``labels`` maps each ENV_FIELD to one label per chunk (a missing field counts as "unknown"); ``streams`` holds
    each chunk's stream key (:func:`~llava_sensing_pipeline.seeding.chunk_streams`), which alone decides its draws.
    Raises ValueError for a label outside the vocabulary. Columns: ``temperature``, ``humidity`` (floats),
    ``wind_direction`` (ints), ``wind_direction_name``, ``imu`` (an ``n x 6`` array), ``movement``, ``scenario``,
    ``time``, ``weather``, ``wind`` (the wind label: what the prompt may say of the wind).
    """
    n = len(streams)
    column = {name: labels.get(name) if labels.get(name) is not None else ["unknown"] * n for name in ENV_FIELDS}
    code = {name: _codes(name, column[name]) for name in ENV_FIELDS}
    u = uniforms(streams, DRAWS_PER_RECORD)

    hint, weather = code["temperature_hint"], code["weather"]
    low, high = _T_LOW[hint], _T_HIGH[hint]
    temperature = np.clip(low + (high - low) * u[:, 0] + _T_SHIFT[weather], low, high)
    temperature = np.where(weather == _SNOW, np.minimum(temperature, SNOW_MAX_TEMPERATURE), temperature)
    temperature = np.clip(temperature, _TEMPERATURE_LOW, _TEMPERATURE_HIGH)

    noise, _ = _normals(u[:, 1], u[:, 2])
    humidity = np.clip(_H_BASE[weather] + _H_SHIFT[code["humidity_hint"]] + HUMIDITY_NOISE_SD * noise,
                       _HUMIDITY_LOW, _HUMIDITY_HIGH)

    location = code["location"]
    wind = np.where(np.isin(location, _ONSHORE_CODES), _ONSHORE[(u[:, 3] * len(_ONSHORE)).astype(np.int64)],
                    (u[:, 3] * len(COMPASS_POINTS)).astype(np.int64))
    wind = np.where(location == _INDOOR, INDOOR_WIND_INDEX, wind)

    normals = np.column_stack([z for j in (4, 6, 8) for z in _normals(u[:, j], u[:, j + 1])])
    imu = normals * _IMU_SD[code["movement"]]
    imu[:, 2] += GRAVITY
    imu = np.round(np.clip(imu, _IMU_LOW, _IMU_HIGH), 3)

    return {
        "temperature": np.round(temperature, 1),
        "humidity": np.round(humidity, 1),
        "wind_direction": wind,
        "wind_direction_name": [COMPASS_POINTS[i] for i in wind.tolist()],
        "imu": imu,
        "movement": list(column["movement"]),
        "scenario": list(column["location"]),
        "time": list(column["time_of_day"]),
        "weather": list(column["weather"]),
        "wind": list(column["wind"]),
    }


SENSOR_COLUMNS: tuple[str, ...] = ("temperature", "humidity", "wind_direction", "wind_direction_name", "imu",
                                   "movement", "scenario", "time", "weather", "wind")
"""The columns of :func:`synthesize_sensor_columns` (and of the ``sensor_records`` table)."""


def sensor_record(columns: Mapping[str, object], i: int) -> dict:
    """Record ``i`` of :func:`synthesize_sensor_columns`' output (or any columns named ``SENSOR_COLUMNS``) as a
    plain dict: the export's ``sensor_data``."""
    return {
        "temperature": float(columns["temperature"][i]),
        "humidity": float(columns["humidity"][i]),
        "wind_direction": int(columns["wind_direction"][i]),
        "wind_direction_name": columns["wind_direction_name"][i],
        "imu": [float(v) for v in columns["imu"][i]],
        "movement": columns["movement"][i],
        "context": {"scenario": columns["scenario"][i], "time": columns["time"][i], "weather": columns["weather"][i],
                    "wind": columns["wind"][i]},
    }


def synthesize_sensor_record(features: Mapping[str, str], seed: int) -> dict:
    """One record for the ENV_FIELDS labels in ``features`` (missing fields count as "unknown") from stream key
    ``seed``; the same labels and seed give the same record. Raises ValueError for a label outside the
    vocabulary."""
    columns = synthesize_sensor_columns({name: [features.get(name, "unknown")] for name in ENV_FIELDS},
                                        np.array([seed & (2**64 - 1)], dtype=np.uint64))
    return sensor_record(columns, 0)


def wind_phrase(index: int) -> str:
    """"from the north" ... "from the north-northwest" for a compass index 0..15."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(WIND_PHRASES):
        raise ValueError(f"wind direction index must be an int 0..15, got {index!r}")
    return WIND_PHRASES[index]


def band(value: float, bands: tuple[tuple[float, str, str], ...]) -> tuple[str, str]:
    """The (words, label) of the band ``value`` falls in."""
    return next((words, label) for upper, words, label in bands if value < upper)


def describe_sensor_record(record: Mapping) -> dict[str, str]:
    """Words (no digits) for a record's temperature, humidity, wind and movement, for a prompt; ``""`` for what
    the passage did not show, which the prompt then leaves out.

    The wind comes from the record's wind label (``context.wind``): calm is still air, a breeze or a strong wind
    blows from the vane's direction, an unknown wind is not described (the vane still reads a direction, but the
    passage said nothing of wind); indoors there is none. An unknown movement is not described (its IMU is drawn at
    rest).
    """
    level = record["context"].get("wind", "unknown")
    if record["context"]["scenario"] == "indoor":
        wind = INDOOR_WIND_WORDS
    elif level == "calm":
        wind = CALM_WORDS
    elif level in WIND_LEVEL_WORDS:
        wind = f"{WIND_LEVEL_WORDS[level]} {wind_phrase(record['wind_direction'])}"
    else:
        wind = ""
    return {
        "temperature": band(record["temperature"], TEMPERATURE_FEEL)[0],
        "humidity": band(record["humidity"], HUMIDITY_FEEL)[0],
        "wind": wind,
        "movement": MOVEMENT_PHRASES.get(record["movement"], ""),
    }
