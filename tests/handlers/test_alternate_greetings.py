"""A persona's `alternate_greetings` over REST (SPEC §13): create, update, clone, who sees them (everyone
who may read the persona, like `greeting`), their limits, and Character Cards: kept on import, written on
export (JSON and PNG), the same after a round trip. Real PostgreSQL; no mocks."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient

from core import limits
from server.config import Settings
from tests.fixtures.files import card_base64, make_png, read_png_texts, text_chunk
from tests.helpers import bearer, make_persona, register

P = "/api/v1/personas"
ALTERNATES = ["*Waves.* Hello again, {{user}}.", "Oh, it's you. Sit down, {{user}}, I'm {{char}}."]


def word() -> str:
    """Letters only, unique: the full-text parser keeps it whole and no other test finds it."""
    return "zq" + uuid.uuid4().hex[:12].translate(str.maketrans("0123456789", "ghijklmnop"))


async def make_premium(settings: Settings, session: dict[str, Any]) -> None:
    """More personas than the free plan's two."""
    assert settings.database_url is not None
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("UPDATE users SET plan = 'premium' WHERE id = $1", uuid.UUID(session["user"]["id"]))
    finally:
        await conn.close()


async def error_of(resp: Any) -> dict[str, Any]:
    return dict((await resp.json())["error"])


async def get(client: TestClient, session: dict[str, Any], persona: dict[str, Any]) -> dict[str, Any]:
    resp = await client.get(f"{P}/{persona['id']}", headers=bearer(session))
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def put(client: TestClient, session: dict[str, Any], persona: dict[str, Any], body: Any) -> Any:
    return await client.put(f"{P}/{persona['id']}", json=body, headers=bearer(session))


def card_form(data: bytes, filename: str) -> aiohttp.FormData:
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("file", data, filename=filename, content_type="application/octet-stream")
    return form


async def imported(client: TestClient, session: dict[str, Any], data: bytes, filename: str) -> dict[str, Any]:
    resp = await client.post(f"{P}/import", data=card_form(data, filename), headers=bearer(session))
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def exported(client: TestClient, session: dict[str, Any], persona: dict[str, Any], fmt: str) -> bytes:
    resp = await client.get(f"{P}/{persona['id']}/export", params={"format": fmt}, headers=bearer(session))
    assert resp.status == 200, await resp.text()
    return await resp.read()


def v2_card(name: str, **data: Any) -> dict[str, Any]:
    base = {
        "name": name,
        "description": "A lighthouse keeper.",
        "personality": "Quiet.",
        "scenario": "",
        "first_mes": "The lamp turns. {{char}} looks up at {{user}}.",
        "mes_example": "",
        "creator_notes": "",
        "system_prompt": "",
        "post_history_instructions": "",
        "alternate_greetings": [],
        "tags": [],
        "creator": "",
        "character_version": "",
        "extensions": {},
        **data,
    }
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": base}


# --- the field ---------------------------------------------------------------------------------


async def test_create_read_update_and_list(client: TestClient) -> None:
    alice = await register(client)
    plain = await make_persona(client, alice)
    assert plain["alternate_greetings"] == []

    persona = await make_persona(
        client, alice, greeting="Hello, {{user}}.", alternate_greetings=["  " + ALTERNATES[0] + "  ", ALTERNATES[1]]
    )
    # Trimmed like every body string; the placeholders stay for the chat to fill.
    assert persona["alternate_greetings"] == ALTERNATES
    assert await get(client, alice, persona) == persona
    resp = await client.get(P, headers=bearer(alice))
    listed = {p["id"]: p for p in (await resp.json())["items"]}
    assert listed[persona["id"]]["alternate_greetings"] == ALTERNATES
    assert listed[plain["id"]]["alternate_greetings"] == []

    # Left out of an update: kept. Given: replaced whole, in the order sent. []: cleared.
    resp = await put(client, alice, persona, {"greeting": "Hi."})
    assert resp.status == 200 and (await resp.json())["alternate_greetings"] == ALTERNATES
    resp = await put(client, alice, persona, {"alternate_greetings": ["Third.", "First."]})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["alternate_greetings"] == ["Third.", "First."]
    assert (await get(client, alice, persona))["alternate_greetings"] == ["Third.", "First."]
    resp = await put(client, alice, persona, {"alternate_greetings": []})
    assert resp.status == 200 and (await resp.json())["alternate_greetings"] == []

    # Null is refused, as for every field but the avatar: [] is how to clear them.
    resp = await put(client, alice, persona, {"alternate_greetings": None})
    assert resp.status == 422 and (await error_of(resp))["details"][0]["field"] == "alternate_greetings"


