"""chunked_json_exports: the dataset JSON, its chunk files and index, a Parquet copy, train/validation/test splits by
novel and the dataset card, from every file's examples (duplicates removed first)."""

import json
from collections import Counter

import pandas as pd
from dagster import AllPartitionMapping, AssetExecutionContext, AssetIn, Config, Failure, MetadataValue, asset

from ..atomic import display_location
from ..curation import Deduplicator, plan_splits
from ..dataset_card import corpus_manifest, input_licence_note, write_dataset_card
from ..export import order_examples, select_examples, write_export
from ..generation import allocate_quotas
from ..partitions import discover_novels, relative_path_for
from ..settings import PipelineSettings
from ..versions import CODE_VERSIONS

NOT_MATERIALIZED = "not materialized: the partition failed or has not run yet (see the Dagster UI or `llava-sensing status`)"


class ExportConfig(Config):
    """Which partitions the export covers (default: the files now in the input folder, ``max_files`` per genre),
    the reasons the CLI saw for partitions that failed, and the CLI's fingerprint of the export's inputs."""

    partition_keys: list[str] | None = None
    failure_reasons: dict[str, str] = {}
    fingerprint: str = ""  # set by the CLI: lets an unchanged re-run skip the export


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
    code_version=CODE_VERSIONS["chunked_json_exports"],
    kinds={"json", "parquet"},
)
def chunked_json_exports(
    context: AssetExecutionContext, config: ExportConfig, settings: PipelineSettings, generated_examples
) -> pd.DataFrame:
    """``<output>/<mode>_dataset.json``, ``chunks/novel_dataset_chunk_NNN.json``, ``chunks/chunks_index.json``,
    Parquet, ``splits/{train,validation,test}.json`` and the dataset card ``README.md`` with ``card/*.png``."""
    keys = config.partition_keys
    if keys is None:
        keys = [f.key for f in discover_novels(settings.input_dir, settings.max_files)]
    quotas = allocate_quotas(keys, settings.num_examples)
    source_paths = {k: relative_path_for(k).as_posix() for k in keys}
    dedup = Deduplicator(settings.near_duplicate_threshold, seed=settings.seed)
    records, reports = select_examples(generated_examples, quotas, source_paths, dedup)
    failed = [{"partition_key": k, "source_path": source_paths[k],
               "reason": config.failure_reasons.get(k, NOT_MATERIALIZED)}
              for k in sorted(keys) if k not in generated_examples]
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
              **({"shortfall_reason": f"only {r.candidates} candidate chunks"
                  + (" (passages that describe their scene: a known weather, time of day or place)"
                     if settings.mode != "llm" else "")
                  + (f", {r.duplicates} of them duplicates of other examples" if r.duplicates else "")}
                 if r.shortfall else {})}
             for r in reports]
    dedup_summary = dedup.summary()
    result = write_export(
        ordered, settings.output_dir, settings.mode, settings.export_chunk_size,
        index_extra={"seed": settings.seed, "requested_examples": sum(quotas.values()), "files": files,
                     "failed_files": failed, "deduplication": dedup_summary, "split_ratios": plan.ratios,
                     "splits": plan.summary, "split_warnings": plan.warnings,
                     **({"export_fingerprint": config.fingerprint} if config.fingerprint else {})},
        splits=plan.split_records(ordered),
    )
    index = json.loads(result.index_path.read_text(encoding="utf-8"))
    card = write_dataset_card(settings.output_dir, ordered, index,
                              corpus_manifest(settings.input_dir, [r.source_path for r in reports]),
                              CODE_VERSIONS, input_licence_note(settings.input_dir))
    for f in failed:
        context.log.warning(f"not exported: {f['source_path']} ({f['reason']})")
    for warning in plan.warnings:
        context.log.warning(f"splits: {warning}")
    context.add_output_metadata({
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
    })
    return pd.DataFrame(files + [{"partition_key": f["partition_key"], "source_path": f["source_path"], "quota":
                                  quotas[f["partition_key"]], "candidates": 0, "exported": 0,
                                  "shortfall": quotas[f["partition_key"]]} for f in failed],
                        columns=["partition_key", "source_path", "quota", "candidates", "exported", "shortfall"])
