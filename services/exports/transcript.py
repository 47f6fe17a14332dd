"""Chat export: one session's transcript rendered as JSON, plain text or PDF bytes.

Pure and synchronous: rendering is CPU-bound (a PDF of 5,000 messages takes about 20 s), so the caller
runs `render` in a worker thread or process, never on the event loop. `progress` hears the fraction done
and `should_stop` is asked every CHECK_EVERY messages; a yes raises TranscriptCancelled.

- JSON: every message exactly as the history API returns it (core.wire.MessageOut), so an export and
  GET /api/v1/chat/sessions/{id}/messages compare message for message.
- TXT: a header, then `[2026-12-05 21:10 UTC] Name: text` per message, continuation lines indented by
  INDENT (each line of the content is kept verbatim after it), statuses other than complete marked,
  attachments named.
- PDF: every character kept, whatever the script. Noto Sans sets Latin, Greek and Cyrillic; any other
  character comes from the first fallback font that has it (Noto Emoji, a TrueType CJK font, Noto Sans
  for Hebrew, Arabic and the other scripts, Noto Sans CJK for the rare ideographs the first lacks). All
  come from font packages in requirements.txt; a fallback is loaded and embedded only when the
  transcript uses it, since the CJK fonts alone take a quarter of a second to load.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import structlog
from fontTools.ttLib import TTFont
from fpdf import FPDF
from fpdf.enums import Align, XPos, YPos

from core.entities import ChatSession, Message
from core.timefmt import iso
from core.wire import MessageOut, SessionOut

log = structlog.get_logger(__name__)

Format = Literal["json", "txt", "pdf"]
FORMATS: tuple[Format, ...] = ("json", "txt", "pdf")
Progress = Callable[[float], None]
ShouldStop = Callable[[], bool]

# Progress is reported, and should_stop asked, every this many messages: a cancel lands within a fraction
# of a second even in a PDF, and the calls cost nothing next to the rendering.
CHECK_EVERY = 50
INDENT = "    "  # TXT: a message's continuation lines and attachments
_CONTENT_TYPES: dict[str, str] = {
    "json": "application/json",
    "txt": "text/plain; charset=utf-8",
    "pdf": "application/pdf",
}
# How a message's status shows; "complete" shows nothing, and an unknown status shows as itself.
_MARKS = {"failed": "failed", "stopped": "stopped", "streaming": "incomplete"}


class TranscriptCancelled(Exception):
    """should_stop() said yes: the export job is being cancelled."""


class FontMissing(RuntimeError):
    """A font package from requirements.txt is not installed, or lacks the file the PDF needs."""


@dataclass(frozen=True)
class Transcript:
    """What an export holds: the session, its messages in seq order, and the names the text shows."""

    session: ChatSession
    messages: Sequence[Message]
    persona_name: str | None  # None: the persona has been deleted
    user_name: str
    exported_at: datetime


def render(
    fmt: Format,
    transcript: Transcript,
    *,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> bytes:
    """The export file's bytes. Raises TranscriptCancelled when should_stop() says yes, FontMissing
    (PDF) when a font package is not installed, ValueError for an unknown format."""
    steps = _Steps(len(transcript.messages), progress, should_stop)
    if fmt == "json":
        data = _render_json(transcript, steps)
    elif fmt == "txt":
        data = _render_txt(transcript, steps)
    elif fmt == "pdf":
        data = _render_pdf(transcript, steps)
    else:
        raise ValueError(f"unknown export format {fmt!r}")
    steps.done()
    return data


def content_type(fmt: Format) -> str:
    try:
        return _CONTENT_TYPES[fmt]
    except KeyError:
        raise ValueError(f"unknown export format {fmt!r}") from None


def filename(fmt: Format, title: str, *, exported_at: datetime | None = None) -> str:
    """A safe file name from the session title: letters, marks and digits of any script kept, every run of
    anything else (separators, dots, slashes, spaces) one hyphen, e.g. `trip-to-kyoto-2026-12-05.pdf`.
    It may hold non-ASCII letters: send it with Content-Disposition's `filename*` (RFC 6266)."""
    content_type(fmt)  # refuses an unknown format
    kept = "".join(c if unicodedata.category(c)[0] in "LMN" else "-" for c in unicodedata.normalize("NFC", title))
    slug = re.sub(r"-+", "-", kept).strip("-")[:60].rstrip("-").lower() or "chat"
    date = f"-{exported_at.astimezone(UTC):%Y-%m-%d}" if exported_at is not None else ""
    return f"{slug}{date}.{fmt}"


