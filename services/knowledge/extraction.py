"""What an uploaded knowledge file holds: its type decided from the content (plain text, Markdown or PDF),
and its text; file names made safe for storing and for downloads."""

from __future__ import annotations

import io
import re
import time
import unicodedata

from core import limits
from core.errors import AppError, UnsupportedMediaType, ValidationFailed
from services import character_cards as cards
from services.knowledge.chunking import clean_text

# The most text one entry may hold: what the JSON form accepts, and what a file may turn into.
TEXT_MAX_CHARS = limits.KNOWLEDGE_TEXT_MAX
FILE_MAX_CHARS = 2_000_000
# A PDF whose text takes longer than this to extract (huge, or built to be slow) is refused.
PDF_MAX_SECONDS = 30

PDF = "application/pdf"
MARKDOWN = "text/markdown"
PLAIN = "text/plain"

_MARKDOWN = re.compile(r"^(#{1,6} \S|```|[-*+] \S|\d+\. \S|> \S)|\[[^\]\n]+\]\([^)\s]+\)|\*\*\S", re.MULTILINE)
_CONTROL = re.compile(r"[\x01-\x08\x0b\x0e-\x1f\x7f]")
_BINARY_KINDS = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a ZIP archive (or a Word/ODF document)"),
    (b"RIFF", "a RIFF file (WAV/WebP)"),
)


def _pdf_text(data: bytes) -> str:
    """The text of every page, pages separated by blank lines. CPU work: run it off the event loop."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                opened = bool(reader.decrypt(""))  # many "encrypted" PDFs only restrict printing and copying
            except Exception:  # noqa: BLE001 - an unknown cipher is as unreadable as a password
                opened = False
            if not opened:
                raise ValidationFailed(
                    "file: the PDF is password-protected; upload an unprotected copy",
                    details=[{"field": "file", "message": "encrypted PDF"}],
                )
        pages: list[str] = []
        size = 0
        deadline = time.monotonic() + PDF_MAX_SECONDS
        for page in reader.pages:
            if time.monotonic() > deadline:
                raise ValidationFailed(
                    f"file: reading the PDF took longer than {PDF_MAX_SECONDS} seconds; upload its text instead",
                    details=[{"field": "file", "message": "PDF too slow to read"}],
                )
            text = page.extract_text() or ""
            size += len(text)
            if size > FILE_MAX_CHARS:
                raise _too_much_text()
            pages.append(text)
    except AppError:
        raise
    except Exception as err:  # pypdf raises many kinds of errors on malformed files
        raise ValidationFailed(
            "file: the PDF could not be read (it may be damaged)",
            details=[{"field": "file", "message": f"unreadable PDF ({type(err).__name__})"}],
        ) from err
    return "\n\n".join(pages)


def _too_much_text() -> ValidationFailed:
    return ValidationFailed(
        f"file: more than {FILE_MAX_CHARS} characters of text; split it into several files",
        details=[{"field": "file", "message": "too much text"}],
    )


def _unsupported(what: str) -> UnsupportedMediaType:
    return UnsupportedMediaType(
        f"file: {what} is not supported; upload a TXT, Markdown or PDF file",
        details=[{"field": "file", "message": "unsupported file type"}],
    )


def _decode_text(data: bytes) -> str:
    """Text from UTF-8 (or UTF-16 with a byte order mark), or 415 for anything that is not text."""
    for magic, what in _BINARY_KINDS:
        if data.startswith(magic):
            raise _unsupported(what)
    try:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            text = data.decode("utf-16")
        else:
            text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _unsupported("a binary file (not UTF-8 text)") from err
    sample = text[:65536]
    if "\x00" in text or len(_CONTROL.findall(sample)) > max(4, len(sample) // 100):
        raise _unsupported("a binary file (not text)")
    return text


def extract_file_text(data: bytes, filename: str | None) -> tuple[str, str]:
    """(content type, text) of an uploaded file, decided from its content: PDF by its `%PDF-` header,
    otherwise UTF-8 text (Markdown when named .md/.markdown or written in Markdown). CPU work."""
    if data.startswith(b"%PDF-"):
        content_type, text = PDF, _pdf_text(data)
    else:
        text = _decode_text(data)
        named_md = (filename or "").lower().endswith((".md", ".markdown"))
        content_type = MARKDOWN if named_md or _MARKDOWN.search(text[:65536]) else PLAIN
    text = clean_text(text)
    if len(text) > FILE_MAX_CHARS:
        raise _too_much_text()
    if not text:
        raise ValidationFailed(
            "file: no text found in the file" + (" (a scanned PDF has only images)" if content_type == PDF else ""),
            details=[{"field": "file", "message": "no text"}],
        )
    return content_type, text


def safe_filename(filename: str | None) -> str | None:
    """The name without any folder, control characters or NUL, at most 255 characters."""
    if not filename:
        return None
    name = re.split(r"[/\\]", filename)[-1]
    name = clean_text(_CONTROL.sub("", name.replace("\n", " ").replace("\t", " ")))[:255]
    return name or None


def title_from_filename(filename: str | None) -> str:
    if not filename:
        return "Untitled"
    stem = filename.rsplit(".", 1)[0] if "." in filename.strip(".") else filename
    return stem.strip()[: cards.TITLE_MAX] or "Untitled"


def attachment_name(name: str, extension: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", ascii_name).strip("-").lower()[:60]
    return f"{slug or 'persona'}.{extension}"
