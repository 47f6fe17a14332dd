"""Character Card import and export over REST: PNGs written byte by byte the way other tools write them
(V2 in `chara`, V3 in `ccv3`, tEXt/zTXt/iTXt), V1/V2/V3 JSON, export → import round trips, bad files,
plan limits and who may export what. Real PostgreSQL; no mocks."""

from __future__ import annotations

import base64
import io
import json
import os
import uuid
import zlib
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient
from PIL import Image

from handlers.keys import KNOWLEDGE_SERVICE
from server.app import create_app
from server.config import Settings
from tests.fixtures.files import (
    card_base64,
    itxt_chunk,
    make_png,
    png_chunk,
    read_png_texts,
    text_chunk,
    ztxt_chunk,
)
from tests.helpers import bearer, make_persona, register

P = "/api/v1/personas"
ROUND_TRIP_FIELDS = ("name", "description", "personality", "greeting", "alternate_greetings", "tags")


def word() -> str:
    return "zq" + uuid.uuid4().hex[:12].translate(str.maketrans("0123456789", "ghijklmnop"))


def v2_card(name: str = "Captain Nemo", **data: Any) -> dict[str, Any]:
    """A Character Card V2 as SillyTavern writes it."""
    base: dict[str, Any] = {
        "name": name,
        "description": "Commander of the Nautilus, a submarine far ahead of its time.",
        "personality": "Proud, melancholic, brilliant; {{char}} distrusts every flag.",
        "scenario": "{{user}} wakes up aboard the Nautilus after a shipwreck.",
        "first_mes": "*The hatch opens.* Welcome aboard, {{user}}. I am {{char}}.",
        "mes_example": "<START>\n{{user}}: Where are we?\n{{char}}: Twenty thousand leagues under.",
        "creator_notes": "Best with long replies.",
        "system_prompt": "",
        "post_history_instructions": "",
        "alternate_greetings": ["Another greeting."],
        "tags": ["Sea", "Captain", "sea", "  Steampunk  "],
        "creator": "someone@elsewhere",
        "character_version": "1.2",
        "extensions": {"talkativeness": "0.5", "fav": False},
    }
    base.update(data)
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": base}


def book(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"name": "Nautilus lore", "extensions": {}, "entries": list(entries)}


def book_entry(keys: list[str], content: str, **extra: Any) -> dict[str, Any]:
    return {"keys": keys, "content": content, "extensions": {}, "enabled": True, "insertion_order": 100, **extra}


def card_form(data: bytes, filename: str = "card.png") -> aiohttp.FormData:
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("file", data, filename=filename, content_type="application/octet-stream")
    return form


async def import_card(client: TestClient, session: dict[str, Any], data: bytes, filename: str = "card.png") -> Any:
    return await client.post(f"{P}/import", data=card_form(data, filename), headers=bearer(session))


async def imported(client: TestClient, session: dict[str, Any], data: bytes, filename: str = "c.png") -> dict[str, Any]:
    resp = await import_card(client, session, data, filename)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def knowledge_of(client: TestClient, session: dict[str, Any], persona: dict[str, Any]) -> list[dict[str, Any]]:
    resp = await client.get(f"{P}/{persona['id']}/knowledge", params={"limit": 100}, headers=bearer(session))
    assert resp.status == 200, await resp.text()
    return list((await resp.json())["items"])


async def entry_text(client: TestClient, session: dict[str, Any], entry: dict[str, Any]) -> str:
    resp = await client.get(f"{P}/{entry['persona_id']}/knowledge/{entry['id']}", headers=bearer(session))
    assert resp.status == 200
    return str((await resp.json())["content"])


async def export(client: TestClient, session: dict[str, Any], persona: dict[str, Any], fmt: str | None) -> Any:
    params = {"format": fmt} if fmt else {}
    return await client.get(f"{P}/{persona['id']}/export", params=params, headers=bearer(session))


async def error_of(resp: Any) -> dict[str, Any]:
    return dict((await resp.json())["error"])


async def make_premium(settings: Settings, user_id: str) -> None:
    assert settings.database_url is not None
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("UPDATE users SET plan = 'premium' WHERE id = $1", uuid.UUID(user_id))
    finally:
        await conn.close()


# --- import ------------------------------------------------------------------------------------


