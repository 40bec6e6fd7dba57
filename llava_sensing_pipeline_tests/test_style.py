import pytest

from llava_sensing_pipeline.style import (
    DEFAULT_STYLE,
    GENRE_STYLES,
    STYLE_CATEGORY,
    STYLE_GUIDANCE,
    STYLE_MARKERS,
    STYLES,
    infer_style,
    style_for,
)
from llava_sensing_pipeline_tests.support.needs import require_corpus

# Tests using the shared sample corpus (../shared/corpus) skip without it, and fail in CI (support/needs.py).

MODERNIST = (
    "She thought of him again and remembered the soft murmur of his voice; it seemed to her that "
    "memory itself trembled, that her soul felt the old longing, and she wondered, in despair, "
    "whether consciousness was only a dream."
)
TRAVEL = (
    "Our journey took us along the coast road to a village inn, where the landlord found a guide "
    "and a mule for our luggage; the station lay three miles off, beyond the harbour and the "
    "cathedral, on the route to the next town."
)


def test_constants_are_consistent():
    assert STYLES == ("modernist_novel", "travel_novel")
    assert set(GENRE_STYLES.values()) == set(STYLES)
    assert STYLE_CATEGORY == {"modernist_novel": "modernist", "travel_novel": "travel"}
    assert set(STYLE_MARKERS) == set(STYLES)
    assert DEFAULT_STYLE in STYLES


def test_guidance_for_every_style():
    for style in STYLES:
        guidance = STYLE_GUIDANCE[style]
        sentences = [s for s in guidance.split(".") if s.strip()]
        assert 2 <= len(sentences) <= 3, style
        assert len(guidance) > 150
    assert "stream of consciousness" in STYLE_GUIDANCE["modernist_novel"]
    assert "place" in STYLE_GUIDANCE["travel_novel"]


def test_infer_clear_passages():
    style, score = infer_style(MODERNIST)
    assert style == "modernist_novel" and score > 0.8
    style, score = infer_style(TRAVEL)
    assert style == "travel_novel" and score > 0.8


def test_infer_inflections_and_spelling_variants():
    assert infer_style("They travelled; we traveled; the travellers.")[0] == "travel_novel"
    assert infer_style("She wondered; she was wondering.")[0] == "modernist_novel"


def test_infer_whole_words_only():
    # "inner" and "winning" contain "inn"; "thoughtful" is not "thought"
    assert infer_style("The inner winning thoughtful.") == (DEFAULT_STYLE, 0.0)


def test_infer_default_is_deterministic():
    assert infer_style("") == (DEFAULT_STYLE, 0.0)
    assert infer_style("The cat sat on the mat.") == (DEFAULT_STYLE, 0.0)
    assert infer_style("the road and the soul") == (DEFAULT_STYLE, 0.0)  # tie


def test_score_expresses_margin():
    _, strong = infer_style("journey road village inn guide")
    _, weak = infer_style("journey road village inn guide soul thought")
    assert 0.0 < weak < strong <= 1.0


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("Modernist_Novel", "modernist_novel"),
        ("modernist_novel", "modernist_novel"),
        ("TRAVEL_NOVEL", "travel_novel"),
        ("/data/corpus/Travel_Novel", "travel_novel"),
        ("corpus/Modernist_Novel/", "modernist_novel"),
    ],
)
def test_style_for_known_folder(folder, expected):
    assert style_for(folder, TRAVEL if expected == "modernist_novel" else MODERNIST) == (
        expected, "genre_folder", 1.0
    )


def test_style_for_unknown_folder_is_inferred():
    assert style_for("Poetry", TRAVEL) == ("travel_novel", "inferred", infer_style(TRAVEL)[1])
    assert style_for("", MODERNIST)[:2] == ("modernist_novel", "inferred")


def test_inference_agrees_with_folders_on_most_corpus_chunks():
    corpus = require_corpus()
    for genre, style in GENRE_STYLES.items():
        hits = total = 0
        for path in sorted((corpus / genre).glob("*.txt")):
            text = path.read_text(encoding="utf-8-sig")[30000:70000]
            for start in range(0, len(text), 4000):
                total += 1
                hits += infer_style(text[start:start + 4000])[0] == style
        assert hits / total > 0.7, (genre, hits, total)
