"""The per-file assets' plumbing (assets/_partitioned.py), through real Dagster runs: per-partition metadata."""

import pytest
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    DagsterInvariantViolationError,
    Definitions,
    DynamicPartitionsDefinition,
    IOManager,
    asset,
    define_asset_job,
)

from llava_sensing_pipeline.assets._partitioned import add_partition_metadata

KEYS = ["G/a", "G/b", "H/c"]
things = DynamicPartitionsDefinition(name="things")


class Discard(IOManager):
    def handle_output(self, context, obj):
        pass

    def load_input(self, context):
        return None


class PublicOnly:
    """A real context seen through its public API only, as a Dagster whose internals differ would offer it."""

    def __init__(self, context: AssetExecutionContext):
        self._context = context

    @property
    def asset_key(self):
        return self._context.asset_key

    def add_asset_metadata(self, metadata, partition_key):
        self._context.add_asset_metadata(metadata, partition_key=partition_key)


def run_range(public_only: bool) -> dict[str, dict]:
    """A run over every partition whose asset adds different metadata to each; the metadata of each partition's
    materialization, as stored."""

    @asset(partitions_def=things, io_manager_key="discard")
    def tagged(context: AssetExecutionContext):
        for key in context.partition_keys:
            add_partition_metadata(PublicOnly(context) if public_only else context, key,
                                   {"rows": len(KEYS) + KEYS.index(key), "key_again": key})

    defs = Definitions(assets=[tagged], jobs=[define_asset_job("tag_all", [tagged])],
                       resources={"discard": Discard()})
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("things", KEYS)
    result = defs.resolve_job_def("tag_all").execute_in_process(instance=instance, tags={
        "dagster/asset_partition_range_start": KEYS[0], "dagster/asset_partition_range_end": KEYS[-1]})
    assert result.success
    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey("tagged")), limit=10).records
    return {r.partition_key: {k: v.value for k, v in r.asset_materialization.metadata.items()} for r in records}


EXPECTED = {key: {"rows": len(KEYS) + i, "key_again": key} for i, key in enumerate(KEYS)}


def test_partition_metadata_goes_to_each_partition_of_a_range_run(monkeypatch):
    def no_public_call(self, *args, **kwargs):
        raise AssertionError("the public call checks the key against every dynamic partition: not on this path")

    monkeypatch.setattr(AssetExecutionContext, "add_asset_metadata", no_public_call)
    assert run_range(public_only=False) == EXPECTED


def test_partition_metadata_falls_back_to_the_public_call_without_the_internals():
    assert run_range(public_only=True) == EXPECTED


def test_the_public_call_refuses_a_key_outside_the_run():
    """What the fast path skips: the public call's check of the key (the plumbing passes only the run's keys)."""

    @asset(partitions_def=things, io_manager_key="discard")
    def stray(context: AssetExecutionContext):
        add_partition_metadata(PublicOnly(context), "Z/other", {"rows": 1})

    defs = Definitions(assets=[stray], jobs=[define_asset_job("stray_job", [stray])], resources={"discard": Discard()})
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("things", KEYS)
    with pytest.raises(DagsterInvariantViolationError, match="'Z/other' that is not being targeted"):
        defs.resolve_job_def("stray_job").execute_in_process(instance=instance, partition_key=KEYS[0])
