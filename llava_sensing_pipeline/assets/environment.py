"""environment_features: weather, time of day, place, temperature and humidity cues, movement and wind per chunk.

``simple`` mode labels every chunk with the rule analyzer. The LLM modes also ask the model, for the chunks they
will need only: in the file's seeded selection order until ``quota × analysis_margin`` chunks pass the confidence
threshold (in hybrid mode, and know at least one context field; the margin covers generations that get rejected),
and at most ``max_requests_per_example × quota`` requests (:func:`request_budget`). A file where fewer than
``min_quota_share`` of its quota passed because of the model's answers (low confidence, failed requests, the budget
spent) fails, with the top reasons and the flags that relax them; a text that simply has too few passages keeps
its shortfall. The other
chunks keep their rule labels and are not used as LLM-mode examples. ``llm_requests`` records the requests each
chunk cost, so the generation step spends only what is left of the file's budget.
"""

import json
import math
from collections import Counter

import pandas as pd
from dagster import AssetExecutionContext, Failure, MetadataValue, Output, asset

from ..checks import LABELS_ARE_VARIED, label_variety_problems, rejection_problems, replies_usable
from ..environment import ENV_FIELDS, analyze_columns, features_at
from ..environment_llm import (
    ANALYSIS_SCHEMA,
    analysis_messages,
    analysis_options,
    analysis_problem,
    interpret_analysis,
)
from ..generation import MIN_SCENE_FIELDS, Outcome, scene_fields, selection_order, walk_until_quota
from ..llm import BudgetExhausted, CallStats, LLMCallFailed, LLMClient, ReplyRejected, RequestBudget
from ..partitions import selection_quotas
from ..seeding import derive_seed
from ..settings import PipelineSettings
from ._partitioned import for_each_partition, json_column, progress_logger, report_checks, run_check
from .novels import LLM_POOL, LLM_RETRY, PER_FILE


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
    """Fails the partition (after its finished replies are cached) when too many calls failed. Not retried as a
    step: each request was already retried, and a step retry would spend the file's budget again."""
    if attempted and stats.failures / attempted > max_share:
        raise Failure(f"{step} {key}: {stats.failures} of {attempted} LLM requests failed after retries "
                      f"(more than {max_share:.0%}; most often: {stats.top_error()}); finished replies are cached, "
                      "so re-running this partition only pays for the rest. Check the LLM server.",
                      allow_retries=False)


def failure_reason(error: LLMCallFailed) -> str:
    """The rejection-reason key of a call that got no usable reply."""
    if isinstance(error, BudgetExhausted):
        return "budget"
    if isinstance(error, ReplyRejected):
        return f"{error.reason}_reply"
    return "failed_requests"


def request_budget(settings: PipelineSettings, key: str, quota: int, used: int = 0) -> RequestBudget:
    """The file's request cap, ``max_requests_per_example × quota``, less the ``used`` requests of earlier steps."""
    cap = math.ceil(settings.max_requests_per_example * quota)
    return RequestBudget(cap - used, f"{key}: the file's")


def minimum_accepted(settings: PipelineSettings, quota: int) -> int:
    """The fewest examples a file whose model fell short may end with (``min_quota_share`` of its quota)."""
    return math.ceil(settings.min_quota_share * quota)


# The flag that relaxes each analysis rejection.
ANALYSIS_RELAXED_BY = {"low_confidence": "--confidence-threshold", "failed_requests": "--max-retries"}


def shortfall_failure(key: str, step: str, budget: RequestBudget, accepted: int, needed: int, quota: int,
                      reasons: Counter, relaxed_by: dict[str, str]) -> Failure:
    """A file whose model fell short of ``min_quota_share`` of its quota: its figures, whether the request budget
    ran out, the top reasons and the flags that relax them. Not retried (the same replies would come back)."""
    top = reasons.most_common(3)
    flags = sorted({relaxed_by[r] for r, _ in top if r in relaxed_by}
                   | ({"--max-requests-per-example"} if budget.spent else set()))
    spent = (f"; the request budget ({budget.limit} requests for a quota of {quota}, --max-requests-per-example) "
             "was spent" if budget.spent else "")
    message = (f"{step} {key}: {accepted} accepted, fewer than the {needed} needed (--min-quota-share of a quota of "
               f"{quota}){spent}; top reasons: {', '.join(f'{r} ({n})' for r, n in top)}; relax "
               f"{' / '.join(flags + ['--min-quota-share'])}, or try a stronger --model")
    return Failure(message, metadata={"llm_requests": budget.used, "request_budget": budget.limit,
                                      **{f"rejected_{r}": n for r, n in sorted(reasons.items())}},
                   allow_retries=False)


