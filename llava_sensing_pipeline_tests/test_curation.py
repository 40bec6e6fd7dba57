import json
import random

import pandas as pd
import pytest

from llava_sensing_pipeline.curation import (
    SPLIT_NAMES,
    Deduplicator,
    genre_of_path,
    normalise_ratios,
    normalise_text,
    plan_splits,
    shingles,
)
from llava_sensing_pipeline.export import select_examples
from llava_sensing_pipeline.settings import PipelineSettings, settings_from_env

HARBOUR = (
    "The harbour lay grey under a low sky when we came down from the hill, and the fishing boats leaned against "
    "one another on the mud like tired animals. A smell of tar and weed hung over the quay. Two old men sat on an "
    "upturned crate mending a net, and neither looked up as we passed. The rain had stopped by noon, but the stones "
    "still shone, and every gutter ran with a thin brown stream towards the sea. Beyond the breakwater the water "
    "was the colour of slate, and a single gull hung over it without moving its wings. We walked to the end of the "
    "pier and stood there a long while, saying nothing, watching the tide turn and the first lamps come on in the "
    "windows of the town behind us. It was colder than it had been all week, and the wind came in short gusts "
    "that made the rigging hum above the empty decks."
)
ORCHARD = (
    "In the orchard the apples had begun to fall, and the wasps were drunk on them in the long grass. My aunt "
    "walked between the trees with a basket on her arm, stooping now and then to turn a fruit over with her stick "
    "and leave it where it lay. The afternoon was very still. From the house came the sound of a piano being tuned, "
    "one note struck again and again until it was right, and then the next. I lay on my back under the oldest tree "
    "and watched the light come and go through the leaves, thinking of nothing, while the shadows crept across "
    "the wall and the swallows gathered on the roof of the barn for their long journey south."
)


def _record(novel: str, i: int, text: str | None = None) -> dict:
    stem = novel.rsplit("/", 1)[-1].removesuffix(".txt")
    return {"id": f"{stem}_{i}", "target_paragraph": text if text is not None else f"{stem} passage {i} words",
            "source_info": {"source_path": novel, "chunk_index": i}}


def _novels(genre: str, sizes: list[int], prefix: str) -> list[dict]:
    return [_record(f"{genre}/{prefix}{n:03d}_Book.txt", i) for n, size in enumerate(sizes) for i in range(size)]


# --- Deduplication --------------------------------------------------------------------------------------------


def test_normalise_text_ignores_case_punctuation_and_spacing():
    assert normalise_text("  The RAIN, it fell!\n\n“Again…”  ") == "the rain it fell again"
    assert normalise_text("well-known") == normalise_text("well known")
    assert normalise_text("") == ""


def test_shingles_are_word_five_grams():
    assert shingles("a b c d e f") == {"a b c d e", "b c d e f"}
    assert shingles("too short") == {"too short"}
    assert shingles("") == set()


def test_exact_duplicates_after_normalisation_are_removed_first_kept():
    dedup = Deduplicator(seed=1)
    assert dedup.check("a", HARBOUR) is None
    found = dedup.check("b", HARBOUR.upper().replace(",", " ;").replace(" ", "   "))
    assert found is not None and (found.kind, found.duplicate_of, found.similarity) == ("exact", "a", 1.0)
    assert dedup.check("c", ORCHARD) is None
    assert [d.id for d in dedup.removed] == ["b"]


def test_near_duplicate_with_a_sentence_changed_is_removed():
    changed = HARBOUR.replace("The rain had stopped by noon, but the stones still shone",
                              "The drizzle had stopped by evening, yet the cobbles still shone")
    assert changed != HARBOUR
    dedup = Deduplicator(seed=1)
    assert dedup.check("orig", HARBOUR) is None
    found = dedup.check("copy", changed)
    assert found is not None and found.kind == "near" and found.duplicate_of == "orig"
    assert 0.8 <= found.similarity < 1.0


def test_different_paragraphs_sharing_a_sentence_are_kept():
    shared = "A smell of tar and weed hung over the quay."
    dedup = Deduplicator(seed=1)
    assert dedup.check("harbour", HARBOUR) is None
    assert dedup.check("orchard", ORCHARD + " " + shared) is None
    assert dedup.removed == []


def test_deduplication_is_deterministic_and_summarised():
    texts = [HARBOUR, ORCHARD, HARBOUR.replace("tired animals", "sleeping animals"), ORCHARD.lower(), "Short one."]

    def run():
        dedup = Deduplicator(seed=3)
        for i, text in enumerate(texts):
            dedup.check(f"id{i}", text)
        return dedup.summary()

    first = run()
    assert first == run()
    assert (first["removed"], first["exact"], first["near"]) == (2, 1, 1)
    assert [(d["id"], d["kind"], d["duplicate_of"]) for d in first["removed_examples"]] == [
        ("id2", "near", "id0"), ("id3", "exact", "id1")]
    assert "MinHash" in first["method"]


def test_bad_threshold_is_rejected():
    with pytest.raises(ValueError, match="near_duplicate_threshold"):
        Deduplicator(threshold=0)


