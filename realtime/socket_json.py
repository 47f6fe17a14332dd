"""JSON for Socket.IO packets: orjson (several times faster than the standard library on the event
path: every inbound event, every ack, every fan-out) behind the `dumps`/`loads` pair python-socketio
expects (`AsyncServer(json=...)`).

Where orjson refuses what the standard library accepts (NaN, Infinity; integers beyond 64 bits when
writing), the standard library answers, so a client sees the same validation errors as before rather
than a dropped packet. Reading, orjson turns an integer beyond 64 bits into a float. Output is compact
UTF-8 (no \\u escapes for non-ASCII text): the same JSON to any parser."""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps_bytes(obj: Any) -> bytes:
    """UTF-8 JSON. A TypeError for what is not JSON, such as bytes (the callers' cue for binary)."""
    try:
        return orjson.dumps(obj, option=_OPTIONS)
    except orjson.JSONEncodeError:  # the standard library decides: big integers pass, bytes raise
        return json.dumps(obj, separators=(",", ":")).encode()


def dumps(obj: Any, **_: Any) -> str:
    """`separators` and the like are accepted and ignored: orjson's output is always compact."""
    return dumps_bytes(obj).decode()


def loads(data: str | bytes, **_: Any) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            return json.loads(data)  # NaN, huge integers, or truly malformed (then the same error as before)
        except RecursionError as err:  # nested deeper than the interpreter's stack: malformed for us
            raise ValueError("JSON nested too deeply") from err
