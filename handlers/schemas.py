"""Request and response shapes shared by several handler modules (SPEC Appendix C)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Self
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from core import limits
from core.wire import UserOut
from handlers.openapi import MAX_LENGTH_SETTING


class Strict(BaseModel):
    """Request bodies: unknown fields are refused (422 naming the field)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _no_null_alternatives(schema: dict[str, Any], model: type) -> None:
    clearable: frozenset[str] = getattr(model, "clearable", frozenset())
    for name, prop in schema.get("properties", {}).items():
        alternatives = prop.get("anyOf")
        if alternatives and {"type": "null"} in alternatives and name not in clearable:
            rest = [a for a in alternatives if a != {"type": "null"}]
            del prop["anyOf"]
            if len(rest) == 1:
                prop.update(rest[0])
            else:
                prop["anyOf"] = rest
        if "default" in prop and prop["default"] is None:
            del prop["default"]


class Patch(Strict):
    """Partial updates: a field left out is left as it is, and null is refused (422 naming the field).
    The fields are typed `X | None = None` to tell "left out" apart; the schema shows them as X. Fields
    named in `clearable` take null too, meaning "remove" (read them with `model_fields_set`)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, json_schema_extra=_no_null_alternatives)
    clearable: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name not in cls.clearable:
            raise ValueError("may not be null; leave the field out to keep it")
        return value


def _non_empty(schema: dict[str, Any], model: type) -> None:
    _no_null_alternatives(schema, model)
    schema["minProperties"] = 1
    needs: tuple[str, ...] = getattr(model, "needs_one_of", ())
    if needs:
        schema["anyOf"] = [{"required": [name]} for name in needs]


class NonEmptyPatch(Patch):
    """A Patch that must change something: `{}` is refused (and the schema says so: minProperties 1). With
    `needs_one_of`, one of those fields must be there (the schema's anyOf says so too)."""

    needs_one_of: ClassVar[tuple[str, ...]] = ()

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, json_schema_extra=_non_empty)

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("give at least one field")
        if self.needs_one_of and not self.model_fields_set & set(self.needs_one_of):
            raise ValueError("give " + " or ".join(self.needs_one_of))
        return self


# Every list's `cursor` query parameter: an opaque string from a previous page (core.pages).
CursorParam = Annotated[str | None, Field(max_length=limits.CURSOR_MAX, description="next_cursor of the previous page")]


# A chat message's text. The bound here only stops absurd bodies early; the service refuses more than
# MESSAGE_MAX_CHARS, and the OpenAPI document says that number.
MessageContent = Annotated[
    str,
    Field(
        min_length=1,
        max_length=limits.MESSAGE_BODY_MAX,
        description="The message text (at most MESSAGE_MAX_CHARS characters)",
        json_schema_extra={MAX_LENGTH_SETTING: "message_max_chars"},
    ),
]


_TIME_ZONES = frozenset(available_timezones())


def _known_time_zone(name: str) -> str:
    if name not in _TIME_ZONES:
        raise ValueError("unknown time zone: an IANA name such as Europe/Paris or UTC")
    return name


# An IANA time zone name; the document lists every one the server knows.
TimeZoneName = Annotated[
    str,
    AfterValidator(_known_time_zone),
    WithJsonSchema({"type": "string", "enum": sorted(_TIME_ZONES), "description": "An IANA time zone name"}),
]


class AuthSessionOut(BaseModel):
    """What signing in answers (register, login, refresh, password change): the user and their tokens."""

    user: UserOut
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"