def llm_features(context, settings: PipelineSettings, llm: LLMClient, key: str, chunks: pd.DataFrame,
                 quota: int):
    """Rule labels for every chunk, then LLM analysis of the chunks needed for the file's ``quota``."""
    texts = chunks["text"].tolist()
    rules = analyze_columns(texts)
    frame = rule_features(chunks, rules)
    frame["llm"] = ""
    frame["llm_requests"] = 0
    target = math.ceil(quota * settings.analysis_margin)
    order = selection_order(len(frame), settings.seed, key)
    candidates = [pos for pos in order if frame.at[pos, "chars"] >= settings.min_chunk_chars]
    stats = CallStats()
    budget = request_budget(settings, key, quota)
    reasons: Counter[str] = Counter()

    def analyze(pos: int) -> Outcome:
        seed = derive_seed(settings.seed, key, int(frame.at[pos, "chunk_index"]), "analysis") % 2**31
        options = analysis_options(seed)
        try:
            reply = llm.chat(analysis_messages(texts[pos]), options=options, fmt=ANALYSIS_SCHEMA, budget=budget,
                             validate=analysis_problem)
        except LLMCallFailed as exc:  # BudgetExhausted and ReplyRejected included
            stats.record_failure(exc)
            reasons[failure_reason(exc)] += 1
            return Outcome(False, error=str(exc), value={"requests": exc.attempts})
        stats.record(reply)
        result = interpret_analysis(reply.text, features_at(rules, pos))
        result["requests"] = reply.attempts
        scene = settings.mode != "hybrid" or scene_fields(result["labels"]) >= MIN_SCENE_FIELDS
        confident = result["confidence"] >= settings.llm_confidence_threshold
        if not (confident and scene):
            reasons["low_confidence" if not confident else "no_scene_field"] += 1
        return Outcome(confident and scene, result)

    llm.attach_log(context.log.warning)  # outage messages: the CLI's console and the run's logs in the UI
    outages_before = llm.outage_counters()
    llm.wait_ready()
    outcomes = walk_until_quota(candidates, target, analyze, llm.total_slots,
                                progress_logger(context, f"{key} analysis", len(candidates)),
                                on_interrupt=llm.stop_waiting, stop=lambda: budget.spent)
    above = sum(o.accepted for o in outcomes.values())
    check_failure_share("environment_features", key, stats, len(outcomes), settings.max_failure_share)
    if reasons and above < minimum_accepted(settings, quota):
        raise shortfall_failure(key, "environment_features", budget, above, minimum_accepted(settings, quota), quota,
                                reasons, ANALYSIS_RELAXED_BY)
    for pos, outcome in outcomes.items():
        if outcome.value is None:
            continue
        result = outcome.value
        frame.at[pos, "llm_requests"] = result["requests"]
        if "labels" not in result:  # failed: rule labels kept, its requests counted
            continue
        for field in ENV_FIELDS:
            frame.at[pos, field] = result["labels"][field]
        frame.at[pos, "confidence"] = result["confidence"]
        frame.at[pos, "env_source"] = "llm"
        frame.at[pos, "llm"] = json.dumps({k: result[k] for k in (
            "raw", "llm_labels", "invalid_fields", "rule_fields", "llm_confidence", "valid_json")}, ensure_ascii=False)
    analyzed = [o.value for o in outcomes.values() if o.value is not None and "labels" in o.value]
    context.log.info(f"{key}: analysed {len(outcomes)} chunk(s) with the LLM, {above} above the threshold "
                     f"(target {target}; {budget.used} of {budget.limit} requests)")
    metadata = {
        "analysis_target": target,
        "analysed_chunks": len(outcomes),
        "above_threshold": above,
        "llm_requests": budget.used,
        "request_budget": budget.limit,
        **{f"rejected_{r}": n for r, n in sorted(reasons.items())},
        "invalid_json_replies": sum(1 for r in analyzed if not r["valid_json"]),
        "fields_filled_by_rules": sum(len(r["rule_fields"]) for r in analyzed),
        "mean_llm_confidence": round(sum(r["confidence"] for r in analyzed) / len(analyzed), 3) if analyzed else 0.0,
        **stats.summary("analysis"),
        **llm.outage_metadata(outages_before),
        "hosts": MetadataValue.json(llm.host_metadata()),
    }
    return frame, metadata


def _environment_features(
    context: AssetExecutionContext, settings: PipelineSettings, llm: LLMClient, text_chunks
):
    """Rule analysis of every chunk (whole-word vocabularies, "unknown" when nothing is found); in the LLM modes,
    LLM analysis of the chunks the file's quota needs, validated and gap-filled by the rules."""

    quotas = selection_quotas(settings.input_dir, settings.max_files, settings.num_examples)  # once per step

    def one(key: str, chunks: pd.DataFrame):
        if settings.mode == "simple":
            frame, metadata = rule_features(chunks), {}
        else:
            frame, metadata = llm_features(context, settings, llm, key, chunks, quotas.get(key, 0))
        return frame, {
            "chunks": len(frame),
            "mean_confidence": round(float(frame["confidence"].mean()), 3) if len(frame) else 0.0,
            "known_time_share": round(float((frame["time_of_day"] != "unknown").mean()), 3) if len(frame) else 0.0,
            "known_weather_share": round(float((frame["weather"] != "unknown").mean()), 3) if len(frame) else 0.0,
            **metadata,
        }

    figures: dict = {}
    frames = for_each_partition(context, one, text_chunks, figures=figures)
    checks = [run_check(context, LABELS_ARE_VARIED, frames, lambda key, frame: label_variety_problems(frame),
                        "chunks")]
    if REPLIES_USABLE.key in context.assets_def.check_keys:  # the LLM modes' variant
        checks.append(run_check(context, REPLIES_USABLE, frames,
                                lambda key, frame: rejection_problems(figures[key], "analysis"), "chunks"))
    yield Output(frames)
    yield from report_checks(context, checks)


ENVIRONMENT = dict(**PER_FILE, name="environment_features", kinds={"pandas", "parquet"}, pool=LLM_POOL,
                   retry_policy=LLM_RETRY)
REPLIES_USABLE = replies_usable("environment_features")
environment_features = asset(**ENVIRONMENT, check_specs=[LABELS_ARE_VARIED])(_environment_features)
environment_features_llm = asset(**ENVIRONMENT, check_specs=[LABELS_ARE_VARIED, REPLIES_USABLE])(
    _environment_features)
"""The variants of the simple mode (no LLM) and of the LLM modes (the rejection bound on the model's replies)."""
