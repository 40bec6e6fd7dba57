"""environment_features: weather, time of day, place, temperature and humidity cues, movement and wind per chunk.

``simple`` mode labels every chunk with the rule analyzer. The LLM modes also ask the model, for the chunks they
will need only: in the file's seeded selection order until ``quota × analysis_margin`` chunks pass the confidence
threshold (in hybrid mode, and know at least one context field; the margin covers generations that get rejected). The other chunks keep their rule labels and are not
used as LLM-mode examples.
"""

import json
import math

import pandas as pd
from dagster import AssetExecutionContext, Backoff, Failure, Jitter, MetadataValue, Output, RetryPolicy, asset

from ..checks import LABELS_IN_VOCABULARY, label_problems
from ..environment import ENV_FIELDS, analyze_columns, features_at
from ..environment_llm import ANALYSIS_SCHEMA, analysis_messages, analysis_options, interpret_analysis
from ..generation import MIN_SCENE_FIELDS, Outcome, scene_fields, selection_order, walk_until_quota
from ..ollama_resource import CallStats, LLMCallFailed, OllamaResource
from ..partitions import selection_quotas
from ..seeding import derive_seed
from ..settings import PipelineSettings
from ._partitioned import for_each_partition, json_column, pick, progress_logger, run_check
from .novels import LLM_POOL, PER_FILE


def rule_features(chunks: pd.DataFrame, columns: dict[str, list] | None = None) -> pd.DataFrame:
    """The rule analyzer's labels, confidence and matched cue words per chunk (``columns``: the chunks'
    :func:`analyze_columns`, when the caller already has it), keyed by ``chunk_index``."""
    if columns is None:
        columns = analyze_columns(chunks["text"].tolist())
    return pd.DataFrame({
        "chunk_index": chunks["chunk_index"].to_numpy(),
        "chars": chunks["chars"].to_numpy(),
        **{name: columns[name] for name in ENV_FIELDS},
        "confidence": columns["confidence"],
        "cues": json_column(columns["cues"]),
        "env_source": "rules",
    })


def analysis_record(row) -> dict:
    """The ``environmental_analysis`` of an example: the chunk's labels, confidence, cue words and source, and for
    an LLM-analysed chunk the model's raw reply, its own confidence and the fields the rules filled in."""
    record = {**{name: getattr(row, name) for name in ENV_FIELDS}, "confidence": float(row.confidence),
              "cues": json.loads(row.cues), "source": row.env_source}
    if row.env_source == "llm":
        llm = json.loads(row.llm)
        record.update(raw_reply=llm["raw"], llm_labels=llm["llm_labels"], llm_confidence=llm["llm_confidence"],
                      rule_fields=llm["rule_fields"])
    return record


def check_failure_share(step: str, key: str, stats: CallStats, attempted: int, max_share: float) -> None:
    """Fails the partition (after its finished replies are cached) when too many calls failed."""
    if attempted and stats.failures / attempted > max_share:
        raise Failure(f"{step} {key}: {stats.failures} of {attempted} LLM requests failed after retries "
                      f"(more than {max_share:.0%}); finished replies are cached, so re-running this partition "
                      f"only pays for the rest. Check the Ollama server.")


