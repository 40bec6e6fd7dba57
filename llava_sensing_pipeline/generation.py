"""Training examples: which chunks become examples, the generation prompt, and the stage-1 record.

In ``simple`` and ``hybrid`` mode the example's ``target_paragraph`` is the source chunk itself (extractive);
in ``llm`` mode a model writes a new paragraph from the prompt built here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar

from .environment.vocabulary import CONTEXT_FIELDS
from .seeding import rng_for
from .settings import DEFAULT_EXAMPLES_PER_FILE
from .sensor_synthesis import HUMIDITY_FEEL, TEMPERATURE_FEEL, band, describe_sensor_record
from .style import STYLE_CATEGORY, STYLE_GUIDANCE

T = TypeVar("T")
_GOLDEN = (math.sqrt(5) - 1) / 2
GENERATION_METHODS = {"simple": "source_excerpt", "hybrid": "source_excerpt", "llm": "ollama_llm"}


def selection_order(n_chunks: int, global_seed: int, partition_key: str) -> list[int]:
    """A seeded order of chunk indices in which every prefix is spread across the whole book.

    Position ``i`` of the order is the chunk at fraction ``(offset + i * golden ratio) mod 1`` of the book (a
    low-discrepancy sequence), so taking the first N of the order gives N chunks spread evenly from beginning to
    end, whatever N is; the offset is drawn from the seed and the partition key.
    """
    if n_chunks <= 0:
        return []
    offset = rng_for(global_seed, partition_key, "selection").random()
    order, seen = [], set()
    i = 0
    while len(order) < n_chunks:
        idx = int(((offset + i * _GOLDEN) % 1.0) * n_chunks)
        # Collisions only happen near the end; walk to the next free index.
        while idx in seen:
            idx = (idx + 1) % n_chunks
        seen.add(idx)
        order.append(idx)
        i += 1
    return order


def allocate_quotas(keys: Sequence[str], num_examples: int | None) -> dict[str, int]:
    """``num_examples`` spread evenly over the files, the remainder going to the first files in sorted order.

    ``None`` means the default of the earlier system's notes: 100 examples per file.
    """
    ordered = sorted(keys)
    if not ordered:
        return {}
    if num_examples is None:
        num_examples = DEFAULT_EXAMPLES_PER_FILE * len(ordered)
    base, extra = divmod(max(0, num_examples), len(ordered))
    return {k: base + (1 if i < extra else 0) for i, k in enumerate(ordered)}


# The prompt's readings: (line name, key of describe_sensor_record, what the paragraph lets shape it).
READINGS = (("Temperature", "temperature", "the temperature"), ("Humidity", "humidity", "the humidity"),
            ("Wind", "wind", "the wind"), ("Movement", "movement", "the way I move"))


def build_generation_prompt(sensor_record: Mapping, style: str) -> str:
    """The prompt for a first-person robot narrator: context and sensor readings in words, style guidance, rules."""
    words = describe_sensor_record(sensor_record)
    context = sensor_record.get("context", {})
    scene = []
    if context.get("scenario", "unknown") != "unknown":
        scene.append(f"- Place: {context['scenario'].replace('_', ' ')}")
    if context.get("time", "unknown") != "unknown":
        scene.append(f"- Time of day: {context['time']}")
    if context.get("weather", "unknown") != "unknown":
        scene.append(f"- Weather: {context['weather']}")
    scene_text = "\n".join(scene) if scene else "- Place, time and weather: not observed; infer them from the readings."
    # only what the passage showed: an unknown wind or movement is left out, not made up
    shown = [(name, words[key], felt) for name, key, felt in READINGS if words[key]]
    readings = "\n".join(f"- {name}: {text}" for name, text, _ in shown)
    names = [felt for _, _, felt in shown]
    felt = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
    return (
        f"You are a robot exploring the world, and you write literature about what your sensors feel.\n"
        f"Write one descriptive paragraph in the {style.replace('_', ' ')} style, in the first person (\"I\"), "
        f"as the robot narrator.\n\n"
        f"Context:\n{scene_text}\n\n"
        f"Sensor readings, in words:\n{readings}\n\n"
        f"Style guidance: {STYLE_GUIDANCE[style]}\n\n"
        f"Rules:\n"
        f"- 150 to 250 words, one paragraph, first person throughout.\n"
        f"- Never write numbers or digits, and never state the sensor values themselves; convey them through sensation.\n"
        f"- Let {felt} shape what I notice.\n"
        f"- Write only the paragraph: no title, no preamble, no quotation marks.\n"
    )


def example_id(relative_path: str, chunk_index: int) -> str:
    """Stable example id: ``<file stem>_<chunk index>``."""
    stem = relative_path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return f"{stem}_{chunk_index}"


def build_example(
    *,
    relative_path: str,
    partition_key: str,
    chunk: Mapping,
    features: Mapping,
    normalized: Mapping[str, str],
    sensor_record: Mapping,
    style: str,
    novel_metadata: Mapping[str, str],
    target_paragraph: str,
    prompt: str,
    mode: str,
    generation: Mapping | None = None,
) -> dict:
    """One example in the stage-1 schema (id, sensor_data, literary_style, prompt, target_paragraph, source_info,
    metadata). ``generation`` carries the LLM provenance in ``llm`` mode."""
    generation = dict(generation or {})
    context = dict(sensor_record["context"])
    return {
        "id": example_id(relative_path, int(chunk["chunk_index"])),
        "sensor_data": {
            "temperature": sensor_record["temperature"],
            "humidity": sensor_record["humidity"],
            "wind_direction": sensor_record["wind_direction"],
            "wind_direction_name": sensor_record["wind_direction_name"],
            "imu": list(sensor_record["imu"]),
            "movement": sensor_record["movement"],
            "context": context,
        },
        "literary_style": style,
        "prompt": prompt,
        "target_paragraph": target_paragraph,
        "source_info": {
            "partition_key": partition_key,
            "chunk_index": int(chunk["chunk_index"]),
            "char_start": int(chunk["char_start"]),
            "char_end": int(chunk["char_end"]),
            "environmental_analysis": dict(features),
            "environmental_analysis_normalized": dict(normalized),
            "source_genre": STYLE_CATEGORY.get(style, "unknown"),
            "source_path": relative_path,
        },
        "metadata": {
            "context": context,
            "source": "novel_analysis",
            "style_category": style,
            "generation_method": generation.pop("generation_method", GENERATION_METHODS[mode]),
            "generation_model": generation.pop("generation_model", None),
            "llm_success": generation.pop("llm_success", False),
            "generation_attempts": generation.pop("generation_attempts", 0),
            "mode": mode,
            "novel_metadata": {k: novel_metadata[k] for k in ("title", "author", "publication_year", "index_number")
                               if novel_metadata.get(k)},
            **generation,
        },
    }


def is_usable(chars: int, confidence: float, min_chars: int, min_confidence: float) -> bool:
    """A chunk can become an example when it is long enough and its environment analysis found enough cues."""
    return chars >= min_chars and confidence >= min_confidence


# Scenes. In simple and hybrid modes the sensor record is made from the source passage's labels, so an example is
# only as good as the evidence for its scene: its context fields (weather, time of day, place) that are known.
# A passage with none is never an example there; passages with more known context fields come first.
MIN_SCENE_FIELDS = 1


def scene_fields(labels: Mapping[str, str]) -> int:
    """How many of the context fields (weather, time of day, location) ``labels`` know."""
    return sum(labels.get(name, "unknown") != "unknown" for name in CONTEXT_FIELDS)


def scene_ranking(order: Sequence[int], fields: Sequence[int]) -> list[int]:
    """``order`` (a selection order) with the passages that know more context fields first, the selection order
    kept within each count, so each count's passages stay spread across the book; passages under
    ``MIN_SCENE_FIELDS`` are left out."""
    kept = [pos for pos in order if fields[pos] >= MIN_SCENE_FIELDS]
    return sorted(kept, key=lambda pos: -fields[pos])


@dataclass
class Outcome:
    """What processing one candidate gave: accepted or not, with its result or error."""

    accepted: bool
    value: Any = None
    error: str | None = None


def walk_until_quota(
    candidates: Sequence[T], quota: int, work: Callable[[T], Outcome], parallel: int = 1,
    progress: Callable[[int, int], None] | None = None, on_interrupt: Callable[[], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> dict[T, Outcome]:
    """Processes ``candidates`` in order, up to ``parallel`` at a time, until ``quota`` of them are accepted.

    No more than ``quota - accepted`` items are ever in flight, so nothing is processed speculatively and the
    processed items are always the shortest prefix of ``candidates`` that holds ``quota`` accepted ones (or all of
    them), whatever the timing: the result is deterministic, and the calls per accepted item stay minimal.
    An exception escaping ``work`` (e.g. the server went away) cancels what is pending and propagates.
    ``progress(done, accepted)`` is called after each item. Once ``stop()`` is true (e.g. the file's request budget
    is spent) no further item is started; the ones in flight finish. On an interrupt (Ctrl-C: an exception that is not an
    ``Exception``), ``on_interrupt()`` is called before waiting for the items in flight, to make them end now
    (e.g. stop waiting for a server that went away).
    """
    results: dict[T, Outcome] = {}
    if quota <= 0 or not candidates:
        return results
    queue = list(candidates)
    accepted = 0
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        in_flight: dict[Future, T] = {}
        try:
            while queue or in_flight:
                while (queue and len(in_flight) < parallel and accepted + len(in_flight) < quota
                       and not (stop is not None and stop())):
                    item = queue.pop(0)
                    in_flight[pool.submit(work, item)] = item
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    item = in_flight.pop(future)
                    outcome = future.result()
                    results[item] = outcome
                    accepted += outcome.accepted
                    if progress is not None:
                        progress(len(results), accepted)
        except Exception:
            raise
        except BaseException:
            if on_interrupt is not None:
                on_interrupt()
            raise
        finally:
            for future in in_flight:
                future.cancel()
    return results


# --- Quality filter for generated paragraphs -------------------------------------------------------------------

_PREAMBLE = re.compile(
    r"^\s*(?:(?:sure|certainly|okay|ok|of course|absolutely)\b[^\n]*?(?:[!.:]|\n)\s*)?"
    r"(?:here(?:'s| is| are)\b[^\n:]*[:.]?|below is\b[^\n:]*:|(?:title|paragraph|literary paragraph)\s*:)\s*",
    re.I,
)
_MARKUP_HEADING = re.compile(r"^\s*(?:#+\s.*|\*\*[^*\n]+\*\*|title\s*:.*)\s*$", re.I)
_QUOTES = "\"'“”‘’«»"
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_DIGIT = re.compile(r"\d")
UNIT_WORDS = frozenset({"degree", "degrees", "celsius", "centigrade", "fahrenheit", "kelvin", "percent",
                        "percentage", "hectopascal", "hectopascals", "millibar", "millibars"})
NUMBER_WORDS = frozenset(
    "zero ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty forty "
    "fifty sixty seventy eighty ninety hundred".split())
FIRST_PERSON = frozenset({"i", "me", "my", "mine", "myself", "i'm", "i've", "i'd", "i'll"})
THIRD_PERSON = frozenset({"he", "she", "him", "his", "her", "hers", "himself", "herself"})
REJECTION_REASONS = ("empty", "digits", "spelled_out_value", "wrong_person", "too_short", "too_long", "repetition",
                     "contradiction", "low_alignment")

# Sensor value → the label a paragraph should not contradict, and the labels that would contradict it.
_OPPOSITES = {
    "temperature_hint": {"cold": {"warm", "hot"}, "cool": {"hot"}, "warm": {"cold"}, "hot": {"cold", "cool"}},
    "humidity_hint": {"dry": {"humid"}, "humid": {"dry"}},
    "movement": {"still": {"active"}, "active": {"still"}},
    "weather": {"clear": {"rain", "snow", "storm"}, "rain": {"snow"}, "snow": {"rain"}, "storm": {"clear"},
                "fog": {"clear"}},
    "time_of_day": {"dawn": {"noon", "afternoon"}, "morning": {"evening", "night"}, "noon": {"night", "dawn"},
                    "afternoon": {"night", "dawn"}, "evening": {"morning", "noon"}, "night": {"morning", "noon",
                                                                                              "afternoon"}},
}


def expected_labels(sensor_record: Mapping) -> dict[str, str]:
    """What a faithful paragraph should convey: the labels of the words the prompt gave for the sensor values
    (``sensors.TEMPERATURE_FEEL``, ``HUMIDITY_FEEL``), the movement and the context; only fields with opposites."""
    context = sensor_record.get("context", {})
    expected = {
        "temperature_hint": band(float(sensor_record["temperature"]), TEMPERATURE_FEEL)[1],
        "humidity_hint": band(float(sensor_record["humidity"]), HUMIDITY_FEEL)[1],
        "movement": sensor_record.get("movement", "unknown"),
        "weather": context.get("weather", "unknown"),
        "time_of_day": context.get("time", "unknown"),
    }
    return {k: v for k, v in expected.items() if v in _OPPOSITES[k]}


def clean_generated(text: str) -> str:
    """Strips a preamble ("Here is a paragraph…:"), headings, wrapping quotes and markdown; one paragraph."""
    text = _PREAMBLE.sub("", text.strip(), count=1)
    lines = text.splitlines()
    while len(lines) > 1 and (not lines[0].strip() or _MARKUP_HEADING.match(lines[0])):
        lines.pop(0)
    blocks = [b for b in re.split(r"\n\s*\n", "\n".join(lines)) if b.strip()]
    while len(blocks) > 1 and "\n" not in blocks[0].strip() and len(blocks[0].split()) <= 10 \
            and not blocks[0].rstrip().endswith((".", "!", "?", '"', "”")):
        blocks.pop(0)  # a bare title line above the paragraph
    text = " ".join(ln.strip() for ln in "\n".join(blocks).splitlines() if ln.strip())
    text = text.replace("**", "").replace("__", "")
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES + ".!?":
        text = text.strip(_QUOTES).strip()
    return re.sub(r"\s+", " ", text).strip()


@dataclass(frozen=True)
class QualityResult:
    text: str
    reasons: tuple[str, ...]
    alignment: float
    mapping: dict

    @property
    def ok(self) -> bool:
        return not self.reasons


def _repetitive(words: list[str]) -> bool:
    if len(words) < 12:
        return False
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    repeated = len(trigrams) - len(set(trigrams))
    return repeated / len(trigrams) > 0.12


def check_quality(raw: str, sensor_record: Mapping, *, min_words: int = 120, max_words: int = 300,
                  min_alignment: float = 0.3) -> QualityResult:
    """Cleans a generated paragraph and lists every reason to reject it (empty tuple when it passes).

    Alignment is the share of the record's expectations (temperature, humidity, movement, weather, time) that the
    text expresses by whole-word keywords; a contradiction is a field where the text's keywords for an opposite
    label outnumber those for the expected one.
    """
    from .environment import label_hits

    text = clean_generated(raw)
    words = [w.lower() for w in _WORD.findall(text)]
    reasons: list[str] = []
    if not words:
        return QualityResult(text, ("empty",), 0.0, {})
    if _DIGIT.search(text):
        reasons.append("digits")
    if UNIT_WORDS.intersection(words) or "%" in text or "per cent" in text.lower() or (
            NUMBER_WORDS.intersection(words) and "degrees" in words):
        reasons.append("spelled_out_value")
    first = sum(w in FIRST_PERSON for w in words)
    third = sum(w in THIRD_PERSON for w in words)
    if first < 3 or third > first:
        reasons.append("wrong_person")
    if len(words) < min_words:
        reasons.append("too_short")
    if len(words) > max_words:
        reasons.append("too_long")
    if _repetitive(words):
        reasons.append("repetition")
    hits = label_hits(text)
    expected = expected_labels(sensor_record)
    matched, mapping, contradicted = 0, {}, False
    for field_name, label in expected.items():
        field_hits = hits.get(field_name, {})
        own = field_hits.get(label, 0)
        against = {lb: n for lb, n in field_hits.items() if lb in _OPPOSITES[field_name][label]}
        if against and sum(against.values()) > own:
            contradicted = True
            mapping[field_name] = f"expected {label}; conflicting {', '.join(sorted(against))}"
        elif own:
            matched += 1
            mapping[field_name] = f"expected {label}; matched"
        else:
            mapping[field_name] = f"expected {label}; no explicit cue"
    alignment = round(matched / len(expected), 3) if expected else 1.0
    if contradicted:
        reasons.append("contradiction")
    if alignment < min_alignment:
        reasons.append("low_alignment")
    return QualityResult(text, tuple(reasons), alignment, mapping)