async def test_import_a_png_made_by_another_tool(client: TestClient) -> None:
    alice = await register(client)
    key = word()
    card = v2_card(
        character_book=book(
            book_entry(
                ["Nautilus", key], "The Nautilus runs on sodium batteries and never surfaces for air.", name="Ship"
            ),
            book_entry(["Ned Land"], "Ned Land is a Canadian harpooner who wants to escape.", comment="Ned"),
            book_entry(["secret"], "This entry is switched off.", enabled=False),
            book_entry(["empty"], "   "),
        )
    )
    png = make_png(png_chunk(b"tIME", b"\x07\xe8\x01\x01\x00\x00\x00"), text_chunk("chara", card_base64(card)))
    result = await imported(client, alice, png, "nemo.png")
    persona = result["persona"]
    assert result["knowledge_entries"] == 2 and result["truncated"] == []
    assert persona["owner_id"] == alice["user"]["id"] and persona["visibility"] == "private"
    assert persona["name"] == "Captain Nemo"
    assert persona["description"] == card["data"]["description"]
    # Personality, scenario and example dialogue become labelled sections; {{char}} becomes the name.
    assert "Proud, melancholic, brilliant; Captain Nemo distrusts every flag." in persona["personality"]
    assert persona["personality"].startswith("Personality:\n")
    assert "Scenario:\n{{user}} wakes up aboard the Nautilus" in persona["personality"]
    assert "Example dialogue:\n<START>" in persona["personality"]
    assert persona["greeting"] == "*The hatch opens.* Welcome aboard, {{user}}. I am Captain Nemo."
    assert persona["tags"] == ["sea", "captain", "steampunk"]

    resp = await client.get(f"{P}/{persona['id']}", headers=bearer(alice))
    assert await resp.json() == persona
    entries = await knowledge_of(client, alice, persona)
    assert sorted(e["title"] for e in entries) == ["Ned", "Ship"]
    assert {e["source"] for e in entries} == {"character_book"}
    ship = next(e for e in entries if e["title"] == "Ship")
    assert ship["keys"] == ["Nautilus", key]
    assert await entry_text(client, alice, ship) == "The Nautilus runs on sodium batteries and never surfaces for air."

    # The keys are searchable even though the entry's text does not contain them.
    knowledge = client.app[KNOWLEDGE_SERVICE]
    found = await knowledge.relevant_chunks(uuid.UUID(persona["id"]), f"tell me about {key}")
    assert len(found) == 1 and "sodium batteries" in found[0].content
    found = await knowledge.relevant_chunks(uuid.UUID(persona["id"]), "who is the harpooner?")
    assert len(found) == 1 and "Canadian harpooner" in found[0].content


async def test_import_v1_and_v3_json(client: TestClient, settings: Settings) -> None:
    alice = await register(client)
    await make_premium(settings, alice["user"]["id"])
    v1 = {
        "name": "Old Timer",
        "description": "A legacy card.",
        "personality": "Grumpy.",
        "scenario": "",
        "first_mes": "Get off my lawn.",
        "mes_example": "",
    }
    result = await imported(client, alice, json.dumps(v1).encode(), "old.json")
    persona = result["persona"]
    assert (persona["name"], persona["description"], persona["personality"], persona["greeting"]) == (
        "Old Timer",
        "A legacy card.",
        "Grumpy.",  # no other sections: taken as it is
        "Get off my lawn.",
    )
    assert persona["tags"] == [] and result["knowledge_entries"] == 0

    v3 = {
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "data": {
            **v2_card("Ada", system_prompt="Answer as {{char}}, in Victorian English. {{original}}")["data"],
            "scenario": "",
            "mes_example": "",
            "nickname": "The Enchantress of Numbers",
            "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
            "group_only_greetings": [],
            "creation_date": 1700000000,
            "character_book": book(book_entry(["engine"], "The Analytical Engine.", use_regex=False)),
        },
    }
    result = await imported(client, alice, b"\xef\xbb\xbf" + json.dumps(v3).encode(), "ada.json")
    persona = result["persona"]
    assert persona["name"] == "Ada" and result["knowledge_entries"] == 1
    assert persona["personality"].startswith("Personality:\nProud")
    assert persona["personality"].endswith("Instructions:\nAnswer as Ada, in Victorian English.")

    # A V2 header without `data` but with the V1 fields at the top, as some tools write it.
    flat = {"spec": "chara_card_v2", "spec_version": "2.0", **v1, "name": "Flat"}
    assert (await imported(client, alice, json.dumps(flat).encode(), "flat.json"))["persona"]["name"] == "Flat"

    # ccv3 wins over chara in a PNG carrying both; a broken ccv3 falls back to chara.
    chara = text_chunk("chara", card_base64(v2_card("From chara")))
    ccv3 = text_chunk("ccv3", card_base64({**v3, "data": {**v3["data"], "name": "From ccv3"}}))
    assert (await imported(client, alice, make_png(chara, ccv3)))["persona"]["name"] == "From ccv3"
    broken = text_chunk("ccv3", "not base64 at all!")
    assert (await imported(client, alice, make_png(broken, chara)))["persona"]["name"] == "From chara"

    # Compressed and international text chunks, and raw JSON instead of base64, are read too.
    for chunk, name in [
        (ztxt_chunk("chara", card_base64(v2_card("Zipped"))), "Zipped"),
        (itxt_chunk("chara", card_base64(v2_card("Intl"))), "Intl"),
        (itxt_chunk("ccv3", card_base64(v2_card("Intl zipped")), compressed=True), "Intl zipped"),
        (png_chunk(b"tEXt", b"chara\x00" + json.dumps(v2_card("Raw JSON")).encode()), "Raw JSON"),
    ]:
        assert (await imported(client, alice, make_png(chunk)))["persona"]["name"] == name


