"""Attachments the AI sees (issue 13, check 7): `message:send` with files, through the real google-genai
and openai clients against the local fakes: Gemini gets the processed image as inline data, the
OpenAI-compatible server an `image_url` data URL, a text or PDF file's text reaches the prompt, the demo
reply names what it was given; the message lists its files; other users' files, too many files and
knowledge files are refused; an earlier turn's image is named, not sent again; a deleted or unreadable
file never fails the reply."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp.test_utils import TestClient
from PIL import Image
from pydantic import SecretStr

from providers.ai.base import size_label
from server.app import create_app
from server.config import Settings
from tests.fakes.gemini import FakeGemini
from tests.fakes.openai_api import FakeOpenAI
from tests.fixtures.files import make_pdf
from tests.helpers import Inbox, bearer, connect_socket, make_chat, register, settled_rows, wait_until

pytestmark = pytest.mark.timeout(60)
EVENTS = ("ai:start", "ai:chunk", "ai:done", "ai:error", "message:new")


def gemini_settings(settings: Settings, gemini: FakeGemini) -> Settings:
    update = {
        "ai_provider": "gemini",
        "gemini_api_key": SecretStr("test-key"),
        "gemini_base_url": gemini.url,
        "gemini_model": "gemini-test",
        "ai_first_token_timeout_seconds": 5.0,
        "ai_idle_timeout_seconds": 5.0,
    }
    return settings.model_copy(update=update)


@pytest.fixture
async def gemini_client(aiohttp_client: Any, settings: Settings, gemini: FakeGemini) -> TestClient:
    return await aiohttp_client(create_app(gemini_settings(settings, gemini)))


def png(size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", size, (20, 160, 90, 200)).save(out, "PNG")
    return out.getvalue()


def gif() -> bytes:
    frames = [Image.new("P", (16, 16), i) for i in (1, 2)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


async def upload(
    client: TestClient, user: dict[str, Any], data: bytes, filename: str, category: str = "chat_attachment"
) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("category", category)
    form.add_field("file", data, filename=filename, content_type="application/octet-stream")
    resp = await client.post("/api/v1/files/upload", data=form, headers=bearer(user))
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def stored_bytes(client: TestClient, user: dict[str, Any], file_id: str) -> bytes:
    resp = await client.get(f"/api/v1/files/{file_id}/content", headers=bearer(user))
    assert resp.status == 200, await resp.text()
    return await resp.read()


def send(chat: dict[str, Any], content: str, *files: dict[str, Any] | str) -> dict[str, Any]:
    ids = [f if isinstance(f, str) else f["id"] for f in files]
    return {"session_id": chat["id"], "client_id": str(uuid.uuid4()), "content": content, "attachments": ids}


def rest(payload: dict[str, Any]) -> dict[str, Any]:
    """The REST send's body: the session is in the path."""
    return {k: v for k, v in payload.items() if k != "session_id"}


async def watcher(
    client: TestClient, user: dict[str, Any], chat: dict[str, Any], sockets: list[Any]
) -> tuple[socketio.AsyncClient, Inbox]:
    sio = socketio.AsyncClient(reconnection=False)
    inbox = Inbox(sio, *EVENTS)
    await connect_socket(client, user["access_token"], sio=sio)
    sockets.append(sio)
    assert (await sio.call("chat:join", {"session_id": chat["id"]}))["ok"]
    return sio, inbox


def remove_blobs(data_dir: Path) -> None:
    for blob in (data_dir / "blobs").rglob("*"):
        if blob.is_file():
            blob.unlink()


async def history(client: TestClient, user: dict[str, Any], chat: dict[str, Any]) -> list[dict[str, Any]]:
    resp = await client.get(f"/api/v1/chat/sessions/{chat['id']}/messages", headers=bearer(user))
    assert resp.status == 200, await resp.text()
    return list((await resp.json())["items"])


