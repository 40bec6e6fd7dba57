"""The per-file assets' plumbing (assets/_partitioned.py): per-partition metadata and in-step checks."""

from types import SimpleNamespace

from dagster import AssetKey

from llava_sensing_pipeline.assets._partitioned import add_partition_metadata


def test_partition_metadata_uses_the_public_call_when_dagster_internals_differ():
    calls = []
    context = SimpleNamespace(asset_key=AssetKey("text_chunks"), add_asset_metadata=lambda metadata, partition_key:
                              calls.append((metadata, partition_key)))
    add_partition_metadata(context, "G/a", {"rows": 3})
    assert calls == [({"rows": 3}, "G/a")]


def test_partition_metadata_goes_to_the_step_accumulator():
    class Accumulator:
        def __init__(self, added=()):
            self.added = list(added)

        def with_additional_asset_metadata(self, asset_key, metadata, partition_key):
            return Accumulator([*self.added, (asset_key, metadata, partition_key)])

    step = SimpleNamespace(_metadata_accumulator=Accumulator())
    context = SimpleNamespace(asset_key=AssetKey("text_chunks"),
                              op_execution_context=SimpleNamespace(_step_execution_context=step))
    add_partition_metadata(context, "G/a", {"rows": 3})
    add_partition_metadata(context, "G/b", {"rows": 4})
    assert step._metadata_accumulator.added == [(AssetKey("text_chunks"), {"rows": 3}, "G/a"),
                                                (AssetKey("text_chunks"), {"rows": 4}, "G/b")]
