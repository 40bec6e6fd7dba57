"""Tests for llava_sensing_pipeline.text: decoding, header/marker parsing and chunking."""

from __future__ import annotations

import hashlib
import re
import textwrap
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from llava_sensing_pipeline.checks import chunk_problems
from llava_sensing_pipeline.seeding import rng_for
from llava_sensing_pipeline.text import (
    NovelReadError,
    NovelText,
    TextChunk,
    _clean,
    chunk_text,
    decode_bytes,
    parse_novel,
    read_novel,
)
from llava_sensing_pipeline_tests.support.needs import require_corpus

NBSP = "\u00a0"
REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO_ROOT / "Novel"
FORBIDDEN_IN_CHUNKS = (
    "*** START",
    "*** END",
    "Project Gutenberg",
    "PROJECT GUTENBERG",
    "Produced by",
    "[Illustration",
    "https://",
)


def _chunk_frame(chunks: list[TextChunk]) -> pd.DataFrame:
    return pd.DataFrame(chunks, columns=["chunk_index", "text", "char_start", "char_end"])


def _write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def _words(text: str) -> Counter[str]:
    return Counter(text.split())


def _chunk_words(chunks: list[TextChunk]) -> Counter[str]:
    return sum((_words(c.text) for c in chunks), Counter())


def _sentence(rng, n_words: int) -> str:
    vocab = ["rain", "wind", "street", "morning", "cold", "harbour", "forest", "mist", "lamp", "river",
             "snow", "evening", "warm", "shore", "bridge", "window", "dusk", "humid", "gale", "room"]
    words = [rng.choice(vocab) for _ in range(n_words)]
    return words[0].capitalize() + " " + " ".join(words[1:]) + rng.choice([".", "!", "?", ".", "."])


def _paragraph(rng, n_sentences: int) -> str:
    return " ".join(_sentence(rng, rng.randint(4, 18)) for _ in range(n_sentences))


def _assert_chunk_invariants(chunks: list[TextChunk], text: str, max_chars: int) -> None:
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert 0 < len(chunk.text) <= max_chars
        assert 0 <= chunk.char_start < chunk.char_end <= len(text)
        assert chunk.text == chunk.text.strip()
    for before, after in zip(chunks, chunks[1:]):
        assert before.char_end <= after.char_start
    assert chunk_problems(_chunk_frame(chunks), max_chars, text) == []  # the check agrees with the chunker


# --- research format --------------------------------------------------------------------------

RESEARCH_BODY = [
    "The rain came down over the harbour all morning, and the wind moved along the wet street.",
    "By noon the fog had lifted from the forest and the air turned warm and humid.",
]


def _research_file(header: list[str], start: str, ends: list[str], body: list[str] = RESEARCH_BODY) -> str:
    return "\n".join(header) + "\n\n\n" + start + "\n" + "\n".join(body) + "\n" + "\n".join(ends) + "\n"


def test_research_header_quirks_are_normalised(tmp_path: Path) -> None:
    header = [
        "`Title:The Glass Weather ",
        f"Author:Honor Vell{NBSP}",
        f"Publication Year:1931{NBSP} ",
        "Publisher:Marrow & Finch",
        "Publication Year of the Edition Used:2004",
        "Index Number:A901",
        "Soure Link:https://example.org/a901",
    ]
    raw = _research_file(
        header, "   *** START OF THIS TEXT [The Glass Weather] ***", ["*** END OF THIS TEXT The Glass Weather ***"]
    )
    novel = read_novel(_write(tmp_path, "A901_The_Glass_Weather.txt", raw))

    assert isinstance(novel, NovelText)
    assert novel.source_format == "research"
    assert novel.encoding == "utf-8"
    assert novel.start_marker and novel.end_marker
    assert novel.metadata == {
        "title": "The Glass Weather",
        "author": "Honor Vell",
        "publication_year": "1931",
        "publisher": "Marrow & Finch",
        "publication_year_of_the_edition_used": "2004",
        "index_number": "A901",
    }
    assert "gender_of_author" not in novel.metadata  # the missing key stays missing
    assert novel.text == "\n".join(RESEARCH_BODY)
    assert novel.path == str(tmp_path / "A901_The_Glass_Weather.txt")


