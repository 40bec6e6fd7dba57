"""The dataset card: ``<output>/README.md`` and its PNG plots in ``<output>/card/``, rewritten with every export.

``<output>`` is a local folder or an fsspec URL, like the export's (see :mod:`~llava_sensing_pipeline.atomic`).

The card says what the data is, how it was made (mode, model and digest, seed, corpus file hashes, code
versions), how it is distributed (genre, style, split, mode, labels, sensor values), shows three short examples
and states the known limitations and the licence of the source texts. It holds no timestamp, so an unchanged export
writes the same card. The plots are drawn with matplotlib's Agg canvas (no pyplot, no global backend) and are only
redrawn when the plotted values or this module change (a digest is kept in ``card/plots.sha256``).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from .atomic import StoragePath, atomic_write_bytes, atomic_write_text, storage_path
from .curation import SPLIT_NAMES, genre_of_path, novel_of
from .sensor_synthesis import COMPASS_POINTS, IMU_FIELDS

CARD_NAME = "README.md"
PLOTS_DIR = "card"
PLOTS_DIGEST = "plots.sha256"
PLOT_FILES = {"labels": "labels.png", "climate": "temperature_humidity.png", "imu": "imu.png",
              "wind": "wind_rose.png"}
LABEL_FIELDS: dict[str, tuple[str, ...]] = {
    "time of day": ("sensor_data", "context", "time"),
    "weather": ("sensor_data", "context", "weather"),
    "scenario": ("sensor_data", "context", "scenario"),
    "movement": ("sensor_data", "movement"),
}
EXCERPT_CHARS = 280
_GUTENBERG = re.compile(rb"project\s+gutenberg", re.I)
_NUMBER_LIST = re.compile(r"\[\s*([-+0-9.eE,\s]+?)\s*\]")
_LICENCE_HEADING = re.compile(r"^(#+)\s*.*licen[cs]e.*$", re.I | re.M)


def _get(record: Mapping, path: Sequence[str]) -> object:
    value: object = record
    for part in path:
        value = value[part]  # type: ignore[index]
    return value


def corpus_manifest(input_dir: str | Path, source_paths: Sequence[str]) -> list[dict]:
    """For each source file: genre, size, sha256 and whether its header names Project Gutenberg."""
    rows = []
    for rel in sorted(set(source_paths)):
        path = Path(input_dir) / rel
        row = {"source_path": rel, "genre": genre_of_path(rel), "bytes": None, "sha256": None, "gutenberg": False}
        if path.is_file():
            data = path.read_bytes()
            row.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                       gutenberg=bool(_GUTENBERG.search(data[:20000])))
        rows.append(row)
    return rows


def input_licence_note(input_dir: str | Path) -> str | None:
    """The licence section (heading and body) of the input folder's README.md, if it has one."""
    readme = Path(input_dir) / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8", errors="replace")
    match = _LICENCE_HEADING.search(text)
    if not match:
        return None
    level = len(match.group(1))
    rest = text[match.end():]
    end = re.search(rf"^#{{1,{level}}}\s", rest, re.M)
    body = rest[: end.start()] if end else rest
    return body.strip() or None


