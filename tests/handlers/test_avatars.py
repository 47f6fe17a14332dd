"""Avatars over REST: a persona's and the profile's `avatar_file_id` (only the owner's own image), the
`avatar_url` they answer with, GET /personas/{id}/avatar for whoever may read the persona, deleting the file
clearing the avatar, and Character Cards keeping their picture (import) and drawing on the avatar (export),
so that export → import round-trips name, definition and picture. Every route is tried by another user."""

from __future__ import annotations

import base64
import io
import json
import struct
import uuid
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient
from PIL import Image

from server.config import Settings
from tests.fixtures.files import card_base64, make_png, png_chunk, read_png_texts, text_chunk
from tests.helpers import bearer, make_persona, register

P = "/api/v1/personas"
F = "/api/v1/files"
ME = "/api/v1/auth/me"


def picture(size: tuple[int, int] = (120, 90)) -> bytes:
    """An RGB PNG whose every pixel differs from its neighbours, so a round trip that changed any shows."""
    image = Image.new("RGB", size)
    image.putdata([(x * 2 % 256, y * 3 % 256, (x * y) % 256) for y in range(size[1]) for x in range(size[0])])
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def pixels(data: bytes) -> tuple[tuple[int, int], list[Any]]:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    return image.size, [image.getpixel((x, y)) for y in range(image.height) for x in range(image.width)]


async def upload(client: TestClient, user: dict[str, Any], data: bytes, filename: str, category: str) -> Any:
    form = aiohttp.FormData()
    form.add_field("category", category)
    form.add_field("file", data, filename=filename, content_type="application/octet-stream")
    return await client.post(f"{F}/upload", data=form, headers=bearer(user))


async def uploaded(
    client: TestClient, user: dict[str, Any], data: bytes | None = None, category: str = "persona_image"
) -> dict[str, Any]:
    resp = await upload(client, user, data or picture(), "me.png", category)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def error_of(resp: Any) -> dict[str, Any]:
    return dict((await resp.json())["error"])


async def import_card(client: TestClient, user: dict[str, Any], data: bytes, filename: str = "card.png") -> Any:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=filename, content_type="application/octet-stream")
    return await client.post(f"{P}/import", data=form, headers=bearer(user))


async def imported(client: TestClient, user: dict[str, Any], data: bytes, filename: str = "card.png") -> Any:
    resp = await import_card(client, user, data, filename)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def avatar(client: TestClient, user: dict[str, Any] | None, persona: dict[str, Any], **params: str) -> Any:
    headers = bearer(user) if user is not None else {}
    return await client.get(f"{P}/{persona['id']}/avatar", params=params, headers=headers)


async def sql(settings: Settings, query: str, *args: Any) -> Any:
    assert settings.database_url is not None
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def test_a_persona_avatar_from_an_upload_is_served_to_whoever_may_read_the_persona(client: TestClient) -> None:
    alice, bob = await register(client), await register(client)
    made = await uploaded(client, alice)
    persona = await make_persona(client, alice, avatar_file_id=made["id"])
    assert persona["avatar_file_id"] == made["id"]
    assert persona["avatar_url"] == f"/api/v1/personas/{persona['id']}/avatar"
    resp = await client.get(f"{P}/{persona['id']}", headers=bearer(alice))
    assert (await resp.json())["avatar_url"] == persona["avatar_url"]

    # The owner gets the image's bytes, sent like the file's own content.
    resp = await client.get(persona["avatar_url"], headers=bearer(alice))
    assert resp.status == 200 and resp.content_type == "image/png"
    body = await resp.read()
    own = await client.get(f"{F}/{made['id']}/content", headers=bearer(alice))
    assert body == await own.read()
    assert pixels(body) == pixels(picture())
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Disposition"].startswith("inline")
    etag = resp.headers["ETag"]
    again = await client.get(persona["avatar_url"], headers={**bearer(alice), "If-None-Match": etag})
    assert again.status == 304
    part = await client.get(persona["avatar_url"], headers={**bearer(alice), "Range": "bytes=0-9"})
    assert part.status == 206 and await part.read() == body[:10]
    thumb = await avatar(client, alice, persona, variant="thumbnail")
    assert thumb.status == 200 and max(Image.open(io.BytesIO(await thumb.read())).size) <= 256

    # Another user: 404 while the persona is private, the picture once it is public (not remixable).
    for params in ({}, {"variant": "thumbnail"}):
        resp = await avatar(client, bob, persona, **params)
        assert resp.status == 404 and (await error_of(resp))["code"] == "not_found"
    # The file itself stays its owner's alone.
    assert (await client.get(f"{F}/{made['id']}/content", headers=bearer(bob))).status == 404
    resp = await client.put(f"{P}/{persona['id']}", json={"visibility": "public"}, headers=bearer(alice))
    assert resp.status == 200 and (await resp.json())["avatar_file_id"] == made["id"]  # left out: kept
    resp = await avatar(client, bob, persona)
    assert resp.status == 200 and await resp.read() == body
    seen = await client.get(f"{P}/{persona['id']}", headers=bearer(bob))
    assert (await seen.json())["avatar_url"] == persona["avatar_url"]
    assert (await client.get(f"{F}/{made['id']}/content", headers=bearer(bob))).status == 404

    # No token, no avatar, no persona, no UUID.
    assert (await avatar(client, None, persona)).status == 401
    plain = await make_persona(client, alice)
    assert plain["avatar_file_id"] is None and plain["avatar_url"] is None
    resp = await avatar(client, alice, plain)
    assert resp.status == 404 and "no avatar" in (await error_of(resp))["message"]
    assert (await avatar(client, alice, {"id": str(uuid.uuid4())})).status == 404
    assert (await client.get(f"{P}/not-a-uuid/avatar", headers=bearer(alice))).status == 422
    assert (await avatar(client, alice, persona, variant="huge")).status == 422


