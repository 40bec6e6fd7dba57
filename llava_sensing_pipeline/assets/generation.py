"""generated_examples: the training examples of each file, ranked so any prefix is spread across the book.

- ``simple``: every usable chunk (long enough, confident enough rule analysis, at least one known context field) is
  a candidate whose target is the source passage, the ones that know more of their scene first; the export takes
  each file's quota from the top of the ranking.
- ``hybrid``: the same, over the chunks whose LLM analysis passed the confidence threshold.
- ``llm``: over those chunks, in ranking order and up to the file's quota, the model writes a new paragraph; each
  reply goes through the quality filter, with up to ``generation_attempts`` attempts (different seeds) per chunk,
  within what the analysis left of the file's request budget: a file whose budget runs out stops there. A file
  that got fewer than ``min_quota_share`` of its quota through budget, rejections or failed requests fails with
  the top reasons; above that share its shortfall is stated.
"""

import json
from collections import Counter

import pandas as pd
from dagster import AssetExecutionContext, Failure, MetadataValue, Output, asset

from ..checks import rejection_problems, replies_usable
from ..environment import CONTEXT_FIELDS, ENV_FIELDS
from ..generation import (
    GENERATION_METHODS,
    Outcome,
    build_example,
    build_generation_prompt,
    check_quality,
    is_usable,
    scene_fields,
    scene_ranking,
    selection_order,
    walk_until_quota,
)
from ..llm import CallStats, LLMCallFailed, LLMClient, ReplyRejected
from ..partitions import selection_quotas
from ..seeding import derive_seed
from ..settings import PipelineSettings
from ._partitioned import for_each_partition, progress_logger, report_checks, run_check
from .environment import (
    analysis_record,
    check_failure_share,
    failure_reason,
    minimum_accepted,
    request_budget,
    shortfall_failure,
)
from .novels import LLM_POOL, LLM_RETRY, PER_FILE
from .sensor_records import sensor_record_from_row

USABLE_NOTE_KEY = "usable_note"
"""Partition metadata: :func:`usable_note`, which the export quotes when the file falls short of its quota."""
EXAMPLE_COLUMNS = ["id", "chunk_index", "selection_rank", "target_chars", "record_json"]
GENERATION_NUM_PREDICT = 512
PERSONA = "You are an excellent English literary writer."


def _candidates(table: pd.DataFrame, key: str, settings: PipelineSettings) -> list[tuple[int, int]]:
    """(rank, row position) of the usable chunks: in selection order, and in simple and hybrid modes the passages
    that know more of their scene first (``generation.scene_ranking``)."""
    order = selection_order(len(table), settings.seed, key)
    confidence = table["confidence"].tolist()
    if settings.mode != "simple":
        ok = [src == "llm" and c >= settings.llm_confidence_threshold
              for src, c in zip(table["env_source"].tolist(), confidence)]
    else:
        ok = [is_usable(n, c, settings.min_chunk_chars, settings.min_confidence)
              for n, c in zip(table["chars"].tolist(), confidence)]
    if settings.mode == "llm":
        return [(rank, pos) for rank, pos in enumerate(order) if ok[pos]]
    fields = [0 if not good else scene_fields(labels) for good, labels in zip(ok, table[list(CONTEXT_FIELDS)].to_dict(
        "records"))]
    return list(enumerate(scene_ranking(order, fields)))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def usable_note(table: pd.DataFrame, settings: PipelineSettings) -> str:
    """Why the file's chunks are or are not usable passages, in counts (for a shortfall's reason in the index):
    "the text gives 3 chunks; 1 shorter than 200 characters (--min-chunk-chars), 1 with rule-analysis confidence
    below 0.15 (--min-confidence)"."""
    if not len(table):
        return "the text gives no passage (only headings, separators or illustration markers)"
    parts = []
    chars, confidence = table["chars"].to_numpy(), table["confidence"].to_numpy()
    if settings.mode == "simple":
        short = int((chars < settings.min_chunk_chars).sum())
        vague = int(((chars >= settings.min_chunk_chars) & (confidence < settings.min_confidence)).sum())
        if short:
            parts.append(f"{short} shorter than {settings.min_chunk_chars} characters (--min-chunk-chars)")
        if vague:
            parts.append(f"{vague} with rule-analysis confidence below {settings.min_confidence} (--min-confidence)")
    else:
        analysed = table["env_source"].to_numpy() == "llm"
        low = int((analysed & (confidence < settings.llm_confidence_threshold)).sum())
        parts.append(f"{int(analysed.sum())} analysed by the LLM")
        if low:
            parts.append(f"{low} below --confidence-threshold {settings.llm_confidence_threshold}")
    return f"the text gives {_plural(len(table), 'chunk')}" + (f"; {', '.join(parts)}" if parts else "")


