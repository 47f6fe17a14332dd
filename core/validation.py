"""Parsing untrusted input (REST bodies and query strings, socket payloads) into pydantic models, with
errors that name the field. Shared by handlers/ and realtime/ so both refuse the same things.

What the database or the stack cannot take is refused here, before any handler runs: integers beyond
PostgreSQL's bigint, digits other than ASCII 0-9, times that leave the calendar in UTC, NUL characters,
JSON that is not RFC 8259 JSON (NaN, lone surrogates) or is nested deeper than MAX_JSON_DEPTH."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import to_json

from core.errors import ValidationFailed

M = TypeVar("M", bound=BaseModel)

# PostgreSQL's bigint, the widest integer column: a larger number in a query is a driver error (a 500).
INT64_MAX = 2**63 - 1
# Our bodies nest a few levels; the cap keeps every later walk over the data (ours, pydantic's) shallow.
MAX_JSON_DEPTH = 64
_ASCII_DIGITS = re.compile(r"[0-9]+")
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _ascii_whole_number(value: Any) -> Any:
    """A string must be ASCII digits: int() also reads other scripts' digits (Arabic-Indic, fullwidth),
    and pydantic reads ' 7', '+7', '1_0' and '7.0'."""
    if isinstance(value, str):
        if not _ASCII_DIGITS.fullmatch(value):
            raise ValueError("must be a whole number written with the digits 0-9")
        if len(value) > len(str(INT64_MAX)):  # before int(): a long digit string is slow to convert
            raise ValueError(f"must be at most {INT64_MAX}")
        return int(value)
    return value


def _rfc3339(value: Any) -> Any:
    """A time must be written as RFC 3339 with its offset: pydantic also reads numbers (as Unix times),
    bare dates, and times without an offset (whose meaning would depend on the server)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        try:
            return datetime.fromisoformat(value)
        except ValueError as err:  # a month 13, a February 30
            raise ValueError(f"not a date-time: {err}") from err
    raise ValueError("must be an RFC 3339 date-time with its offset, such as 2025-01-31T12:00:00Z")


def _in_utc(value: datetime) -> datetime:
    """Naive times are UTC; a time whose UTC form falls outside years 1..9999 is refused (the driver would
    overflow converting it)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as err:
        raise ValueError("outside the years 1..9999 in UTC") from err


# A non-negative integer that PostgreSQL's bigint holds (ids, seq numbers, offsets, indexes). The
# constraints come before the validator, or pydantic leaves them out of the JSON schema.
Bigint = Annotated[int, Field(ge=0, le=INT64_MAX), BeforeValidator(_ascii_whole_number)]
PositiveBigint = Annotated[int, Field(ge=1, le=INT64_MAX), BeforeValidator(_ascii_whole_number)]
# A time, as UTC, that PostgreSQL's timestamptz and Python both hold.
UtcDatetime = Annotated[datetime, BeforeValidator(_rfc3339), AfterValidator(_in_utc)]


def whole_number(text: str, *, field: str, maximum: int = INT64_MAX) -> int:
    """A header or other loose text as a Bigint, 422 naming `field` otherwise."""
    try:
        number = int(_ascii_whole_number(text))
    except ValueError as err:
        raise _invalid(field, str(err)) from err
    if number > maximum:
        raise _invalid(field, f"must be at most {maximum}")
    return number


def in_database_range(value: Any) -> bool:
    """Whether every integer and time inside `value` (a model's fields, nested) fits the database."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, BaseModel):
            stack.extend(getattr(item, name) for name in type(item).model_fields)
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            if not 0 <= item <= INT64_MAX:
                return False
        elif isinstance(item, datetime):
            try:
                _in_utc(item)
            except ValueError:
                return False
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return True


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays/objects in `value` nest more than `limit` levels (`[]` is one). Iterative: any depth."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _nul_path(value: Any) -> str | None:
    """The first field holding a NUL character: PostgreSQL text cannot store one, so it would otherwise
    fail in the database (a 500) instead of here (a 422). Iterative, so no payload depth can overflow."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path
        elif isinstance(item, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((v, f"{path}.{i}" if path else str(i)) for i, v in reversed(list(enumerate(item))))
    return None


def _json_numbers(value: Any) -> Any:
    """JSON has one number type: 5.0 is the integer 5 (JSON Schema agrees), so strict validation gets 5
    (beyond 64 bits it stays a float, refused by every integer field). Recursive, but only over data
    already checked to nest at most MAX_JSON_DEPTH levels."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= INT64_MAX:
        return int(value)
    if isinstance(value, dict):
        return {k: _json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_numbers(v) for v in value]
    return value


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", details=[{"field": field, "message": message}])


def parse(model: type[M], data: Any, *, root: str, json_types: bool = False) -> M:
    """Validate `data` (which must be an object) as `model`; `root` names the whole input in errors.

    With `json_types` (data parsed from JSON), values must have the JSON type the schema says: no
    0 for false or "5" for 5 (pydantic's lax mode takes both, the OpenAPI document promises neither)."""
    if not isinstance(data, dict):
        raise ValidationFailed(f"{root} must be an object", details=[{"field": root, "message": "not an object"}])
    if nested_deeper_than(data, MAX_JSON_DEPTH):
        raise _invalid(root, f"nested deeper than {MAX_JSON_DEPTH} levels")
    nul = _nul_path(data)
    if nul is not None:
        raise ValidationFailed(
            f"{nul}: may not contain the NUL character", details=[{"field": nul, "message": "contains NUL"}]
        )
    try:
        if json_types:
            return model.model_validate_json(to_json(_json_numbers(data)), strict=True)
        return model.model_validate(data)
    except PydanticValidationError as err:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]) or root, "message": e["msg"], "type": e["type"]}
            for e in err.errors(include_url=False)
        ]
        raise ValidationFailed(f"{details[0]['field']}: {details[0]['message']}", details=details) from err