def distribution(records: Sequence[Mapping], path: Sequence[str]) -> dict[str, int]:
    """Count of each value at ``path`` in the records, most frequent first (ties by value)."""
    counts = Counter(str(_get(r, path)) for r in records)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def plot_values(records: Sequence[Mapping]) -> dict:
    """Everything the plots show, in a JSON-serialisable form (also hashed to decide whether to redraw)."""
    return {
        "labels": {name: distribution(records, path) for name, path in LABEL_FIELDS.items()},
        "temperature": [r["sensor_data"]["temperature"] for r in records],
        "humidity": [r["sensor_data"]["humidity"] for r in records],
        "imu": [[r["sensor_data"]["imu"][i] for r in records] for i in range(len(IMU_FIELDS))],
        "wind": dict(sorted(Counter(int(r["sensor_data"]["wind_direction"]) for r in records
                                    if r["sensor_data"]["context"]["scenario"] not in ("indoor", "unknown")
                                    and r["sensor_data"]["context"].get("wind", "unknown") not in ("calm", "unknown")
                                    ).items())),
    }


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def render_plots(values: Mapping) -> dict[str, bytes]:
    """The four PNG plots (label bars, temperature/humidity histograms, IMU histograms, wind rose) as bytes."""
    import math

    from matplotlib.figure import Figure

    pngs = {}
    fig = Figure(figsize=(11, 8), layout="constrained")
    for ax, (name, counts) in zip(fig.subplots(2, 2).flat, values["labels"].items()):
        labels = list(counts)[::-1]
        ax.barh(labels, [counts[k] for k in labels], color="#4c72b0")
        ax.set_title(name)
        ax.set_xlabel("examples")
    fig.suptitle("Context labels")
    pngs["labels"] = _png(fig)

    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_t, ax_h = fig.subplots(1, 2)
    ax_t.hist(values["temperature"], bins=30, color="#dd8452")
    ax_t.set(title="temperature", xlabel="°C", ylabel="examples")
    ax_h.hist(values["humidity"], bins=20, range=(0, 100), color="#55a868")
    ax_h.set(title="relative humidity", xlabel="%", ylabel="examples")
    pngs["climate"] = _png(fig)

    fig = Figure(figsize=(11, 6), layout="constrained")
    for ax, name, column in zip(fig.subplots(2, 3).flat, IMU_FIELDS, values["imu"]):
        ax.hist(column, bins=30, color="#8172b3")
        ax.set(title=name, xlabel="m/s²" if name.startswith("acc") else "rad/s")
    fig.suptitle("IMU readings")
    pngs["imu"] = _png(fig)

    fig = Figure(figsize=(6, 6), layout="constrained")
    ax = fig.add_subplot(projection="polar")
    ax.set_theta_zero_location("N")
    ax.set_theta_direction(-1)
    step = 2 * math.pi / len(COMPASS_POINTS)
    counts = [values["wind"].get(i, 0) for i in range(len(COMPASS_POINTS))]
    ax.bar([i * step for i in range(len(COMPASS_POINTS))], counts, width=step * 0.9, color="#4c72b0",
           edgecolor="white")
    ax.set_xticks([i * step for i in range(len(COMPASS_POINTS))], COMPASS_POINTS)
    ax.set_title("Wind direction (where it comes from), outdoor examples with a wind")
    pngs["wind"] = _png(fig)
    return pngs


def _plots_digest(values: Mapping) -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(json.dumps(values, sort_keys=True).encode())
    return h.hexdigest()


def write_plots(records: Sequence[Mapping], plots_dir: StoragePath) -> dict[str, StoragePath]:
    """Writes the PNG plots (atomically) unless the plotted values and this module are unchanged since last time."""
    values = plot_values(records)
    digest = _plots_digest(values)
    paths = {key: plots_dir / name for key, name in PLOT_FILES.items()}
    stamp = plots_dir / PLOTS_DIGEST
    if stamp.is_file() and stamp.read_text().strip() == digest and all(p.is_file() for p in paths.values()):
        return paths
    for key, data in render_plots(values).items():
        atomic_write_bytes(data, paths[key])
    atomic_write_text(digest + "\n", stamp)
    return paths


# --- Card text ----------------------------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join("" if v is None else str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f} %" if total else "-"


def _count_table(title: str, counts: Mapping[str, int], total: int) -> str:
    return _table([title, "examples", "share"], [(k, v, _pct(v, total)) for k, v in counts.items()])


def _stats_row(name: str, unit: str, values: Sequence[float]) -> tuple:
    if not values:
        return (name, unit, "-", "-", "-", "-")
    return (name, unit, f"{min(values):.2f}", f"{statistics.fmean(values):.2f}", f"{statistics.median(values):.2f}",
            f"{max(values):.2f}")


