"""Personas over REST: CRUD, plan limits (also under concurrent creates), who may see and change what
(a public persona's definition stays its owner's unless remixable), clone, full-text search, trending and
pagination. Real PostgreSQL; the AI provider is the local fake Gemini; no mocks."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from server.app import create_app
from server.config import Settings
from storage.personas import PersonaStore
from tests.fakes.gemini import Behaviour, FakeGemini
from tests.helpers import bearer, register

R = "/api/v1/personas"
PERSONA_FIELDS = {
    "id",
    "owner_id",
    "name",
    "description",
    "personality",
    "greeting",
    "alternate_greetings",
    "tags",
    "visibility",
    "remixable",
    "avatar_file_id",
    "avatar_url",
    "cloned_from",
    "created_at",
    "updated_at",
}


def word() -> str:
    """A word no other test uses, made of letters only so the full-text parser keeps it whole."""
    return "zq" + uuid.uuid4().hex[:12].translate(str.maketrans("0123456789", "ghijklmnop"))


async def create(client: TestClient, session: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = {"name": f"Persona {word()}", **fields}
    resp = await client.post(R, json=body, headers=bearer(session))
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def list_all(client: TestClient, session: dict[str, Any], limit: int = 100) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        resp = await client.get(R, params=params, headers=bearer(session))
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def make_premium(database_url: str, user_id: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE users SET plan = 'premium' WHERE id = $1", uuid.UUID(user_id))
    finally:
        await conn.close()


async def error_of(resp: Any) -> dict[str, Any]:
    return dict((await resp.json())["error"])


# --- CRUD --------------------------------------------------------------------------------------


async def test_crud_happy_path(client: TestClient) -> None:
    alice = await register(client)
    created = await create(
        client,
        alice,
        name="  Captain Nemo  ",
        description="Commander of the Nautilus",
        personality="Proud, melancholic, brilliant.",
        greeting="Welcome aboard.",
        tags=["Sea", "captain", "SEA", " submarine "],
        visibility="public",
    )
    assert set(created) == PERSONA_FIELDS
    assert created["owner_id"] == alice["user"]["id"]
    assert created["name"] == "Captain Nemo"
    assert created["tags"] == ["sea", "captain", "submarine"]
    assert created["visibility"] == "public" and created["remixable"] is False
    assert created["cloned_from"] is None and created["avatar_file_id"] is None

    minimal = await create(client, alice, name="Plain")
    assert minimal["description"] == minimal["personality"] == minimal["greeting"] == ""
    assert minimal["tags"] == [] and minimal["visibility"] == "private"

    resp = await client.get(f"{R}/{created['id']}", headers=bearer(alice))
    assert resp.status == 200
    assert await resp.json() == created

    mine = await list_all(client, alice)
    assert [p["id"] for p in mine] == [minimal["id"], created["id"]]  # newest first

    # Partial update: only the fields sent change.
    resp = await client.put(f"{R}/{created['id']}", json={"name": "Nemo", "tags": ["Ocean"]}, headers=bearer(alice))
    assert resp.status == 200, await resp.text()
    updated = await resp.json()
    assert updated["name"] == "Nemo" and updated["tags"] == ["ocean"]
    assert updated["description"] == created["description"] and updated["visibility"] == "public"
    assert datetime.fromisoformat(updated["updated_at"]) > datetime.fromisoformat(created["updated_at"])

    # Full update, including clearing a text field.
    full = {
        "name": "Nemo II",
        "description": "",
        "personality": "Calm.",
        "greeting": "Hello.",
        "tags": [],
        "visibility": "private",
        "remixable": True,
    }
    resp = await client.put(f"{R}/{created['id']}", json=full, headers=bearer(alice))
    assert resp.status == 200
    updated = await resp.json()
    assert {k: updated[k] for k in full} == full

    # An empty update changes nothing.
    resp = await client.put(f"{R}/{created['id']}", json={}, headers=bearer(alice))
    assert resp.status == 200
    assert (await resp.json())["name"] == "Nemo II"

    resp = await client.delete(f"{R}/{created['id']}", headers=bearer(alice))
    assert resp.status == 204
    resp = await client.get(f"{R}/{created['id']}", headers=bearer(alice))
    assert resp.status == 404
    assert (await error_of(resp))["code"] == "not_found"
    resp = await client.delete(f"{R}/{created['id']}", headers=bearer(alice))
    assert resp.status == 404
    assert [p["id"] for p in await list_all(client, alice)] == [minimal["id"]]


async def test_every_route_needs_a_token(client: TestClient) -> None:
    some_id = uuid.uuid4()
    for method, path in [
        ("GET", R),
        ("POST", R),
        ("GET", f"{R}/search?q=x"),
        ("GET", f"{R}/trending"),
        ("GET", f"{R}/{some_id}"),
        ("PUT", f"{R}/{some_id}"),
        ("DELETE", f"{R}/{some_id}"),
        ("POST", f"{R}/{some_id}/clone"),
    ]:
        resp = await client.request(method, path, json={})
        assert resp.status == 401, (method, path)


async def test_validation_errors_name_the_field(client: TestClient) -> None:
    alice = await register(client)
    cases: list[tuple[Any, str]] = [
        ({"name": "A", "owner_id": str(uuid.uuid4())}, "owner_id"),  # unknown field
        ({"name": 42}, "name"),  # wrong type
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),  # blank after trimming
        ({"name": "x" * 81}, "name"),
        ({}, "name"),  # missing
        ({"name": "A", "description": "d" * 2001}, "description"),
        ({"name": "A", "personality": "p" * 8001}, "personality"),
        ({"name": "A", "tags": [f"t{i}" for i in range(21)]}, "tags"),  # too many tags
        ({"name": "A", "tags": ["x" * 33]}, "tags.0"),
        ({"name": "A", "tags": ["ok", ""]}, "tags.1"),
        ({"name": "A", "tags": "solo"}, "tags"),
        ({"name": "A", "visibility": "friends"}, "visibility"),
        ({"name": "A", "remixable": "maybe"}, "remixable"),
        ({"name": "A", "remixable": None}, "remixable"),
        ({"name": "A\u0000B"}, "name"),  # PostgreSQL text cannot hold NUL: 422, not 500
        ({"name": "A", "tags": ["a\u0000"]}, "tags.0"),
    ]
    for body, field in cases:
        resp = await client.post(R, json=body, headers=bearer(alice))
        assert resp.status == 422, (body, await resp.text())
        err = await error_of(resp)
        assert err["code"] == "invalid"
        assert field in [d["field"] for d in err["details"]], (body, err)
    assert await list_all(client, alice) == []

    persona = await create(client, alice)
    for body, field in [
        ({"name": None}, "name"),  # null is not "leave as is"
        ({"visibility": "everyone"}, "visibility"),
        ({"remixable": None}, "remixable"),
        ({"color": "red"}, "color"),
    ]:
        resp = await client.put(f"{R}/{persona['id']}", json=body, headers=bearer(alice))
        assert resp.status == 422, (body, await resp.text())
        assert field in [d["field"] for d in (await error_of(resp))["details"]]

    resp = await client.get(f"{R}/not-a-uuid", headers=bearer(alice))
    assert resp.status == 422
    assert (await error_of(resp))["details"][0]["field"] == "id"
    for method in ("PUT", "DELETE"):
        resp = await client.request(method, f"{R}/not-a-uuid", json={}, headers=bearer(alice))
        assert resp.status == 422
    resp = await client.post(f"{R}/not-a-uuid/clone", headers=bearer(alice))
    assert resp.status == 422

    for params, field in [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"cursor": "garbage!"}, "cursor"),
        ({"cursor": "eyJvZmZzZXQiOjJ9"}, "cursor"),  # a search cursor ({"offset":2}) is not a list cursor
    ]:
        resp = await client.get(R, params=params, headers=bearer(alice))
        assert resp.status == 422, params
        assert (await error_of(resp))["details"][0]["field"] == field
    for params, field in [
        ({}, "q"),
        ({"q": ""}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "x" * 201}, "q"),
        ({"q": "a\u0000b"}, "q"),
    ]:
        resp = await client.get(f"{R}/search", params=params, headers=bearer(alice))
        assert resp.status == 422, params
        assert (await error_of(resp))["details"][0]["field"] == field
    resp = await client.get(f"{R}/trending", params={"cursor": "nope"}, headers=bearer(alice))
    assert resp.status == 422


# --- plan limits -------------------------------------------------------------------------------


async def test_free_plan_third_persona_is_403_and_nothing_created(client: TestClient) -> None:
    alice = await register(client)
    first = await create(client, alice)
    await create(client, alice)
    resp = await client.post(R, json={"name": "Third"}, headers=bearer(alice))
    assert resp.status == 403
    err = await error_of(resp)
    assert err["code"] == "plan_limit" and err["details"]["limit"] == 2
    assert len(await list_all(client, alice)) == 2

    # Cloning counts too, even one's own persona.
    resp = await client.post(f"{R}/{first['id']}/clone", headers=bearer(alice))
    assert resp.status == 403
    assert (await error_of(resp))["code"] == "plan_limit"
    assert len(await list_all(client, alice)) == 2

    # Deleting one frees a slot.
    assert (await client.delete(f"{R}/{first['id']}", headers=bearer(alice))).status == 204
    await create(client, alice)
    assert len(await list_all(client, alice)) == 2


async def test_premium_plan_is_unlimited(client: TestClient, settings: Settings) -> None:
    alice = await register(client)
    assert settings.database_url is not None
    await make_premium(settings.database_url, alice["user"]["id"])
    for _ in range(4):
        await create(client, alice)
    assert len(await list_all(client, alice)) == 4


async def test_concurrent_creates_never_exceed_the_limit(client: TestClient) -> None:
    alice = await register(client)
    responses = await asyncio.gather(
        *(client.post(R, json={"name": f"Racer {i}"}, headers=bearer(alice)) for i in range(5))
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [201, 201, 403, 403, 403]
    for resp in responses:
        if resp.status == 403:
            assert (await error_of(resp))["code"] == "plan_limit"
    assert len(await list_all(client, alice)) == 2


# --- who sees and changes what -----------------------------------------------------------------


async def test_others_cannot_read_change_or_delete_a_private_persona(client: TestClient) -> None:
    alice, bob = await register(client), await register(client)
    secret = await create(client, alice, description="Alice's secret", tags=["mine"])
    url = f"{R}/{secret['id']}"

    missing = await client.get(f"{R}/{uuid.uuid4()}", headers=bearer(bob))
    assert missing.status == 404
    resp = await client.get(url, headers=bearer(bob))
    assert resp.status == 404
    # Indistinguishable from a persona that does not exist.
    hidden_err, missing_err = await error_of(resp), await error_of(missing)
    assert (hidden_err["code"], hidden_err["message"]) == (missing_err["code"], missing_err["message"])

    resp = await client.put(url, json={"name": "Hijacked", "visibility": "public"}, headers=bearer(bob))
    assert resp.status == 404
    resp = await client.delete(url, headers=bearer(bob))
    assert resp.status == 404
    resp = await client.post(f"{url}/clone", headers=bearer(bob))
    assert resp.status == 404
    assert await list_all(client, bob) == []

    resp = await client.get(url, headers=bearer(alice))
    assert resp.status == 200
    assert await resp.json() == secret  # unchanged, not even updated_at


async def test_others_cannot_change_a_public_persona(client: TestClient) -> None:
    alice, bob = await register(client), await register(client)
    public = await create(client, alice, visibility="public")
    url = f"{R}/{public['id']}"
    assert (await client.put(url, json={"name": "Mine now"}, headers=bearer(bob))).status == 404
    assert (await client.delete(url, headers=bearer(bob))).status == 404
    resp = await client.get(url, headers=bearer(alice))
    assert await resp.json() == public


async def trending_item(client: TestClient, session: dict[str, Any], persona_id: str) -> dict[str, Any]:
    cursor: str | None = None
    for _ in range(200):
        params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = await (await client.get(f"{R}/trending", params=params, headers=bearer(session))).json()
        found = [item for item in page["items"] if item["id"] == persona_id]
        if found:
            return dict(found[0])
        cursor = page["next_cursor"]
        assert cursor is not None, "not in trending"
    raise AssertionError("not in trending")


async def test_public_persona_definition_is_the_owners_unless_remixable(client: TestClient) -> None:
    alice, bob = await register(client), await register(client)
    name, secret = f"Sherlock {word()}", word()
    source = await create(
        client,
        alice,
        name=name,
        description="Consulting detective",
        personality=f"Observant. Secretly fond of {secret}.",
        greeting="You've been in Afghanistan, I perceive.",
        tags=["detective", "london"],
        visibility="public",
    )
    assert source["remixable"] is False and secret in source["personality"]
    hidden = {**source, "personality": None}

    # Bob sees what he needs to pick and chat with it; its definition is null on every path that shows it.
    resp = await client.get(f"{R}/{source['id']}", headers=bearer(bob))
    assert resp.status == 200
    assert await resp.json() == hidden
    found = (await search(client, bob, name))["items"]
    assert [{k: v for k, v in p.items() if k != "score"} for p in found] == [hidden]
    assert {k: v for k, v in (await trending_item(client, bob, source["id"])).items() if k != "score"} == hidden
    # Nor can a search probe the definition word by word; the owner's search still finds it by it.
    assert (await search(client, bob, secret))["items"] == []
    assert [p["id"] for p in (await search(client, alice, secret))["items"]] == [source["id"]]
    assert (await search(client, alice, secret))["items"][0]["personality"] == source["personality"]
    # Cloning would copy the definition: refused, and nothing is made.
    resp = await client.post(f"{R}/{source['id']}/clone", headers=bearer(bob))
    assert resp.status == 403, await resp.text()
    error = await error_of(resp)
    assert error["code"] == "forbidden" and secret not in str(error)
    assert await list_all(client, bob) == []
    # The owner sees everything, as before.
    assert await (await client.get(f"{R}/{source['id']}", headers=bearer(alice))).json() == source

    # Made remixable, it is open to all: read, search by its personality, clone.
    resp = await client.put(f"{R}/{source['id']}", json={"remixable": True}, headers=bearer(alice))
    assert resp.status == 200
    remixable = await resp.json()
    assert remixable["remixable"] is True
    assert await (await client.get(f"{R}/{source['id']}", headers=bearer(bob))).json() == remixable
    assert [p["personality"] for p in (await search(client, bob, secret))["items"]] == [source["personality"]]
    resp = await client.post(f"{R}/{source['id']}/clone", headers=bearer(bob))
    assert resp.status == 201, await resp.text()
    clone = await resp.json()
    assert clone["id"] != source["id"]
    assert clone["owner_id"] == bob["user"]["id"]
    assert clone["cloned_from"] == source["id"]
    assert clone["visibility"] == "private" and clone["remixable"] is False
    for field in ("name", "description", "personality", "greeting", "tags"):
        assert clone[field] == source[field]

    assert [p["id"] for p in await list_all(client, bob)] == [clone["id"]]
    assert [p["id"] for p in await list_all(client, alice)] == [source["id"]]
    # The clone is Bob's and private: Alice cannot see it.
    assert (await client.get(f"{R}/{clone['id']}", headers=bearer(alice))).status == 404
    # Bob may change his copy; the source stays as it was.
    resp = await client.put(f"{R}/{clone['id']}", json={"name": "My Sherlock"}, headers=bearer(bob))
    assert resp.status == 200
    assert await (await client.get(f"{R}/{source['id']}", headers=bearer(alice))).json() == remixable

    # Not remixable again: hidden again (Bob's copy is his own and keeps its text).
    resp = await client.put(f"{R}/{source['id']}", json={"remixable": False}, headers=bearer(alice))
    assert resp.status == 200
    assert (await (await client.get(f"{R}/{source['id']}", headers=bearer(bob))).json())["personality"] is None
    assert (await (await client.get(f"{R}/{clone['id']}", headers=bearer(bob))).json())["personality"] == (
        source["personality"]
    )


@pytest.fixture
async def gemini_client(aiohttp_client: Any, settings: Settings, gemini: FakeGemini) -> TestClient:
    update = {"ai_provider": "gemini", "gemini_api_key": SecretStr("k"), "gemini_base_url": gemini.url}
    return await aiohttp_client(create_app(settings.model_copy(update=update)))


async def test_a_hidden_definition_still_answers_whoever_chats(gemini_client: TestClient, gemini: FakeGemini) -> None:
    client = gemini_client
    alice, bob = await register(client), await register(client)
    trait, lore = word(), word()
    persona = await create(
        client, alice, name="Ada", personality=f"You speak only of the {trait} engine.", visibility="public"
    )
    resp = await client.post(
        f"{R}/{persona['id']}/knowledge",
        json={"title": "Lore", "content": f"The {lore} gear turns twice a day."},
        headers=bearer(alice),
    )
    assert resp.status == 201
    assert (await (await client.get(f"{R}/{persona['id']}", headers=bearer(bob))).json())["personality"] is None

    resp = await client.post("/api/v1/chat/sessions", json={"persona_id": persona["id"]}, headers=bearer(bob))
    assert resp.status == 201, await resp.text()
    chat = await resp.json()
    gemini.then(Behaviour(tokens=["As ", "Ada."]))
    message = {"session_id": chat["id"], "client_id": str(uuid.uuid4()), "content": f"How does the {lore} gear go?"}
    resp = await client.post("/api/v1/ai/generate", json=message, headers=bearer(bob))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["content"] == "As Ada."
    # The provider got the whole definition (personality and the matching knowledge), Bob only the reply.
    system = gemini.calls[-1].body["systemInstruction"]["parts"][0]["text"]
    assert f"You speak only of the {trait} engine." in system
    assert f"The {lore} gear turns twice a day." in system


async def test_owner_can_clone_own_private_persona(client: TestClient) -> None:
    alice = await register(client)
    source = await create(client, alice, description="draft")
    resp = await client.post(f"{R}/{source['id']}/clone", headers=bearer(alice))
    assert resp.status == 201
    clone = await resp.json()
    assert clone["cloned_from"] == source["id"] and clone["owner_id"] == alice["user"]["id"]


# --- search ------------------------------------------------------------------------------------


async def search(client: TestClient, session: dict[str, Any], q: str, **params: Any) -> dict[str, Any]:
    resp = await client.get(f"{R}/search", params={"q": q, **params}, headers=bearer(session))
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def test_search_finds_by_description_word_and_ranks_name_higher(client: TestClient) -> None:
    alice = await register(client)
    term = word()
    in_description = await create(client, alice, name="Botanist", description=f"An expert in {term} orchids")
    in_name = await create(client, alice, name=f"Professor {term}", description="Teaches chemistry")

    page = await search(client, alice, term)
    assert [p["id"] for p in page["items"]] == [in_name["id"], in_description["id"]]
    assert page["items"][0]["score"] > page["items"][1]["score"] > 0
    assert PERSONA_FIELDS <= set(page["items"][0])
    assert page["next_cursor"] is None

    # A word of the description alone finds it; so does a stemmed form of another word in it.
    page = await search(client, alice, f"{term} orchid")
    assert [p["id"] for p in page["items"]] == [in_description["id"]]

    # Paged one at a time, the same order without repeats.
    first = await search(client, alice, term, limit=1)
    assert [p["id"] for p in first["items"]] == [in_name["id"]] and first["next_cursor"]
    second = await search(client, alice, term, limit=1, cursor=first["next_cursor"])
    assert [p["id"] for p in second["items"]] == [in_description["id"]]
    assert second["next_cursor"] is None

    # Stop words alone match nothing (and are not an error).
    assert (await search(client, alice, "the"))["items"] == []


async def test_search_sees_public_and_own_but_never_others_private(client: TestClient) -> None:
    alice, bob = await register(client), await register(client)
    term = word()
    alice_private = await create(client, alice, description=f"{term} private")
    alice_public = await create(client, alice, description=f"{term} public", visibility="public")
    bob_private = await create(client, bob, description=f"{term} bob")

    found = {p["id"] for p in (await search(client, bob, term))["items"]}
    assert found == {alice_public["id"], bob_private["id"]}
    found = {p["id"] for p in (await search(client, alice, term))["items"]}
    assert found == {alice_private["id"], alice_public["id"]}

    # Making a persona private takes it out of others' results at once.
    resp = await client.put(f"{R}/{alice_public['id']}", json={"visibility": "private"}, headers=bearer(alice))
    assert resp.status == 200
    found = {p["id"] for p in (await search(client, bob, term))["items"]}
    assert found == {bob_private["id"]}


async def test_search_matches_tags_and_follows_updates(client: TestClient) -> None:
    alice = await register(client)
    tag, later = word(), word()
    persona = await create(client, alice, tags=[tag.upper()])
    assert [p["id"] for p in (await search(client, alice, tag))["items"]] == [persona["id"]]
    await client.put(f"{R}/{persona['id']}", json={"personality": f"speaks of {later}"}, headers=bearer(alice))
    assert [p["id"] for p in (await search(client, alice, later))["items"]] == [persona["id"]]


# --- trending ----------------------------------------------------------------------------------


async def trending_positions(
    client: TestClient, session: dict[str, Any], wanted: set[str]
) -> dict[str, tuple[int, float]]:
    """Walks the trending list until every wanted id is seen (or the list ends): id → (position, score)."""
    found: dict[str, tuple[int, float]] = {}
    cursor: str | None = None
    position = 0
    previous: tuple[float, datetime] | None = None
    for _ in range(200):
        params: dict[str, Any] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        resp = await client.get(f"{R}/trending", params=params, headers=bearer(session))
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        for item in page["items"]:
            assert item["visibility"] == "public"
            # Scores never rise down the list; ties go newest first.
            current = (item["score"], datetime.fromisoformat(item["created_at"]))
            if previous is not None:
                assert current <= previous
            previous = current
            if item["id"] in wanted:
                found[item["id"]] = (position, item["score"])
            position += 1
        cursor = page["next_cursor"]
        if cursor is None or wanted <= set(found):
            break
    return found


async def test_trending_orders_by_decayed_activity(client: TestClient, settings: Settings) -> None:
    alice, bob, carol = await register(client), await register(client), await register(client)
    busy = await create(client, alice, visibility="public")  # 10 messages today
    mixed = await create(client, alice, visibility="public")  # a chat and 2 messages today, 4 messages 4 days ago
    old = await create(client, bob, visibility="public")  # 100 messages, but 10 days ago
    hidden = await create(client, bob, visibility="private")  # busiest of all, but private
    stale = await create(client, carol, visibility="public")  # only activity older than 14 days
    quiet = await create(client, carol, visibility="public")  # no activity at all
    ids = {p["id"]: p for p in (busy, mixed, old, hidden, stale, quiet)}

    assert settings.database_url is not None
    store = PersonaStore()
    conn = await asyncpg.connect(settings.database_url)
    try:
        await store.record_activity(conn, uuid.UUID(busy["id"]), messages=10)
        await store.record_activity(conn, uuid.UUID(mixed["id"]), chats=1)
        await store.record_activity(conn, uuid.UUID(mixed["id"]), messages=2)  # adds to today's row
        await store.record_activity(conn, uuid.UUID(hidden["id"]), messages=1000)
        await store.record_activity(conn, uuid.uuid4(), messages=1)  # unknown persona: ignored, no error
        rows = [(mixed, 4, 0, 4), (old, 10, 0, 100), (stale, 15, 50, 1000), (stale, 14, 50, 1000)]
        for persona, age, chats, messages in rows:
            await conn.execute(
                "INSERT INTO persona_activity (persona_id, day, chats, messages)"
                " VALUES ($1, current_date - $2::int, $3, $4)",
                uuid.UUID(persona["id"]),
                age,
                chats,
                messages,
            )
        today = await conn.fetchrow(
            "SELECT chats, messages FROM persona_activity WHERE persona_id = $1 AND day = current_date",
            uuid.UUID(mixed["id"]),
        )
        assert today is not None and (today["chats"], today["messages"]) == (1, 2)
        row = await store.get(conn, uuid.UUID(busy["id"]))
        assert row is not None and str(row.id) == busy["id"]
        assert await store.get(conn, uuid.uuid4()) is None
    finally:
        await conn.close()

    positions = await trending_positions(client, carol, set(ids) - {hidden["id"]})
    assert hidden["id"] not in positions
    assert set(positions) == set(ids) - {hidden["id"]}
    score = {pid: s for pid, (_, s) in positions.items()}
    assert score[busy["id"]] == 10.0
    assert score[mixed["id"]] == 3 + 2 + 4 * 0.5**2  # 6.0
    assert score[old["id"]] == 100 * 0.5**5  # 3.125: more activity, but older, counts less
    assert score[stale["id"]] == 0 and score[quiet["id"]] == 0
    order = sorted(positions, key=lambda pid: positions[pid][0])
    assert order.index(busy["id"]) < order.index(mixed["id"]) < order.index(old["id"])
    # Personas without recent activity follow, newest first.
    assert order.index(old["id"]) < order.index(quiet["id"]) < order.index(stale["id"])


async def test_trending_pages_do_not_repeat(client: TestClient) -> None:
    alice = await register(client)
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(3):
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = await (await client.get(f"{R}/trending", params=params, headers=bearer(alice))).json()
        assert len(page["items"]) <= 2
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))


# --- pagination --------------------------------------------------------------------------------


async def test_list_pagination_walks_every_persona_once(client: TestClient, settings: Settings) -> None:
    alice, bob = await register(client), await register(client)
    assert settings.database_url is not None
    await make_premium(settings.database_url, alice["user"]["id"])
    made = [await create(client, alice) for _ in range(7)]
    await create(client, bob)  # someone else's never shows up

    walked = await list_all(client, alice, limit=2)
    assert [p["id"] for p in walked] == [p["id"] for p in reversed(made)]

    # Pages of exactly the remaining size end with no cursor (no empty trailing page).
    resp = await client.get(R, params={"limit": 7}, headers=bearer(alice))
    page = await resp.json()
    assert len(page["items"]) == 7 and page["next_cursor"] is None

    # A persona added mid-walk neither repeats nor shifts the pages that follow.
    resp = await client.get(R, params={"limit": 3}, headers=bearer(alice))
    first = await resp.json()
    await create(client, alice)
    rest = await client.get(R, params={"limit": 100, "cursor": first["next_cursor"]}, headers=bearer(alice))
    ids = [p["id"] for p in first["items"]] + [p["id"] for p in (await rest.json())["items"]]
    assert ids == [p["id"] for p in reversed(made)]


async def test_openapi_lists_persona_routes(client: TestClient) -> None:
    doc = await (await client.get("/api/openapi.json")).json()
    paths = doc["paths"]
    assert set(paths[R]) == {"get", "post"}
    assert set(paths[f"{R}/{{id}}"]) == {"get", "put", "delete"}
    assert "post" in paths[f"{R}/{{id}}/clone"]
    assert {p["name"] for p in paths[f"{R}/search"]["get"]["parameters"]} == {"q", "limit", "cursor"}
    assert "get" in paths[f"{R}/trending"]
    create_op = paths[R]["post"]
    assert {"201", "403", "422"} <= set(create_op["responses"])
    ref = create_op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert schema["required"] == ["name"] and schema["additionalProperties"] is False
    assert schema["properties"]["remixable"] == {
        **schema["properties"]["remixable"],
        "type": "boolean",
        "default": False,
    }
    # The response documents that a definition field may be null, and when.
    out = doc["components"]["schemas"]["PersonaOut"]
    assert {"type": "null"} in out["properties"]["personality"]["anyOf"]
    assert "remixable" in out["properties"]["personality"]["description"]
    assert {"personality", "remixable"} <= set(out["required"])
    assert "403" in paths[f"{R}/{{id}}/clone"]["post"]["responses"]
