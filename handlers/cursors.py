"""Opaque pagination cursors: clients pass back what they were given and never parse it."""

from __future__ import annotations

import base64
import json
from typing import Any

from server.errors import ValidationFailed


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *, size: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValidationFailed("cursor: invalid", details=[{"field": "cursor", "message": "invalid"}]) from err
    if not isinstance(values, list) or len(values) != size:
        raise ValidationFailed("cursor: invalid", details=[{"field": "cursor", "message": "invalid"}])
    return values
