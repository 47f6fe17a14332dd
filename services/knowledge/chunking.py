"""Knowledge text cut into chunks for the prompt: paragraphs, else sentences, with an overlap; and the
words a message is searched by."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# Chunks of about CHUNK_MIN..CHUNK_MAX characters, cut between paragraphs where possible, else between
# sentences; each starts with up to OVERLAP characters of the previous one, so a fact cut in two is whole
# in one of them. Text is cut into units (sentences, long ones split at words) of at most UNIT_MAX, which
# keeps every chunk but the last within the bounds.
CHUNK_MIN = 800
CHUNK_TARGET = 1000
CHUNK_MAX = 1200
UNIT_MAX = 400
OVERLAP = 200
# A chat message is searched by at most this many distinct words.
QUERY_MAX_WORDS = 64

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
# Between sentences (after . ! ? … and whitespace, or after CJK full stops), and at line breaks.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?…])\s+|(?<=[\u3002\uff01\uff1f])\s*|\s*\n\s*")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Prepared:
    """An entry ready to store: its text and chunks."""

    title: str
    content: str
    chunks: list[str]
    keys: tuple[str, ...] = ()


def clean_text(text: str) -> str:
    """Newlines unified, NUL dropped and lone surrogates replaced (PostgreSQL text holds neither), trimmed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return text.encode("utf-8", "replace").decode("utf-8").strip()


def _units(text: str) -> Iterator[tuple[str, str]]:
    """(separator before it, text) pieces of at most UNIT_MAX characters: sentences, and parts of longer
    ones. The separator is what stood between them: a paragraph break, a line break, a space or nothing.
    Made as they are read, so that chunking can stop and resume between chunks."""
    for paragraph in _PARAGRAPH_BREAK.split(text):
        separator = "\n\n"
        position = 0
        sentences: list[tuple[str, str]] = []
        for match in _SENTENCE_BREAK.finditer(paragraph):
            gap = match.group()
            sentences.append((paragraph[position : match.start()], "\n" if "\n" in gap else " " if gap else ""))
            position = match.end()
        sentences.append((paragraph[position:], ""))
        for sentence, after in sentences:
            sentence = sentence.strip()
            if not sentence:
                continue
            for part, joiner in _split_long(sentence):
                yield separator, part
                separator = joiner
            separator = after


def _split_long(sentence: str) -> list[tuple[str, str]]:
    """A sentence in parts of at most UNIT_MAX characters, cut at a space when there is one; each with
    the separator that goes before the next part."""
    parts: list[tuple[str, str]] = []
    while len(sentence) > UNIT_MAX:
        cut = sentence.rfind(" ", UNIT_MAX // 2, UNIT_MAX + 1)
        if cut == -1:
            parts.append((sentence[:UNIT_MAX], ""))
            sentence = sentence[UNIT_MAX:]
        else:
            parts.append((sentence[:cut].rstrip(), " "))
            sentence = sentence[cut + 1 :].lstrip()
    parts.append((sentence, ""))
    return parts


def _joined(units: Sequence[tuple[str, str]]) -> str:
    return "".join(text if i == 0 else separator + text for i, (separator, text) in enumerate(units))


def _overlap(units: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The end of a chunk to repeat at the start of the next: its last whole sentences within OVERLAP
    characters, else the last words of its last sentence."""
    kept: list[tuple[str, str]] = []
    size = 0
    for separator, text in reversed(units):
        if size + len(text) + len(separator) > OVERLAP:
            break
        kept.insert(0, (separator, text))
        size += len(text) + len(separator)
    if kept:
        return kept
    separator, text = units[-1]
    cut = text.find(" ", len(text) - OVERLAP * 3 // 4)
    return [(separator, text[cut + 1 :])] if cut != -1 else []


def split_into_chunks(text: str) -> list[str]:
    """Chunks of about CHUNK_MIN..CHUNK_MAX characters (the last may be shorter), cut at a paragraph
    break once past CHUNK_MIN when one comes, else between sentences; each starts with the previous
    one's last sentence (or words)."""
    return [chunk for chunk, _ in iter_chunks(text)]


def iter_chunks(text: str) -> Iterator[tuple[str, int]]:
    """`split_into_chunks` one chunk at a time, each with about how many characters of `text` were read to
    make it (len(text) with the last one): a long text can be chunked a batch at a time, with progress."""
    current: list[tuple[str, str]] = []
    size = 0
    read = 0
    for separator, unit in _units(text):
        grown = size + len(separator) + len(unit) if current else len(unit)
        paragraph = separator == "\n\n"
        if current and (grown > CHUNK_MAX or (paragraph and size >= CHUNK_MIN and grown > CHUNK_TARGET)):
            yield _joined(current), read
            current = _overlap(current)
            size = len(_joined(current))
            if current and size + len(separator) + len(unit) > CHUNK_MAX:
                current, size = [], 0
            grown = size + len(separator) + len(unit) if current else len(unit)
        current.append((separator, unit))
        size = grown
        read += len(separator) + len(unit)
    if current:
        yield _joined(current), len(text)


def _with_keys(chunks: list[str], keys: Sequence[str]) -> list[str]:
    """A character book entry's chunks start with its keys, so a message naming a key finds it."""
    if not keys:
        return chunks
    prefix = "Keys: " + ", ".join(keys) + "\n"
    return [prefix + chunk for chunk in chunks]


def prepare(title: str, content: str, keys: Sequence[str] = ()) -> Prepared:
    return Prepared(title, content, _with_keys(split_into_chunks(content), keys), tuple(keys))


def query_words(query: str) -> list[str]:
    """The distinct words of a message (at most QUERY_MAX_WORDS), lowercased, in order."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        seen.setdefault(word, None)
        if len(seen) >= QUERY_MAX_WORDS:
            break
    return list(seen)