class _Steps:
    """Progress and cancellation at every CHECK_EVERY-th message. The fraction never goes back and ends
    at 1.0 (done(), once the bytes are ready)."""

    def __init__(self, total: int, progress: Progress | None, should_stop: ShouldStop | None) -> None:
        self._total = max(total, 1)
        self._progress = progress
        self._should_stop = should_stop
        self._last = 0.0

    def at(self, index: int, share: float = 1.0) -> None:
        """Before message `index`; the loop over messages is `share` of the whole work."""
        if index % CHECK_EVERY == 0:
            self.check(share * index / self._total)

    def check(self, fraction: float) -> None:
        if self._should_stop is not None and self._should_stop():
            raise TranscriptCancelled
        self._report(fraction)

    def done(self) -> None:
        self._report(1.0)

    def _report(self, fraction: float) -> None:
        self._last = min(max(fraction, self._last), 1.0)
        if self._progress is not None:
            self._progress(self._last)


# Shared by TXT and PDF


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _persona(transcript: Transcript) -> str:
    return transcript.persona_name if transcript.persona_name is not None else "(deleted persona)"


def _speaker(transcript: Transcript, message: Message) -> str:
    if message.role == "user":
        return transcript.user_name
    return transcript.persona_name or "Assistant"


def _mark(message: Message) -> str | None:
    if message.status == "complete":
        return None
    return _MARKS.get(message.status, message.status)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def _describe(attachment: Any) -> str:
    """An attachment as stored on the message (core.wire.FileOut's JSON): its name, type and size."""
    if not isinstance(attachment, Mapping):
        return str(attachment)
    name = _one_line(str(attachment.get("filename") or attachment.get("id") or "file"))
    details = [str(attachment["content_type"])] if attachment.get("content_type") else []
    if isinstance(attachment.get("size"), int):
        details.append(_size(attachment["size"]))
    return f"{name} ({', '.join(details)})" if details else name


def _header_lines(transcript: Transcript) -> list[str]:
    return [
        f"Persona: {_one_line(_persona(transcript))}",
        f"User: {_one_line(transcript.user_name)}",
        f"Started: {_stamp(transcript.session.created_at)}",
        f"Exported: {_stamp(transcript.exported_at)}",
        f"Messages: {len(transcript.messages)}",
    ]


# JSON


def _render_json(transcript: Transcript, steps: _Steps) -> bytes:
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(transcript.messages):
        steps.at(index)
        messages.append(MessageOut.model_validate(message).model_dump(mode="json"))
    session = transcript.session
    document = {
        "session": SessionOut.model_validate(session).model_dump(mode="json"),
        "persona": {
            "id": str(session.persona_id) if session.persona_id is not None else None,
            "name": transcript.persona_name,
        },
        "exported_at": iso(transcript.exported_at),
        "messages": messages,
    }
    return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


# TXT


def _render_txt(transcript: Transcript, steps: _Steps) -> bytes:
    blocks = ["\n".join([f"Chat: {_one_line(transcript.session.title)}", *_header_lines(transcript)])]
    for index, message in enumerate(transcript.messages):
        steps.at(index)
        blocks.append(_txt_message(transcript, message))
    return ("\n\n".join(blocks) + "\n").encode("utf-8")


