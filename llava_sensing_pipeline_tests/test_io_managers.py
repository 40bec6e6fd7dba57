import pandas as pd
import pytest
from dagster import AssetKey, build_input_context, build_output_context

from llava_sensing_pipeline.io_managers import PartitionedParquetIOManager
from llava_sensing_pipeline.partitions import novel_partitions


def _out(keys):
    return build_output_context(asset_key=AssetKey("text_chunks"), partition_key=keys[0] if len(keys) == 1 else None)


def test_single_partition_round_trip(tmp_path):
    manager = PartitionedParquetIOManager(base_dir=str(tmp_path))
    frame = pd.DataFrame({"a": [1, 2], "t": ["x", "é"]})
    manager.handle_output(build_output_context(asset_key=AssetKey("text_chunks"),
                                               partition_key="Travel_Novel/B1 x!"), frame)
    path = tmp_path / "text_chunks" / "Travel_Novel" / "B1 x!.parquet"
    assert path.exists()
    assert not list(tmp_path.rglob("*.tmp"))
    loaded = manager.load_input(build_input_context(asset_key=AssetKey("text_chunks"),
                                                    partition_key="Travel_Novel/B1 x!"))
    pd.testing.assert_frame_equal(loaded, frame)


def test_missing_partition_names_the_fix(tmp_path):
    manager = PartitionedParquetIOManager(base_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="materialize partition"):
        manager.load_input(build_input_context(asset_key=AssetKey("text_chunks"), partition_key="G/x"))


def test_unpartitioned_round_trip(tmp_path):
    manager = PartitionedParquetIOManager(base_dir=str(tmp_path))
    frame = pd.DataFrame({"n": [3]})
    manager.handle_output(build_output_context(asset_key=AssetKey("chunked_json_exports")), frame)
    assert (tmp_path / "chunked_json_exports.parquet").exists()
    pd.testing.assert_frame_equal(manager.load_input(build_input_context(asset_key=AssetKey("chunked_json_exports"))), frame)
