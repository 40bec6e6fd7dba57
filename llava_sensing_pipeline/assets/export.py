"""chunked_json_exports: the dataset JSON, its chunk files and index, a Parquet copy, train/validation/test splits by
novel and the dataset card, from every file's examples (duplicates removed first)."""

import json
from collections import Counter

import pandas as pd
from dagster import (
    AllPartitionMapping,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AutomationCondition,
    Failure,
    MetadataValue,
    asset,
)

from ..atomic import display_location
from ..curation import Deduplicator, plan_splits
from ..dataset_card import corpus_manifest, input_licence_note, write_dataset_card
from ..export import order_examples, select_examples, write_export
from ..generation import allocate_quotas
from ..partitions import discover_novels, latest_records, registered_keys, relative_path_for
from ..planning import EXPORTED_PARTITIONS, FAILED_PARTITIONS, failure_reasons, partition_states
from ..settings import PipelineSettings
from .generation import USABLE_NOTE_KEY

NOT_MATERIALIZED = "not materialized: the partition failed or has not run yet (see the Dagster UI or `llava-sensing status`)"


# Refresh once the examples changed, whoever materialized them (the CLI, a UI backfill, novel_file_sensor's runs,
# the schedule), and not while any of them is still being materialized; a run that already wrote the export (the
# CLI's) counts as handled. Evaluated by ``export_automation_sensor``.
EXPORT_AUTOMATION = (
    (AutomationCondition.newly_missing() | AutomationCondition.any_deps_updated()).since_last_handled()
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
).with_label("examples updated, none in progress")


def _code_versions(context: AssetExecutionContext) -> dict[str, str]:
    """Each asset's code version (its code and the settings of its stage), for the dataset card."""
    graph = context.job_def.asset_layer.asset_graph
    return {key.to_user_string(): graph.get(key).code_version or "" for key in sorted(graph.materializable_asset_keys)}


def usable_notes(instance, keys: list[str]) -> dict[str, str]:
    """Each partition's note on its usable passages, from its latest ``generated_examples`` materialization."""
    if not keys:
        return {}
    records = latest_records(instance, AssetKey("generated_examples"), keys)
    notes = {}
    for key, record in records.items():
        value = record.asset_materialization.metadata.get(USABLE_NOTE_KEY) if record.asset_materialization else None
        if value is not None:
            notes[key] = value.value
    return notes


def _distribution(records, path) -> dict[str, int]:
    counts = Counter()
    for r in records:
        value = r
        for part in path:
            value = value[part]
        counts[str(value)] += 1
    return dict(sorted(counts.items()))


@asset(
    ins={"generated_examples": AssetIn(partition_mapping=AllPartitionMapping(),
                                       metadata={"allow_missing_partitions": True})},
    io_manager_key="parquet_io_manager",
    group_name="export",
    kinds={"json", "parquet"},
    automation_condition=EXPORT_AUTOMATION,
)
def chunked_json_exports(
    context: AssetExecutionContext, settings: PipelineSettings, generated_examples
) -> pd.DataFrame:
    """``<output>/<mode>_dataset.json``, ``chunks/novel_dataset_chunk_NNN.json``, ``chunks/chunks_index.json``,
    Parquet, ``splits/{train,validation,test}.json`` and the dataset card ``README.md`` with ``card/*.png``.

    Covers the files now selected in the input folder; a file whose per-file assets are not all materialized
    (failed, or never run) is listed under ``failed_files`` with the error Dagster recorded."""
    keys = [f.key for f in discover_novels(settings.input_dir, settings.max_files)]
    registered = set(registered_keys(context.instance))
    states = partition_states(context.instance, [k for k in keys if k in registered])
    not_ready = sorted(k for k in keys if states.get(k, "missing") != "materialized" or k not in generated_examples)
    failures = {k: failure_reasons(context.instance, not_ready).get(k, NOT_MATERIALIZED) for k in not_ready}
    notes = usable_notes(context.instance, [k for k in keys if k not in failures])
    table, metadata = export_dataset(context.log, settings, keys, generated_examples.without(not_ready), failures,
                                     notes, _code_versions(context))
    context.add_output_metadata(metadata)
    return table


