"""Chat export rendering (services.exports.transcript): the JSON carries every message exactly as the history
API does, the text file every message's content verbatim, the PDF every script (Latin, Cyrillic, CJK,
right-to-left, emoji) as extractable text with its fonts embedded; progress never goes back and ends at
1.0, and should_stop cancels."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from pypdf import PdfReader
from pypdf.generic import DictionaryObject

from core.entities import ChatSession, Message
from core.wire import FileOut, MessageOut
from services.exports import transcript
from services.exports.transcript import (
    CHECK_EVERY,
    FORMATS,
    INDENT,
    FontMissing,
    Format,
    Transcript,
    TranscriptCancelled,
    content_type,
    filename,
    render,
)

START = datetime(2026, 12, 5, 21, 10, tzinfo=UTC)
EXPORTED = datetime(2026, 12, 6, 8, 30, 15, tzinfo=UTC)
LATIN = "Hello there, how was the trip to Kyoto?"
CYRILLIC = "Привет, как дела?"
CHINESE = "你好，世界"  # noqa: RUF001  (the full-width comma Chinese writes)
JAPANESE = "こんにちは世界"
EMOJI = "Great news 😀🎉👍"


def session(title: str = "Trip to Kyoto", persona: bool = True) -> ChatSession:
    return ChatSession(
        id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        persona_id=uuid.uuid4() if persona else None,
        title=title,
        pinned=False,
        last_seq=0,
        created_at=START,
        updated_at=START,
    )


def attachment(name: str = "kyoto.jpg") -> dict[str, Any]:
    """As stored on a message: the file's public shape (services.files.FileService.attachable)."""
    return FileOut(
        id=uuid.uuid4(),
        category="chat_attachment",
        content_type="image/jpeg",
        size=48_213,
        width=640,
        height=480,
        thumbnail=True,
        filename=name,
        created_at=START,
    ).model_dump(mode="json")


def chat(contents: Sequence[str], *, title: str = "Trip to Kyoto", persona_name: str | None = "Aiko") -> Transcript:
    """Alternating user and assistant messages, one a minute; each assistant message replies to the one
    before and carries its usage."""
    s = session(title, persona=persona_name is not None)
    messages: list[Message] = []
    for index, content in enumerate(contents):
        user = index % 2 == 0
        messages.append(
            Message(
                id=uuid.uuid4(),
                session_id=s.id,
                seq=index + 1,
                role="user" if user else "assistant",
                content=content,
                status="complete",
                client_id=uuid.uuid4() if user else None,
                reply_to=None if user else messages[-1].id,
                usage=None if user else {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42},
                attachments=[],
                created_at=START + timedelta(minutes=index),
            )
        )
    return Transcript(session=s, messages=messages, persona_name=persona_name, user_name="Sam", exported_at=EXPORTED)


def with_message(t: Transcript, index: int, **changes: Any) -> Transcript:
    messages = list(t.messages)
    old = messages[index]
    messages[index] = Message(**{**{f: getattr(old, f) for f in old.__dataclass_fields__}, **changes})
    return Transcript(t.session, messages, t.persona_name, t.user_name, t.exported_at)


def pdf_text(data: bytes, pages: slice = slice(None)) -> str:
    reader = PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages[pages])


def pdf_fonts(data: bytes) -> set[str]:
    """The base names of the fonts embedded in the PDF, less their subset tag (ABCDEF+)."""
    names: set[str] = set()
    for page in PdfReader(io.BytesIO(data)).pages:
        resources = cast(DictionaryObject, page["/Resources"].get_object())
        for font in cast(DictionaryObject, resources["/Font"].get_object()).values():
            names.add(str(cast(DictionaryObject, font.get_object())["/BaseFont"]).split("+", 1)[-1])
    return names


# JSON


def test_json_carries_every_message_as_the_history_api_returns_it() -> None:
    t = chat([LATIN, CYRILLIC, CHINESE + "\n" + JAPANESE, EMOJI])
    t = with_message(t, 0, attachments=[attachment(), attachment("notes.pdf")])
    t = with_message(t, 3, status="failed", usage=None)

    document = json.loads(render("json", t))

    assert list(document) == ["session", "persona", "exported_at", "messages"]
    assert document["messages"] == [MessageOut.model_validate(m).model_dump(mode="json") for m in t.messages]
    for item, message in zip(document["messages"], t.messages, strict=True):
        back = MessageOut.model_validate(item)  # the wire model reads it back, field for field
        assert back == MessageOut.model_validate(message)
        assert back.id == message.id and back.session_id == message.session_id and back.seq == message.seq
        assert back.role == message.role and back.content == message.content and back.status == message.status
        assert back.client_id == message.client_id and back.reply_to == message.reply_to
        assert back.created_at == message.created_at
        assert (back.usage.model_dump() if back.usage else None) == message.usage
        assert [a.model_dump(mode="json") for a in back.attachments] == message.attachments
    assert document["session"]["id"] == str(t.session.id)
    assert document["session"]["title"] == "Trip to Kyoto"
    assert document["persona"] == {"id": str(t.session.persona_id), "name": "Aiko"}
    assert document["exported_at"] == "2026-12-06T08:30:15Z"