def _txt_message(transcript: Transcript, message: Message) -> str:
    mark = _mark(message)
    head = f"[{_stamp(message.created_at)}] {_one_line(_speaker(transcript, message))}"
    head += f" [{mark}]:" if mark else ":"
    # Split on "\n" only: the content stays verbatim line by line ("\r", U+2028 and the rest kept as they
    # are), and indenting the continuation lines keeps any of them from passing for a message's header.
    first, *rest = message.content.split("\n")
    lines = [f"{head} {first}" if first else head]
    lines += [INDENT + line for line in rest]
    lines += [f"{INDENT}[attachment: {_describe(a)}]" for a in message.attachments]
    return "\n".join(lines)


# PDF


@dataclass(frozen=True)
class _Font:
    family: str  # the name fpdf2 knows it by
    dist: str  # the pip package that carries it (requirements.txt)
    module: str
    file: str

    def path(self) -> Path:
        return _font_path(self)


@functools.cache
def _font_path(font: _Font) -> Path:
    try:
        root = resources.files(font.module)
    except ModuleNotFoundError as err:
        raise FontMissing(f"PDF export needs the font package {font.dist!r}: pip install -r requirements.txt") from err
    path = Path(str(root.joinpath(font.file)))
    if not path.is_file():
        raise FontMissing(f"the font package {font.dist!r} has no {font.file!r}: reinstall it from requirements.txt")
    return path


@functools.cache
def _coverage(font: _Font) -> frozenset[int]:
    """The code points the font has glyphs for (its cmap only: lazy loading reads no other table)."""
    with TTFont(font.path(), lazy=True, fontNumber=0) as ttf:  # fontNumber: the first face of a .ttc
        return frozenset(ttf.getBestCmap())


_NOTO = ("manimgx-fonts", "manimgx_fonts")
_MAIN = _Font("noto-sans", *_NOTO, "NotoSans[wght].ttf")  # Latin, Greek, Cyrillic; variable, 400 by default
_SCRIPTS = (
    "Hebrew",
    "Arabic",
    "Armenian",
    "Georgian",
    "Ethiopic",
    "Devanagari",
    "Bengali",
    "Gurmukhi",
    "Gujarati",
    "Oriya",
    "Tamil",
    "Telugu",
    "Kannada",
    "Malayalam",
    "Sinhala",
    "Thai",
    "Lao",
    "Khmer",
    "Myanmar",
)
# In the order fpdf2 tries them for a character the main font lacks.
_FALLBACKS = (
    # First, so that emoji the CJK and symbol fonts also draw (✔, ☎) look like the other emoji.
    _Font("noto-emoji", *_NOTO, "NotoEmoji[wght].ttf"),
    # WenQuanYi Micro Hei: Chinese, Japanese and Korean in TrueType outlines, whose text PDF readers
    # extract cleanly (pypdf puts NULs between the characters set in a CFF font such as Noto Sans CJK).
    _Font("wqy-microhei", "paperang-p2-fonts-cjk", "paperang_p2_fonts_cjk", "fonts/wqy-microhei.ttc"),
    *(_Font(f"noto-{script.lower()}", *_NOTO, f"NotoSans{script}[wght].ttf") for script in _SCRIPTS),
    _Font("noto-symbols", *_NOTO, "NotoSansSymbols[wght].ttf"),
    # Last: the ideographs WenQuanYi lacks (extensions A and B, rarer punctuation).
    _Font("noto-cjk", "noto-cjk-sans-jp-regular", "noto_cjk_sans_jp_regular", "NotoSansCJKjp-Regular.otf"),
)