async def test_gemini_receives_the_processed_image_inline(
    gemini_client: TestClient, gemini: FakeGemini, sockets: list[Any]
) -> None:
    user = await register(gemini_client)
    chat = await make_chat(gemini_client, user)
    photo = await upload(gemini_client, user, png(), "photo.png")
    sio, inbox = await watcher(gemini_client, user, chat, sockets)
    ack = await sio.call("message:send", send(chat, "What is in this picture?", photo))
    assert ack["ok"], ack
    assert [f["id"] for f in ack["message"]["attachments"]] == [photo["id"]]
    assert ack["message"]["attachments"][0] == photo  # the file object, as GET /files/{id} gives it
    await wait_until(lambda: inbox["ai:done"])
    (call,) = gemini.calls
    assert call.inline_images() == [("image/png", await stored_bytes(gemini_client, user, photo["id"]))]
    # The image part comes first, then the text naming it.
    parts = call.body["contents"][-1]["parts"]
    assert "inlineData" in parts[0] and parts[-1]["text"].startswith("What is in this picture?")
    assert "[Attached image: photo.png]" in parts[-1]["text"]
    # History lists the file on the message, as the ack did.
    stored = await history(gemini_client, user, chat)
    assert stored[0]["attachments"] == [photo] and stored[1]["role"] == "assistant"


async def test_openai_compatible_server_receives_an_image_url(
    aiohttp_client: Any, settings: Settings, sockets: list[Any]
) -> None:
    fake = FakeOpenAI()
    await fake.start()
    try:
        update = {"ai_provider": "openai", "openai_base_url": fake.url, "openai_model": "llava"}
        client = await aiohttp_client(create_app(settings.model_copy(update=update)))
        user = await register(client)
        chat = await make_chat(client, user)
        photo = await upload(client, user, png((64, 64)), "cat.png")
        sio, inbox = await watcher(client, user, chat, sockets)
        ack = await sio.call("message:send", send(chat, "Describe it", photo))
        assert ack["ok"], ack
        await wait_until(lambda: inbox["ai:done"])
        (body,) = fake.bodies
        assert FakeOpenAI.images(body) == [("image/png", await stored_bytes(client, user, photo["id"]))]
        content = body["messages"][-1]["content"]
        assert content[0]["type"] == "text" and content[0]["text"].startswith("Describe it")
        assert content[1]["type"] == "image_url" and content[1]["image_url"]["url"].startswith("data:image/png;base64,")
    finally:
        await fake.close()


async def test_text_and_pdf_attachments_reach_the_prompt_but_knowledge_files_are_refused(
    gemini_client: TestClient, gemini: FakeGemini, settings: Settings
) -> None:
    user = await register(gemini_client)
    chat = await make_chat(gemini_client, user)
    notes = await upload(gemini_client, user, b"The launch code is PURPLE-OTTER-42.\n", "notes.txt")
    paper = await upload(gemini_client, user, make_pdf(["Quarterly revenue rose by 17 percent."]), "report.pdf")
    kb_pdf = await upload(gemini_client, user, make_pdf(["Knowledge only."]), "kb.pdf", category="knowledge_base")
    assert paper["content_type"] == "application/pdf"

    # A knowledge_base file cannot ride on a message (422); nothing is stored.
    url = f"/api/v1/chat/sessions/{chat['id']}/messages"
    refused = await gemini_client.post(url, json=rest(send(chat, "read this", kb_pdf)), headers=bearer(user))
    assert refused.status == 422, await refused.text()
    assert "attachments" in (await refused.json())["error"]["message"]
    assert await history(gemini_client, user, chat) == []

    resp = await gemini_client.post(url, json=rest(send(chat, "Summarise both", notes, paper)), headers=bearer(user))
    assert resp.status == 201, await resp.text()
    assert [f["filename"] for f in (await resp.json())["attachments"]] == ["notes.txt", "report.pdf"]
    await settled_rows(settings.database_url, chat["id"])
    (call,) = gemini.calls
    text = call.user_text()
    assert "[Attached: notes.txt]\nThe launch code is PURPLE-OTTER-42." in text
    assert "[Attached: report.pdf]" in text and "Quarterly revenue rose by 17 percent." in text
    assert call.inline_images() == []


async def test_the_demo_reply_names_each_attachment(client: TestClient, sockets: list[Any]) -> None:
    user = await register(client)
    chat = await make_chat(client, user, name="Ada")
    photo = await upload(client, user, png(), "photo.png")
    notes = await upload(client, user, b"hello notes\n", "notes.txt")
    sio, inbox = await watcher(client, user, chat, sockets)
    ack = await sio.call("message:send", send(chat, "look", photo, notes))
    assert ack["ok"], ack
    await wait_until(lambda: inbox["ai:done"])
    reply = inbox["ai:done"][0]["message"]["content"]
    assert reply.startswith("[demo] Ada here.") and "look" in reply
    size = size_label(photo["size"])
    assert f"I see your image photo.png (image/png, {size}) and your file notes.txt (text/plain, 12 B)." in reply