def test_json_of_a_chat_whose_persona_was_deleted() -> None:
    document = json.loads(render("json", chat([LATIN], persona_name=None)))
    assert document["persona"] == {"id": None, "name": None}
    assert document["session"]["persona_id"] is None


def test_json_is_utf8_not_escaped() -> None:
    data = render("json", chat([CYRILLIC, CHINESE, EMOJI]))
    for text in (CYRILLIC, CHINESE, EMOJI):
        assert text.encode() in data


# TXT


def test_txt_has_every_message_verbatim_under_its_header() -> None:
    multi = "First line\n  second line, indented by its author\n\n[2026-01-01 00:00 UTC] Sam: not a header\r\nend"
    t = chat([LATIN, CYRILLIC, multi, CHINESE, JAPANESE, EMOJI, ""])
    text = render("txt", t).decode("utf-8")

    assert text.startswith("Chat: Trip to Kyoto\nPersona: Aiko\nUser: Sam\n")
    assert "Exported: 2026-12-06 08:30 UTC" in text
    assert "Messages: 7" in text
    assert f"[2026-12-05 21:10 UTC] Sam: {LATIN}\n" in text
    assert f"[2026-12-05 21:11 UTC] Aiko: {CYRILLIC}\n" in text
    assert f"[2026-12-05 21:13 UTC] Aiko: {CHINESE}\n" in text
    assert "[2026-12-05 21:16 UTC] Sam:\n" in text  # empty content
    # A multi-line message: its first line after the header, each other line indented, all verbatim.
    first, *rest = multi.split("\n")
    assert f"[2026-12-05 21:12 UTC] Sam: {first}\n" + "".join(f"{INDENT}{line}\n" for line in rest) in text
    for message in t.messages:
        for line in message.content.split("\n"):
            assert line in text
    # No content line can start a line as a message header does.
    headers = [line for line in text.splitlines() if line.startswith("[")]
    assert len(headers) == len(t.messages)


def test_txt_marks_unfinished_messages_and_names_attachments() -> None:
    t = chat([LATIN, "Half an ans", CYRILLIC, "Stopped here", "Never sent"])
    t = with_message(t, 0, attachments=[attachment("kyoto.jpg")])
    t = with_message(t, 1, status="streaming")
    t = with_message(t, 3, status="stopped")
    t = with_message(t, 4, status="failed")
    text = render("txt", t).decode("utf-8")

    assert f"[2026-12-05 21:10 UTC] Sam: {LATIN}\n{INDENT}[attachment: kyoto.jpg (image/jpeg, 47.1 KB)]\n" in text
    assert "[2026-12-05 21:11 UTC] Aiko [incomplete]: Half an ans\n" in text
    assert f"[2026-12-05 21:12 UTC] Sam: {CYRILLIC}\n" in text
    assert "[2026-12-05 21:13 UTC] Aiko [stopped]: Stopped here\n" in text
    assert "[2026-12-05 21:14 UTC] Sam [failed]: Never sent\n" in text


def test_txt_of_a_chat_whose_persona_was_deleted() -> None:
    text = render("txt", chat([LATIN, "Reply"], persona_name=None)).decode("utf-8")
    assert "Persona: (deleted persona)\n" in text
    assert "[2026-12-05 21:11 UTC] Assistant: Reply\n" in text


# PDF


def test_pdf_text_keeps_latin_cyrillic_and_cjk() -> None:
    data = render("pdf", chat([LATIN, CYRILLIC, CHINESE, JAPANESE, "안녕하세요"], title="京都への旅"))

    assert data.startswith(b"%PDF-")
    text = pdf_text(data)  # exactly as extracted: the CJK font is TrueType, so no NULs between characters
    for line in (LATIN, CYRILLIC, CHINESE, JAPANESE, "안녕하세요", "京都への旅", "Persona: Aiko"):
        assert line in text
    assert "\x00" not in text
    assert {"NotoSans", "WenQuanYiMicroHei"} <= pdf_fonts(data)


def test_pdf_embeds_the_emoji_font_for_emoji() -> None:
    data = render("pdf", chat([LATIN, EMOJI, "Family 👨‍👩‍👧, flag 🇯🇵, heart ❤️, keycap 1️⃣"]))

    assert "NotoEmoji" in pdf_fonts(data)
    assert "😀🎉👍" in pdf_text(data)


def test_pdf_embeds_only_the_fonts_the_chat_uses() -> None:
    data = render("pdf", chat([LATIN, CYRILLIC, "Ελληνικά too"]))
    assert pdf_fonts(data) == {"NotoSans"}  # no CJK font loaded or embedded for a chat without CJK


