import fsspec
import pandas as pd
import pytest
from dagster import AssetKey, build_input_context, build_output_context

from llava_sensing_pipeline.io_managers import PartitionedParquetIOManager, PartitionTables


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


@pytest.fixture
def memory_base(tmp_path):
    """A fresh ``memory://`` folder (fsspec's in-process filesystem, a second protocol besides local files)."""
    fs = fsspec.filesystem("memory")
    root = f"/{tmp_path.name}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_memory_protocol_round_trip(memory_base):
    fs, root = memory_base
    manager = PartitionedParquetIOManager(base_dir=f"memory://{root.lstrip('/')}/storage")
    keys = ["Modernist_Novel/A039_Some_Do_Not%2E%2E%2E", "Travel_Novel/B902_North by Rail!"]
    frames = {k: pd.DataFrame({"i": [n, n + 1], "t": [k, "é"]}) for n, k in enumerate(keys)}
    for key, frame in frames.items():
        manager.handle_output(build_output_context(asset_key=AssetKey("text_chunks"), partition_key=key), frame)
    # one object per partition, written whole (no temporary objects), named by the unchanged key
    assert sorted(fs.find(root)) == [f"{root}/storage/text_chunks/{k}.parquet" for k in sorted(keys)]
    for key, frame in frames.items():
        loaded = manager.load_input(build_input_context(asset_key=AssetKey("text_chunks"), partition_key=key))
        pd.testing.assert_frame_equal(loaded, frame)
    with fs.open(f"{root}/storage/text_chunks/{keys[1]}.parquet", "rb") as fh:  # plain Parquet, readable by anyone
        pd.testing.assert_frame_equal(pd.read_parquet(fh), frames[keys[1]])


def test_memory_protocol_unpartitioned_and_missing(memory_base):
    fs, root = memory_base
    manager = PartitionedParquetIOManager(base_dir=f"memory://{root.lstrip('/')}")
    frame = pd.DataFrame({"n": [3]})
    manager.handle_output(build_output_context(asset_key=AssetKey("chunked_json_exports")), frame)
    assert fs.exists(f"{root}/chunked_json_exports.parquet")
    pd.testing.assert_frame_equal(manager.load_input(build_input_context(asset_key=AssetKey("chunked_json_exports"))), frame)
    with pytest.raises(FileNotFoundError, match=rf"memory://{root.lstrip('/')}/text_chunks/G/x.parquet is missing"):
        manager.load_input(build_input_context(asset_key=AssetKey("text_chunks"), partition_key="G/x"))


def test_a_range_output_is_written_per_partition_and_then_released(tmp_path):
    """Dagster's in-process execution keeps every step output until the run ends; the tables of a range run are
    written one file per partition and the output emptied, so a batch is not held in memory."""
    from types import SimpleNamespace

    manager = PartitionedParquetIOManager(base_dir=str(tmp_path))
    keys = ["G/a", "G/b"]
    context = SimpleNamespace(asset_key=AssetKey("text_chunks"), has_asset_partitions=True, asset_partition_keys=keys)
    tables = PartitionTables({k: pd.DataFrame({"t": [k]}) for k in keys})
    manager.handle_output(context, tables)
    assert tables == {}
    stored = [pd.read_parquet(tmp_path / "text_chunks" / f"{k}.parquet")["t"].tolist() for k in keys]
    assert stored == [[k] for k in keys]
    plain = {k: pd.DataFrame({"t": [k]}) for k in keys}  # any other mapping is left as it is
    manager.handle_output(context, plain)
    assert set(plain) == set(keys)
    with pytest.raises(TypeError, match="one DataFrame per partition"):
        manager.handle_output(context, PartitionTables({"G/a": pd.DataFrame()}))
