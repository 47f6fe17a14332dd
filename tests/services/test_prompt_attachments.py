"""The prompt's budget with attachments (services/prompt.py): a file's text is cut to what is left, never
pushes the conversation out beyond its share, and becomes a mention when nothing fits; images and mentions
read as one line each; consecutive user messages keep every file."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from core.entities import Message
from providers.ai.base import Attachment, Turn, size_label
from services.prompt import CUT_NOTE, LEFT_OUT_NOTE, conversation, estimate_tokens


def message(seq: int, role: str, content: str) -> Message:
    return Message(
        id=uuid.uuid4(),
        session_id=uuid.UUID(int=1),
        seq=seq,
        role=role,
        content=content,
        status="complete",
        client_id=None,
        reply_to=None,
        usage=None,
        attachments=[],
        created_at=datetime.now(UTC),
    )


def text_file(text: str, name: str = "notes.txt") -> Attachment:
    return Attachment(name, "text/plain", len(text.encode()), text=text)


def test_blocks_read_as_one_header_each() -> None:
    image = Attachment("photo.png", "image/png", 12_345, data=b"\x89PNG")
    audio = Attachment("voice.m4a", "audio/mp4", 2_500_000, note="audio is not passed to the model")
    turn = Turn("user", "look", (image, text_file("hi there"), audio))
    assert turn.images == (image,)
    assert turn.prompt_text == (
        "look\n\n[Attached image: photo.png]\n\n[Attached: notes.txt]\nhi there\n\n"
        "[Attached: voice.m4a (audio/mp4, 2.4 MB): audio is not passed to the model]"
    )
    assert Turn("user", "plain").prompt_text == "plain"
    assert [size_label(n) for n in (12, 2048, 5 * 1024 * 1024)] == ["12 B", "2 KB", "5.0 MB"]


def test_a_long_file_is_cut_to_its_share_and_the_conversation_stays() -> None:
    history = [message(1, "user", "earlier question"), message(2, "assistant", "earlier answer")]
    now = message(3, "user", "summarise this")
    history.append(now)
    budget = 1000
    turns = conversation(history, budget_tokens=budget, attachments={now.id: [text_file("word " * 10_000)]})
    assert [t.role for t in turns] == ["user", "assistant", "user"]
    (cut,) = turns[-1].attachments
    assert cut.note == CUT_NOTE and cut.text is not None and cut.text.endswith(" …")
    # At most half of the budget goes to files' text; the whole prompt stays within the budget.
    assert estimate_tokens(cut.block()) <= budget // 2
    assert sum(estimate_tokens(t.prompt_text) for t in turns) <= budget


def test_no_room_left_means_a_mention() -> None:
    now = message(1, "user", "x" * 4000)
    turns = conversation([now], budget_tokens=1000, attachments={now.id: [text_file("some text " * 50)]})
    (left,) = turns[0].attachments
    assert left.text is None and left.note == LEFT_OUT_NOTE
    assert "[Attached: notes.txt (text/plain, 500 B): too long for the context; not included]" in turns[0].prompt_text


def test_merged_user_messages_keep_every_file_in_order() -> None:
    first, second = message(1, "user", "one"), message(2, "user", "two")
    a, b = text_file("A", "a.txt"), Attachment("b.png", "image/png", 10, data=b"png")
    turns = conversation([first, second], budget_tokens=1000, attachments={first.id: [a], second.id: [b]})
    (turn,) = turns
    assert turn.text == "one\n\ntwo" and turn.attachments == (a, b)
