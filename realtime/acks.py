"""Client events in one shape: validate the payload, find the user, call the service, answer with an
ack `{"ok": true, ...}` or `{"ok": false, "error": {"code", "message"}}`. Never a crash."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import socketio
import structlog
from pydantic import BaseModel, ConfigDict

from core.entities import Principal
from core.errors import AppError, Code, Forbidden, Unauthorized, Unavailable, ValidationFailed
from core.validation import parse
from realtime.guard import SocketUsers
from services.metrics import Metrics
from storage.db import CONNECTION_ERRORS

log = structlog.get_logger("parlor.socket")
P = TypeVar("P", bound=BaseModel)
EventFn = Callable[[str, Principal, Any], Awaitable[dict[str, Any] | None]]


class Payload(BaseModel):
    """Socket payloads: unknown fields refused, like REST bodies."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def ok(**fields: Any) -> dict[str, Any]:
    return {"ok": True, **fields}


def failed(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"ok": False, "error": error}


def parse_payload(model: type[P], data: Any) -> P:
    return parse(model, data, root="payload")


class EventRegistry:
    def __init__(self, sio: socketio.AsyncServer, users: SocketUsers, metrics: Metrics) -> None:
        self._sio = sio
        self._users = users
        self._metrics = metrics
        self.names: list[str] = []
        self._counters: dict[tuple[str, str], Any] = {}

    def on(self, name: str, model: type[BaseModel]) -> Callable[[EventFn], EventFn]:
        def decorate(fn: EventFn) -> EventFn:
            async def handler(sid: str, data: Any = None, *extra: Any) -> dict[str, Any]:
                return await self._run(name, sid, model, data, fn)

            self._sio.on(name, handler)
            self.names.append(name)
            return fn

        return decorate

    async def _run(self, name: str, sid: str, model: type[BaseModel], data: Any, fn: EventFn) -> dict[str, Any]:
        outcome = "ok"
        try:
            user = await self._users.user(sid)
            # Not `event`: structlog's own key for the log message.
            structlog.contextvars.bind_contextvars(user_id=str(user.id), socket_event=name)
            payload = parse_payload(model, data)
            result = await fn(sid, user, payload)
            return ok(**(result or {}))
        except AppError as err:
            outcome = err.code
            if isinstance(err, (Unauthorized, Forbidden)) and err.code in (Code.SESSION_ENDED, Code.BANNED):
                # The session ended on another node: close this socket too.
                await self._sio.disconnect(sid)
            return failed(err.code, err.message, err.details if isinstance(err, ValidationFailed) else None)
        except CONNECTION_ERRORS as err:  # as REST answers 503: PostgreSQL (or its network) is down
            outcome = Unavailable.code
            log.warning("socket event failed: database unavailable", socket_event=name, error=type(err).__name__)
            return failed(Unavailable.code, "the database is unavailable, try again shortly")
        except Exception:
            outcome = "internal"
            log.exception("socket event failed", socket_event=name)
            return failed("internal", "internal error")
        finally:
            counter = self._counters.get((name, outcome))
            if counter is None:
                counter = self._counters[(name, outcome)] = self._metrics.socket_events.labels(name, outcome)
            counter.inc()
            # No clear_contextvars: python-socketio runs each event in its own task (async_handlers),
            # whose context copy ends with it.
