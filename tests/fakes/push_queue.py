"""An in-test PushQueue (services/push_delivery.py): records every deferral and, when given a PushDelivery
to run, runs the deferred delivery at once (the delay is recorded, not waited), as the job would."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from services.push_delivery import PushDelivery


@dataclass(frozen=True)
class Deferral:
    notification_id: UUID
    tokens: list[str] | None
    attempt: int
    delay_seconds: float


class RecordingPushQueue:
    def __init__(self) -> None:
        self.deferred: list[Deferral] = []
        # The summary of each inline run, in order.
        self.summaries: list[dict[str, int]] = []
        self.delivery: PushDelivery | None = None
        self.fail_with: Exception | None = None

    async def defer_push(
        self, *, notification_id: UUID, tokens: Sequence[str] | None, attempt: int, delay_seconds: float
    ) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.deferred.append(
            Deferral(notification_id, None if tokens is None else list(tokens), attempt, delay_seconds)
        )
        if self.delivery is not None:
            summary = await self.delivery.deliver(notification_id=notification_id, tokens=tokens, attempt=attempt)
            self.summaries.append(summary)

    async def run(self, deferral: Deferral, delivery: PushDelivery) -> dict[str, int]:
        """Run one recorded deferral, as the job would once its delay passed."""
        return await delivery.deliver(
            notification_id=deferral.notification_id, tokens=deferral.tokens, attempt=deferral.attempt
        )
