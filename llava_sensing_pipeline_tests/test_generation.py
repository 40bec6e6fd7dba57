import re
import threading
import time

import pytest

from llava_sensing_pipeline.generation import (
    Outcome,
    allocate_quotas,
    build_example,
    build_generation_prompt,
    check_quality,
    clean_generated,
    example_id,
    expected_labels,
    scene_fields,
    scene_ranking,
    selection_order,
    walk_until_quota,
)
from llava_sensing_pipeline.style import STYLES

RECORD = {"temperature": 3.0, "humidity": 85.0, "wind_direction": 4, "wind_direction_name": "E",
          "imu": [0.1, 0.0, 9.8, 0.0, 0.0, 0.0], "movement": "walking",
          "context": {"scenario": "forest_exploration", "time": "night", "weather": "rain"}}

GOOD = ("I walk beneath the trees while the cold rain finds every seam of my casing, and the night closes around "
        "me like a damp coat. My sensors taste the wet air; I feel the chill settle into my joints as I lift each "
        "foot from the soft moss. Somewhere ahead a branch creaks, and I pause, listening to the patter of drops "
        "on leaves, to the slow drip from the bark, to my own quiet motors. The darkness is not empty: it smells "
        "of earth and pine, of water gathering in hollows, of a forest breathing in the rain. I remember other "
        "paths, other nights, and wonder whether I have ever been truly dry. My lamp makes a small circle on the "
        "path, and the drops flash through it like falling glass. I keep walking, slowly, carefully, because the "
        "ground is slick and the roots are many, and because I want to hear how the rain changes when the trees "
        "grow thinner. When the wind moves, the whole canopy shivers and lets go of its water at once, and I am "
        "drenched again, and I do not mind, because this cold wet dark is the world I was made to feel.")


def test_selection_order_is_a_seeded_permutation_spread_over_the_book():
    order = selection_order(100, 42, "G/a")
    assert sorted(order) == list(range(100))
    assert order == selection_order(100, 42, "G/a")
    assert order != selection_order(100, 43, "G/a") and order != selection_order(100, 42, "G/b")
    for n in (5, 10, 20):  # any prefix covers every part of the book
        prefix = sorted(order[:n])
        assert max(b - a for a, b in zip([-1] + prefix, prefix + [100])) <= 2 * 100 / n + 1
    assert selection_order(0, 1, "k") == []


def test_scene_ranking_puts_richer_scenes_first_and_keeps_each_spread():
    assert scene_fields({"weather": "rain", "time_of_day": "unknown", "location": "indoor", "movement": "still"}) == 2
    assert scene_fields({}) == 0
    order = selection_order(200, 42, "G/a")
    fields = [(i % 4) if i % 5 else 0 for i in range(200)]  # 0-3 known context fields
    ranked = scene_ranking(order, fields)
    assert set(ranked) == {i for i in range(200) if fields[i] >= 1}  # passages that know nothing are left out
    counts = [fields[i] for i in ranked]
    assert counts == sorted(counts, reverse=True)
    for k in (3, 2, 1):  # each count keeps the selection order, so any prefix of it is spread over the book
        assert [i for i in ranked if fields[i] == k] == [i for i in order if fields[i] == k]


def test_allocate_quotas_spreads_with_remainder_to_first_sorted():
    assert allocate_quotas(["b", "a", "c"], 8) == {"a": 3, "b": 3, "c": 2}
    assert allocate_quotas(["a", "b"], None) == {"a": 100, "b": 100}
    assert allocate_quotas([], 5) == {}


def test_walk_until_quota_stops_at_quota_and_is_deterministic():
    calls, lock, active, peak = [], threading.Lock(), [0], [0]

    def work(i):
        with lock:
            calls.append(i)
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.005 * (i % 3))
        with lock:
            active[0] -= 1
        return Outcome(i % 4 != 1, i)

    results = walk_until_quota(list(range(50)), 10, work, parallel=4)
    accepted = sorted(i for i, o in results.items() if o.accepted)
    assert len(accepted) == 10
    # the processed items are the shortest prefix holding 10 accepted ones: no speculative calls
    assert sorted(results) == list(range(max(results) + 1)) and len(calls) == len(results) == 13
    assert peak[0] <= 4
    again = walk_until_quota(list(range(50)), 10, work, parallel=1)
    assert sorted(again) == sorted(results)


def test_walk_until_quota_propagates_fatal_errors():
    def work(i):
        if i == 2:
            raise RuntimeError("server gone")
        return Outcome(False)

    with pytest.raises(RuntimeError, match="server gone"):
        walk_until_quota(list(range(10)), 5, work, parallel=2)


