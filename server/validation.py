"""Parsing untrusted input (REST bodies and query strings, socket payloads) into pydantic models, with
errors that name the field. Shared by handlers/ and realtime/ so both refuse the same things."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from server.errors import ValidationFailed

M = TypeVar("M", bound=BaseModel)


def _nul_path(value: Any, path: str) -> str | None:
    """The first field holding a NUL character: PostgreSQL text cannot store one, so it would otherwise
    fail in the database (a 500) instead of here (a 422)."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _nul_path(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


def parse(model: type[M], data: Any, *, root: str) -> M:
    """Validate `data` (which must be an object) as `model`; `root` names the whole input in errors."""
    if not isinstance(data, dict):
        raise ValidationFailed(f"{root} must be an object", details=[{"field": root, "message": "not an object"}])
    nul = _nul_path(data, "")
    if nul is not None:
        raise ValidationFailed(
            f"{nul}: may not contain the NUL character", details=[{"field": nul, "message": "contains NUL"}]
        )
    try:
        return model.model_validate(data)
    except PydanticValidationError as err:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]) or root, "message": e["msg"], "type": e["type"]}
            for e in err.errors(include_url=False)
        ]
        raise ValidationFailed(f"{details[0]['field']}: {details[0]['message']}", details=details) from err