async def test_other_users_files_and_too_many_files_are_refused(client: TestClient, sockets: list[Any]) -> None:
    user, other = await register(client), await register(client)
    chat = await make_chat(client, user)
    theirs = await upload(client, other, png(), "theirs.png")
    mine = [await upload(client, user, png(), f"p{i}.png") for i in range(5)]
    sio = await connect_socket(client, user["access_token"])
    sockets.append(sio)

    ack = await sio.call("message:send", send(chat, "steal", theirs))
    assert not ack["ok"] and ack["error"]["code"] == "not_found"
    ack = await sio.call("message:send", send(chat, "unknown", str(uuid.uuid4())))
    assert not ack["ok"] and ack["error"]["code"] == "not_found"
    ack = await sio.call("message:send", send(chat, "five", *mine))
    assert not ack["ok"] and ack["error"]["code"] == "invalid"
    assert await history(client, user, chat) == []
    # Four is the most, and still works.
    ack = await sio.call("message:send", send(chat, "four", *mine[:4]))
    assert ack["ok"] and len(ack["message"]["attachments"]) == 4


async def test_earlier_images_are_named_not_resent_and_deleted_files_are_left_out(
    gemini_client: TestClient, gemini: FakeGemini, sockets: list[Any]
) -> None:
    user = await register(gemini_client)
    chat = await make_chat(gemini_client, user)
    photo = await upload(gemini_client, user, png(), "photo.png")
    notes = await upload(gemini_client, user, b"Remember the number 73.\n", "notes.txt")
    sio, inbox = await watcher(gemini_client, user, chat, sockets)
    assert (await sio.call("message:send", send(chat, "first", photo, notes)))["ok"]
    await wait_until(lambda: len(inbox["ai:done"]) == 1)
    assert (await sio.call("message:send", send(chat, "second")))["ok"]
    await wait_until(lambda: len(inbox["ai:done"]) == 2)
    second = gemini.calls[1]
    assert second.inline_images() == []  # the image went once, with the turn it came with
    assert "[Attached: photo.png (image/png," in second.user_text() and "sent earlier" in second.user_text()
    assert "Remember the number 73." in second.user_text()  # an earlier file's text stays in the prompt

    resp = await gemini_client.delete(f"/api/v1/files/{notes['id']}", headers=bearer(user))
    assert resp.status == 204, await resp.text()
    assert (await sio.call("message:send", send(chat, "third")))["ok"]
    await wait_until(lambda: len(inbox["ai:done"]) == 3)
    third = gemini.calls[2].user_text()
    assert "notes.txt" not in third and "photo.png" in third
    assert inbox["ai:error"] == []


async def test_an_unreadable_file_never_fails_the_reply(
    gemini_client: TestClient, gemini: FakeGemini, settings: Settings, sockets: list[Any]
) -> None:
    user = await register(gemini_client)
    chat = await make_chat(gemini_client, user)
    photo = await upload(gemini_client, user, png(), "gone.png")
    remove_blobs(Path(settings.data_dir))  # the bytes vanish from the store
    sio, inbox = await watcher(gemini_client, user, chat, sockets)
    assert (await sio.call("message:send", send(chat, "see this?", photo)))["ok"]
    await wait_until(lambda: inbox["ai:done"] or inbox["ai:error"])
    assert inbox["ai:error"] == [] and inbox["ai:done"][0]["message"]["status"] == "complete"
    (call,) = gemini.calls
    assert call.inline_images() == []
    assert "[Attached: gone.png (image/png," in call.user_text() and "could not be loaded" in call.user_text()


async def test_a_gif_goes_to_the_model_as_a_png_of_its_first_frame(
    gemini_client: TestClient, gemini: FakeGemini, sockets: list[Any]
) -> None:
    user = await register(gemini_client)
    chat = await make_chat(gemini_client, user)
    moving = await upload(gemini_client, user, gif(), "dance.gif")
    assert moving["content_type"] == "image/gif"
    sio, inbox = await watcher(gemini_client, user, chat, sockets)
    assert (await sio.call("message:send", send(chat, "animated", moving)))["ok"]
    await wait_until(lambda: inbox["ai:done"])
    ((mime, data),) = gemini.calls[0].inline_images()
    assert mime == "image/png"
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.size == (16, 16)