def test_walk_until_quota_ends_the_items_in_flight_on_an_interrupt():
    """Ctrl-C while an item waits (for a server that went away): on_interrupt() is called before the walk waits for
    the items in flight, so it ends at once instead of after their wait; a plain error does not call it."""
    import threading
    import time

    release = threading.Event()
    calls = []

    def work(i):
        if i == 0:
            return Outcome(False)
        release.wait(30)  # item 1 waits until on_interrupt releases it
        return Outcome(False)

    def progress(done, accepted):
        raise KeyboardInterrupt  # after item 0, as Ctrl-C in the step's thread

    def on_interrupt():
        calls.append(1)
        release.set()

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        walk_until_quota([0, 1], 2, work, parallel=2, progress=progress, on_interrupt=on_interrupt)
    assert calls == [1] and time.monotonic() - started < 5

    def fail(i):
        raise RuntimeError("server gone")

    with pytest.raises(RuntimeError):
        walk_until_quota([0], 1, fail, on_interrupt=on_interrupt)
    assert calls == [1]


@pytest.mark.parametrize("style", STYLES)
def test_prompt_is_in_words_with_style_guidance(style):
    prompt = build_generation_prompt(RECORD, style)
    assert not re.search(r"\d", prompt.replace("150 to 250", ""))
    assert "first person" in prompt and "Never write numbers" in prompt
    assert "forest exploration" in prompt and "night" in prompt and "rain" in prompt
    from llava_sensing_pipeline.style import STYLE_GUIDANCE
    assert STYLE_GUIDANCE[style] in prompt


def test_clean_generated_strips_preambles_headings_and_quotes():
    assert clean_generated('Here is a paragraph in the modernist style:\n\n"I walk."') == "I walk."
    assert clean_generated("Sure! Here's the paragraph:\nI walk.") == "I walk."
    assert clean_generated("# The Rain\n\nI walk in the rain.") == "I walk in the rain."
    assert clean_generated("**Night Walk**\nI walk\nslowly.") == "I walk slowly."


def test_check_quality_accepts_a_faithful_paragraph():
    result = check_quality(GOOD, RECORD)
    assert result.ok, result.reasons
    assert result.alignment >= 0.5 and "expected rain; matched" in result.mapping["weather"]


@pytest.mark.parametrize("text,reason", [
    (GOOD.replace("cold rain", "cold 3 rain"), "digits"),
    (GOOD + " It is twenty degrees.", "spelled_out_value"),
    (GOOD.replace("I ", "He ").replace("My ", "His ").replace(" my ", " his ").replace(" me", " him"), "wrong_person"),
    ("I walk in the cold rain at night and I feel it.", "too_short"),
    (" ".join([GOOD] * 3), "too_long"),
    (" ".join(["I walk in the cold rain at night."] * 30), "repetition"),
    (GOOD.replace("cold", "hot").replace("chill", "heat"), "contradiction"),
    ("", "empty"),
])
def test_check_quality_rejects(text, reason):
    assert reason in check_quality(text, RECORD).reasons


def test_expected_labels_from_values():
    assert expected_labels(RECORD) == {"temperature_hint": "cold", "humidity_hint": "humid", "weather": "rain",
                                       "time_of_day": "night"}
    mild = {**RECORD, "temperature": 16.0, "humidity": 55.0, "context": {"time": "unknown", "weather": "unknown"}}
    assert expected_labels(mild) == {}


def test_build_example_schema_and_id():
    assert example_id("Travel_Novel/B150_Safari Jema.txt", 7) == "B150_Safari Jema_7"
    example = build_example(
        relative_path="Travel_Novel/B1_X.txt", partition_key="Travel_Novel/B1_X",
        chunk={"chunk_index": 3, "char_start": 10, "char_end": 20}, features={"weather": "rain"},
        normalized={"weather": "rain"}, sensor_record=RECORD, style="travel_novel",
        novel_metadata={"title": "X", "author": "Y", "source_link": "http://no"}, target_paragraph="t", prompt="p",
        mode="simple")
    assert set(example) == {"id", "sensor_data", "literary_style", "prompt", "target_paragraph", "source_info",
                            "metadata"}
    assert example["id"] == "B1_X_3" and example["source_info"]["source_path"] == "Travel_Novel/B1_X.txt"
    assert example["metadata"]["generation_method"] == "source_excerpt"
    assert example["metadata"]["novel_metadata"] == {"title": "X", "author": "Y"}


def test_clean_generated_drops_a_bare_title_block():
    assert clean_generated("Night Walk\n\nI walk in the rain.") == "I walk in the rain."
    assert clean_generated("I walk\nin the rain.") == "I walk in the rain."


def test_walk_until_quota_reports_progress():
    seen = []
    walk_until_quota(list(range(10)), 3, lambda i: Outcome(i % 2 == 0), parallel=2,
                     progress=lambda done, accepted: seen.append((done, accepted)))
    assert [d for d, _ in seen] == list(range(1, len(seen) + 1)) and seen[-1][1] == 3
