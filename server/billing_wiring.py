"""Wiring of billing (Stripe, Google Play), subscriptions and the scheduler: one cleanup context,
appended after the core services in create_app. (Being filled in.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web


async def billing_context(app: web.Application) -> AsyncIterator[None]:
    yield