async def test_import_clips_what_does_not_fit(client: TestClient) -> None:
    alice = await register(client)
    card = v2_card(
        "N" * 100,
        description="word " * 1000,
        scenario="",
        mes_example="",
        tags=[f"tag{i}" for i in range(30)] + ["x" * 40, 7, None],
        first_mes=None,
        personality=["not", "text"],
    )
    result = await imported(client, alice, json.dumps(card).encode(), "big.json")
    persona = result["persona"]
    assert set(result["truncated"]) == {"name", "description", "tags"}
    assert len(persona["name"]) == 80 and persona["name"].endswith("…")
    assert len(persona["description"]) <= 2000 and persona["description"].endswith("word…")
    assert persona["tags"] == [f"tag{i}" for i in range(20)]
    assert persona["greeting"] == "" and persona["personality"] == ""
    # NUL characters (which PostgreSQL text cannot hold) are dropped rather than failing the import.
    nul = v2_card("Nul\u0000l", description="a\u0000b", character_book=book(book_entry(["k\u0000"], "c\u0000d")))
    result = await imported(client, alice, json.dumps(nul).encode(), "nul.json")
    assert result["persona"]["name"] == "Null" and result["persona"]["description"] == "ab"


async def test_bad_files_are_refused_with_the_reason(client: TestClient) -> None:
    alice = await register(client)
    good = card_base64(v2_card())
    cases: list[tuple[bytes, int, str, str]] = [
        (os.urandom(2048), 415, "unsupported_media_type", "file"),
        (b"name: not json", 415, "unsupported_media_type", "file"),
        (make_png(), 422, "invalid", "file"),
        (make_png(text_chunk("Comment", "made with GIMP")), 422, "invalid", "file"),
        (make_png(text_chunk("chara", "%%% not base64 %%%")), 422, "invalid", "file"),
        (make_png(text_chunk("chara", base64.b64encode(b"\xff\xfe not utf-8").decode())), 422, "invalid", "file"),
        (make_png(text_chunk("chara", base64.b64encode(b"{broken json").decode())), 422, "invalid", "file"),
        (make_png(png_chunk(b"zTXt", b"chara\x00\x00not zlib")), 422, "invalid", "file"),
        (make_png(text_chunk("chara", good))[:40], 422, "invalid", "file"),  # truncated before the card
        (b'{"name": ', 422, "invalid", "file"),
        (b"[1, 2, 3]", 415, "unsupported_media_type", "file"),
        (b"{}", 422, "invalid", "name"),
        (json.dumps({"description": "no name"}).encode(), 422, "invalid", "name"),
        (json.dumps(v2_card(name="   ")).encode(), 422, "invalid", "data.name"),
        (json.dumps({"spec": "chara_card_v2", "data": "oops"}).encode(), 422, "invalid", "data"),
        (json.dumps({"spec": "chara_card_v9", "data": {"name": "x"}}).encode(), 422, "invalid", "spec"),
        (
            make_png(text_chunk("chara", card_base64({"spec": "chara_card_v2", "data": {}}))),
            422,
            "invalid",
            "data.name",
        ),
        (b"[" * 100_000 + b"]" * 100_000, 415, "unsupported_media_type", "file"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 422, "invalid", "file"),
    ]
    for data, status, code, field in cases:
        resp = await import_card(client, alice, data)
        assert resp.status == status, (data[:60], await resp.text())
        err = await error_of(resp)
        assert err["code"] == code and err["details"][0]["field"] == field, (data[:60], err)

    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("title", "no file")
    resp = await client.post(f"{P}/import", data=form, headers=bearer(alice))
    assert resp.status == 422 and (await error_of(resp))["details"][0]["field"] == "title"
    resp = await client.post(f"{P}/import", json=v2_card(), headers=bearer(alice))
    assert resp.status == 415
    resp = await client.post(f"{P}/import", data=card_form(b""), headers=bearer(alice))
    assert resp.status == 422
    assert (await client.post(f"{P}/import", data=card_form(b"{}"))).status == 401
    resp = await client.get(f"{P}", headers=bearer(alice))
    assert (await resp.json())["items"] == []


