"""Builds the AsyncAPI 3.0 document of the socket events from their models in core/events.py: one
channel (the Socket.IO default namespace), a `send` operation per server event, a `receive` operation
per client event whose reply is its ack. Payload schemas are the models' JSON schemas, so the document
cannot drift from what the server emits; tests/realtime/test_event_models.py checks it against
docs/events.md."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from core.events import CLIENT_EVENTS, SERVER_EVENTS, ErrorAck

ASYNCAPI_VERSION = "3.0.0"
CHANNEL = "socket"
_SCHEMA_REF = "#/components/schemas/{model}"
_DESCRIPTION = (
    "Parlor's Socket.IO v5 events at `/socket.io/`. Connect with the access token in the connect `auth` "
    "payload (`{token}`); a refused connection arrives as `connect_error` with `err.data.code`. Every "
    "client event answers through the Socket.IO acknowledgement: its reply message, or an `ErrorAck`. "
    "docs/events.md tells who receives each event and when."
)


def _key(name: str) -> str:
    """`ai:chunk` -> `AiChunk`: component keys may hold only letters, digits, `.`, `-` and `_`."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name) if part)


def _summary(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").split())


def build_asyncapi(*, version: str) -> dict[str, Any]:
    # One pass over every model, so the nested ones (MessageOut, TokenUsage) become one shared component.
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (event, "serialization") for event in SERVER_EVENTS.values()
    ]
    for client in CLIENT_EVENTS.values():
        models += [(client.payload, "validation"), (client.ack, "serialization")]
    models.append((ErrorAck, "serialization"))
    refs, top = models_json_schema(list(dict.fromkeys(models)), ref_template=_SCHEMA_REF)

    def payload(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(refs[(model, mode)])

    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}

    def message_ref(key: str) -> dict[str, str]:
        return {"$ref": f"#/channels/{CHANNEL}/messages/{key}"}

    for event in SERVER_EVENTS.values():
        key = event.__name__
        messages[key] = {
            "name": event.name,
            "title": event.name,
            "summary": _summary(event),
            "payload": payload(event, "serialization"),
        }
        operations[f"send{_key(event.name)}"] = {
            "action": "send",
            "title": event.name,
            "summary": _summary(event),
            "channel": {"$ref": f"#/channels/{CHANNEL}"},
            "messages": [message_ref(key)],
        }
    messages["ErrorAck"] = {
        "name": "ack",
        "title": "error ack",
        "summary": _summary(ErrorAck),
        "payload": payload(ErrorAck, "serialization"),
    }
    for client in CLIENT_EVENTS.values():
        key, ack_key = _key(client.name), _key(client.name) + "Ack"
        messages[key] = {
            "name": client.name,
            "title": client.name,
            "summary": client.summary,
            "payload": payload(client.payload, "validation"),
        }
        messages[ack_key] = {
            "name": "ack",
            "title": f"{client.name} ack",
            "summary": f"The acknowledgement of {client.name} when it succeeds.",
            "payload": payload(client.ack, "serialization"),
        }
        operations[f"receive{key}"] = {
            "action": "receive",
            "title": client.name,
            "summary": client.summary,
            "channel": {"$ref": f"#/channels/{CHANNEL}"},
            "messages": [message_ref(key)],
            "reply": {
                "channel": {"$ref": f"#/channels/{CHANNEL}"},
                "messages": [message_ref(ack_key), message_ref("ErrorAck")],
            },
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {"title": "Parlor socket events", "version": version, "description": _DESCRIPTION},
        "defaultContentType": "application/json",
        "channels": {
            CHANNEL: {
                "address": "/socket.io/",
                "title": "Socket.IO default namespace",
                "description": "Every socket of a user is in the room `user:<user_id>`; `chat:join` adds it to "
                "`chat:<session_id>`. Events name their recipients in their summaries.",
                "messages": {key: {"$ref": f"#/components/messages/{key}"} for key in messages},
            }
        },
        "operations": operations,
        "components": {"schemas": top.get("$defs", {}), "messages": messages},
    }
