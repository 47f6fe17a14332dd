"""A persona's knowledge base over REST: text and file entries (TXT, Markdown, PDF typed by content),
size limits found while streaming, who may read and change it, chunking, full-text relevance and copying
on clone. Real PostgreSQL; no mocks."""

from __future__ import annotations

import io
import itertools
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient
from pypdf import PdfReader, PdfWriter

from handlers.keys import KNOWLEDGE_SERVICE
from server.app import create_app
from server.config import Settings
from services.knowledge import CHUNK_MAX, CHUNK_MIN, split_into_chunks
from tests.fixtures.files import make_pdf, make_png
from tests.helpers import bearer, make_persona, register

P = "/api/v1/personas"
ENTRY_FIELDS = {
    "id",
    "persona_id",
    "title",
    "source",
    "filename",
    "content_type",
    "keys",
    "chars",
    "chunks",
    "created_at",
}


def word() -> str:
    """A word no other test uses, made of letters only so the full-text parser keeps it whole."""
    return "zq" + uuid.uuid4().hex[:12].translate(str.maketrans("0123456789", "ghijklmnop"))


def url(persona: dict[str, Any], entry: dict[str, Any] | None = None) -> str:
    base = f"{P}/{persona['id']}/knowledge"
    return f"{base}/{entry['id']}" if entry is not None else base


def upload_form(
    data: bytes, filename: str | None = "notes.txt", content_type: str = "application/octet-stream", **fields: str
) -> aiohttp.FormData:
    form = aiohttp.FormData(quote_fields=False)  # names as browsers send them, not percent-encoded
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field("file", data, filename=filename, content_type=content_type)
    return form


