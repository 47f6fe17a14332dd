"""Plan limits, read from configuration (SPEC §6): never hard-coded in the code that enforces them."""

from __future__ import annotations

from dataclasses import dataclass

from server.config import Settings


@dataclass(frozen=True)
class PlanLimits:
    daily_messages: int  # 0 = unlimited
    max_personas: int  # 0 = unlimited
    history_days: int  # 0 = keep everything
    storage_mb: int


class Plans:
    def __init__(self, settings: Settings) -> None:
        self._plans = {
            "free": PlanLimits(
                settings.free_daily_messages,
                settings.free_max_personas,
                settings.free_history_days,
                settings.free_storage_mb,
            ),
            "premium": PlanLimits(
                settings.premium_daily_messages,
                settings.premium_max_personas,
                settings.premium_history_days,
                settings.premium_storage_mb,
            ),
        }

    def limits(self, plan: str) -> PlanLimits:
        # An unknown plan name (say, one retired from configuration) gets the free limits, never more.
        return self._plans.get(plan, self._plans["free"])