async def test_the_avatar_must_be_my_own_image(client: TestClient, settings: Settings) -> None:
    alice, bob = await register(client), await register(client)
    bobs = await uploaded(client, bob)
    resp = await upload(client, alice, b"just some notes\n", "notes.txt", "chat_attachment")
    assert resp.status == 201
    text = await resp.json()
    mine = await uploaded(client, alice)
    persona = await make_persona(client, alice, avatar_file_id=mine["id"])

    async def refused(method: str, url: str, body: dict[str, Any], status: int) -> None:
        resp = await client.request(method, url, json=body, headers=bearer(alice))
        assert resp.status == status, (method, url, body, await resp.text())
        error = await error_of(resp)
        assert error["code"] == ("not_found" if status == 404 else "invalid")
        assert error["details"][0]["field"] == "avatar_file_id"

    for method, url in (("POST", P), ("PUT", f"{P}/{persona['id']}"), ("PATCH", ME)):
        body = {"name": "Any"} if method == "POST" else {}
        await refused(method, url, {**body, "avatar_file_id": bobs["id"]}, 404)  # another user's file
        await refused(method, url, {**body, "avatar_file_id": str(uuid.uuid4())}, 404)  # no file at all
        await refused(method, url, {**body, "avatar_file_id": text["id"]}, 422)  # not an image
    # Nothing changed, and no persona was made.
    resp = await client.get(f"{P}/{persona['id']}", headers=bearer(alice))
    assert (await resp.json())["avatar_file_id"] == mine["id"]
    assert (await (await client.get(ME, headers=bearer(alice))).json())["avatar_file_id"] is None
    assert await sql(settings, "SELECT count(*) FROM personas WHERE owner_id = $1", uuid.UUID(alice["user"]["id"])) == 1

    # Another user cannot change alice's persona's avatar, not even to a picture of their own.
    for body in ({"avatar_file_id": bobs["id"]}, {"avatar_file_id": None}):
        resp = await client.put(f"{P}/{persona['id']}", json=body, headers=bearer(bob))
        assert resp.status == 404
    assert (await avatar(client, alice, persona)).status == 200

    # null removes the avatar (PUT is a patch: left out keeps it, null clears this one field).
    resp = await client.put(f"{P}/{persona['id']}", json={"name": "Renamed"}, headers=bearer(alice))
    assert (await resp.json())["avatar_file_id"] == mine["id"]
    resp = await client.put(f"{P}/{persona['id']}", json={"avatar_file_id": None}, headers=bearer(alice))
    assert resp.status == 200, await resp.text()
    cleared = await resp.json()
    assert cleared["avatar_file_id"] is None and cleared["avatar_url"] is None and cleared["name"] == "Renamed"
    assert (await avatar(client, alice, persona)).status == 404
    # Other fields still refuse null.
    resp = await client.put(f"{P}/{persona['id']}", json={"name": None}, headers=bearer(alice))
    assert resp.status == 422
    # Any of my images will do, whatever its category.
    resp = await upload(client, alice, picture((40, 40)), "a.png", "chat_attachment")
    chat_image = await resp.json()
    resp = await client.put(f"{P}/{persona['id']}", json={"avatar_file_id": chat_image["id"]}, headers=bearer(alice))
    assert resp.status == 200 and (await resp.json())["avatar_file_id"] == chat_image["id"]


