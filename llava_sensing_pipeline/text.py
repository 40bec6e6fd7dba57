"""Reading novels (research, Project Gutenberg or plain layout) and cutting them into chunks.

``read_novel`` / ``parse_novel`` decode a file (UTF-8 with or without BOM, UTF-16 with a BOM (Notepad's
"Unicode"), else Windows-1252, else Latin-1; no control character survives decoding), find the
START/END markers of either layout, keep only the body between them, and read the header into a
metadata dict that never carries a source link. ``chunk_text`` turns a body into paragraph-aware
chunks near a target size: hard-wrapped lines are re-joined, one-paragraph-per-line text is split
per line, illustration markers and headings are dropped, long paragraphs are cut at sentence (then
word) boundaries so no chunk exceeds ``max_chars``, and every chunk maps back to its source span.
All passes are compiled regexes or loops over paragraphs, never over characters.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "NovelReadError",
    "NovelText",
    "TextChunk",
    "chunk_text",
    "decode_bytes",
    "parse_novel",
    "read_novel",
]


class NovelReadError(ValueError):
    """A novel file cannot be used; the message names the file, the reason, and what to do."""


@dataclass(frozen=True)
class NovelText:
    """One decoded novel: its body, header metadata and provenance."""

    path: str
    text: str
    metadata: dict[str, str]
    source_format: str
    encoding: str
    start_marker: bool
    end_marker: bool
    sha256: str


class TextChunk(NamedTuple):
    """A cleaned chunk and the span ``[char_start, char_end)`` of ``NovelText.text`` it comes from (a named tuple:
    a file has thousands, and a tuple is made in a fraction of a frozen dataclass's time)."""

    index: int
    text: str
    char_start: int
    char_end: int


# --- decoding ---------------------------------------------------------------------------------

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# C0 control bytes other than TAB, LF, VT, FF and CR, plus DEL: text files hardly ever hold them.
_CONTROL_BYTES = bytes([*range(0x00, 0x09), *range(0x0E, 0x20), 0x7F])
_MAX_CONTROL_SHARE = 0.01
# The five bytes Windows-1252 leaves undefined: a file holding one is read as Latin-1.
_CP1252_UNDEFINED = (0x81, 0x8D, 0x8F, 0x90, 0x9D)
# Control characters that are not whitespace: C0 other than TAB, LF, VT, FF, CR and the separators 0x1C-0x1F,
# DEL, and C1 other than NEL (0x85).
CONTROL_CHARS_RE = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")
# After decoding: a C1 character that Windows-1252 defines is that character (a Windows-1252 quote or dash read as
# Latin-1 somewhere, in this file or by an earlier tool); every other non-whitespace control character is dropped.
_CONTROL_REPAIR = {
    **{c: None for c in [*range(0x00, 0x09), *range(0x0E, 0x1C), *range(0x7F, 0xA0)]},
    **{c: bytes([c]).decode("cp1252") for c in range(0x80, 0xA0) if c not in _CP1252_UNDEFINED},
}
_C1_RE = re.compile(r"[\x80-\x9f]")


def _binary_error(path: str, reason: str) -> NovelReadError:
    return NovelReadError(
        f"cannot read novel '{path}': it looks like a binary file ({reason}); "
        "remove it from the input folder or replace it with the novel as plain UTF-8, Windows-1252 or Latin-1 text"
    )


def repair_controls(text: str) -> str:
    """``text`` with every C1 character that Windows-1252 defines replaced by it (U+0093 becomes U+201C) and every
    other non-whitespace control character (C0, DEL, the rest of C1) removed."""
    if CONTROL_CHARS_RE.search(text) is None and _C1_RE.search(text) is None:
        return text
    return text.translate(_CONTROL_REPAIR)


def decode_bytes(data: bytes, path: str) -> tuple[str, str]:
    """Decode raw bytes to ``(text, encoding)`` with LF line endings, U+00A0 replaced by a space and no
    control characters other than whitespace (:func:`repair_controls`).

    UTF-16 with a byte-order mark (Notepad's "Unicode", little or big endian) gives ``"utf-16"``. UTF-8 with a
    BOM gives ``"utf-8-sig"``, without one ``"utf-8"``; bytes that are not valid UTF-8
    are read as ``"cp1252"`` (Windows-1252: curly quotes and dashes in 0x80-0x9F), and bytes that are not
    valid Windows-1252 either (0x81, 0x8D, 0x8F, 0x90 or 0x9D) as ``"latin-1"`` (which never fails). NUL bytes
    or more than 1 % of other control bytes raise :class:`NovelReadError` ("looks like a binary file").
    """
    if data.startswith(_UTF16_BOMS):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            raise _binary_error(path, "it starts like UTF-16 text but is not valid UTF-16") from None
        data, utf16 = text.encode("utf-8"), True
    else:
        utf16 = False
    if b"\x00" in data:
        raise _binary_error(path, "it contains NUL bytes")
    if data:
        controls = len(data) - len(data.translate(None, _CONTROL_BYTES))
        if controls / len(data) > _MAX_CONTROL_SHARE:
            raise _binary_error(path, f"{controls} of its {len(data)} bytes are control characters")
    encoding = "utf-8-sig" if data.startswith(_UTF8_BOM) else "utf-8"
    if b"\r" in data:  # on the bytes, before decoding: CR and LF never occur inside a UTF-8 sequence
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    text = None
    for encoding in (encoding, "cp1252", "latin-1"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    text = repair_controls(text)
    encoding = "utf-16" if utf16 else encoding
    return (text.replace("\xa0", " ") if "\xa0" in text else text), encoding


# --- markers and headers ----------------------------------------------------------------------

_PG_WORDS = r"TH(?:IS|E)\s+PROJECT\s+GUTENBERG"
_RESEARCH_WORDS = r"THIS\s+TEXT"
# Marker patterns are matched at line starts found by ``_line_match`` (fast ``str.find``).
_START_RE = re.compile(
    rf"[ \t]*\*{{3}}[ \t]*START\s+OF\s+(?:(?P<pg>{_PG_WORDS})|{_RESEARCH_WORDS})\b[^\n]*", re.IGNORECASE
)
_END_RE = re.compile(
    rf"[ \t]*\*{{3}}[ \t]*END\s+OF\s+(?:(?P<pg>{_PG_WORDS})|{_RESEARCH_WORDS})\b", re.IGNORECASE
)
# A marker whose title wrapped onto a second line: that line closes with the asterisks.
_MARKER_CONTINUATION_RE = re.compile(r"\n[ \t]*[^\s*][^\n]*\*{3}[ \t]*(?=\n|\Z)")
_KEY_VALUE_RE = re.compile(
    r"^[ \t]*`?[ \t]*(?P<key>[A-Za-z][A-Za-z0-9 _'()-]{0,60}?)[ \t]*:(?P<value>[^\n]*)$", re.MULTILINE
)
_LEADING_HEADER_RE = re.compile(
    r"\A\s*(?:[ \t]*`?[ \t]*[A-Za-z][A-Za-z0-9 _'()-]{0,60}?[ \t]*:[^\n]*(?:\n|\Z)){2,}"
)
_PG_KEY_RE = re.compile(
    r"^(?P<key>Title|Author|Translator|Editor|Illustrator|Language)[ \t]*:[ \t]*"
    r"(?P<value>[^\n]*(?:\n[ \t]+\S[^\n]*)*)",
    re.IGNORECASE | re.MULTILINE,
)
_PG_EBOOK_NUMBER_RE = re.compile(r"\[\s*E-?(?:Book|Text)\s*#\s*(\d+)\s*\]", re.IGNORECASE)
_URL_RE = re.compile(r"(?:[a-z][a-z0-9+.-]*://|\bwww\.)", re.IGNORECASE)
_LINK_KEY_PARTS = ("link", "source", "soure", "url")

# Project Gutenberg boilerplate inside the markers.
_PG_CREDIT_RE = re.compile(
    r"[ \t]*(?:Produced\s+by|Transcribed\s+(?:from|by)|E-?text\s+prepared\s+by|Prepared\s+by"
    r"|This\s+e-?(?:text|book)\s+was\s+(?:produced|prepared)\s+by)\b",
    re.IGNORECASE,
)
_PG_TAIL_RE = re.compile(
    r"[ \t]*(?:End\s+of\s+(?:the\s+|this\s+)?Project\s+Gutenberg|\*+[ \t]*START:?[ \t]*FULL\s+LICENSE)",
    re.IGNORECASE,
)
_PG_NEEDLES = ("utenberg", "UTENBERG", "LICENSE")
_PG_NAME_RE = re.compile(r"project\s+gutenberg", re.IGNORECASE)
_BLANK_LINES_RE = re.compile(r"\n[ \t]*\n\s*")
_EMAIL_LINE_RE = re.compile(r"[^\n]*@[^\n]*")
_MAX_CREDIT_CHARS = 400


def _line_match(
    text: str, pattern: re.Pattern[str], needles: tuple[str, ...], pos: int = 0
) -> re.Match[str] | None:
    """Earliest match of ``pattern`` at the start of a line (at or after ``pos``) holding a needle."""
    best: re.Match[str] | None = None
    for needle in needles:
        idx = text.find(needle, pos)
        while idx >= 0 and (best is None or idx < best.start()):
            line = text.rfind("\n", 0, idx) + 1
            if line >= pos:
                found = pattern.match(text, line)
                if found is not None:
                    best = found
                    break
            idx = text.find(needle, idx + 1)
    return best


def _normalise_key(raw: str) -> str:
    return re.sub(r"_+", "_", raw.strip("` \t").lower().replace(" ", "_"))


def _keep_entry(key: str, value: str) -> bool:
    return bool(key and value) and not any(p in key for p in _LINK_KEY_PARTS) and not _URL_RE.search(value)


def _parse_key_values(header: str) -> dict[str, str]:
    """``Key:Value`` lines of a research header, keys normalised, links and URLs dropped."""
    metadata: dict[str, str] = {}
    for m in _KEY_VALUE_RE.finditer(header):
        key, value = _normalise_key(m.group("key")), m.group("value").strip()
        if _keep_entry(key, value):
            metadata.setdefault(key, value)
    return metadata


def _parse_gutenberg_header(header: str) -> dict[str, str]:
    """Title, author, language (and translator/editor/illustrator) and the eBook number."""
    metadata: dict[str, str] = {}
    for m in _PG_KEY_RE.finditer(header):
        key, value = m.group("key").lower(), " ".join(m.group("value").split())
        if _keep_entry(key, value):
            metadata.setdefault(key, value)
    number = _PG_EBOOK_NUMBER_RE.search(header)
    if number:
        metadata["index_number"] = number.group(1)
    return metadata


def _strip_gutenberg_boilerplate(body: str) -> str:
    """Drop credit lines after START, the closing "End of ... Project Gutenberg" line and licence
    text before END, and any paragraph that still names Project Gutenberg."""
    body = body.lstrip()
    while (credit := _PG_CREDIT_RE.match(body)) is not None:
        gap = _BLANK_LINES_RE.search(body)
        paragraph_end = gap.start() if gap else len(body)
        if paragraph_end <= _MAX_CREDIT_CHARS:
            body = body[paragraph_end:].lstrip()
        else:  # no blank line after the credit: drop its line and an e-mail line after it
            line_end = body.find("\n", credit.end())
            rest = body[line_end + 1 :] if line_end >= 0 else ""
            email = _EMAIL_LINE_RE.match(rest)
            body = (rest[email.end() :] if email and "@" in email.group() else rest).lstrip()
    tail = _line_match(body, _PG_TAIL_RE, _PG_NEEDLES)
    if tail:
        body = body[: tail.start()]
    if "utenberg" in body or "UTENBERG" in body:
        body = "\n\n".join(p for p in _BLANK_LINES_RE.split(body) if not _PG_NAME_RE.search(p))
    return body


def parse_novel(data: bytes, path: str) -> NovelText:
    """Decode and split one novel file's bytes into body text and metadata (pure).

    Raises :class:`NovelReadError` when the bytes are empty, blank, binary or hold no body text.
    """
    if not data:
        raise NovelReadError(
            f"cannot read novel '{path}': the file is empty (0 bytes); "
            "remove it from the input folder or replace it with the novel's text"
        )
    text, encoding = decode_bytes(data, path)
    if not text.strip():
        raise NovelReadError(
            f"cannot read novel '{path}': the file holds only whitespace; "
            "remove it from the input folder or replace it with the novel's text"
        )

    start = _line_match(text, _START_RE, ("***",))
    if start:
        header, body_start = text[: start.start()], start.end()
        if not start.group().rstrip().endswith("***"):
            more = _MARKER_CONTINUATION_RE.match(text, body_start)
            if more:
                body_start = more.end()
    else:
        lead = _LEADING_HEADER_RE.match(text)
        lead_metadata = _parse_key_values(lead.group()) if lead else {}
        if lead and ("title" in lead_metadata or "author" in lead_metadata):
            header, body_start = lead.group(), lead.end()
        else:
            header, body_start = "", 0
    end = _line_match(text, _END_RE, ("***",), body_start)
    body = text[body_start : end.start() if end else len(text)]

    if (start and start.group("pg")) or (end and end.group("pg")):
        source_format = "gutenberg"
        metadata = _parse_gutenberg_header(header)
        body = _strip_gutenberg_boilerplate(body)
    else:
        source_format = "research" if start or end else "plain"
        metadata = _parse_key_values(header)
    body = body.strip()
    if not body:
        where = "between the START and END markers" if start or end else "after the header"
        raise NovelReadError(
            f"cannot read novel '{path}': no body text {where}; "
            "check that the file holds the novel's text and not only its header"
        )
    return NovelText(
        path=path,
        text=body,
        metadata=metadata,
        source_format=source_format,
        encoding=encoding,
        start_marker=start is not None,
        end_marker=end is not None,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def read_novel(path: str | os.PathLike[str]) -> NovelText:
    """Read a novel file and :func:`parse_novel` it; an unreadable file raises :class:`NovelReadError`."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise NovelReadError(
            f"cannot read novel '{name}': {exc.strerror or exc}; "
            "check that the file exists and is readable"
        ) from exc
    return parse_novel(data, name)


# --- chunking ---------------------------------------------------------------------------------

# A marker ends at its "]"; an unclosed one (a malformed file) ends at the end of its paragraph.
_MARKER_RE = re.compile(r"\[[ \t]*(?:illustration|picture)\b(?:[^\]\[]{0,2000}\]|(?:(?!\n[ \t]*\n)[^\]\[]){0,2000})",
                        re.IGNORECASE)
_NON_NEWLINE_RE = re.compile(r"[^\n]")
# A block: a maximal run of non-blank lines; group 1 starts at its first visible character.
_BLOCK_RE = re.compile(r"^[ \t]*(\S[^\n]*(?:\n[ \t]*\S[^\n]*)*)", re.MULTILINE)
_LINE_RE = re.compile(r"[^\n]*\S[^\n]*")
# Longest line that still counts as hard-wrapped; a block with a longer inner line has one
# paragraph per line.
_WRAP_MAX = 100
_ALNUM_RE = re.compile(r"[^\W_]")
_NUMERAL_RE = re.compile(r"(?:[IVXLCDM]+|[ivxlcdm]+|\d+)[.:]?")
_CHAPTER_RE = re.compile(r"(?:chapter|part|book|volume|canto)\s+(?:[ivxlcdm]+|\d+)[.:]?", re.IGNORECASE)
_HEADING_MAX = 100
_SENTENCE_END_RE = re.compile(r"[.!?…][\"'’”)\]]*\s+")
_PARAGRAPH_JOIN = "\n\n"


def _clean(source: str) -> str:
    """Collapse every whitespace run (line breaks included) to one space and strip; drop control characters."""
    flat = source.replace("\n", " ")  # the usual hard-wrapped paragraph: spaces and line feeds
    if flat.isprintable():  # then the space is its only whitespace (no tab, no U+2003): collapse runs of it
        while "  " in flat:
            flat = flat.replace("  ", " ")
        return flat.strip()
    return " ".join(CONTROL_CHARS_RE.sub("", source).split())


def _is_heading(paragraph: str) -> bool:
    """Headings, numerals and separators: all-caps short lines, ``I.``, ``Chapter 4``, ``* * *``."""
    if not (paragraph[:1].isalnum() or _ALNUM_RE.search(paragraph)):  # the first test settles most paragraphs
        return True
    if len(paragraph) > _HEADING_MAX:
        return False
    if paragraph.upper() == paragraph and paragraph.lower() != paragraph:
        return True
    return _NUMERAL_RE.fullmatch(paragraph) is not None or _CHAPTER_RE.fullmatch(paragraph) is not None


def _paragraphs(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, source)`` of each paragraph: a blank-line block, or each of its lines when
    the block holds a line longer than a hard wrap (one paragraph per line)."""
    paragraphs: list[tuple[int, int, str]] = []
    for block in _BLOCK_RE.finditer(text):
        start, end = block.span(1)
        body = block.group(1)
        if "\n" in body and max(map(len, body.split("\n")[:-1])) > _WRAP_MAX:
            paragraphs.extend(
                (start + line.start(), start + line.end(), line.group()) for line in _LINE_RE.finditer(body)
            )
        else:
            paragraphs.append((start, end, body))
    return paragraphs


def _cut_words(text: str, start: int, end: int, target: int, limit: int) -> list[tuple[int, int]]:
    """Spans of at most ``limit`` chars cut at the last space before ``target`` (else before
    ``limit``); a run without spaces longer than ``limit`` is cut hard."""
    spans: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        if end - pos <= limit:
            spans.append((pos, end))
            break
        window = text[pos : pos + limit + 1]
        space = max(window.rfind(" ", 0, target + 1), window.rfind("\n", 0, target + 1))
        if space <= 0:
            space = max(window.rfind(" "), window.rfind("\n"))
        cut = pos + space if space > 0 else pos + limit
        spans.append((pos, cut))
        pos = cut
    return spans


def _split_long(text: str, start: int, end: int, target: int, limit: int) -> list[tuple[int, int, str]]:
    """``(start, end, cleaned)`` pieces of an over-long paragraph: whole sentences packed near
    ``target`` source chars, a sentence over ``limit`` cut by :func:`_cut_words`.

    Pieces are measured in source chars, which bound the cleaned length, so none exceeds ``limit``.
    """
    spans: list[tuple[int, int]] = []
    piece_start = last = start
    for cut in [*(m.end() for m in _SENTENCE_END_RE.finditer(text, start, end)), end]:
        while cut - piece_start > target:
            if last > piece_start:  # close the piece before or after this sentence, nearer target
                if cut - piece_start <= limit and cut - piece_start - target < target - (last - piece_start):
                    last = cut
                spans.append((piece_start, last))
                piece_start = last
            elif cut - piece_start <= limit:
                spans.append((piece_start, cut))
                piece_start = last = cut
            else:
                spans.extend(_cut_words(text, piece_start, cut, target, limit))
                piece_start = last = cut
        last = cut
    if last > piece_start:
        spans.append((piece_start, last))

    pieces: list[tuple[int, int, str]] = []
    for s, e in spans:
        source = text[s:e]
        clean = _clean(source)
        if clean:
            s += len(source) - len(source.lstrip())
            e -= len(source) - len(source.rstrip())
            pieces.append((s, e, clean))
    return pieces


def _fold_short(
    bounds: list[list[int]], cleans: list[str], joined: list[str], min_chars: int, max_chars: int
) -> None:
    """Merge the last chunk into the one before it when it is under ``min_chars`` and both fit."""
    if len(bounds) < 2 or bounds[-1][2] >= min_chars:
        return
    first, end, length = bounds[-1]
    size = bounds[-2][2] + len(joined[first]) - len(cleans[first]) + length
    if size <= max_chars:
        bounds.pop()
        bounds[-1][1:] = [end, size]


def chunk_text(
    text: str, target_chars: int = 500, min_chars: int = 200, max_chars: int = 1000
) -> list[TextChunk]:
    """Paragraph-aware chunks of ``text`` near ``target_chars``, none longer than ``max_chars``.

    Paragraphs are packed whole; a paragraph whose source span is over ``max_chars`` is split at
    sentence, then word boundaries. A chunk under ``min_chars`` merges with a neighbour when the
    result fits ``max_chars``, else it is kept. Text with no paragraphs gives ``[]``. Raises
    ``ValueError`` unless ``0 < min_chars <= target_chars <= max_chars``.
    """
    if not 0 < min_chars <= target_chars <= max_chars:
        raise ValueError(
            "chunk sizes must satisfy 0 < min_chars <= target_chars <= max_chars, got "
            f"min_chars={min_chars}, target_chars={target_chars}, max_chars={max_chars}"
        )
    if "[" in text:  # blank out markers in place so offsets still point into ``text``
        masked = _MARKER_RE.sub(lambda m: _NON_NEWLINE_RE.sub(" ", m.group()), text)
    else:
        masked = text

    # Units in reading order: source span, cleaned text, and that text with the joiner that
    # precedes it inside a chunk ("\n\n" between paragraphs, " " between pieces of one).
    starts: list[int] = []
    ends: list[int] = []
    cleans: list[str] = []
    joined: list[str] = []
    for start, end, source in _paragraphs(masked):
        if len(source) <= max_chars:  # cleaning only shortens, so the paragraph fits
            clean = _clean(source)
            if not _is_heading(clean):
                starts.append(start)
                ends.append(end)
                cleans.append(clean)
                joined.append(_PARAGRAPH_JOIN + clean)
            continue
        for i, (s, e, piece) in enumerate(_split_long(masked, start, end, target_chars, max_chars)):
            starts.append(s)
            ends.append(e)
            cleans.append(piece)
            joined.append((_PARAGRAPH_JOIN if i == 0 else " ") + piece)

    # Greedy packing; a finished chunk under min_chars folds into the previous one if it fits.
    bounds: list[list[int]] = []  # [first unit, end unit, length]
    for u, piece in enumerate(joined):
        if bounds:
            current = bounds[-1]
            size = current[2] + len(piece)
            near_target = size - target_chars < target_chars - current[2]
            if size <= max_chars and (size <= target_chars or current[2] < min_chars or near_target):
                current[1] = u + 1
                current[2] = size
                continue
            _fold_short(bounds, cleans, joined, min_chars, max_chars)
        bounds.append([u, u + 1, len(cleans[u])])
    if bounds:
        _fold_short(bounds, cleans, joined, min_chars, max_chars)

    return [
        TextChunk(
            index=n, text=cleans[a] + "".join(joined[a + 1 : b]), char_start=starts[a], char_end=ends[b - 1]
        )
        for n, (a, b, _length) in enumerate(bounds)
    ]