_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # no glyph anywhere; "\t" and "\n" handled apart
# Characters fpdf2 sets well without HarfBuzz: left to right, one glyph each (Latin, Greek and Cyrillic
# without combining marks, symbols, CJK, Hangul syllables, single emoji). Text holding any other character
# (right to left, combining marks, Indic and other complex scripts, joiners, emoji sequences) is shaped,
# the rest is not: fpdf2 reshapes a line for each character it adds, and shaping every message made a
# 2,000-message PDF several times slower.
_PLAIN = (
    "\n\x20-\u02ff"  # ASCII, Latin-1, Latin Extended, IPA, spacing modifiers
    "\u0370-\u052f"  # Greek, Cyrillic
    "\u1e00-\u1fff"  # Latin Extended Additional, Greek Extended
    "\u2000-\u200b\u2010-\u2027\u202f-\u205f"  # punctuation, less joiners and bidi controls
    "\u2070-\u20cf\u2100-\u2bff\u2e00-\u2e7f"  # currency, letterlike, arrows, maths, shapes, dingbats
    "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef"  # CJK, kana, Hangul, full width
    "\ufe00-\ufe0f"  # variation selectors (emoji presentation): a blank glyph of the emoji font
    "\U0001f000-\U0001f1e5\U0001f200-\U0001f3fa\U0001f400-\U0001faff"  # emoji, less flags and skin tones
    "\U00020000-\U0003ffff"  # CJK extensions
)
_NEEDS_SHAPING = re.compile(f"[^{_PLAIN}]")
_PAGE = {"left": 18.0, "top": 16.0, "right": 18.0, "bottom": 16.0}
_GREY = (110, 110, 110)
_INK = (20, 20, 20)
_USER = (25, 85, 160)
_ASSISTANT = (20, 115, 85)
_FAILED = (180, 40, 40)


def _fallbacks_for(chars: set[str]) -> tuple[list[_Font], set[int]]:
    """The fallback fonts fpdf2 would take a glyph from, in its order, and the code points none has.
    Only those fonts are loaded and embedded (a Latin-only chat never loads the CJK fonts)."""
    pending = {ord(c) for c in chars if unicodedata.category(c) != "Cc"} - _coverage(_MAIN)
    chosen: list[_Font] = []
    for font in _FALLBACKS:
        if not pending:
            break
        found = pending & _coverage(font)
        if found:
            chosen.append(font)
            pending -= found
    return chosen, pending