def test_select_examples_skips_duplicates_and_fills_the_quota_from_the_next_ranks():
    def frame(records):
        return pd.DataFrame({"selection_rank": range(len(records)), "record_json": [json.dumps(r) for r in records]})

    a = [_record("M/A1.txt", 0, HARBOUR), _record("M/A1.txt", 1, "First other passage of A."),
         _record("M/A1.txt", 2, "Second other passage of A.")]
    b = [_record("T/B1.txt", 0, HARBOUR.replace("tired", "weary")), _record("T/B1.txt", 1, ORCHARD),
         _record("T/B1.txt", 2, ORCHARD + " "), _record("T/B1.txt", 3, "A passage only B has.")]
    dedup = Deduplicator(seed=0)
    records, reports = select_examples({"M/A1": frame(a), "T/B1": frame(b)}, {"M/A1": 2, "T/B1": 2},
                                       {"M/A1": "M/A1.txt", "T/B1": "T/B1.txt"}, dedup)
    assert [r["id"] for r in records] == ["A1_0", "A1_1", "B1_1", "B1_3"]
    assert [(r.exported, r.duplicates, r.shortfall) for r in reports] == [(2, 0, 0), (2, 2, 0)]
    assert [(d.id, d.kind) for d in dedup.removed] == [("B1_0", "near"), ("B1_2", "exact")]


# --- Splits ---------------------------------------------------------------------------------------------------


def test_splits_put_whole_novels_in_one_split_and_balance_genres():
    records = _novels("Modernist_Novel", [20] * 7, "A") + _novels("Travel_Novel", [20] * 7, "B")
    plan = plan_splits(records, [0.8, 0.1, 0.1], seed=42)
    parts = plan.split_records(records)
    assert sum(len(p) for p in parts.values()) == len(records)
    ids = [{r["id"] for r in parts[s]} for s in SPLIT_NAMES]
    texts = [{r["target_paragraph"] for r in parts[s]} for s in SPLIT_NAMES]
    novels = [{r["source_info"]["source_path"] for r in parts[s]} for s in SPLIT_NAMES]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not ids[i] & ids[j] and not texts[i] & texts[j] and not novels[i] & novels[j]
    assert {s: (len(v["novels"]), v["examples"]) for s, v in plan.summary.items()} == {
        "train": (10, 200), "validation": (2, 40), "test": (2, 40)}
    for split in SPLIT_NAMES:
        assert set(plan.summary[split]["genres"]) == {"Modernist_Novel", "Travel_Novel"}
        assert sorted(plan.summary[split]["novels"]) == sorted(novels[SPLIT_NAMES.index(split)])
    assert plan.warnings == []


def test_splits_are_seeded_and_independent_of_input_order():
    records = _novels("Modernist_Novel", [10] * 6, "A") + _novels("Travel_Novel", [10] * 6, "B")
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    assert plan_splits(records, [8, 1, 1], 5).assignment == plan_splits(shuffled, [8, 1, 1], 5).assignment
    assignments = {tuple(sorted(plan_splits(records, [8, 1, 1], seed).assignment.items())) for seed in range(6)}
    assert len(assignments) > 1


def test_splits_follow_example_counts_largest_novel_first():
    records = _novels("G", [80, 10, 5, 5], "A")
    plan = plan_splits(records, [0.8, 0.1, 0.1], seed=0)
    assert plan.summary["train"]["examples"] == 80
    assert plan.summary["validation"]["examples"] == 10
    assert plan.summary["test"]["examples"] == 10


@pytest.mark.parametrize("n_novels, expected", [
    (1, (1, 0, 0)), (2, (2, 0, 0)), (3, (2, 0, 1)), (4, (2, 1, 1)), (6, (4, 1, 1)),
])
def test_few_novels_never_crash_and_warn_about_empty_splits(n_novels, expected):
    sizes = [10] * n_novels
    records = _novels("Modernist_Novel", sizes[: (n_novels + 1) // 2], "A") + _novels(
        "Travel_Novel", sizes[(n_novels + 1) // 2 :], "B")
    plan = plan_splits(records, [0.8, 0.1, 0.1], seed=1)
    assert tuple(len(plan.summary[s]["novels"]) for s in SPLIT_NAMES) == expected
    empty = [s for s, n in zip(SPLIT_NAMES, expected) if n == 0]
    assert [w.split(" ")[0] for w in plan.warnings] == empty
    assert all("too few" in w for w in plan.warnings)


def test_two_novels_both_go_to_train():
    records = _novels("Modernist_Novel", [5], "A") + _novels("Travel_Novel", [5], "B")
    plan = plan_splits(records, [0.8, 0.1, 0.1], seed=9)
    assert set(plan.assignment.values()) == {"train"}
    assert plan.split_records(records)["test"] == [] and len(plan.warnings) == 2


def test_no_records_gives_empty_splits():
    plan = plan_splits([], [0.8, 0.1, 0.1], seed=0)
    assert plan.split_records([]) == {"train": [], "validation": [], "test": []}
    assert all(v["examples"] == 0 for v in plan.summary.values())


def test_a_zero_share_split_stays_empty_without_a_warning():
    records = _novels("G", [10] * 5, "A")
    plan = plan_splits(records, [90, 0, 10], seed=0)
    assert plan.summary["validation"]["novels"] == [] and plan.warnings == []
    assert plan.ratios == {"train": 0.9, "validation": 0.0, "test": 0.1}


@pytest.mark.parametrize("bad", [[0.8, 0.2], [0, 0.5, 0.5], [0.8, -0.1, 0.3]])
def test_bad_ratios_are_rejected(bad):
    with pytest.raises(ValueError, match="split_ratios"):
        normalise_ratios(bad)


def test_split_ratios_setting_accepts_text():
    assert PipelineSettings().split_ratios == [0.8, 0.1, 0.1]
    assert settings_from_env({"LLAVA_SENSING_SPLIT_RATIOS": "70/20/10"}).split_ratios == [0.7, 0.2, 0.1]  # kept as shares
    assert normalise_ratios(PipelineSettings(split_ratios="70,20,10").split_ratios) == {
        "train": 0.7, "validation": 0.2, "test": 0.1}


def test_genre_of_path():
    assert genre_of_path("Travel_Novel/B1.txt") == "Travel_Novel"
    assert genre_of_path("B1.txt") == "(top level)"