def llm_features(context, settings: PipelineSettings, ollama: OllamaResource, key: str, chunks: pd.DataFrame,
                 quota: int):
    """Rule labels for every chunk, then LLM analysis of the chunks needed for the file's ``quota``."""
    texts = chunks["text"].tolist()
    rules = analyze_columns(texts)
    frame = rule_features(chunks, rules)
    frame["llm"] = ""
    target = math.ceil(quota * settings.analysis_margin)
    order = selection_order(len(frame), settings.seed, key)
    candidates = [pos for pos in order if frame.at[pos, "chars"] >= settings.min_chunk_chars]
    stats = CallStats()

    def analyze(pos: int) -> Outcome:
        seed = derive_seed(settings.seed, key, int(frame.at[pos, "chunk_index"]), "analysis") % 2**31
        options = analysis_options(seed)
        try:
            reply = ollama.chat(analysis_messages(texts[pos]), options=options, fmt=ANALYSIS_SCHEMA)
        except LLMCallFailed as exc:
            stats.record_failure(exc.attempts)
            return Outcome(False, error=str(exc))
        stats.record(reply)
        result = interpret_analysis(reply.text, features_at(rules, pos))
        scene = settings.mode != "hybrid" or scene_fields(result["labels"]) >= MIN_SCENE_FIELDS
        return Outcome(result["confidence"] >= settings.llm_confidence_threshold and scene, result)

    ollama.attach_log(context.log.warning)  # outage messages: the CLI's console and the run's logs in the UI
    outages_before = ollama.outage_counters()
    ollama.wait_ready()
    outcomes = walk_until_quota(candidates, target, analyze, ollama.total_slots,
                                progress_logger(context, f"{key} analysis", len(candidates)),
                                on_interrupt=ollama.stop_waiting)
    for pos, outcome in outcomes.items():
        if outcome.value is None:
            continue
        result = outcome.value
        for field in ENV_FIELDS:
            frame.at[pos, field] = result["labels"][field]
        frame.at[pos, "confidence"] = result["confidence"]
        frame.at[pos, "env_source"] = "llm"
        frame.at[pos, "llm"] = json.dumps({k: result[k] for k in (
            "raw", "llm_labels", "invalid_fields", "rule_fields", "llm_confidence", "valid_json")}, ensure_ascii=False)
    check_failure_share("environment_features", key, stats, len(outcomes), settings.max_failure_share)
    analyzed = [o.value for o in outcomes.values() if o.value is not None]
    context.log.info(f"{key}: analysed {len(outcomes)} chunk(s) with the LLM, "
                     f"{sum(o.accepted for o in outcomes.values())} above the threshold (target {target})")
    metadata = {
        "analysis_target": target,
        "analysed_chunks": len(outcomes),
        "above_threshold": sum(o.accepted for o in outcomes.values()),
        "invalid_json_replies": sum(1 for r in analyzed if not r["valid_json"]),
        "fields_filled_by_rules": sum(len(r["rule_fields"]) for r in analyzed),
        "mean_llm_confidence": round(sum(r["confidence"] for r in analyzed) / len(analyzed), 3) if analyzed else 0.0,
        **stats.summary("analysis"),
        **ollama.outage_metadata(outages_before),
        "hosts": MetadataValue.json(ollama.host_metadata()),
    }
    return frame, metadata


@asset(**PER_FILE, kinds={"pandas", "parquet"},
       retry_policy=RetryPolicy(max_retries=2, delay=1, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS),
       pool=LLM_POOL, check_specs=[LABELS_IN_VOCABULARY])
def environment_features(
    context: AssetExecutionContext, settings: PipelineSettings, ollama: OllamaResource, text_chunks
):
    """Rule analysis of every chunk (whole-word vocabularies, "unknown" when nothing is found); in the LLM modes,
    LLM analysis of the chunks the file's quota needs, validated and gap-filled by the rules."""

    quotas = selection_quotas(settings.input_dir, settings.max_files, settings.num_examples)  # once per step

    def one(key: str, chunks: pd.DataFrame):
        if settings.mode == "simple":
            frame, metadata = rule_features(chunks), {}
        else:
            frame, metadata = llm_features(context, settings, ollama, key, chunks, quotas.get(key, 0))
        return frame, {
            "chunks": len(frame),
            "mean_confidence": round(float(frame["confidence"].mean()), 3) if len(frame) else 0.0,
            "known_time_share": round(float((frame["time_of_day"] != "unknown").mean()), 3) if len(frame) else 0.0,
            "known_weather_share": round(float((frame["weather"] != "unknown").mean()), 3) if len(frame) else 0.0,
            **metadata,
        }

    frames = for_each_partition(context, one, text_chunks)
    check = run_check(context, LABELS_IN_VOCABULARY, frames, lambda key, frame: label_problems(
        frame, pick(text_chunks, key)["chunk_index"].tolist()), "chunks")
    yield Output(frames)
    yield from check.report(context)
