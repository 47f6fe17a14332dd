"""Client events in one shape: validate the payload, find the user, call the service, answer with an
ack `{"ok": true, ...}` or `{"ok": false, "error": {"code", "message"}}`. Never a crash."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import socketio
import structlog
from pydantic import BaseModel

from core.entities import Principal
from core.errors import AppError, Code, Forbidden, Unauthorized, Unavailable, ValidationFailed
from core.events import AckError, ErrorAck, OkAck
from core.validation import parse
from realtime.guard import SocketUsers
from services.metrics import Metrics
from services.outages import DATABASE_DOWN

log = structlog.get_logger("parlor.socket")
P = TypeVar("P", bound=BaseModel)
# An event's function answers its ack model (core.events.CLIENT_EVENTS names which), None for a bare ok.
EventFn = Callable[[str, Principal, Any], Awaitable[OkAck | None]]
_OK = OkAck().model_dump(mode="json")


def failed(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return ErrorAck(error=AckError(code=code, message=message, details=details)).model_dump(
        mode="json", exclude_none=True
    )


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
            return result.model_dump(mode="json") if result is not None else dict(_OK)
        except AppError as err:
            outcome = err.code
            if isinstance(err, (Unauthorized, Forbidden)) and err.code in (Code.SESSION_ENDED, Code.BANNED):
                # The session ended on another node: close this socket too.
                await self._sio.disconnect(sid)
            return failed(err.code, err.message, err.details if isinstance(err, ValidationFailed) else None)
        except DATABASE_DOWN as err:  # as REST answers 503: PostgreSQL (or its network) is down
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
