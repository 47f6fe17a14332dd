"""Plan limits, read from configuration (SPEC §6): never hard-coded in the code that enforces them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlanLimits:
    daily_messages: int  # 0 = unlimited
    max_personas: int  # 0 = unlimited
    history_days: int  # 0 = keep everything
    storage_mb: int


class Plans:
    def __init__(self, *, free: PlanLimits, premium: PlanLimits) -> None:
        self._plans = {"free": free, "premium": premium}

    def limits(self, plan: str) -> PlanLimits:
        # An unknown plan name (say, one retired from configuration) gets the free limits, never more.
        return self._plans.get(plan, self._plans["free"])