async def test_limits_are_refused_naming_the_field(client: TestClient) -> None:
    alice = await register(client)
    most = [f"Greeting {i}." for i in range(limits.PERSONA_ALTERNATE_GREETINGS_MAX)]
    longest = "x" * limits.PERSONA_GREETING_MAX
    persona = await make_persona(client, alice, alternate_greetings=[*most[:-1], longest])
    assert len(persona["alternate_greetings"]) == 20 and persona["alternate_greetings"][-1] == longest

    cases: list[tuple[Any, str]] = [
        ([*most, "One too many."], "alternate_greetings"),
        (["Fine.", longest + "x"], "alternate_greetings.1"),
        (["Fine.", "   "], "alternate_greetings.1"),  # blank once trimmed: no greeting at all
        (["Fine.", 7], "alternate_greetings.1"),
        ("Not a list.", "alternate_greetings"),
    ]
    for value, field in cases:
        resp = await client.post(P, json={"name": "Too much", "alternate_greetings": value}, headers=bearer(alice))
        assert resp.status == 422, (field, await resp.text())
        error = await error_of(resp)
        assert error["code"] == "invalid" and error["details"][0]["field"] == field, error
        resp = await put(client, alice, persona, {"alternate_greetings": value})
        assert resp.status == 422 and (await error_of(resp))["details"][0]["field"] == field
    assert (await get(client, alice, persona))["alternate_greetings"] == [*most[:-1], longest]


async def test_others_see_them_like_the_greeting_and_clones_copy_them(client: TestClient, settings: Settings) -> None:
    alice, bob = await register(client), await register(client)
    await make_premium(settings, alice)
    name = word()
    closed = await make_persona(
        client,
        alice,
        name=f"Keeper {name}",
        personality="Secret definition.",
        greeting="Welcome.",
        alternate_greetings=ALTERNATES,
        visibility="public",
    )
    # Someone else's public persona that is not remixable: the definition is hidden, the greetings are not
    # (they are what a chat with it starts with).
    seen = await get(client, bob, closed)
    assert seen["personality"] is None
    assert seen["greeting"] == "Welcome." and seen["alternate_greetings"] == ALTERNATES
    resp = await client.get(f"{P}/search", params={"q": name}, headers=bearer(bob))
    found = (await resp.json())["items"]
    assert [p["id"] for p in found] == [closed["id"]] and found[0]["alternate_greetings"] == ALTERNATES
    resp = await client.get(f"{P}/trending", params={"limit": 100}, headers=bearer(bob))
    trending = {p["id"]: p for p in (await resp.json())["items"]}
    assert trending[closed["id"]]["alternate_greetings"] == ALTERNATES
    # Not remixable: no clone for Bob. Private: not even a look.
    resp = await client.post(f"{P}/{closed['id']}/clone", headers=bearer(bob))
    assert resp.status == 403
    private = await make_persona(client, alice, alternate_greetings=ALTERNATES)
    assert (await client.get(f"{P}/{private['id']}", headers=bearer(bob))).status == 404

    # Clones keep them: the owner's own clone, and Bob's once the persona is remixable.
    resp = await client.post(f"{P}/{private['id']}/clone", headers=bearer(alice))
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["alternate_greetings"] == ALTERNATES
    assert (await put(client, alice, closed, {"remixable": True})).status == 200
    resp = await client.post(f"{P}/{closed['id']}/clone", headers=bearer(bob))
    assert resp.status == 201, await resp.text()
    copy = await resp.json()
    assert copy["owner_id"] == bob["user"]["id"] and copy["alternate_greetings"] == ALTERNATES


