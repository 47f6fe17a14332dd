"""Notifications a service sends after its own commit (billing, admin grants), best effort: the change a
notice tells of is already committed, so a notice that cannot be stored or sent is logged and dropped.
Raising would turn a committed change into an error (a 500 that Stripe retries into a duplicate, an admin
told a grant failed) and skip the events still to be emitted after it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import structlog

from core.timefmt import iso
from core.wire import NotificationKind
from services.notifications import NotificationService
from services.outages import DATABASE_DOWN

__all__ = ["Notice", "day", "iso", "send_notices"]
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Notice:
    user_id: UUID
    kind: NotificationKind
    title: str
    body: str
    data: Mapping[str, str | int]  # the app's deep link: plain strings and numbers only


def day(at: datetime) -> str:
    """A date for a notification's text ("5 March 2026"); the app reads the exact time from `data`."""
    at = at.astimezone(UTC)
    return f"{at.day} {at:%B %Y}"


async def send_notices(notifications: NotificationService | None, *notices: Notice) -> None:
    """Each notice through `notifications.notify`; call after commit. Never raises."""
    if notifications is None:
        return
    for notice in notices:
        try:
            await notifications.notify(notice.user_id, notice.kind, notice.title, notice.body, notice.data)
        except DATABASE_DOWN:
            log.warning("notification not stored: database unavailable", kind=notice.kind, user_id=str(notice.user_id))
        except Exception:  # a bug or a Redis failure: the change is committed all the same
            log.warning("notification failed", kind=notice.kind, user_id=str(notice.user_id), exc_info=True)
