"""`python -m server users promote|demote EMAIL`: the way admins are made (and unmade)."""

from __future__ import annotations

import asyncio
import sys
from typing import Literal

import asyncpg

from core.errors import NotFound
from server.config import Settings
from server.embedded import start_embedded_postgres
from services.roles import Role, RoleChange, set_role_by_email
from storage.db import CONNECTION_ERRORS, create_pool, migrate

Action = Literal["promote", "demote"]
ROLES: dict[Action, Role] = {"promote": "admin", "demote": "user"}


async def _change_role(settings: Settings, action: Action, email: str) -> RoleChange:
    embedded = None
    dsn = settings.database_url
    if dsn is None:
        dsn, embedded = await start_embedded_postgres(settings.data_dir)
    await migrate(dsn)  # a fresh database gets the schema, as the server would give it
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        return await set_role_by_email(pool, email, ROLES[action], via=f"python -m server users {action}")
    finally:
        await pool.close()
        del embedded  # pgserver stops the embedded server when its last user exits


def run(action: Action, email: str, settings: Settings) -> int:
    """Prints one line; exit status 0 on success, 1 when no account has the email or no database answers."""
    try:
        change = asyncio.run(_change_role(settings, action, email))
    except NotFound as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 1
    except (*CONNECTION_ERRORS, asyncpg.PostgresError) as err:
        print(f"error: the database is not reachable: {err}", file=sys.stderr)
        return 1
    role = ROLES[action]
    if change.changed:
        print(f"{change.user.email}: role is now {role}")
    else:
        print(f"{change.user.email}: role was already {role}")
    return 0