# --- Character Cards ---------------------------------------------------------------------------


async def test_card_import_keeps_them_and_export_writes_them_back(client: TestClient, settings: Settings) -> None:
    alice = await register(client)
    await make_premium(settings, alice)
    card = v2_card(
        "Mara",
        alternate_greetings=[
            "Storm tonight, {{user}}. {{char}} has tea.",
            "   ",  # blank: dropped
            "Oh. A visitor, {{USER}}, for <BOT>.",
            None,  # not text: dropped, as in every other field
            {"text": "an object"},
        ],
    )
    result = await imported(client, alice, json.dumps(card).encode(), "mara.json")
    persona = result["persona"]
    assert result["truncated"] == []
    # {{char}} becomes the name, as in the greeting; {{user}} is left for the chat to fill.
    expected = ["Storm tonight, {{user}}. Mara has tea.", "Oh. A visitor, {{USER}}, for Mara."]
    assert persona["greeting"] == "The lamp turns. Mara looks up at {{user}}."
    assert persona["alternate_greetings"] == expected
    assert (await get(client, alice, persona))["alternate_greetings"] == expected

    data = json.loads(await exported(client, alice, persona, "json"))["data"]
    assert data["first_mes"] == persona["greeting"] and data["alternate_greetings"] == expected
    png = await exported(client, alice, persona, "png")
    texts = read_png_texts(png)
    for keyword in ("chara", "ccv3"):
        assert json.loads(base64.b64decode(texts[keyword]))["data"]["alternate_greetings"] == expected, keyword

    # Round trips through either format lose nothing, and exporting again gives the same list.
    for body, filename in ((json.dumps({"spec": "chara_card_v2", "data": data}).encode(), "m.json"), (png, "m.png")):
        again = (await imported(client, alice, body, filename))["persona"]
        assert again["alternate_greetings"] == expected and again["greeting"] == persona["greeting"]
        assert json.loads(await exported(client, alice, again, "json"))["data"]["alternate_greetings"] == expected


async def test_card_import_from_a_png_v3_and_v1(client: TestClient) -> None:
    alice = await register(client)
    # A PNG another tool wrote, with the card in `chara`.
    png = make_png(text_chunk("chara", card_base64(v2_card("Png", alternate_greetings=["From the PNG."]))))
    assert (await imported(client, alice, png, "p.png"))["persona"]["alternate_greetings"] == ["From the PNG."]
    # V3 keeps the same field; a lone string (some editors write one) is one greeting, commas and all.
    v3 = v2_card("Vee", alternate_greetings="Well, well, well.")
    v3.update(spec="chara_card_v3", spec_version="3.0")
    persona = (await imported(client, alice, json.dumps(v3).encode(), "v3.json"))["persona"]
    assert persona["alternate_greetings"] == ["Well, well, well."]


async def test_card_import_v1_has_none_and_clips_what_does_not_fit(client: TestClient) -> None:
    alice = await register(client)
    v1 = {"name": "Old", "description": "", "personality": "", "scenario": "", "first_mes": "Hi.", "mes_example": ""}
    result = await imported(client, alice, json.dumps(v1).encode(), "v1.json")
    assert result["persona"]["alternate_greetings"] == [] and result["truncated"] == []

    many = [f"Greeting {i}." for i in range(25)]
    many[3] = "word " * 500  # 2,500 characters: clipped to a greeting's 2,000
    result = await imported(client, alice, json.dumps(v2_card("Many", alternate_greetings=many)).encode(), "m.json")
    kept = result["persona"]["alternate_greetings"]
    assert result["truncated"] == ["alternate_greetings"]
    assert len(kept) == limits.PERSONA_ALTERNATE_GREETINGS_MAX
    assert kept[:3] == many[:3] and kept[4:] == many[4:20]
    assert len(kept[3]) <= limits.PERSONA_GREETING_MAX and kept[3].endswith("word…")