class _Document(FPDF):
    """A4 pages; from the second page on, a header line with the chat's title; page numbers in the footer."""

    def __init__(self, unset: set[int]) -> None:
        super().__init__(format="A4", unit="mm")
        self.running_title = ""
        # Characters no font has: left out, as shaping would, rather than logged by fpdf2 one by one.
        self._unset: dict[int, None] = dict.fromkeys(unset)
        self.set_margins(_PAGE["left"], _PAGE["top"], _PAGE["right"])
        self.set_auto_page_break(True, margin=_PAGE["bottom"])

    def settable(self, text: str) -> str:
        """`text` as the PDF sets it (one kind of line break, tabs as spaces, no control characters, nothing
        that no font has), with text shaping turned on or off for it."""
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
        text = _CONTROLS.sub("", text.replace("\t", INDENT)).translate(self._unset)
        shaped = _NEEDS_SHAPING.search(text) is not None
        if shaped != (self.text_shaping is not None):
            self.set_text_shaping(shaped)
        return text

    def header(self) -> None:
        if self.page_no() == 1:
            return  # the first page opens with the title itself
        shaping = self.text_shaping  # add_page() restores the font and colours after this, not the shaping
        self.set_font(_MAIN.family, size=8)
        self.set_text_color(*_GREY)
        self.cell(0, 4, self.settable(self.running_title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_draw_color(*_GREY)
        self.line(self.l_margin, self.get_y() + 1, self.w - self.r_margin, self.get_y() + 1)
        self.ln(5)
        self.text_shaping = shaping

    def footer(self) -> None:
        self.set_y(-_PAGE["bottom"] + 4)
        self.set_font(_MAIN.family, size=8)
        self.set_text_color(*_GREY)
        self.cell(0, 4, f"{self.page_no()} / {self.str_alias_nb_pages}", align=Align.C)

    def fit(self, text: str, width: float) -> str:
        """`text` cut (with an ellipsis) to one line of `width` in the current font."""
        text = self.settable(text)
        if self.get_string_width(text) <= width:
            return text
        low, high = 0, len(text)
        while low < high:  # the longest prefix that fits with its ellipsis
            middle = (low + high + 1) // 2
            if self.get_string_width(text[:middle] + "…") <= width:
                low = middle
            else:
                high = middle - 1
        return text[:low].rstrip() + "…"

    def paragraph(self, height: float, text: str) -> None:
        self.multi_cell(0, height, self.settable(text), align=Align.L, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def inline(self, height: float, text: str) -> None:
        self.write(height, self.settable(text))


def _render_pdf(transcript: Transcript, steps: _Steps) -> bytes:
    steps.check(0.0)
    title = _one_line(transcript.session.title) or "Chat"
    header = _header_lines(transcript)
    chars = set(title) | set("".join(header)) | {"…"}
    for message in transcript.messages:
        chars.update(message.content)
        chars.update(_speaker(transcript, message))
        for attachment in message.attachments:
            chars.update(_describe(attachment))
    fallbacks, unset = _fallbacks_for(chars)
    if unset:
        log.warning("transcript_glyphs_missing", session_id=str(transcript.session.id), characters=len(unset))

    pdf = _Document(unset)
    pdf.set_title(title)
    pdf.set_creator("Parlor")
    pdf.set_creation_date(transcript.exported_at)  # the same transcript gives the same bytes (job retries)
    pdf.add_font(_MAIN.family, fname=_MAIN.path())
    for font in fallbacks:
        pdf.add_font(font.family, fname=font.path())
    pdf.set_fallback_fonts([font.family for font in fallbacks])
    pdf.set_font(_MAIN.family, size=8)
    pdf.running_title = pdf.fit(title, pdf.epw)

    pdf.add_page()
    pdf.set_text_color(*_INK)
    pdf.set_font(size=16)
    pdf.paragraph(8, title)
    pdf.ln(1)
    pdf.set_font(size=9.5)
    pdf.set_text_color(*_GREY)
    pdf.paragraph(5, "\n".join(header))
    pdf.set_draw_color(*_GREY)
    pdf.line(pdf.l_margin, pdf.get_y() + 2, pdf.w - pdf.r_margin, pdf.get_y() + 2)
    pdf.ln(6)

    for index, message in enumerate(transcript.messages):
        steps.at(index, share=0.9)  # the rest: font subsetting and writing the file
        _pdf_message(pdf, transcript, message)
    steps.check(0.9)
    return bytes(pdf.output())


def _pdf_message(pdf: _Document, transcript: Transcript, message: Message) -> None:
    if pdf.get_y() > pdf.page_break_trigger - 16:
        pdf.add_page()  # a message's name line never ends a page alone
    pdf.set_font(size=9)
    pdf.set_text_color(*(_USER if message.role == "user" else _ASSISTANT))
    pdf.inline(4.5, _one_line(_speaker(transcript, message)))
    pdf.set_text_color(*_GREY)
    pdf.inline(4.5, f"   {_stamp(message.created_at)}")
    mark = _mark(message)
    if mark:
        pdf.set_text_color(*_FAILED)
        pdf.inline(4.5, f"   {mark}")
    pdf.ln(5.5)
    if message.content:
        pdf.set_font(size=10.5)
        pdf.set_text_color(*_INK)
        pdf.paragraph(5.2, message.content)
    if message.attachments:
        pdf.set_font(size=9)
        pdf.set_text_color(*_GREY)
        for attachment in message.attachments:
            pdf.paragraph(4.5, f"Attachment: {_describe(attachment)}")
    pdf.ln(4)