def test_research_drops_every_link_and_url(tmp_path: Path) -> None:
    header = [
        "Title:Salt Roads",
        "Gender of Author:Male",
        "Source Link:https://example.org/b901",
        "Link:www.example.org",
        "Notes:see https://example.org/notes",
    ]
    raw = _research_file(header, "*** START OF THIS TEXT Salt Roads ***", ["*** END OF THIS TEXT Salt Roads ***"])
    novel = parse_novel(raw.encode(), "B901_Salt_Roads.txt")
    assert novel.metadata == {"title": "Salt Roads", "gender_of_author": "Male"}
    assert not any("http" in v or "www." in v for v in novel.metadata.values())


def test_research_missing_end_keeps_text_to_the_end_of_file() -> None:
    raw = _research_file(["Title:Open Water"], "*** START OF THIS TEXT Open Water ***", [])
    novel = parse_novel(raw.encode(), "open.txt")
    assert novel.start_marker and not novel.end_marker
    assert novel.text == "\n".join(RESEARCH_BODY)


def test_research_doubled_end_cuts_at_the_first_marker() -> None:
    ends = ["*** END OF THIS TEXT Twice ***", "stray line after the first end", "*** END OF THIS TEXT Twice ***"]
    novel = parse_novel(_research_file(["Title:Twice"], "*** START OF THIS TEXT Twice ***", ends).encode(), "t.txt")
    assert novel.end_marker
    assert novel.text == "\n".join(RESEARCH_BODY)
    assert "stray" not in novel.text and "END OF" not in novel.text


# --- Project Gutenberg format -------------------------------------------------------------------

PG_BODY = """\
CHAPTER I.

The wind had gone round to the north in the night, and by morning the
whole valley lay under a thin crust of frost that cracked underfoot on
the road down to the river.

The cold was dry and sharp, and the smoke of the village chimneys went
straight up into a pale sky.
"""
LICENCE = "*** START: FULL LICENSE ***\n\nTHE FULL PROJECT GUTENBERG LICENSE\nPLEASE READ THIS BEFORE YOU USE\n"


def _pg_file(start: str, end: str, credit: str, tail_line: str, licence: str = LICENCE) -> str:
    header = (
        "The Project Gutenberg EBook of Pictures of Frost, by Ann Example\n\n"
        "This eBook is for the use of anyone anywhere at no cost.\n\n"
        "Title: Pictures of Frost\n\nAuthor: Ann Example\n\n"
        "Release Date: August, 2004 [EBook #650]\nLast Updated: March 1, 2018\n\n"
        "Language: English\n\nCharacter set encoding: UTF-8\n\n"
    )
    return f"{header}{start}\n\n\n{credit}\n\n\n\nPICTURES OF FROST\n\n{PG_BODY}\n\n{tail_line}\n\n{end}\n\n{licence}"


