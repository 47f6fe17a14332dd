"""UserStore on PostgreSQL: e-mail unique whatever its case, Firebase uid unique, and the writes that bump
session_version (which ends every access token issued before)."""

from __future__ import annotations

import asyncpg
import pytest

from storage.users import UserStore
from tests.storage.factories import make_user, word

store = UserStore()


async def test_email_is_unique_whatever_its_case(pool: asyncpg.Pool) -> None:
    email = f"{word('Mixed')}@Example.com"
    async with pool.acquire() as conn:
        user = await make_user(conn, email=email)
        again = await store.insert(conn, email=email.upper(), password_hash=None, display_name="x", role="user")
        assert again is None
        assert await store.by_email(conn, email.lower()) == user
        assert user.email == email  # stored as given


async def test_firebase_uid_is_unique(pool: asyncpg.Pool) -> None:
    uid = word("fb")
    async with pool.acquire() as conn:
        linked = await store.insert(
            conn, email=f"{word('a')}@example.com", password_hash=None, display_name="a", role="user", firebase_uid=uid
        )
        assert linked is not None and await store.by_firebase_uid(conn, uid) == linked
        taken = await store.insert(
            conn, email=f"{word('b')}@example.com", password_hash=None, display_name="b", role="user", firebase_uid=uid
        )
        assert taken is None
        other = await make_user(conn)
        with pytest.raises(asyncpg.UniqueViolationError):
            await store.set_firebase_uid(conn, other.id, uid)
        unlinked = await store.set_firebase_uid(conn, linked.id, None)
        assert unlinked is not None and unlinked.firebase_uid is None


async def test_password_change_and_ban_end_older_sessions(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        assert user.session_version == 0
        changed = await store.set_password(conn, user.id, "new-hash")
        assert changed is not None and (changed.password_hash, changed.session_version) == ("new-hash", 1)
        banned = await store.set_ban(conn, user.id, banned=True, reason="spam")
        assert banned is not None and banned.is_banned and banned.ban_reason == "spam" and banned.session_version == 2
        lifted = await store.set_ban(conn, user.id, banned=False, reason="ignored")
        assert lifted is not None and not lifted.is_banned and lifted.ban_reason is None
        assert lifted.session_version == 2  # lifting a ban revives nothing
        bumped = await store.bump_session_version(conn, user.id)
        assert bumped is not None and bumped.session_version == 3
        profile = await store.update_profile(conn, user.id, display_name=None, timezone="Europe/Paris")
        assert profile is not None and (profile.display_name, profile.timezone) == ("Tester", "Europe/Paris")