async def test_import_size_limit(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(settings.model_copy(update={"upload_max_bytes": 10_000})))
    alice = await register(client)
    big = make_png(text_chunk("chara", card_base64(v2_card(description="x" * 20_000))))
    resp = await import_card(client, alice, big)
    assert resp.status == 413 and (await error_of(resp))["code"] == "payload_too_large"
    # A small zTXt chunk that inflates far beyond the limit is refused, not inflated.
    bomb = png_chunk(b"zTXt", b"chara\x00\x00" + zlib.compress(b"A" * 5_000_000))
    resp = await import_card(client, alice, make_png(bomb))
    assert resp.status == 422 and "larger than" in (await error_of(resp))["message"]


async def test_import_counts_against_the_plan(client: TestClient, settings: Settings) -> None:
    alice = await register(client)
    await make_persona(client, alice)
    await make_persona(client, alice)
    card = v2_card(character_book=book(book_entry(["a"], "Alpha."), book_entry(["b"], "Beta.")))
    assert settings.database_url is not None
    conn = await asyncpg.connect(settings.database_url)
    try:
        before = await conn.fetchval("SELECT count(*) FROM knowledge_entries")
        resp = await import_card(client, alice, json.dumps(card).encode(), "card.json")
        assert resp.status == 403
        err = await error_of(resp)
        assert err["code"] == "plan_limit" and err["details"]["limit"] == 2
        assert await conn.fetchval("SELECT count(*) FROM knowledge_entries") == before
    finally:
        await conn.close()
    resp = await client.get(P, headers=bearer(alice))
    assert len((await resp.json())["items"]) == 2


# --- export ------------------------------------------------------------------------------------


async def test_export_json_and_png_then_import_again(client: TestClient, settings: Settings) -> None:
    alice = await register(client)
    await make_premium(settings, alice["user"]["id"])
    original = await make_persona(
        client,
        alice,
        name="Émile Zola",
        description="Novelist and journalist.",
        personality="Personality:\nFierce about justice.\n\nScenario:\nParis, 1898.",  # looks like sections
        greeting="J'accuse… that is, hello.",
        tags=["writer", "france"],
        visibility="public",
    )
    url = f"{P}/{original['id']}/knowledge"
    resp = await client.post(
        url, json={"title": "Dreyfus", "content": "Zola wrote J'accuse in 1898."}, headers=bearer(alice)
    )
    assert resp.status == 201
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("file", b"# Germinal\n\nA novel about miners.", filename="germinal.md")
    assert (await client.post(url, data=form, headers=bearer(alice))).status == 201

    resp = await export(client, alice, original, None)  # json by default
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="emile-zola.json"'
    exported_json = await resp.read()
    card = json.loads(exported_json)
    assert (card["spec"], card["spec_version"]) == ("chara_card_v2", "2.0")
    data = card["data"]
    assert data["name"] == "Émile Zola" and data["first_mes"] == original["greeting"]
    assert data["personality"] == original["personality"] and data["scenario"] == data["system_prompt"] == ""
    assert data["tags"] == ["writer", "france"]
    assert data["extensions"] == {"parlor": {"persona_id": original["id"]}}
    entries = data["character_book"]["entries"]
    assert [e["name"] for e in entries] == ["Dreyfus", "germinal"]
    assert all(e["enabled"] and isinstance(e["keys"], list) for e in entries)

    resp = await export(client, alice, original, "png")
    assert resp.status == 200 and resp.content_type == "image/png"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="emile-zola.png"'
    exported_png = await resp.read()
    image = Image.open(io.BytesIO(exported_png))
    assert image.format == "PNG" and image.size == (400, 600)
    texts = read_png_texts(exported_png)
    chara = json.loads(base64.b64decode(texts["chara"]))
    ccv3 = json.loads(base64.b64decode(texts["ccv3"]))
    assert chara == card
    assert (ccv3["spec"], ccv3["spec_version"]) == ("chara_card_v3", "3.0")
    assert ccv3["data"]["name"] == "Émile Zola" and len(ccv3["data"]["character_book"]["entries"]) == 2
    assert all(e["use_regex"] is False for e in ccv3["data"]["character_book"]["entries"])
    assert isinstance(ccv3["data"]["creation_date"], int)

    for body, filename in ((exported_json, "zola.json"), (exported_png, "zola.png")):
        result = await imported(client, alice, body, filename)
        again = result["persona"]
        assert {f: again[f] for f in ROUND_TRIP_FIELDS} == {f: original[f] for f in ROUND_TRIP_FIELDS}
        assert again["visibility"] == "private" and again["id"] != original["id"]
        assert result["knowledge_entries"] == 2 and result["truncated"] == []
        copied = await knowledge_of(client, alice, again)
        assert sorted(e["title"] for e in copied) == ["Dreyfus", "germinal"]
        texts_again = {e["title"]: await entry_text(client, alice, e) for e in copied}
        assert texts_again["Dreyfus"] == "Zola wrote J'accuse in 1898."

        # And once more: exporting the imported persona gives the same card, so nothing drifts.
        resp = await export(client, alice, again, "json")
        card_again = json.loads(await resp.read())
        assert {k: v for k, v in card_again["data"].items() if k != "extensions"} == {
            k: v for k, v in data.items() if k != "extensions"
        }