def short_example(record: Mapping) -> dict:
    """An example without its prompt and analysis details, its paragraph cut to about EXCERPT_CHARS."""
    text = record["target_paragraph"]
    if len(text) > EXCERPT_CHARS:
        text = text[:EXCERPT_CHARS].rsplit(" ", 1)[0] + " …"
    return {"id": record["id"], "sensor_data": record["sensor_data"], "literary_style": record["literary_style"],
            "target_paragraph": text,
            "source_info": {"source_path": record["source_info"]["source_path"],
                            "chunk_index": record["source_info"]["chunk_index"]}}


def _compact_numbers(text: str) -> str:
    """Puts each JSON list of numbers (the IMU readings) on one line."""
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def pick_examples(records: Sequence[Mapping], split_of: Mapping[str, str], n: int = 3) -> list[Mapping]:
    """The first example of each split (in export order), then the next ones in order, ``n`` in all."""
    picked = []
    for split in SPLIT_NAMES:
        first = next((r for r in records if split_of.get(novel_of(r)) == split), None)
        if first is not None:
            picked.append(first)
    ids = {r["id"] for r in picked}
    picked += [r for r in records if r["id"] not in ids][: max(0, n - len(picked))]
    return picked[:n]


def _provenance(records: Sequence[Mapping]) -> tuple[dict[str, int], list[tuple]]:
    methods = Counter(str(r["metadata"].get("generation_method")) for r in records)
    models = Counter((r["metadata"].get("generation_model"), r["metadata"].get("model_digest")) for r in records
                     if r["metadata"].get("generation_model"))
    return dict(sorted(methods.items())), [(m, d or "not recorded", n) for (m, d), n in sorted(models.items(),
                                                                                             key=str)]


LIMITATIONS = (
    "The sensor values are **simulated**, not measured: each is drawn from a seeded distribution conditioned on "
    "the context labels of its passage (see `llava_sensing_pipeline/sensors.py`). Indoor examples have no wind "
    "(direction index 0); the wind rose shows only the examples whose passage is outdoors and tells of a wind (a "
    "breeze or a strong wind), and shore and sea passages take their wind from the northern sector (NNW to NE). A "
    "movement the passage does not tell is drawn at rest (gravity and sensor noise only), and the prompt then says "
    "nothing of movement; an unknown wind is likewise left out of the prompt.",
    "The context labels (time of day, weather, scenario, movement) come from precision-first rules in `simple` "
    "mode (a cue word counts only in the narrated scene: past-tense narration, not negated, not in dialogue, a name, "
    "a comparison or a memory; otherwise the label is `unknown`), or from a language model in `hybrid` and `llm` "
    "mode. Rules still mislabel passages: on held-out hand-labelled passages 36 % of their weather, 58 % of their "
    "time-of-day and 67 % of their (rare) place labels are right, and they never label movement or temperature (the "
    "project README, \"Label quality\", has the figures and `llava-sensing eval-labels` measures them).",
    "In `simple` and `hybrid` mode the target paragraph is a passage of the novel itself (third-person narration, "
    "period spelling and dialogue included), not a first-person robot narrator; in `llm` mode the paragraph is "
    "written by the model and can be formulaic or drift from the readings despite the quality filter.",
    "The corpus is small and narrow: two genres (modernist novels and travel writing), English prose published "
    "long ago, with the views and language of its time.",
    "Splits are by whole novel, so the held-out sets measure generalisation to unseen books; with few novels a "
    "held-out split can be small or empty (see the warnings above), and split shares follow novel sizes, not the "
    "exact ratios.",
    "Near-duplicates are found by MinHash LSH, a probabilistic method: a pair just above the similarity threshold "
    "can be missed, and paragraphs that are similar but below the threshold are kept.",
)