async def test_the_profile_picture(client: TestClient) -> None:
    alice, bob = await register(client), await register(client)
    assert alice["user"]["avatar_file_id"] is None and alice["user"]["avatar_url"] is None
    made = await uploaded(client, alice, category="avatar")
    resp = await client.patch(ME, json={"avatar_file_id": made["id"]}, headers=bearer(alice))
    assert resp.status == 200, await resp.text()
    me = await resp.json()
    assert me["avatar_file_id"] == made["id"] and me["avatar_url"] == f"/api/v1/files/{made['id']}/content"
    assert await (await client.get(ME, headers=bearer(alice))).json() == me
    resp = await client.get(me["avatar_url"], headers=bearer(alice))
    assert resp.status == 200 and pixels(await resp.read()) == pixels(picture())
    assert (await client.get(me["avatar_url"], headers=bearer(bob))).status == 404
    # Signing in again answers with it too.
    login = await client.post("/api/v1/auth/login", json={"email": me["email"], "password": "correct horse battery"})
    assert (await login.json())["user"]["avatar_url"] == me["avatar_url"]

    # Left out keeps it; null removes it.
    resp = await client.patch(ME, json={"display_name": "Alice"}, headers=bearer(alice))
    assert (await resp.json())["avatar_file_id"] == made["id"]
    resp = await client.patch(ME, json={"avatar_file_id": None}, headers=bearer(alice))
    cleared = await resp.json()
    assert cleared["avatar_file_id"] is None and cleared["avatar_url"] is None
    assert cleared["display_name"] == "Alice"


async def test_deleting_the_file_clears_every_avatar_using_it(client: TestClient) -> None:
    alice, bob = await register(client), await register(client)
    made = await uploaded(client, alice)
    persona = await make_persona(client, alice, avatar_file_id=made["id"], visibility="public", remixable=True)
    resp = await client.patch(ME, json={"avatar_file_id": made["id"]}, headers=bearer(alice))
    assert resp.status == 200
    # A clone shows its source's picture, until the source's owner deletes it.
    resp = await client.post(f"{P}/{persona['id']}/clone", headers=bearer(bob))
    clone = await resp.json()
    assert clone["avatar_file_id"] == made["id"] and clone["avatar_url"] == f"/api/v1/personas/{clone['id']}/avatar"
    assert (await avatar(client, bob, clone)).status == 200
    # Bob cannot delete alice's file.
    assert (await client.delete(f"{F}/{made['id']}", headers=bearer(bob))).status == 404

    assert (await client.delete(f"{F}/{made['id']}", headers=bearer(alice))).status == 204
    for owner, each in ((alice, persona), (bob, clone)):
        resp = await client.get(f"{P}/{each['id']}", headers=bearer(owner))
        after = await resp.json()
        assert after["avatar_file_id"] is None and after["avatar_url"] is None
        assert (await avatar(client, owner, each)).status == 404
    me = await (await client.get(ME, headers=bearer(alice))).json()
    assert me["avatar_file_id"] is None and me["avatar_url"] is None


async def test_export_then_import_round_trips_name_definition_and_picture(
    client: TestClient, settings: Settings
) -> None:
    alice, bob = await register(client), await register(client)
    await sql(settings, "UPDATE users SET plan = 'premium' WHERE id = $1", uuid.UUID(alice["user"]["id"]))
    made = await uploaded(client, alice)
    original = await make_persona(
        client,
        alice,
        name="Ada Lovelace",
        description="The first programmer.",
        personality="Precise, poetic about mathematics.",
        greeting="Shall we compute?",
        tags=["math"],
        avatar_file_id=made["id"],
        visibility="public",
        remixable=True,
    )
    resp = await client.get(f"{P}/{original['id']}/export", params={"format": "png"}, headers=bearer(alice))
    assert resp.status == 200 and resp.content_type == "image/png"
    card_png = await resp.read()
    # The card is drawn on the avatar: its pixels, not the 400x600 placeholder.
    assert pixels(card_png) == pixels(picture())
    card = json.loads(base64.b64decode(read_png_texts(card_png)["chara"]))
    assert card["data"]["name"] == "Ada Lovelace"
    # Whoever may export it gets the same picture.
    resp = await client.get(f"{P}/{original['id']}/export", params={"format": "png"}, headers=bearer(bob))
    assert resp.status == 200 and pixels(await resp.read()) == pixels(picture())

    result = await imported(client, alice, card_png, "ada.png")
    again = result["persona"]
    assert result["truncated"] == []
    for field in ("name", "description", "personality", "greeting", "tags"):
        assert again[field] == original[field], field
    assert again["avatar_file_id"] not in (None, made["id"])
    assert again["avatar_url"] == f"/api/v1/personas/{again['id']}/avatar"
    resp = await avatar(client, alice, again)
    assert resp.status == 200
    kept = await resp.read()
    assert pixels(kept) == pixels(picture())
    # The picture is a file of the importer's, counted like an upload, without the card's text chunks.
    resp = await client.get(f"{F}/{again['avatar_file_id']}", headers=bearer(alice))
    stored = await resp.json()
    assert stored["category"] == "persona_image" and stored["content_type"] == "image/png"
    assert (stored["width"], stored["height"]) == (120, 90) and stored["filename"] == "ada-lovelace.png"
    assert b"chara" not in kept and b"ccv3" not in kept
    # Imported by bob, the picture is bob's file, not alice's.
    result = await imported(client, bob, card_png, "ada.png")
    bobs = result["persona"]
    assert (await client.get(f"{F}/{bobs['avatar_file_id']}", headers=bearer(bob))).status == 200
    assert (await client.get(f"{F}/{bobs['avatar_file_id']}", headers=bearer(alice))).status == 404

    # And again: exporting the imported persona gives the same picture, so nothing drifts.
    resp = await client.get(f"{P}/{again['id']}/export", params={"format": "png"}, headers=bearer(alice))
    assert pixels(await resp.read()) == pixels(picture())


