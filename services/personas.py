"""PersonaService: personas CRUD, clone, search, trending, plan limits."""

from __future__ import annotations

import asyncpg

from services.events import Events
from services.plans import Plans


class PersonaService:
    def __init__(self, *, pool: asyncpg.Pool, plans: Plans, events: Events) -> None:
        self._pool = pool
        self._plans = plans
        self._events = events