def _example_row(row, rank, key, settings, target, prompt, generation) -> dict:
    sensor = sensor_record_from_row(row)
    record = build_example(
        relative_path=row.relative_path, partition_key=key, chunk=row._asdict(),
        features=analysis_record(row), normalized={f: getattr(row, f) for f in ENV_FIELDS},
        sensor_record=sensor, style=row.literary_style, novel_metadata=json.loads(row.novel_metadata),
        target_paragraph=target if target is not None else row.text,
        prompt=prompt or build_generation_prompt(sensor, row.literary_style), mode=settings.mode,
        generation={"environment_confidence": float(row.confidence), "style_source": row.style_source,
                    **generation},
    )
    return {"id": record["id"], "chunk_index": int(row.chunk_index), "selection_rank": rank,
            "target_chars": len(record["target_paragraph"]), "record_json": json.dumps(record, ensure_ascii=False)}


def chunk_table(chunks: pd.DataFrame, *per_chunk: pd.DataFrame) -> pd.DataFrame:
    """The chunk table with the columns of each ``per_chunk`` table (same chunks, same order) beside it; a column
    already present is not repeated (e.g. ``movement``, which the sensor record copies from the labels)."""
    parts = [chunks.reset_index(drop=True)]
    seen = set(chunks.columns)
    for table in per_chunk:
        if not table["chunk_index"].reset_index(drop=True).equals(parts[0]["chunk_index"]):
            raise ValueError("per-chunk tables disagree on their chunks; re-materialize the file's partition")
        new = [c for c in table.columns if c not in seen]
        seen.update(new)
        parts.append(table[new].reset_index(drop=True))
    return pd.concat(parts, axis=1)


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=EXAMPLE_COLUMNS).sort_values("selection_rank", kind="stable").reset_index(
        drop=True)


# Simple and hybrid modes keep this many candidates per quota place: the export takes the quota from the top and
# replaces the ones its near-duplicate filter drops from the rest.
CANDIDATE_RESERVE = 2


def extractive_examples(table: pd.DataFrame, key: str, settings: PipelineSettings,
                        quota: int) -> tuple[pd.DataFrame, dict]:
    """The top ``CANDIDATE_RESERVE x quota`` usable chunks by rank as examples whose target is the source passage
    (simple and hybrid modes)."""
    usable = _candidates(table, key, settings)
    kept = usable[:CANDIDATE_RESERVE * quota]
    rows = table.iloc[[pos for _, pos in kept]].itertuples(index=False)
    return (_frame([_example_row(row, rank, key, settings, None, None, {}) for (rank, _), row in zip(kept, rows)]),
            {"usable_chunks": len(usable)})


def llm_examples(context, table: pd.DataFrame, key: str, settings: PipelineSettings, llm: LLMClient, quota: int):
    """Generated paragraphs for the file's quota, each passing the quality filter; provenance per example."""
    stats = CallStats()
    rejections: Counter[str] = Counter()
    analysis_requests = int(table["llm_requests"].sum()) if "llm_requests" in table else 0
    budget = request_budget(settings, key, quota, used=analysis_requests)
    llm.attach_log(context.log.warning)  # outage messages: the CLI's console and the run's logs in the UI
    outages_before = llm.outage_counters()
    digest = llm.wait_ready()

    rows = list(table.itertuples(index=False))

    def generate(item: tuple[int, int]) -> Outcome:
        rank, pos = item
        row = rows[pos]
        sensor = sensor_record_from_row(row)
        prompt = build_generation_prompt(sensor, row.literary_style)
        messages = [{"role": "system", "content": PERSONA}, {"role": "user", "content": prompt}]
        for attempt in range(1, settings.generation_attempts + 1):
            seed = derive_seed(settings.seed, key, int(row.chunk_index), "generation", attempt) % 2**31
            options = {"temperature": 0.8, "num_predict": GENERATION_NUM_PREDICT, "seed": seed}
            try:
                reply = llm.chat(messages, options=options, budget=budget)
            except ReplyRejected as exc:  # empty or cut off: the next attempt (another seed)
                stats.record_failure(exc)
                rejections[failure_reason(exc)] += 1
                continue
            except LLMCallFailed as exc:  # BudgetExhausted included
                stats.record_failure(exc)
                rejections[failure_reason(exc)] += 1
                return Outcome(False, error=str(exc))
            stats.record(reply)
            quality = check_quality(reply.text, sensor, min_words=settings.min_words, max_words=settings.max_words,
                                    min_alignment=settings.min_alignment)
            if quality.ok:
                provenance = {
                    "generation_method": GENERATION_METHODS["llm"], "generation_model": llm.model,
                    "llm_api": llm.api,
                    "model_digest": digest, "llm_success": True, "generation_attempts": attempt,
                    "generation_options": options, "generation_seed": seed, "alignment_score": quality.alignment,
                    "sensor_to_text_mapping": quality.mapping, "latency_s": round(reply.latency_s, 3),
                    "eval_tokens": reply.eval_count,
                }
                return Outcome(True, _example_row(row, rank, key, settings, quality.text, prompt, provenance))
            rejections.update(quality.reasons)
        return Outcome(False, error="rejected")

    candidates = _candidates(table, key, settings)
    outcomes = walk_until_quota(candidates, quota, generate, llm.total_slots,
                                progress_logger(context, f"{key} generation", len(candidates)),
                                on_interrupt=llm.stop_waiting, stop=lambda: budget.spent)
    rows = [o.value for o in outcomes.values() if o.accepted]
    check_failure_share("generated_examples", key, stats, len(outcomes), settings.max_failure_share)
    if outcomes and not rows and rejections and not budget.spent:
        raise Failure(all_rejected_message(len(outcomes), settings.generation_attempts, rejections),
                      metadata={f"rejected_{reason}": n for reason, n in sorted(rejections.items())},
                      allow_retries=False)
    if rejections and len(rows) < minimum_accepted(settings, quota):
        raise shortfall_failure(key, "generated_examples", budget, len(rows), minimum_accepted(settings, quota),
                                quota, rejections, RELAXED_BY)
    requests = analysis_requests + budget.used
    metadata = {
        "llm_requests": requests,
        "request_budget": budget.limit + analysis_requests,
        "requests_per_accepted_example": round(requests / len(rows), 2) if rows else 0.0,
        "budget_spent": budget.spent,
        "chunks_tried": len(outcomes),
        "rejected_chunks": sum(1 for o in outcomes.values() if not o.accepted),
        **{f"rejected_{reason}": n for reason, n in sorted(rejections.items())},
        **stats.summary("generation"),
        **llm.outage_metadata(outages_before),
        "hosts": MetadataValue.json(llm.host_metadata()),
    }
    return _frame(rows), metadata