async def test_a_card_from_another_tool_keeps_its_picture_and_json_has_none(client: TestClient) -> None:
    alice = await register(client)
    card = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Tiny", "description": "Two pixels."}}
    result = await imported(client, alice, make_png(text_chunk("chara", card_base64(card))), "tiny.png")
    persona = result["persona"]
    assert result["truncated"] == [] and persona["avatar_url"] is not None
    resp = await avatar(client, alice, persona)
    assert resp.status == 200 and Image.open(io.BytesIO(await resp.read())).size == (2, 2)

    result = await imported(client, alice, json.dumps(card).encode(), "tiny.json")
    assert result["persona"]["avatar_file_id"] is None and result["truncated"] == []


async def test_a_card_import_with_storage_full_keeps_the_persona_without_its_picture(
    client: TestClient, settings: Settings
) -> None:
    alice = await register(client)
    user_id = uuid.UUID(alice["user"]["id"])
    limit = settings.free_storage_mb * 1024 * 1024
    await sql(settings, "UPDATE users SET storage_used = $2 WHERE id = $1", user_id, limit)
    card = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Full", "description": "No room."}}
    result = await imported(client, alice, make_png(text_chunk("chara", card_base64(card))), "full.png")
    persona = result["persona"]
    assert persona["name"] == "Full" and persona["description"] == "No room."
    assert persona["avatar_file_id"] is None and result["truncated"] == ["avatar"]
    assert await sql(settings, "SELECT storage_used FROM users WHERE id = $1", user_id) == limit
    # Pixels that are no image: the same.
    await sql(settings, "UPDATE users SET storage_used = 0 WHERE id = $1", user_id)
    good = make_png(text_chunk("chara", card_base64(card)))
    idat = good.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", good[idat : idat + 4])
    broken = good[:idat] + png_chunk(b"IDAT", b"not zlib data") + good[idat + 12 + length :]
    result = await imported(client, alice, broken, "broken.png")
    assert result["persona"]["avatar_file_id"] is None and result["truncated"] == ["avatar"]
    files = await (await client.get(F, headers=bearer(alice))).json()
    assert files["items"] == []


async def test_a_card_import_the_plan_refuses_stores_no_picture(client: TestClient, settings: Settings) -> None:
    alice = await register(client)
    await make_persona(client, alice)
    await make_persona(client, alice)
    card = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Third"}}
    resp = await import_card(client, alice, make_png(text_chunk("chara", card_base64(card))))
    assert resp.status == 403 and (await error_of(resp))["code"] == "plan_limit"
    files = await (await client.get(F, headers=bearer(alice))).json()
    assert files["items"] == []
    assert await sql(settings, "SELECT storage_used FROM users WHERE id = $1", uuid.UUID(alice["user"]["id"])) == 0


async def test_openapi_documents_avatars(client: TestClient) -> None:
    doc = await (await client.get("/api/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    for name in ("PersonaOut", "ScoredPersonaOut", "UserOut"):
        assert {"avatar_file_id", "avatar_url"} <= set(schemas[name]["required"]), name
    route = doc["paths"][f"{P}/{{id}}/avatar"]["get"]
    assert {"200", "304", "206", "404"} <= set(route["responses"])
    assert set(route["responses"]["200"]["content"]) == {"image/*"}
    assert {p["name"] for p in route["parameters"]} >= {"id", "variant"}
    assert "avatar_file_id" in schemas["PersonaIn"]["properties"]
    profile = schemas["ProfileIn"]["properties"]["avatar_file_id"]
    assert {"type": "null"} in profile["anyOf"] and "default" not in profile
