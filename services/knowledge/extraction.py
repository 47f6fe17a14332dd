"""What an uploaded knowledge file holds: its type decided from the content (plain text, Markdown or PDF),
and its text; file names made safe for storing and for downloads."""

from __future__ import annotations

import io
import re
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from core import limits
from core.errors import AppError, UnsupportedMediaType, ValidationFailed
from services import character_cards as cards
from services.knowledge.chunking import clean_text

if TYPE_CHECKING:
    from pypdf import PdfReader

# The most text one entry may hold: what the JSON form accepts, and what a file may turn into.
TEXT_MAX_CHARS = limits.KNOWLEDGE_TEXT_MAX
FILE_MAX_CHARS = 2_000_000
# A PDF whose text takes longer than this to extract (huge, or built to be slow) is refused.
PDF_MAX_SECONDS = 30
# What makes a file "large": worth a background job rather than the request. A megabyte of text takes about
# half a second to chunk and store (some 1,100 chunks with their search vectors), so past LARGE_FILE_BYTES a
# request would wait for seconds. A PDF's text costs per page: about 6 ms for a plain page, several times that
# with real-world fonts and layouts, whatever its bytes (400 KB can hold 100 text pages, 3 MB three scanned
# ones), so a PDF also counts by pages.
LARGE_FILE_BYTES = 1024 * 1024
LARGE_PDF_PAGES = 20

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


@contextmanager
def _readable() -> Iterator[None]:
    """pypdf's many kinds of errors on a malformed file, as one 422."""
    try:
        yield
    except AppError:
        raise
    except Exception as err:  # pypdf raises many kinds of errors on malformed files
        raise ValidationFailed(
            "file: the PDF could not be read (it may be damaged)",
            details=[{"field": "file", "message": f"unreadable PDF ({type(err).__name__})"}],
        ) from err


def _open_pdf(data: bytes) -> PdfReader:
    from pypdf import PdfReader

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
    return reader


class PdfPages:
    """A PDF's text read one page at a time, so that the caller can run each page in a worker thread and
    report progress or stop in between. Opening and `read_next` are CPU work: call them off the event loop,
    and one at a time (pypdf's reader is not made for concurrent use). 422 for an unreadable or locked PDF,
    past PDF_MAX_SECONDS spent reading it or past FILE_MAX_CHARS of text."""

    def __init__(self, data: bytes) -> None:
        started = time.monotonic()
        with _readable():
            self._reader = _open_pdf(data)
            self.count = len(self._reader.pages)
        self._texts: list[str] = []
        self._size = 0
        # Time spent in this object's own work, not waiting in between, counts against PDF_MAX_SECONDS.
        self._seconds = time.monotonic() - started

    @property
    def read(self) -> int:
        """How many pages were read so far."""
        return len(self._texts)

    def read_next(self) -> None:
        if self._seconds > PDF_MAX_SECONDS:
            raise ValidationFailed(
                f"file: reading the PDF took longer than {PDF_MAX_SECONDS} seconds; upload its text instead",
                details=[{"field": "file", "message": "PDF too slow to read"}],
            )
        started = time.monotonic()
        with _readable():
            text = self._reader.pages[self.read].extract_text() or ""
        self._seconds += time.monotonic() - started
        self._size += len(text)
        if self._size > FILE_MAX_CHARS:
            raise _too_much_text()
        self._texts.append(text)

    def text(self) -> str:
        """The text of the pages read, separated by blank lines."""
        return "\n\n".join(self._texts)


def _pdf_text(data: bytes) -> str:
    """The text of every page, pages separated by blank lines. CPU work: run it off the event loop."""
    pdf = PdfPages(data)
    while pdf.read < pdf.count:
        pdf.read_next()
    return pdf.text()


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


def is_pdf(data: bytes) -> bool:
    return data.startswith(b"%PDF-")


def extract_file_text(data: bytes, filename: str | None) -> tuple[str, str]:
    """(content type, text) of an uploaded file, decided from its content: PDF by its `%PDF-` header,
    otherwise UTF-8 text (Markdown when named .md/.markdown or written in Markdown). CPU work."""
    if is_pdf(data):
        return PDF, finish_text(PDF, _pdf_text(data))
    return read_text_file(data, filename)


def read_text_file(data: bytes, filename: str | None) -> tuple[str, str]:
    """`extract_file_text` for a file that is not a PDF. CPU work."""
    text = _decode_text(data)
    named_md = (filename or "").lower().endswith((".md", ".markdown"))
    content_type = MARKDOWN if named_md or _MARKDOWN.search(text[:65536]) else PLAIN
    return content_type, finish_text(content_type, text)


def finish_text(content_type: str, text: str) -> str:
    """A file's text cleaned; 422 when it is too long or empty. CPU work for a long text."""
    text = clean_text(text)
    if len(text) > FILE_MAX_CHARS:
        raise _too_much_text()
    if not text:
        raise ValidationFailed(
            "file: no text found in the file" + (" (a scanned PDF has only images)" if content_type == PDF else ""),
            details=[{"field": "file", "message": "no text"}],
        )
    return text


def is_large_file(data: bytes) -> bool:
    """Whether adding this file to a knowledge base is long work (seconds), better run as a background job:
    more than LARGE_FILE_BYTES, or a PDF of more than LARGE_PDF_PAGES pages. CPU work for a PDF, but little:
    only its page tree is read, not its text. An unreadable PDF is not large: it is refused at once."""
    if len(data) > LARGE_FILE_BYTES:
        return True
    if not is_pdf(data):
        return False
    try:
        with _readable():
            pages = len(_open_pdf(data).pages)
    except AppError:
        return False
    return pages > LARGE_PDF_PAGES


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