def build_card(records: Sequence[Mapping], index: Mapping, manifest: Sequence[Mapping],
               code_versions: Mapping[str, str], licence_note: str | None, plots: Mapping[str, str]) -> str:
    """The card's Markdown text (deterministic: no timestamps)."""
    total = len(records)
    mode = index["mode"]
    splits = index.get("splits", {})
    split_of = {n: s for s, info in splits.items() for n in info["novels"]}
    dedup = index.get("deduplication", {})
    methods, models = _provenance(records)
    per_novel = Counter(novel_of(r) for r in records)
    meta_of = {novel_of(r): r["metadata"].get("novel_metadata", {}) for r in records}
    lines = [
        f"# Sensor-to-literature dataset ({mode} mode)",
        "",
        f"{total} training examples for stage 1 of a sensor-to-literature model: each pairs a set of robot sensor "
        "readings with a literary paragraph that conveys them. `sensor_data` holds the temperature (°C), relative "
        "humidity (%), wind direction (16-point compass index, 0 = north, clockwise; where the wind comes from), six "
        "IMU values (`acc_x, acc_y, acc_z` in m/s², `gyro_x, gyro_y, gyro_z` in rad/s), a movement label and a "
        "context (scenario, time of day, weather). Each example also has its `literary_style`, the generation "
        "`prompt`, the `target_paragraph`, and `source_info` / `metadata` tracing it to its novel and passage.",
        "",
        ("The target paragraphs are **passages of the source novels** (extractive); the sensor readings are "
         "synthesised from each passage's context." if mode in ("simple", "hybrid") else
         "The target paragraphs were **written by a language model** from the prompt, which describes sensor "
         "readings synthesised from a novel passage's context."),
        "",
        "## Files",
        "",
        _table(["path", "contents"], [
            (f"`{mode}_dataset.json`", f"all {total} examples (JSON array, UTF-8)"),
            (f"`{mode}_dataset.parquet`", "the same examples, one row each, sensor values as columns"),
            ("`chunks/novel_dataset_chunk_NNN.json`", f"{index['total_chunks']} file(s) of up to "
                                                       f"{index['chunk_size']} examples"),
            ("`chunks/chunks_index.json`", "the index: chunk files, per-file counts, splits, removed duplicates"),
            *[(f"`splits/{s}.json`", f"{splits[s]['examples']} examples from {len(splits[s]['novels'])} novel(s)")
              for s in SPLIT_NAMES if s in splits],
            ("`card/*.png`", "the plots below"),
        ]),
        "",
        "## How it was made",
        "",
        f"- Mode: `{mode}`; generation method: " + ", ".join(f"`{k}` ({v})" for k, v in methods.items()) + ".",
        "- Language model: " + ("; ".join(f"`{m}` (digest `{d}`, {n} examples)" for m, d, n in models)
                                if models else "none (no example was written by a model)") + ".",
        f"- Seed: {index.get('seed')}; split ratios (train/validation/test): "
        + " / ".join(f"{v:g}" for v in index.get("split_ratios", {}).values()) + ".",
        f"- Requested examples: {index.get('requested_examples', total)}; exported: {total}; duplicates removed: "
        f"{dedup.get('removed', 0)} ({dedup.get('exact', 0)} exact, {dedup.get('near', 0)} near) by "
        f"{dedup.get('method', 'no deduplication')}.",
        f"- Files that failed and are not in the data: {len(index.get('failed_files', []))}.",
        "",
        "Code versions (hash of the modules behind each asset):",
        "",
        _table(["asset", "code version"], sorted(code_versions.items())),
        "",
        "## Corpus manifest",
        "",
        _table(["source file", "genre", "title", "author", "examples", "split", "bytes", "sha256"], [
            (f"`{m['source_path']}`", m["genre"], meta_of.get(m["source_path"], {}).get("title"),
             meta_of.get(m["source_path"], {}).get("author"), per_novel.get(m["source_path"], 0),
             split_of.get(m["source_path"], "-"), m["bytes"] if m["bytes"] is not None else "missing",
             f"`{m['sha256']}`" if m["sha256"] else "missing")
            for m in manifest]),
        "",
        "## Counts",
        "",
        _count_table("genre (source folder)", distribution(
            [{"genre": genre_of_path(novel_of(r))} for r in records], ["genre"]), total),
        "",
        _count_table("literary style", distribution(records, ["literary_style"]), total),
        "",
        _count_table("mode", distribution(records, ["metadata", "mode"]), total),
        "",
        _table(["split", "novels", "examples", "share", "examples per genre"], [
            (s, len(splits[s]["novels"]), splits[s]["examples"], _pct(splits[s]["examples"], total),
             ", ".join(f"{g}: {n}" for g, n in splits[s]["genres"].items()) or "-")
            for s in SPLIT_NAMES if s in splits]),
        "",
        *[f"> **Warning:** {w}\n" for w in [*index.get("split_warnings", []), *index.get("warnings", [])]],
        "Whole novels go to one split (no novel, id or paragraph is in two splits); the novels of each split are "
        "listed in `chunks/chunks_index.json` under `splits`.",
        "",
        "## Label distributions",
        "",
        f"![context labels]({plots['labels']})",
        "",
    ]
    for name, path in LABEL_FIELDS.items():
        lines += [_count_table(name, distribution(records, path), total), ""]
    temps = [float(r["sensor_data"]["temperature"]) for r in records]
    hums = [float(r["sensor_data"]["humidity"]) for r in records]
    lines += [
        "## Sensor values",
        "",
        f"![temperature and humidity]({plots['climate']})",
        "",
        f"![IMU]({plots['imu']})",
        "",
        f"![wind rose]({plots['wind']})",
        "",
        _table(["reading", "unit", "min", "mean", "median", "max"], [
            _stats_row("temperature", "°C", temps), _stats_row("humidity", "%", hums),
            *[_stats_row(name, "m/s²" if name.startswith("acc") else "rad/s",
                         [float(r["sensor_data"]["imu"][i]) for r in records]) for i, name in enumerate(IMU_FIELDS)],
        ]),
        "",
        "## Example records",
        "",
        "Shortened: the prompt, the analysis and the metadata are left out and the paragraph is cut.",
        "",
    ]
    for record in pick_examples(records, split_of):
        lines += ["```json", _compact_numbers(json.dumps(short_example(record), ensure_ascii=False, indent=2)),
                  "```", ""]
    lines += ["## Known limitations", "", *[f"- {item}" for item in LIMITATIONS], "", "## Licence", ""]
    if licence_note:
        lines += ["The input folder's README states:", "", *[f"> {ln}".rstrip() for ln in licence_note.splitlines()],
                  ""]
    gutenberg = sum(1 for m in manifest if m["gutenberg"])
    lines += [
        f"{gutenberg} of {len(manifest)} source file(s) carry a Project Gutenberg header. Project Gutenberg texts "
        "are public domain in the United States; Project Gutenberg's licence covers only its own header, footer "
        "and trademark, which the pipeline strips (no example contains them), so the passages carry no Project "
        "Gutenberg terms. Outside the US, check each author's death date against local copyright terms. For any "
        "other file the pipeline cannot know the rights: check them before redistributing. The examples quote or "
        "paraphrase their source texts and inherit those texts' rights.",
        "",
    ]
    return "\n".join(lines)


def write_dataset_card(output_dir: str | StoragePath, records: Sequence[Mapping], index: Mapping,
                       manifest: Sequence[Mapping], code_versions: Mapping[str, str],
                       licence_note: str | None = None) -> StoragePath:
    """Writes ``<output>/card/*.png`` (when changed) and ``<output>/README.md``; returns the card's path."""
    out = storage_path(output_dir)
    write_plots(records, out / PLOTS_DIR)
    plots = {k: f"{PLOTS_DIR}/{name}" for k, name in PLOT_FILES.items()}
    text = build_card(records, index, manifest, code_versions, licence_note, plots)
    card = out / CARD_NAME
    if not (card.is_file() and card.read_text(encoding="utf-8") == text):
        atomic_write_text(text, card)
    return card
