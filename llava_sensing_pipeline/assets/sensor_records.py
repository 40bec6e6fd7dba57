"""sensor_records: a virtual sensor reading per chunk, drawn from its environment labels with a seeded generator."""

import pandas as pd
from dagster import AssetExecutionContext, asset

from ..environment import ENV_FIELDS
from ..seeding import chunk_streams, derive_seed
from ..sensor_synthesis import SENSOR_COLUMNS, sensor_record, synthesize_sensor_columns
from ..settings import PipelineSettings
from ._partitioned import for_each_partition
from .novels import PER_FILE


def sensor_table(features: pd.DataFrame, global_seed: int, key: str) -> pd.DataFrame:
    """A sensor record per chunk of ``features`` (its environment labels), keyed by ``chunk_index``: each chunk's
    draws come from the stream of (global seed, file, chunk index)."""
    streams = chunk_streams(derive_seed(global_seed, key, "sensors"), features["chunk_index"].to_numpy())
    columns = synthesize_sensor_columns({name: features[name].tolist() for name in ENV_FIELDS}, streams)
    return pd.DataFrame({"chunk_index": features["chunk_index"].to_numpy(), **columns,
                         "imu": list(columns["imu"])})


def sensor_record_from_row(row) -> dict:
    """The sensor record of one row of the ``sensor_records`` table (the export's ``sensor_data``)."""
    return sensor_record({name: (getattr(row, name),) for name in SENSOR_COLUMNS}, 0)


@asset(**PER_FILE, kinds={"pandas", "parquet"})
def sensor_records(context: AssetExecutionContext, settings: PipelineSettings, environment_features):
    """Temperature, humidity, 16-point wind, 6-axis IMU and context per chunk; seeded by (seed, file, chunk)."""

    def one(key: str, features: pd.DataFrame):
        frame = sensor_table(features, settings.seed, key)
        return frame, {
            "records": len(frame),
            "mean_temperature_c": round(float(frame["temperature"].mean()), 2) if len(frame) else 0.0,
            "mean_humidity_pct": round(float(frame["humidity"].mean()), 2) if len(frame) else 0.0,
        }

    return for_each_partition(context, one, environment_features)