def export_dataset(log, settings: PipelineSettings, keys: list[str], generated_examples, failures: dict[str, str],
                   notes: dict[str, str], code_versions: dict[str, str]) -> tuple[pd.DataFrame, dict]:
    """Writes the export of ``keys`` from their examples (``failures``: partition -> reason, for those without);
    returns the per-file table and the export's figures (its materialization metadata). ``log`` gets a warning
    per file not exported."""
    not_ready = sorted(failures)
    quotas = allocate_quotas(keys, settings.num_examples)
    source_paths = {k: relative_path_for(k).as_posix() for k in keys}
    dedup = Deduplicator(settings.near_duplicate_threshold, seed=settings.seed)
    records, reports = select_examples(generated_examples, quotas, source_paths, dedup)
    failed = [{"partition_key": k, "source_path": source_paths[k], "reason": failures[k]}
              for k in not_ready]
    if not records:
        raise Failure(
            f"no examples to export from {len(keys)} file(s) ({len(failed)} failed or not materialized); nothing "
            "was written. In the LLM modes, check the model's output (partition metadata lists rejection reasons) "
            "or relax --min-alignment / --confidence-threshold; in simple mode, lower --min-confidence.")
    ordered = order_examples(records, settings.seed)
    plan = plan_splits(ordered, settings.split_ratios, settings.seed)
    files = [{"partition_key": r.partition_key, "source_path": r.source_path, "quota": r.quota,
              "candidates": r.candidates, "exported": r.exported, "shortfall": r.shortfall,
              "duplicates_removed": r.duplicates,
              **({"shortfall_cause": r.shortfall_cause,
                  "shortfall_reason": r.shortfall_reason(notes.get(r.partition_key, ""))} if r.shortfall else {})}
             for r in reports]
    warnings = [f"{f['source_path']}: no examples: {f['shortfall_reason']}" for f in files
                if f["quota"] and not f["exported"]]
    dedup_summary = dedup.summary()
    result = write_export(
        ordered, settings.output_dir, settings.mode, settings.export_chunk_size,
        index_extra={"seed": settings.seed, "requested_examples": sum(quotas.values()), "files": files,
                     "failed_files": failed, "warnings": warnings, "deduplication": dedup_summary,
                     "split_ratios": plan.ratios, "splits": plan.summary, "split_warnings": plan.warnings},
        splits=plan.split_records(ordered),
    )
    index = json.loads(result.index_path.read_text(encoding="utf-8"))
    card = write_dataset_card(settings.output_dir, ordered, index,
                              corpus_manifest(settings.input_dir, [r.source_path for r in reports]),
                              code_versions, input_licence_note(settings.input_dir))
    if failed:  # their reasons are in the index (failed_files) and each partition's failure: not repeated here
        paths = [f["source_path"] for f in failed]
        log.warning(f"not exported: {len(paths)} failed file(s), listed with their reasons in the index's "
                    f"failed_files: {', '.join(paths[:5])}{' …' if len(paths) > 5 else ''}")
    if warnings:  # each one, with its reason, is in the index: one line here, not one event per file
        empty = [f["source_path"] for f in files if f["quota"] and not f["exported"]]
        log.warning(f"{len(empty)} file(s) with no examples, each listed with its reason in the index's warnings: "
                    f"{', '.join(empty[:5])}{' …' if len(empty) > 5 else ''}")
    for warning in plan.warnings:
        log.warning(f"splits: {warning}")
    metadata = {
        EXPORTED_PARTITIONS: MetadataValue.json(sorted(keys)),
        FAILED_PARTITIONS: MetadataValue.json(not_ready),
        "examples": len(ordered),
        "requested": sum(quotas.values()),
        "files_exported": len(reports),
        "files_failed": len(failed),
        "files_with_shortfall": sum(1 for r in reports if r.shortfall),
        "chunk_files": len(result.chunk_paths),
        "stale_chunk_files_removed": len(result.removed_stale),
        "duplicates_removed": dedup_summary["removed"],
        "exact_duplicates_removed": dedup_summary["exact"],
        "near_duplicates_removed": dedup_summary["near"],
        "split_examples": MetadataValue.json({k: v["examples"] for k, v in plan.summary.items()}),
        "split_novels": MetadataValue.json({k: len(v["novels"]) for k, v in plan.summary.items()}),
        "split_warnings": MetadataValue.json(plan.warnings),
        "dataset_card": MetadataValue.path(display_location(card)),
        "dataset_path": MetadataValue.path(display_location(result.dataset_path)),
        "style_distribution": MetadataValue.json(_distribution(ordered, ["literary_style"])),
        "time_distribution": MetadataValue.json(_distribution(ordered, ["sensor_data", "context", "time"])),
        "weather_distribution": MetadataValue.json(_distribution(ordered, ["sensor_data", "context", "weather"])),
        "scenario_distribution": MetadataValue.json(_distribution(ordered, ["sensor_data", "context", "scenario"])),
        "movement_distribution": MetadataValue.json(_distribution(ordered, ["sensor_data", "movement"])),
    }
    return pd.DataFrame(files + [{"partition_key": f["partition_key"], "source_path": f["source_path"], "quota":
                                  quotas[f["partition_key"]], "candidates": 0, "exported": 0,
                                  "shortfall": quotas[f["partition_key"]]} for f in failed],
                        columns=["partition_key", "source_path", "quota", "candidates", "exported", "shortfall"]), metadata