def test_gutenberg_with_bom_crlf_credit_and_licence(tmp_path: Path) -> None:
    raw = _pg_file(
        "*** START OF THIS PROJECT GUTENBERG EBOOK PICTURES OF FROST ***",
        "*** END OF THIS PROJECT GUTENBERG EBOOK PICTURES OF FROST ***",
        "Produced by Jane Volunteer, John Helper and the Online\nDistributed Proofreading Team.",
        "End of the Project Gutenberg EBook of Pictures of Frost, by Ann Example",
    )
    data = b"\xef\xbb\xbf" + raw.replace("\n", "\r\n").encode("utf-8")
    novel = read_novel(_write(tmp_path, "B904_Pictures_of_Frost.txt", data))

    assert novel.source_format == "gutenberg"
    assert novel.encoding == "utf-8-sig"
    assert novel.start_marker and novel.end_marker
    assert novel.metadata == {
        "title": "Pictures of Frost",
        "author": "Ann Example",
        "language": "English",
        "index_number": "650",
    }
    assert "\r" not in novel.text and "\ufeff" not in novel.text
    assert novel.text.startswith("PICTURES OF FROST\n\nCHAPTER I.\n\nThe wind had gone round")
    assert novel.text.endswith("went\nstraight up into a pale sky.")
    for leftover in ("Project Gutenberg", "PROJECT GUTENBERG", "Produced", "Distributed", "LICENSE", "End of"):
        assert leftover not in novel.text
    assert len(novel.sha256) == 64 and novel.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("start", "end", "credit", "tail_line"),
    [
        (
            "***START OF THE PROJECT GUTENBERG EBOOK PICTURES OF FROST***",
            "***END OF THE PROJECT GUTENBERG EBOOK PICTURES OF FROST***",
            "Transcribed from the 1913 Chapman edition by Dan Example,\nemail dan@example.org",
            "End of Project Gutenberg's Pictures of Frost, by Ann Example",
        ),
        (
            "*** START OF THE PROJECT GUTENBERG EBOOK PICTURES OF FROST ***",
            "*** END OF THE PROJECT GUTENBERG EBOOK PICTURES OF FROST ***",
            "Transcribed by Dan Example, email dan@example.org  Second proof by\nMargaret Example.",
            "End of the Project Gutenberg eText Pictures of Frost",
        ),
        (
            "  ***  start of this project gutenberg ebook pictures of frost ***",
            "*** end   of this  project gutenberg ebook pictures of frost ***",
            "Produced by Somebody",
            "",
        ),
    ],
)
def test_gutenberg_marker_spellings(start: str, end: str, credit: str, tail_line: str) -> None:
    novel = parse_novel(_pg_file(start, end, credit, tail_line).encode(), "frost.txt")
    assert novel.source_format == "gutenberg"
    assert novel.start_marker and novel.end_marker
    assert novel.text.startswith("PICTURES OF FROST\n\nCHAPTER I.")
    assert novel.text.endswith("into a pale sky.")
    assert "utenberg" not in novel.text.lower() and "@" not in novel.text and "Transcribed" not in novel.text


def test_gutenberg_without_end_marker_still_drops_the_licence() -> None:
    raw = _pg_file(
        "*** START OF THE PROJECT GUTENBERG EBOOK PICTURES OF FROST ***",
        "",
        "Produced by Somebody",
        "End of the Project Gutenberg EBook of Pictures of Frost",
    )
    novel = parse_novel(raw.encode(), "frost.txt")
    assert novel.start_marker and not novel.end_marker
    assert novel.text.endswith("into a pale sky.")
    assert "LICENSE" not in novel.text


def test_gutenberg_paragraph_naming_the_project_is_dropped() -> None:
    footnote = "{1} This Project Gutenberg eText contains just one part.\nThe rest is a separate eText.\n\n"
    raw = _pg_file(
        "*** START OF THE PROJECT GUTENBERG EBOOK X ***",
        "*** END OF THE PROJECT GUTENBERG EBOOK X ***",
        "Produced by Somebody",
        footnote + "{2} This was written in 1846.",
    )
    novel = parse_novel(raw.encode(), "x.txt")
    assert "Gutenberg" not in novel.text and "separate eText" not in novel.text
    assert novel.text.endswith("into a pale sky.\n\n{2} This was written in 1846.")


# --- decoding and plain files -------------------------------------------------------------------


def test_decode_bytes_encodings_and_normalisation() -> None:
    assert decode_bytes("a\r\nb\rc\nd".encode(), "f.txt") == ("a\nb\nc\nd", "utf-8")
    assert decode_bytes(b"\xef\xbb\xbfwarm" + f"{NBSP}air".encode(), "f.txt") == ("warm air", "utf-8-sig")
    # Latin-1 bytes without 0x80-0x9F are the same text in Windows-1252, which is tried first
    assert decode_bytes("caf\u00e9 on the quay".encode("latin-1"), "f.txt") == ("caf\u00e9 on the quay", "cp1252")


CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def test_windows_1252_quotes_and_dashes_are_decoded_as_such() -> None:
    raw = b"\x93The room faced north,\x94 she said, \x91and so\x92 \x96 it never had the sun\x85"
    assert decode_bytes(raw, "f.txt") == (
        "\u201cThe room faced north,\u201d she said, \u2018and so\u2019 \u2013 it never had the sun\u2026", "cp1252")


def test_latin1_is_the_last_resort_and_leaves_no_control_character() -> None:
    # 0x81 and 0x9D are undefined in Windows-1252: Latin-1 reads every byte; the C1 characters it gives for the
    # bytes Windows-1252 defines are read as Windows-1252, the others are dropped
    raw = b"The caf\xe9 \x81on the\x9d quay, \x93wet\x94 and \x97 cold."
    text, encoding = decode_bytes(raw, "f.txt")
    assert encoding == "latin-1"
    assert text == "The caf\u00e9 on the quay, \u201cwet\u201d and \u2014 cold."


def test_c1_characters_in_utf8_text_are_repaired_or_dropped() -> None:
    # U+0093/U+0094 in UTF-8 are Windows-1252 quotes decoded as Latin-1 by some earlier tool; U+0081 means nothing
    text, encoding = decode_bytes("\u0093Yes,\u0094 she said\u0081.".encode(), "f.txt")
    assert (text, encoding) == ("\u201cYes,\u201d she said.", "utf-8")


def test_stray_c0_control_characters_never_reach_the_text_or_a_chunk() -> None:
    # a few stray control bytes (far below the 1 % that makes a file look binary)
    body = "The lamp\x01 burned low and the room\x1b was cold.\x7f " + "The wind rose over the roofs. " * 30
    novel = parse_novel(body.encode(), "f.txt")
    assert not CONTROL_CHARACTER.search(novel.text)
    # chunk_text is also safe on its own, whatever text it is given
    chunks = chunk_text("The lamp\x01 burned\x7f low\x81 and the\x9d room\x0e was cold.\n\nNext\x00 paragraph.",
                        target_chars=40, min_chars=10, max_chars=80)
    assert [c.text for c in chunks] == ["The lamp burned low and the room was cold.", "Next paragraph."]


def test_latin1_file_is_read(tmp_path: Path) -> None:
    raw = "The caf\u00e9 on the Quai de l'H\u00f4tel was warm and humid after the rain.\r\n"
    novel = read_novel(_write(tmp_path, "latin.txt", raw.encode("latin-1")))
    assert novel.encoding == "cp1252"
    assert novel.source_format == "plain"
    assert novel.text == raw.strip()
    assert not novel.start_marker and not novel.end_marker


def test_plain_file_with_and_without_a_leading_header() -> None:
    with_header = parse_novel(b"Title:Dust\nAuthor:A. Writer\n\nThe dust rose in the hot wind.", "d.txt")
    assert with_header.source_format == "plain"
    assert with_header.metadata == {"title": "Dust", "author": "A. Writer"}
    assert with_header.text == "The dust rose in the hot wind."

    prose = "Note: the wind was cold.\nWarning: more snow tonight.\nShe closed the door."
    without_header = parse_novel(prose.encode(), "n.txt")
    assert without_header.metadata == {}
    assert without_header.text == prose


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.txt", b"", "empty"),
        ("blank file.txt", b"  \r\n\n\t \n", "whitespace"),
        ("image!.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        ("noise.txt", bytes(range(1, 32)) * 20 + b"abc", "binary"),
        ("header_only.txt", b"Title:X\n*** START OF THIS TEXT X ***\n\n*** END OF THIS TEXT X ***\n", "no body"),
    ],
)
def test_unreadable_files_raise_with_the_file_name(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    path = _write(tmp_path, name, data)
    with pytest.raises(NovelReadError) as info:
        read_novel(path)
    message = str(info.value)
    assert name in message and reason in message
    assert isinstance(info.value, ValueError)


def test_binary_message_says_binary() -> None:
    with pytest.raises(NovelReadError, match="looks like a binary file"):
        decode_bytes(b"text\x00more", "junk.bin")


def test_missing_file_raises_novel_read_error(tmp_path: Path) -> None:
    with pytest.raises(NovelReadError, match="missing_novel.txt"):
        read_novel(tmp_path / "missing_novel.txt")


# --- chunking -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "minimum", "maximum"),
    [(500, 0, 1000), (500, 600, 1000), (1200, 200, 1000), (500, -1, 1000), (0, 0, 0)],
)
def test_chunk_text_validates_sizes(target: int, minimum: int, maximum: int) -> None:
    with pytest.raises(ValueError, match="min_chars <= target_chars <= max_chars"):
        chunk_text("Some text.", target_chars=target, min_chars=minimum, max_chars=maximum)


