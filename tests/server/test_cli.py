"""`python -m server users promote|demote EMAIL` as a real process against the test database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import asyncpg
from aiohttp.test_utils import TestClient

from server.config import Settings
from tests.helpers import bearer, register, unique_email
from tests.processes import _env


def users_command(tmp_path: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "users", *args],
        cwd=tmp_path,
        env=_env(DATABASE_URL=database_url, DATA_DIR=str(tmp_path / ".data")),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def role(client: TestClient, session: dict[str, str]) -> str:
    return str((await (await client.get("/api/v1/auth/me", headers=bearer(session))).json())["role"])


async def test_promote_and_demote_change_the_role_and_are_audited(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    assert settings.database_url is not None
    email = unique_email("ops")
    session = await register(client, email)
    assert await role(client, session) == "user"

    done = users_command(tmp_path, settings.database_url, "promote", email.upper())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{email}: role is now admin"
    assert await role(client, session) == "admin"
    again = users_command(tmp_path, settings.database_url, "promote", email)
    assert again.returncode == 0 and again.stdout.strip() == f"{email}: role was already admin"

    done = users_command(tmp_path, settings.database_url, "demote", email)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{email}: role is now user"
    assert await role(client, session) == "user"

    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT action, actor_id, details->>'via' AS via FROM audit_log WHERE target_id = $1 ORDER BY id",
            session["user"]["id"],
        )
    finally:
        await conn.close()
    assert [(r["action"], r["actor_id"], r["via"]) for r in rows] == [
        ("user.promote", None, "python -m server users promote"),
        ("user.demote", None, "python -m server users demote"),
    ]


def test_unknown_email_is_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    assert settings.database_url is not None
    email = unique_email("nobody")
    done = users_command(tmp_path, settings.database_url, "promote", email)
    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr.strip() == f"error: no account with the email {email}"


def test_usage_errors_exit_non_zero(settings: Settings, tmp_path: Path) -> None:
    assert settings.database_url is not None
    done = users_command(tmp_path, settings.database_url, "crown", "x@example.com")
    assert done.returncode == 2 and "invalid choice" in done.stderr