# The flag that relaxes each quality-filter rejection (the others are about the model's prose itself).
RELAXED_BY = {"too_short": "--min-words", "too_long": "--max-words", "low_alignment": "--min-alignment",
              "failed_requests": "--max-retries"}


def all_rejected_message(chunks: int, attempts: int, rejections: Counter) -> str:
    """Why a file got no generated paragraph: the top rejection reasons and the flags that relax them."""
    top = rejections.most_common(3)
    reasons = ", ".join(f"{reason} ({n})" for reason, n in top)
    flags = sorted({RELAXED_BY[r] for r, _ in top if r in RELAXED_BY})
    fix = (f"relax {' / '.join(flags)}" if flags else "") + (" or " if flags else "") + "try a stronger --model"
    return (f"every generated paragraph was rejected by the quality filter ({chunks} passage(s), up to "
            f"{attempts} attempt(s) each); top reasons: {reasons}; {fix}")


def _generated_examples(
    context: AssetExecutionContext, settings: PipelineSettings, llm: LLMClient, style_labels, text_chunks,
    environment_features, sensor_records,
):
    """Examples of one file in selection order; the export takes each file's quota from the top."""

    quotas = selection_quotas(settings.input_dir, settings.max_files, settings.num_examples)  # once per step

    def one(key: str, styles: pd.DataFrame, chunks: pd.DataFrame, features: pd.DataFrame, sensors: pd.DataFrame):
        table = chunk_table(chunks, features, sensors, styles)
        quota = quotas.get(key, 0)
        if settings.mode == "llm":
            frame, metadata = llm_examples(context, table, key, settings, llm, quota)
        else:
            frame, metadata = extractive_examples(table, key, settings, quota)
        accepted = min(len(frame), quota)
        note = usable_note(table, settings)
        if settings.mode == "llm" and metadata.get("rejected_chunks"):
            note += f"; {_plural(metadata['rejected_chunks'], 'chunk')} with no accepted paragraph (rejected or failed)"
        if metadata.get("budget_spent"):
            note += "; the file's request budget ran out (--max-requests-per-example)"
        return frame, {
            "chunks": len(table), "candidates": len(frame), "quota": quota, "accepted": accepted,
            "shortfall": max(0, quota - accepted), USABLE_NOTE_KEY: note, **metadata,
        }

    figures: dict = {}
    frames = for_each_partition(context, one, style_labels, text_chunks, environment_features, sensor_records,
                                figures=figures)
    checks = [run_check(context, REPLIES_USABLE, frames, lambda key, frame: rejection_problems(
        figures[key], "generation"), "examples")] if REPLIES_USABLE.key in context.assets_def.check_keys else []
    yield Output(frames)
    yield from report_checks(context, checks)


GENERATION = dict(**PER_FILE, name="generated_examples", kinds={"pandas", "parquet"}, pool=LLM_POOL,
                  retry_policy=LLM_RETRY)
REPLIES_USABLE = replies_usable("generated_examples")
generated_examples = asset(**GENERATION)(_generated_examples)
generated_examples_llm = asset(**GENERATION, check_specs=[REPLIES_USABLE])(_generated_examples)
"""The variants of the extractive modes and of the llm mode (the rejection bound on the model's paragraphs)."""
