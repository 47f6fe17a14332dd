"""REST: /api/v1/admin lists page with opaque cursors (core.pages) and never repeat or skip an item, even
when many items share a creation time; only admins may read them."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from server.config import Settings
from tests.helpers import bearer, make_admin, register


async def _all_pages(client: TestClient, admin: dict[str, Any], path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        resp = await client.get(path, params=query, headers=bearer(admin))
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the pages never ended")


async def test_user_pages_cover_users_created_in_the_same_instant(client: TestClient, settings: Settings) -> None:
    admin = await make_admin(client, settings.database_url)
    tag = uuid.uuid4().hex[:8]
    users = [await register(client, email=f"tie-{tag}-{i}@example.com") for i in range(7)]
    conn = await asyncpg.connect(settings.database_url)
    try:  # the same created_at for all: a cursor on the time alone would lose some
        await conn.execute(
            "UPDATE users SET created_at = '2025-01-01T00:00:00Z' WHERE id = ANY($1::uuid[])",
            [uuid.UUID(u["user"]["id"]) for u in users],
        )
    finally:
        await conn.close()
    seen = await _all_pages(client, admin, "/api/v1/admin/users", q=f"tie-{tag}", limit=2)
    assert sorted(u["id"] for u in seen) == sorted(u["user"]["id"] for u in users)


async def test_audit_log_pages_newest_first_without_gaps(client: TestClient, settings: Settings) -> None:
    admin = await make_admin(client, settings.database_url)
    target = await register(client)
    for _ in range(3):
        for action in ("ban", "unban"):
            resp = await client.post(f"/api/v1/admin/users/{target['user']['id']}/{action}", headers=bearer(admin))
            assert resp.status == 200, await resp.text()
    entries = await _all_pages(client, admin, "/api/v1/admin/audit-log", limit=4)
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    mine = [e for e in entries if e["target_id"] == target["user"]["id"]]
    assert [e["action"] for e in mine] == ["user.unban", "user.ban"] * 3  # newest first
    assert all(e["actor_id"] == admin["user"]["id"] for e in mine)


async def test_a_user_who_is_not_admin_reads_no_admin_list(client: TestClient) -> None:
    user = await register(client)
    for path in ("/api/v1/admin/users", "/api/v1/admin/audit-log"):
        resp = await client.get(path, headers=bearer(user))
        assert resp.status == 403, await resp.text()
