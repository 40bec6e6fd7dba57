"""sensor_records: a virtual sensor reading per chunk, drawn from its environment labels with a seeded generator."""

import json

import pandas as pd
from dagster import AssetExecutionContext, asset

from ..environment import ENV_FIELDS
from ..seeding import derive_seed
from ..sensors import synthesize_sensor_record
from ..settings import PipelineSettings
from ..versions import CODE_VERSIONS
from ._partitioned import for_each_partition, json_column
from .novels import PER_FILE

SENSOR_COLUMNS = ["temperature", "humidity", "wind_direction", "wind_direction_name", "imu", "movement"]


def add_sensor_records(features: pd.DataFrame, global_seed: int, key: str) -> pd.DataFrame:
    records = []
    for row in features[list(ENV_FIELDS) + ["chunk_index"]].itertuples(index=False):
        labels = {f: getattr(row, f) for f in ENV_FIELDS}
        records.append(synthesize_sensor_record(labels, derive_seed(global_seed, key, row.chunk_index, "sensors")))
    frame = features.copy()
    for col in SENSOR_COLUMNS:
        frame[col] = [r[col] for r in records]
    frame["sensor_context"] = json_column(r["context"] for r in records)
    return frame


def sensor_record_from_row(row) -> dict:
    """The sensor record of one row of the ``sensor_records`` table (as ``synthesize_sensor_record`` returned it)."""
    record = {col: getattr(row, col) for col in SENSOR_COLUMNS}
    record["imu"] = [float(v) for v in record["imu"]]
    record["wind_direction"] = int(record["wind_direction"])
    record["temperature"] = float(record["temperature"])
    record["humidity"] = float(record["humidity"])
    record["context"] = json.loads(row.sensor_context)
    return record


@asset(**PER_FILE, code_version=CODE_VERSIONS["sensor_records"], kinds={"pandas", "parquet"})
def sensor_records(context: AssetExecutionContext, settings: PipelineSettings, environment_features):
    """Temperature, humidity, 16-point wind, 6-axis IMU and context per chunk; seeded by (seed, file, chunk)."""

    def one(key: str, features: pd.DataFrame):
        frame = add_sensor_records(features, settings.seed, key)
        return frame, {
            "records": len(frame),
            "mean_temperature_c": round(float(frame["temperature"].mean()), 2) if len(frame) else 0.0,
            "mean_humidity_pct": round(float(frame["humidity"].mean()), 2) if len(frame) else 0.0,
        }

    return for_each_partition(context, one, environment_features)