async def test_export_is_for_whoever_may_read_the_definition(client: TestClient) -> None:
    alice, bob = await register(client), await register(client)
    private = await make_persona(client, alice, personality="Private mind.")
    public = await make_persona(client, alice, visibility="public", name="9 Lives", personality="Nine minds.")
    for persona in (private, public):
        resp = await client.post(
            f"{P}/{persona['id']}/knowledge", json={"title": "Secret", "content": "Owner only."}, headers=bearer(alice)
        )
        assert resp.status == 201

    for fmt in (None, "json", "png"):
        resp = await export(client, bob, private, fmt)
        assert resp.status == 404 and (await error_of(resp))["code"] == "not_found"
        resp = await export(client, bob, {"id": str(uuid.uuid4())}, fmt)
        assert resp.status == 404
        # A card is the whole definition: someone else's public persona that is not remixable is refused.
        resp = await export(client, bob, public, fmt)
        assert resp.status == 403, await resp.text()
        error = await error_of(resp)
        assert error["code"] == "forbidden" and "Nine minds" not in json.dumps(error)

    # The owner's card carries the personality and the knowledge as its character book.
    resp = await export(client, alice, public, "json")
    card = json.loads(await resp.read())
    assert card["data"]["personality"] == "Nine minds."
    assert [e["content"] for e in card["data"]["character_book"]["entries"]] == ["Owner only."]
    assert resp.headers["Content-Disposition"] == 'attachment; filename="9-lives.json"'

    # Once remixable, anyone may export it, knowledge included (they could clone it with it anyway).
    for persona in (private, public):
        resp = await client.put(f"{P}/{persona['id']}", json={"remixable": True}, headers=bearer(alice))
        assert resp.status == 200, await resp.text()
    resp = await export(client, bob, public, "json")
    assert resp.status == 200
    assert json.loads(await resp.read())["data"] == card["data"]
    resp = await export(client, bob, public, "png")
    assert resp.status == 200
    assert json.loads(base64.b64decode(read_png_texts(await resp.read())["chara"]))["data"] == card["data"]
    # Remixable or not, a private persona stays hidden.
    assert (await export(client, bob, private, "json")).status == 404

    resp = await export(client, alice, public, "gif")
    assert resp.status == 422 and (await error_of(resp))["details"][0]["field"] == "format"
    resp = await client.get(f"{P}/{public['id']}/export", params={"colour": "red"}, headers=bearer(alice))
    assert resp.status == 422
    assert (await client.get(f"{P}/{public['id']}/export")).status == 401
    assert (await client.get(f"{P}/not-a-uuid/export", headers=bearer(alice))).status == 422


async def test_exported_png_for_a_name_without_a_latin_initial(client: TestClient) -> None:
    alice = await register(client)
    persona = await make_persona(client, alice, name="孙悟空")
    resp = await export(client, alice, persona, "png")
    assert resp.status == 200
    assert resp.headers["Content-Disposition"] == 'attachment; filename="persona.png"'
    body = await resp.read()
    assert Image.open(io.BytesIO(body)).size == (400, 600)
    assert json.loads(base64.b64decode(read_png_texts(body)["chara"]))["data"]["name"] == "孙悟空"