def test_chunk_text_of_blank_text_is_empty() -> None:
    assert chunk_text("") == []
    assert chunk_text(" \n\n \t\n") == []


def test_hard_wrapped_paragraphs_are_rejoined() -> None:
    rng = rng_for(0, "test_text", "wrapped")
    paragraphs = [_paragraph(rng, 4) for _ in range(12)]
    text = "\n\n".join(textwrap.fill(p, width=70) for p in paragraphs)
    chunks = chunk_text(text)
    _assert_chunk_invariants(chunks, text, 1000)
    assert "\n\n".join(c.text for c in chunks) == "\n\n".join(paragraphs)
    assert all("\n" not in p for c in chunks for p in c.text.split("\n\n"))


@pytest.mark.parametrize(
    "separator",
    [" ", "  ", "\t", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\u2003", "\u3000", " \t ", "\u2028"],
)
@pytest.mark.parametrize("word", ["emptied.", "caf\u00e9."])
@pytest.mark.parametrize("indent", ["", "  "])
def test_every_whitespace_run_in_a_wrapped_paragraph_becomes_one_space(separator: str, word: str, indent: str) -> None:
    lines = ["The lamp", "burned low", "and the room", indent + word]
    chunks = chunk_text((separator + "\n").join(lines))
    assert [c.text for c in chunks] == [f"The lamp burned low and the room {word}"]


def test_single_newline_paragraphs_are_separate_paragraphs() -> None:
    rng = rng_for(0, "test_text", "single-newline")
    lines = [_paragraph(rng, 3) for _ in range(30)] + ["\u201cYes,\u201d she said."]
    text = "\n".join(lines)
    chunks = chunk_text(text)
    _assert_chunk_invariants(chunks, text, 1000)
    assert "\n\n".join(c.text for c in chunks) == "\n\n".join(lines)


def test_giant_paragraph_is_split_under_max_without_losing_words() -> None:
    rng = rng_for(0, "test_text", "giant")
    giant = _paragraph(rng, 300)
    assert len(giant) > 20_000
    text = "A short opening paragraph about the cold wind.\n\n" + giant + "\n\nA closing line."
    chunks = chunk_text(text, target_chars=500, min_chars=200, max_chars=1000)
    _assert_chunk_invariants(chunks, text, 1000)
    assert len(chunks) >= 20
    assert _chunk_words(chunks) == _words(text)
    assert sum(abs(len(c.text) - 500) <= 250 for c in chunks) >= 0.8 * len(chunks)


def test_sentence_and_word_longer_than_max_are_cut() -> None:
    no_stops = " ".join(["drifting"] * 600)  # one 5,399-char sentence
    unbroken = "x" * 2_500
    text = no_stops + "\n\n" + unbroken
    chunks = chunk_text(text, target_chars=300, min_chars=100, max_chars=400)
    _assert_chunk_invariants(chunks, text, 400)
    assert Counter(w for c in chunks for w in c.text.split() if w == "drifting")["drifting"] == 600
    assert sum(len(w) for c in chunks for w in c.text.split() if set(w) == {"x"}) == 2_500


def test_markers_headings_and_separators_are_dropped() -> None:
    prose_1 = "The morning was grey and the rain fell on the harbour wall for an hour."
    prose_2 = "At dusk the wind dropped, the air grew chilly, and the lamps came on along the quay."
    prose_3 = "Night, and a fine frost on the window of the little room under the roof."
    text = "\n\n".join(
        [
            "CHAPTER IV",
            "AMERICAN NOTES",
            "I.",
            "XII",
            "Chapter 7",
            prose_1,
            "[Illustration: The quay at Brennick, seen from the\nchapel steps at low water]",
            "* * * * *",
            prose_2 + " [Picture: a lamp] And the tide turned.",
            "[Illustration]",
            prose_3,
        ]
    )
    chunks = chunk_text(text, target_chars=100, min_chars=50, max_chars=300)
    _assert_chunk_invariants(chunks, text, 300)
    joined = "\n\n".join(c.text for c in chunks)
    assert joined == "\n\n".join([prose_1, prose_2 + " And the tide turned.", prose_3])
    assert "[" not in joined and "CHAPTER" not in joined and "Chapter" not in joined


def test_short_tail_merges_when_it_fits_and_stays_when_it_does_not() -> None:
    rng = rng_for(0, "test_text", "tail")
    body = _paragraph(rng, 6)[:480].strip()
    tail = "The rain stopped at last."
    merged = chunk_text(body + "\n\n" + tail, target_chars=500, min_chars=200, max_chars=1000)
    assert [c.text for c in merged] == [body + "\n\n" + tail]

    big = _paragraph(rng, 40)[:990].strip()
    assert len(big) + 2 + len(tail) > 1000
    kept = chunk_text(big + "\n\n" + tail, target_chars=500, min_chars=200, max_chars=1000)
    assert [c.text for c in kept] == [big, tail]


def test_chunk_offsets_map_back_to_the_source() -> None:
    rng = rng_for(0, "test_text", "offsets")
    parts = []
    for i in range(40):
        paragraph = _paragraph(rng, rng.randint(1, 12))
        parts.append(textwrap.fill(paragraph, width=72) if i % 2 else paragraph)
        if i % 7 == 3:
            parts.append(f"CHAPTER {i}")
    text = "\n\n".join(parts)
    chunks = chunk_text(text)
    _assert_chunk_invariants(chunks, text, 1000)
    for chunk in chunks:
        source = text[chunk.char_start : chunk.char_end]
        source = re.sub(r"(?m)^CHAPTER \d+$", "", source)
        assert source.split() == chunk.text.split()
    assert text[chunks[0].char_start :].startswith(chunks[0].text[:40])
    assert _chunk_words(chunks) == _words(re.sub(r"(?m)^CHAPTER \d+$", "", text))


@pytest.mark.parametrize("seed", range(6))
def test_random_mixed_texts_keep_every_word(seed: int) -> None:
    rng = rng_for(seed, "test_text", "mixed")
    pieces = []
    for _ in range(rng.randint(5, 40)):
        kind = rng.choice(["wrapped", "line", "giant", "short"])
        if kind == "wrapped":
            pieces.append(textwrap.fill(_paragraph(rng, rng.randint(1, 10)), width=rng.choice([60, 70, 78])))
        elif kind == "line":
            pieces.append("\n".join(_paragraph(rng, rng.randint(2, 5)) for _ in range(rng.randint(2, 6))))
        elif kind == "giant":
            pieces.append(_paragraph(rng, rng.randint(20, 60)))
        else:
            pieces.append(_sentence(rng, rng.randint(1, 5)))
    text = "\n\n".join(pieces)
    target = rng.choice([300, 500, 800])
    minimum = rng.randint(50, target)
    maximum = target + rng.randint(0, 700)
    chunks = chunk_text(text, target_chars=target, min_chars=minimum, max_chars=maximum)
    _assert_chunk_invariants(chunks, text, maximum)
    assert _chunk_words(chunks) == _words(text)


# --- bundled sample corpus and real corpus ------------------------------------------------------


def test_bundled_sample_corpus() -> None:
    files = sorted(SAMPLE_DIR.glob("*/*.txt"))
    names = {f.name for f in files}
    assert len([f for f in files if f.parent.name == "Modernist_Novel"]) >= 2
    assert len([f for f in files if f.parent.name == "Travel_Novel"]) >= 2
    assert "B902_North by Rail!.txt" in names
    formats = set()
    for path in files:
        novel = read_novel(path)
        formats.add(novel.source_format)
        assert novel.metadata["title"] and novel.metadata["author"]
        assert not any("link" in k for k in novel.metadata)
        chunks = chunk_text(novel.text, target_chars=500)
        assert len(chunks) >= 15, path.name
        assert chunk_problems(_chunk_frame(chunks), 1000, novel.text) == [], path.name
        for chunk in chunks:
            assert not any(bad in chunk.text for bad in FORBIDDEN_IN_CHUNKS), (path.name, chunk.index)
            assert "LICENSE" not in chunk.text and "\r" not in chunk.text
    assert formats == {"research", "gutenberg"}


def test_real_corpus_chunks_are_clean() -> None:
    files = sorted(require_corpus().glob("*/*.txt"))
    assert files
    for path in files:
        novel = read_novel(path)
        assert novel.source_format == "gutenberg" and novel.start_marker and novel.end_marker
        assert novel.metadata["title"] and novel.metadata["author"]
        chunks = chunk_text(novel.text)
        assert len(chunks) > 100, path.name
        for chunk in chunks:
            assert len(chunk.text) <= 1000
            assert not any(bad in chunk.text for bad in FORBIDDEN_IN_CHUNKS), (path.name, chunk.index)
        assert chunk_problems(_chunk_frame(chunks), 1000, novel.text) == [], path.name


def test_unclosed_illustration_marker_is_dropped_to_the_end_of_its_paragraph():
    text = ("The rain came down over the harbour all evening long.\n\n[Illustration: a quay in the rain\n"
            "with boats\n\nI walked home through the wet streets at night.")
    chunks = chunk_text(text, target_chars=60, min_chars=20, max_chars=200)
    joined = " ".join(c.text for c in chunks)
    assert "[Illustration" not in joined and "quay in the rain" not in joined
    assert "harbour" in joined and "wet streets" in joined


def test_cleaning_collapses_every_whitespace_run_like_split_and_join() -> None:
    """The fast paths of chunk cleaning (printable text: collapse runs of spaces) equal ``" ".join(s.split())``."""
    rng = rng_for(0, "test_text", "clean")
    pieces = ["a", "é", "’", " ", "  ", "\n", "\t", "\u2003", "\x0b", "\x1c", ".", "\n\n", "     ", "\u3000"]
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        assert _clean(text) == " ".join(text.split()), repr(text)


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_text_with_a_bom_is_read_not_called_binary(codec) -> None:
    """Issue 22, reproduction 5: Notepad's "Unicode" (UTF-16 with a BOM) was reported as a binary file."""
    text = "The rain fell on the harbour.\r\nIt was a grey morning, and the gulls cried.\r\n"
    data = ("\ufeff" + text).encode(codec) if codec != "utf-16" else text.encode("utf-16")
    decoded, encoding = decode_bytes(data, "notepad.txt")
    assert decoded == text.replace("\r\n", "\n") and encoding == "utf-16"


def test_utf16_bom_with_broken_bytes_is_a_clear_error() -> None:
    with pytest.raises(NovelReadError, match="not valid UTF-16"):
        decode_bytes(b"\xff\xfe" + "ab".encode("utf-16-le") + b"\x00\xd8", "broken.txt")