async def add_text(
    client: TestClient, session: dict[str, Any], persona: dict[str, Any], title: str, content: str
) -> dict[str, Any]:
    resp = await client.post(url(persona), json={"title": title, "content": content}, headers=bearer(session))
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def add_file(
    client: TestClient, session: dict[str, Any], persona: dict[str, Any], data: bytes, **kwargs: Any
) -> dict[str, Any]:
    resp = await client.post(url(persona), data=upload_form(data, **kwargs), headers=bearer(session))
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def list_entries(client: TestClient, session: dict[str, Any], persona: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        resp = await client.get(url(persona), params=params, headers=bearer(session))
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def error_of(resp: Any) -> dict[str, Any]:
    return dict((await resp.json())["error"])


def encrypted(pdf: bytes, *, user_password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password, owner_password="owner-secret")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


# --- entries -----------------------------------------------------------------------------------


async def test_text_entry_add_list_read_delete(client: TestClient) -> None:
    alice = await register(client)
    persona = await make_persona(client, alice)
    entry = await add_text(client, alice, persona, "  Ship log  ", "The Nautilus dove to 8000 metres.\r\n\r\nAll well.")
    assert set(entry) == ENTRY_FIELDS
    assert entry["persona_id"] == persona["id"]
    assert entry["title"] == "Ship log" and entry["source"] == "text"
    assert entry["filename"] is None and entry["content_type"] is None and entry["keys"] == []
    assert entry["chars"] == len("The Nautilus dove to 8000 metres.\n\nAll well.") and entry["chunks"] == 1

    resp = await client.get(url(persona, entry), headers=bearer(alice))
    assert resp.status == 200
    assert await resp.json() == {**entry, "content": "The Nautilus dove to 8000 metres.\n\nAll well."}

    second = await add_text(client, alice, persona, "Crew", "Ned Land, harpooner.")
    assert [e["id"] for e in await list_entries(client, alice, persona)] == [second["id"], entry["id"]]

    assert (await client.delete(url(persona, entry), headers=bearer(alice))).status == 204
    assert [e["id"] for e in await list_entries(client, alice, persona)] == [second["id"]]
    resp = await client.get(url(persona, entry), headers=bearer(alice))
    assert resp.status == 404 and (await error_of(resp))["code"] == "not_found"
    assert (await client.delete(url(persona, entry), headers=bearer(alice))).status == 404


async def test_list_pages_newest_first_without_repeats(client: TestClient) -> None:
    alice = await register(client)
    persona = await make_persona(client, alice)
    made = [await add_text(client, alice, persona, f"Entry {i}", f"Fact number {i}.") for i in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = await (await client.get(url(persona), params=params, headers=bearer(alice))).json()
        assert len(page["items"]) <= 2
        assert all(set(item) == ENTRY_FIELDS for item in page["items"])  # no content in lists
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [e["id"] for e in reversed(made)]


async def test_every_route_needs_a_token(client: TestClient) -> None:
    some = f"{P}/{uuid.uuid4()}/knowledge"
    for method, path in [
        ("GET", some),
        ("POST", some),
        ("GET", f"{some}/{uuid.uuid4()}"),
        ("DELETE", f"{some}/{uuid.uuid4()}"),
    ]:
        resp = await client.request(method, path, json={"title": "t", "content": "c"})
        assert resp.status == 401, (method, path)


async def test_json_validation_names_the_field(client: TestClient) -> None:
    alice = await register(client)
    persona = await make_persona(client, alice)
    cases: list[tuple[Any, str]] = [
        ({"content": "text"}, "title"),
        ({"title": "", "content": "text"}, "title"),
        ({"title": "   ", "content": "text"}, "title"),
        ({"title": "t" * 201, "content": "text"}, "title"),
        ({"title": "T"}, "content"),
        ({"title": "T", "content": "   "}, "content"),
        ({"title": "T", "content": "c" * 200_001}, "content"),
        ({"title": "T", "content": 42}, "content"),
        ({"title": "T", "content": "a\u0000b"}, "content"),
        ({"title": "T", "content": "c", "source": "file"}, "source"),
        ([1, 2], "body"),
    ]
    for body, field in cases:
        resp = await client.post(url(persona), json=body, headers=bearer(alice))
        assert resp.status == 422, (body, await resp.text())
        err = await error_of(resp)
        assert err["code"] == "invalid" and field in [d["field"] for d in err["details"]], (body, err)
    # The largest text allowed goes in, in chunks.
    big = await add_text(client, alice, persona, "Big", ("All work and no play. " * 10_000)[:200_000])
    assert big["chars"] <= 200_000 and big["chunks"] > 100

    resp = await client.post(
        url(persona), data=b"{not json", headers={**bearer(alice), "Content-Type": "application/json"}
    )
    assert resp.status == 400 and (await error_of(resp))["code"] == "invalid_json"
    resp = await client.post(url(persona), data=b"hello", headers={**bearer(alice), "Content-Type": "text/plain"})
    assert resp.status == 415 and (await error_of(resp))["code"] == "unsupported_media_type"

    for path in (f"{P}/nope/knowledge", f"{P}/{persona['id']}/knowledge/nope"):
        method = "GET" if path.endswith("/nope") else "POST"
        resp = await client.request(method, path, json={"title": "T", "content": "c"}, headers=bearer(alice))
        assert resp.status == 422, path
    for params, field in [({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"cursor": "garbage!"}, "cursor")]:
        resp = await client.get(url(persona), params=params, headers=bearer(alice))
        assert resp.status == 422 and (await error_of(resp))["details"][0]["field"] == field
    assert [e["title"] for e in await list_entries(client, alice, persona)] == ["Big"]


# --- files -------------------------------------------------------------------------------------


async def test_txt_markdown_and_pdf_typed_by_content(client: TestClient) -> None:
    alice = await register(client)
    persona = await make_persona(client, alice)

    txt = await add_file(client, alice, persona, b"Plain notes about the reef.\n", filename="reef notes.txt")
    assert (txt["source"], txt["content_type"], txt["filename"], txt["title"]) == (
        "file",
        "text/plain",
        "reef notes.txt",
        "reef notes",
    )

    blank_title = await add_file(client, alice, persona, b"Words.", filename="field.txt", title="  ")
    assert blank_title["title"] == "field"  # an empty form input means "no title"
    md = await add_file(client, alice, persona, b"Just words, no markup.", filename="guide.md", title="The guide")
    assert (md["content_type"], md["title"]) == ("text/markdown", "The guide")
    marked = await add_file(client, alice, persona, b"# Heading\n\n- item one\n- item two\n", filename="upload.bin")
    assert marked["content_type"] == "text/markdown"

    # A PDF named .txt is still a PDF; its text comes out page by page.
    pdf = make_pdf(["The kraken sleeps beneath the ice.\nIt wakes once a century.", "Second page: the thaw."])
    entry = await add_file(client, alice, persona, pdf, filename="not really.txt", content_type="text/plain")
    assert entry["content_type"] == "application/pdf"
    content = (await (await client.get(url(persona, entry), headers=bearer(alice))).json())["content"]
    assert "kraken sleeps beneath the ice" in content and "Second page: the thaw." in content

    # A PDF whose owner password only restricts copying opens with the empty user password.
    restricted = encrypted(make_pdf(["Restricted but readable."]), user_password="")
    entry = await add_file(client, alice, persona, restricted, filename="restricted.pdf")
    assert entry["chars"] > 0

    # UTF-8 with a byte order mark, and UTF-16 (Windows Notepad): text either way, the BOM dropped.
    bom = await add_file(client, alice, persona, "\ufeffCafé au lait.".encode(), filename="bom.txt")
    utf16 = await add_file(client, alice, persona, "Crème brûlée.".encode("utf-16"), filename="u16.txt")
    for item, text in ((bom, "Café au lait."), (utf16, "Crème brûlée.")):
        assert (await (await client.get(url(persona, item), headers=bearer(alice))).json())["content"] == text

    # Folders and control characters are dropped from the stored name; no name at all is fine too.
    odd = await add_file(client, alice, persona, b"Some text.", filename="../../etc/pass\twd.txt")
    assert odd["filename"] == "pass wd.txt"
    body = b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nSome text.\r\n--b--\r\n'
    headers = {**bearer(alice), "Content-Type": "multipart/form-data; boundary=b"}
    resp = await client.post(url(persona), data=body, headers=headers)
    assert resp.status == 201, await resp.text()
    nameless = await resp.json()
    assert nameless["filename"] is None and nameless["title"] == "Untitled"


async def test_unsupported_broken_and_empty_files_are_refused(client: TestClient) -> None:
    alice = await register(client)
    persona = await make_persona(client, alice)
    pdf = make_pdf(["Secret plans."])
    cases: list[tuple[bytes, str, int, str]] = [
        (make_png(), "picture.txt", 415, "unsupported_media_type"),
        (bytes(range(256)) * 8, "blob.md", 415, "unsupported_media_type"),
        (b"text with a \x00 NUL byte", "nul.txt", 415, "unsupported_media_type"),
        ("Déjà vu".encode("latin-1"), "latin1.txt", 415, "unsupported_media_type"),
        (b"PK\x03\x04 a docx in disguise", "doc.txt", 415, "unsupported_media_type"),
        (b"   \n\n\t  ", "blank.txt", 422, "invalid"),
        (encrypted(pdf, user_password="hunter2"), "locked.pdf", 422, "invalid"),
        (b"%PDF-1.7\nthis is not really a PDF", "broken.pdf", 422, "invalid"),
        (pdf[: len(pdf) // 2], "truncated.pdf", 422, "invalid"),
        (make_pdf([""]), "scanned.pdf", 422, "invalid"),
    ]
    for data, filename, status, code in cases:
        resp = await client.post(url(persona), data=upload_form(data, filename=filename), headers=bearer(alice))
        assert resp.status == status, (filename, await resp.text())
        err = await error_of(resp)
        assert err["code"] == code and err["details"][0]["field"] == "file", (filename, err)
    resp = await client.post(
        url(persona), data=upload_form(encrypted(pdf, user_password="x"), filename="l.pdf"), headers=bearer(alice)
    )
    assert "password" in (await error_of(resp))["message"]

    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("title", "No file")
    for data, field in [
        (form, "file"),
        (upload_form(b"", filename="empty.txt"), "file"),
        (upload_form(b"text", title="t" * 201), "title"),
        (upload_form(b"text", title="a\u0000b"), "title"),
        (upload_form(b"text", color="red"), "color"),
    ]:
        resp = await client.post(url(persona), data=data, headers=bearer(alice))
        assert resp.status == 422, (field, await resp.text())
        assert (await error_of(resp))["details"][0]["field"] == field
    two = upload_form(b"one")
    two.add_field("file", b"two", filename="two.txt")
    resp = await client.post(url(persona), data=two, headers=bearer(alice))
    assert resp.status == 422
    resp = await client.post(
        url(persona),
        data=b"--xyz\r\ngarbage",
        headers={**bearer(alice), "Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert 400 <= resp.status < 500
    assert await list_entries(client, alice, persona) == []


async def test_upload_limit_is_enforced_while_streaming(aiohttp_client: Any, settings: Settings) -> None:
    limit = 20_000
    client = await aiohttp_client(create_app(settings.model_copy(update={"upload_max_bytes": limit})))
    alice = await register(client)
    persona = await make_persona(client, alice)

    exact = await add_file(client, alice, persona, b"a" * (limit - 1) + b".", filename="exact.txt")
    assert exact["chars"] == limit
    resp = await client.post(url(persona), data=upload_form(b"b" * (limit + 1)), headers=bearer(alice))
    assert resp.status == 413 and (await error_of(resp))["code"] == "payload_too_large"
    resp = await client.post(url(persona), json={"title": "T", "content": "c" * (limit + 10)}, headers=bearer(alice))
    assert resp.status == 413

    # Chunked, so no Content-Length warns us: the read stops at the limit, long before the end.
    async def endless() -> AsyncIterator[bytes]:
        yield b'--b0und\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n'
        for _ in range(2000):  # 2000 * 8 KiB = 16 MiB
            yield b"x" * 8192
        yield b"\r\n--b0und--\r\n"

    resp = await client.post(
        url(persona),
        data=endless(),
        headers={**bearer(alice), "Content-Type": "multipart/form-data; boundary=b0und"},
    )
    assert resp.status == 413
    assert [e["id"] for e in await list_entries(client, alice, persona)] == [exact["id"]]


# --- who may touch it --------------------------------------------------------------------------


async def test_only_the_owner_changes_knowledge_and_others_read_it_only_when_remixable(client: TestClient) -> None:
    alice, bob = await register(client), await register(client)
    private = await make_persona(client, alice)
    public = await make_persona(client, alice, visibility="public")
    entries = {}
    for persona in (private, public):
        entries[persona["id"]] = await add_text(client, alice, persona, "Secret", "The treasure is under the oak.")

    async def reads(persona: dict[str, Any]) -> list[Any]:
        entry = entries[persona["id"]]
        return [
            await client.get(url(persona), headers=bearer(bob)),
            await client.get(url(persona, entry), headers=bearer(bob)),
        ]

    async def changes(persona: dict[str, Any]) -> list[Any]:
        entry = entries[persona["id"]]
        return [
            await client.post(url(persona), json={"title": "Mine", "content": "now"}, headers=bearer(bob)),
            await client.post(url(persona), data=upload_form(b"mine now"), headers=bearer(bob)),
            await client.delete(url(persona, entry), headers=bearer(bob)),
        ]

    async def assert_not_found(responses: list[Any]) -> None:
        for resp in responses:
            assert resp.status == 404, await resp.text()
            assert (await error_of(resp))["code"] == "not_found"

    # A private persona's knowledge: as if neither existed. Changes to anyone else's: the same.
    await assert_not_found(await reads(private) + await changes(private) + await changes(public))
    # A public persona that is not remixable: its knowledge is part of the definition the owner keeps.
    for resp in await reads(public):
        assert resp.status == 403, await resp.text()
        error = await error_of(resp)
        assert error["code"] == "forbidden" and "treasure" not in str(error)

    # Remixable: anyone may read it (and clone it, knowledge included); only the owner still changes it.
    for persona in (private, public):
        resp = await client.put(f"{P}/{persona['id']}", json={"remixable": True}, headers=bearer(alice))
        assert resp.status == 200
    listed, detail = await reads(public)
    assert listed.status == 200
    assert [e["id"] for e in (await listed.json())["items"]] == [entries[public["id"]]["id"]]
    assert detail.status == 200 and (await detail.json())["content"] == "The treasure is under the oak."
    await assert_not_found(await reads(private) + await changes(private) + await changes(public))

    for persona in (private, public):
        assert [e["id"] for e in await list_entries(client, alice, persona)] == [entries[persona["id"]]["id"]]

    # An entry is only reachable under its own persona, even for the owner (and for others).
    resp = await client.get(url(public, entries[private["id"]]), headers=bearer(bob))
    assert resp.status == 404
    resp = await client.delete(url(private, entries[public["id"]]), headers=bearer(alice))
    assert resp.status == 404
    resp = await client.get(url(private, entries[public["id"]]), headers=bearer(alice))
    assert resp.status == 404
    missing = {"id": str(uuid.uuid4())}
    assert (await client.get(url(missing), headers=bearer(alice))).status == 404
    assert (await client.post(url(missing), json={"title": "T", "content": "c"}, headers=bearer(alice))).status == 404


# --- chunks and relevance ----------------------------------------------------------------------


def long_text(paragraphs: int = 12) -> str:
    sentences = [
        f"Paragraph {p} sentence {s} tells of the {['river', 'forest', 'citadel', 'harbour'][s % 4]} "
        f"and of its keepers, who count the days in stones and the years in songs."
        for p in range(paragraphs)
        for s in range(6)
    ]
    return "\n\n".join(" ".join(sentences[p * 6 : p * 6 + 6]) for p in range(paragraphs))


def test_chunks_are_sized_on_boundaries_and_overlap() -> None:
    text = long_text()
    chunks = split_into_chunks(text)
    assert len(chunks) > 3
    for chunk in chunks[:-1]:
        assert CHUNK_MIN - 10 <= len(chunk) <= CHUNK_MAX, len(chunk)
    assert len(chunks[-1]) <= CHUNK_MAX
    for before, after in itertools.pairwise(chunks):
        # Each chunk starts with the end of the previous one: a whole sentence here.
        assert before.endswith(after[: after.index(".") + 1]), (before[-80:], after[:80])
        assert after[0].isupper()
    # Nothing is lost: every sentence is whole in some chunk.
    for sentence in re.split(r"(?<=\.)\s+", text):
        assert any(sentence in chunk for chunk in chunks), sentence

    assert split_into_chunks("One short note.") == ["One short note."]
    assert split_into_chunks("") == []
    # Text without spaces or full stops is still cut within the bounds.
    unbroken = split_into_chunks("x" * 5000)
    assert all(len(c) <= CHUNK_MAX for c in unbroken) and "".join(unbroken) == "x" * 5000
    # CJK sentences end with 。 and no space.
    cjk = split_into_chunks("这是关于海洋的一个句子。" * 300)
    assert len(cjk) > 1 and all(len(c) <= CHUNK_MAX and c.endswith("。") for c in cjk)


async def test_relevant_chunks_rank_by_any_significant_word(client: TestClient) -> None:
    alice = await register(client)
    persona = await make_persona(client, alice)
    other = await make_persona(client, alice)
    dragon, castle = word(), word()
    await add_text(client, alice, persona, "Dragons", f"The {dragon} dragons nest in the northern cliffs.")
    await add_text(client, alice, persona, "Castle", f"The {castle} castle has seven towers and one gate.")
    await add_text(client, alice, persona, "Both", f"A {dragon} dragon once burned the {castle} castle's gate.")
    await add_text(client, alice, persona, "Long", long_text())
    await add_text(client, alice, other, "Elsewhere", f"Another {dragon} dragon lives here.")
    knowledge = client.app[KNOWLEDGE_SERVICE]
    persona_id = uuid.UUID(persona["id"])

    # Any significant word matches; both words together rank the chunk holding both first.
    found = await knowledge.relevant_chunks(persona_id, f"What about {dragon} and the {castle}?")
    assert len(found) == 3
    assert castle in found[0].content and dragon in found[0].content
    assert found[0].rank > found[1].rank > 0
    # Stemming: "nesting" finds "nest", "towered" finds "towers"; chunks of other personas never come.
    found = await knowledge.relevant_chunks(persona_id, f"where do the {dragon}s go nesting?")
    assert found[0].content.startswith(f"The {dragon} dragons nest")
    assert all("Another" not in c.content for c in found)
    assert (await knowledge.relevant_chunks(persona_id, "towered"))[0].content.startswith(f"The {castle} castle")

    # A word in a long entry finds its chunk, not the whole text; limit caps the list.
    found = await knowledge.relevant_chunks(persona_id, "citadel keepers", limit=2)
    assert len(found) == 2 and all(len(c.content) <= CHUNK_MAX for c in found)

    # Stop words, punctuation, query syntax and nothing at all match nothing and are not errors.
    for query in ("", "   ", "the and of to is", "!!! ??? & | :* ( ) <-> 'quoted'"):
        assert await knowledge.relevant_chunks(persona_id, query) == []
    assert await knowledge.relevant_chunks(uuid.uuid4(), dragon) == []
    assert await knowledge.relevant_chunks(persona_id, dragon, limit=0) == []
    # A long chat message is fine (only its first distinct words are searched).
    assert await knowledge.relevant_chunks(persona_id, f"{dragon} " + "lorem ipsum " * 2000)


# --- clone and delete --------------------------------------------------------------------------


async def test_clone_copies_the_knowledge_base(client: TestClient, settings: Settings) -> None:
    alice, bob = await register(client), await register(client)
    source = await make_persona(client, alice, visibility="public")
    term = word()
    text_entry = await add_text(client, alice, source, "Lore", f"The {term} lighthouse guides ships. " * 60)
    file_entry = await add_file(client, alice, source, make_pdf([f"Manual of the {term} lamp."]), filename="m.pdf")

    resp = await client.post(f"{P}/{source['id']}/clone", headers=bearer(alice))
    assert resp.status == 201, await resp.text()
    clone = await resp.json()
    copied = await list_entries(client, alice, clone)
    original = await list_entries(client, alice, source)
    assert len(copied) == 2
    fields = ("title", "source", "filename", "content_type", "keys", "chars", "chunks", "created_at")
    assert [{k: e[k] for k in fields} for e in copied] == [{k: e[k] for k in fields} for e in original]
    assert {e["id"] for e in copied}.isdisjoint({text_entry["id"], file_entry["id"]})
    assert all(e["persona_id"] == clone["id"] for e in copied)
    knowledge = client.app[KNOWLEDGE_SERVICE]
    assert len(await knowledge.relevant_chunks(uuid.UUID(clone["id"]), term, limit=50)) == text_entry["chunks"] + 1

    # The copy is independent: deleting the source's entries leaves the clone's.
    for entry in original:
        assert (await client.delete(url(source, entry), headers=bearer(alice))).status == 204
    assert len(await list_entries(client, alice, clone)) == 2
    assert await knowledge.relevant_chunks(uuid.UUID(source["id"]), term) == []

    # Someone else may clone a public persona only when it is remixable, and then gets its knowledge too
    # (SPEC §4: clone with its knowledge base; the definition stays the owner's unless remixable).
    await add_text(client, alice, source, "Public lore", f"{term} again.")
    resp = await client.post(f"{P}/{source['id']}/clone", headers=bearer(bob))
    assert resp.status == 403 and (await error_of(resp))["code"] == "forbidden"
    assert (await (await client.get(P, headers=bearer(bob))).json())["items"] == []  # nothing was made
    resp = await client.put(f"{P}/{source['id']}", json={"remixable": True}, headers=bearer(alice))
    assert resp.status == 200
    resp = await client.post(f"{P}/{source['id']}/clone", headers=bearer(bob))
    assert resp.status == 201
    bobs = await resp.json()
    assert [e["title"] for e in await list_entries(client, bob, bobs)] == ["Public lore"]

    # A clone refused by the plan leaves no knowledge behind.
    assert settings.database_url is not None
    conn = await asyncpg.connect(settings.database_url)
    try:
        before = await conn.fetchval("SELECT count(*) FROM knowledge_entries")
        resp = await client.post(f"{P}/{source['id']}/clone", headers=bearer(alice))  # alice has 2 already
        assert resp.status == 403
        assert await conn.fetchval("SELECT count(*) FROM knowledge_entries") == before
    finally:
        await conn.close()


async def test_deleting_a_persona_deletes_its_knowledge(client: TestClient, settings: Settings) -> None:
    alice = await register(client)
    persona = await make_persona(client, alice)
    await add_text(client, alice, persona, "Lore", "Something worth knowing. " * 100)
    assert settings.database_url is not None
    conn = await asyncpg.connect(settings.database_url)
    try:
        persona_id = uuid.UUID(persona["id"])
        assert await conn.fetchval("SELECT count(*) FROM knowledge_chunks WHERE persona_id = $1", persona_id) > 1
        assert (await client.delete(f"{P}/{persona['id']}", headers=bearer(alice))).status == 204
        for table in ("knowledge_entries", "knowledge_chunks"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table} WHERE persona_id = $1", persona_id) == 0
    finally:
        await conn.close()


async def test_openapi_lists_knowledge_routes(client: TestClient) -> None:
    doc = await (await client.get("/api/openapi.json")).json()
    paths = doc["paths"]
    assert set(paths[f"{P}/{{id}}/knowledge"]) == {"get", "post"}
    assert set(paths[f"{P}/{{id}}/knowledge/{{entry_id}}"]) == {"get", "delete"}
    assert "multipart/form-data" in paths[f"{P}/{{id}}/knowledge"]["post"]["description"]
    assert {"201", "413", "415", "422"} <= set(paths[f"{P}/{{id}}/knowledge"]["post"]["responses"])
    assert "post" in paths[f"{P}/import"]
    export = paths[f"{P}/{{id}}/export"]["get"]
    assert {p["name"] for p in export["parameters"]} == {"id", "format"}