def test_pdf_sets_right_to_left_and_other_scripts() -> None:
    contents = ["שלום, מה שלומך?", "مرحبا بالعالم", "नमस्ते दुनिया", "สวัสดีชาวโลก", "Rare: 㐀 𠀋"]
    data = render("pdf", chat(contents))

    fonts = pdf_fonts(data)
    assert {"NotoSansArabic", "NotoSansDevanagari", "NotoSansThai", "NotoSansCJKJP"} <= fonts
    assert any(name.startswith("NotoSansHebrew") for name in fonts)


def test_pdf_leaves_out_characters_no_font_has(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fpdf"):
        data = render("pdf", chat(["Private use \ue000 here, tab\there, bell \x07 there"]))
    assert "Private use  here, tab" in pdf_text(data)
    assert not [r for r in caplog.records if r.name.startswith("fpdf")]  # no warning per missing glyph


def test_pdf_wraps_long_lines_and_breaks_pages() -> None:
    word = "x" * 3000  # no space to break at
    long_text = " ".join(f"word{i}" for i in range(4000))
    data = render("pdf", chat([word, long_text, CHINESE * 400]))

    reader = PdfReader(io.BytesIO(data))
    assert len(reader.pages) > 3
    text = pdf_text(data)
    assert word in "".join(text.split())
    assert "word0 word1" in text and "word3999" in text
    assert "Trip to Kyoto" in reader.pages[2].extract_text()  # the header line on later pages


def test_pdf_of_a_long_chat() -> None:
    contents = [f"Message {i}: {LATIN} {CYRILLIC} {CHINESE} {'😀' if i % 7 == 0 else ''}" for i in range(2000)]
    data = render("pdf", chat(contents))

    reader = PdfReader(io.BytesIO(data))
    assert len(reader.pages) > 50
    assert "Message 1999:" in reader.pages[-1].extract_text()


def test_pdf_names_the_missing_font_package(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = transcript._Font("noto-sans", "no-such-font-package", "no_such_font_package", "NotoSans.ttf")
    monkeypatch.setattr(transcript, "_MAIN", missing)
    with pytest.raises(FontMissing, match="no-such-font-package"):
        render("pdf", chat([LATIN]))


# Progress and cancellation


@pytest.mark.parametrize("fmt", FORMATS)
def test_progress_never_goes_back_and_ends_at_one(fmt: Format) -> None:
    t = chat([f"{i} {LATIN}" for i in range(5 * CHECK_EVERY + 3)])
    seen: list[float] = []
    render(fmt, t, progress=seen.append)

    assert len(seen) >= 6
    assert seen == sorted(seen)
    assert all(0.0 <= f <= 1.0 for f in seen)
    assert seen[-1] == 1.0
    assert seen[-2] < 1.0  # it moved through the work, not only at the end


@pytest.mark.parametrize("fmt", FORMATS)
def test_should_stop_cancels(fmt: Format) -> None:
    t = chat([f"{i} {LATIN}" for i in range(5 * CHECK_EVERY)])
    asked: list[int] = []
    seen: list[float] = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) >= 3

    with pytest.raises(TranscriptCancelled):
        render(fmt, t, progress=seen.append, should_stop=should_stop)
    assert len(asked) == 3
    assert seen and seen[-1] < 1.0


def test_empty_chat_renders_in_every_format() -> None:
    t = chat([])
    for fmt in FORMATS:
        seen: list[float] = []
        assert render(fmt, t, progress=seen.append)
        assert seen[-1] == 1.0
    assert json.loads(render("json", t))["messages"] == []


# Helpers


def test_content_types() -> None:
    assert content_type("json") == "application/json"
    assert content_type("txt") == "text/plain; charset=utf-8"
    assert content_type("pdf") == "application/pdf"
    with pytest.raises(ValueError):
        content_type("docx")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Trip to Kyoto", "trip-to-kyoto-2026-12-06.pdf"),
        ("京都への旅 / day 2!", "京都への旅-day-2-2026-12-06.pdf"),
        ("../../etc/passwd", "etc-passwd-2026-12-06.pdf"),
        ("नमस्ते", "नमस्ते-2026-12-06.pdf"),  # combining vowel signs kept
        ("  ...  ", "chat-2026-12-06.pdf"),
        ("a" * 200, "a" * 60 + "-2026-12-06.pdf"),
    ],
)
def test_filename(title: str, expected: str) -> None:
    assert filename("pdf", title, exported_at=EXPORTED) == expected


def test_filename_without_date_and_unknown_format() -> None:
    assert filename("txt", "Trip") == "trip.txt"
    with pytest.raises(ValueError):
        filename("exe", "Trip")  # type: ignore[arg-type]


def test_render_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError):
        render("docx", chat([LATIN]))  # type: ignore[arg-type]
