"""Split a document into chunks of at most `max_tokens`, at paragraph and sentence boundaries.

Why this shape: chunks are what synthesis and retrieval see, so a chunk should hold whole sentences and keep
a section heading with the text it introduces. Every chunk is an exact slice of the document text, so no word
is ever lost, duplicated or rewritten, and chunk boundaries only move to smaller units (lines, then words, then
characters) when a single sentence is longer than `max_tokens`. Token counts come from any callable, usually
the base model's tokenizer, so "200 tokens" means what the model will see.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Span = tuple[int, int]
CountTokens = Callable[[str], int]

# Words that end with a period but rarely end a sentence: titles before names, Latin and reference
# abbreviations, month names. "etc." and "Inc." are left out: they end sentences as often as not.
_ABBREVIATIONS = frozenset(
    """
    mr mrs ms mx dr prof sr jr st rev fr gen col capt lt sgt cmdr adm gov sen rep hon pres supt insp mt ft
    vs cf al approx ca no nos fig figs eq eqs vol vols ch sec pp p ed eds est dept univ
    jan feb mar apr jun jul aug sep sept oct nov dec
    """.split()
)
# A run of sentence-ending punctuation, then closing quotes/brackets, then whitespace.
_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_HEADING_LINE = re.compile(r"#{1,6}[ \t]")


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[Span]:
    """(start, end) offsets of the sentences of `text[start:end]`; together they cover all of its
    non-space characters, in order."""
    end = len(text) if end is None else end
    spans: list[Span] = []
    begin = _skip_space(text, start, end)
    for match in _END.finditer(text, begin, end):
        stop = match.end()
        after = _skip_space(text, stop, end)
        if after >= end or not _is_boundary(text, begin, match.start(), match.group(), after):
            continue
        spans.append((begin, stop))
        begin = after
    if begin < end:
        spans.append((begin, _rstrip(text, begin, end)))
    return spans


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`: splits after . ! ? unless that is "Dr.", "e.g.", an initial or a decimal."""
    return [text[a:b] for a, b in sentence_spans(text)]


def _is_boundary(text: str, begin: int, punct_at: int, punct: str, next_at: int) -> bool:
    if text[next_at].islower():
        return False  # "e.g. the", "approx. five": a sentence does not start in lower case
    if not punct.startswith(".") or punct.startswith(".."):
        return True  # "!", "?", "..." always end a sentence when a capital follows
    word = re.search(r"[\w.]*$", text[max(begin, punct_at - 40) : punct_at]).group()
    if not word:
        return True
    if len(word) == 1 and word.isupper():
        return False  # an initial: "J. R. Tolkien"
    if "." in word and re.fullmatch(r"(?:\w\.)+\w", word):
        return False  # "e.g.", "i.e.", "U.S."
    return word.lower() not in _ABBREVIATIONS


def _skip_space(text: str, i: int, end: int) -> int:
    while i < end and text[i].isspace():
        i += 1
    return i


def _rstrip(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1].isspace():
        end -= 1
    return end


def _paragraph_spans(text: str) -> list[Span]:
    spans, begin = [], 0
    for match in _PARAGRAPH_BREAK.finditer(text):
        spans.append((begin, match.start()))
        begin = match.end()
    spans.append((begin, len(text)))
    return [(a, _rstrip(text, a, b)) for a, b in ((_skip_space(text, a, b), b) for a, b in spans) if a < b]


def _units(text: str) -> list[Span]:
    """Sentences in document order, each heading line fused with whatever follows it."""
    units: list[Span] = []
    for p_start, p_end in _paragraph_spans(text):
        body = p_start
        # A heading line is its own unit, even without a blank line after it.
        while body < p_end and _HEADING_LINE.match(text, body):
            line_end = text.find("\n", body, p_end)
            line_end = p_end if line_end == -1 else line_end
            units.append((body, _rstrip(text, body, line_end)))
            body = _skip_space(text, line_end, p_end)
        if body < p_end:
            units.extend(sentence_spans(text, body, p_end))
    return _fuse_headings(text, units)


def _fuse_headings(text: str, units: list[Span]) -> list[Span]:
    """Merge every unit that starts with a heading line into the unit after it, so no cut falls between them."""
    fused: list[Span] = []
    pending: int | None = None  # start of the headings waiting for their text
    for start, stop in units:
        if _HEADING_LINE.match(text, start) and "\n" not in text[start:stop]:
            pending = start if pending is None else pending
            continue
        fused.append((start if pending is None else pending, stop))
        pending = None
    if pending is not None:  # headings at the very end, with nothing after them
        fused.append((pending, units[-1][1]))
    return fused


def _finer(text: str, span: Span) -> list[Span]:
    """The next finer cut of a span too long for one chunk: its lines (headings kept with the next line), else
    its words, else its characters; empty when it is a single character."""
    start, end = span
    segment = text[start:end]
    for pattern in (r"[^\S\n]*\S[^\n]*", r"\S+", r"\S"):
        cut = [(start + m.start(), start + m.end()) for m in re.finditer(pattern, segment)]
        cut = [(_skip_space(text, a, b), _rstrip(text, a, b)) for a, b in cut]
        if pattern.startswith("[^"):
            cut = _fuse_headings(text, cut)
        if len(cut) > 1:
            return cut
    return []


def _pack(text: str, units: list[Span], count: CountTokens, max_tokens: int) -> list[Span]:
    """Greedily join consecutive units into spans of at most `max_tokens`, counted on the real slice (token
    counts of parts do not add up exactly); a unit too long on its own is cut finer first."""
    out: list[Span] = []
    start: int | None = None  # of the span being filled
    stop = 0
    for unit in units:
        if start is not None and count(text[start : unit[1]]) <= max_tokens:
            stop = unit[1]
            continue
        if start is not None:
            out.append((start, stop))
            start = None
        if count(text[unit[0] : unit[1]]) <= max_tokens:
            start, stop = unit
            continue
        finer = _finer(text, unit)
        out.extend(_pack(text, finer, count, max_tokens) if finer else [unit])  # [unit]: one character over
    if start is not None:
        out.append((start, stop))
    return out


def chunk_text(text: str, count_tokens: CountTokens, max_tokens: int = 200) -> list[tuple[str, int]]:
    """(chunk text, token count) pairs covering `text` in order; each has at most `max_tokens` tokens unless a
    single character already exceeds it."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, not {max_tokens}")
    spans = _pack(text, _units(text), count_tokens, max_tokens)
    return [(text[a:b], count_tokens(text[a:b])) for a, b in spans]
