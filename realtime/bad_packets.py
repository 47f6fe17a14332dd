"""Malformed packets from clients: one warning line each, at most a few a minute per kind, so that a
signed-in client sending garbage cannot flood the logs (each used to write an ERROR traceback)."""

from __future__ import annotations

import structlog
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

log = structlog.get_logger("parlor.socket")
_LINES = RateLimitItemPerMinute(5)
_limiter = FixedWindowRateLimiter(MemoryStorage())


def refused_packet(layer: str, err: BaseException) -> None:
    """Log that a packet was refused (`layer`: "engine.io" or "socket.io"), rate-limited per layer."""
    if _limiter.hit(_LINES, layer):
        log.warning("malformed packet refused", layer=layer, error=type(err).__name__, detail=str(err)[:200])
