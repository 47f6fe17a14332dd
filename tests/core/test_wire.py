"""The wire models (core/wire.py): each public shape as clients read it (SPEC Appendix C), built from its
entity — keys, their order, the time format, ids as strings, and what a viewer may not see."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from core.entities import ChatSession, Invoice, Message, Persona, Principal, ScoredPersona
from core.wire import InvoiceOut, MessageOut, PersonaOut, ScoredPersonaOut, SessionOut, UserOut

# A time in another zone: the wire always says it in UTC with a Z.
WHEN = datetime(2025, 1, 2, 5, 4, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
WHEN_JSON = "2025-01-02T03:04:05.123456Z"


def _persona(owner: uuid.UUID, *, visibility: str = "public", remixable: bool = False) -> Persona:
    return Persona(
        id=uuid.uuid4(),
        owner_id=owner,
        name="Ada",
        description="A mathematician",
        personality="secret prompt",
        greeting="Hello",
        alternate_greetings=["Good day"],
        tags=["math"],
        visibility=visibility,
        remixable=remixable,
        avatar_file_id=None,
        cloned_from=None,
        created_at=WHEN,
        updated_at=WHEN,
    )


@pytest.mark.parametrize(
    "usage, client_id, reply_to",
    [(None, uuid.uuid4(), None), ({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}, None, uuid.uuid4())],
)
def test_message_shape(usage: dict[str, int] | None, client_id: uuid.UUID | None, reply_to: uuid.UUID | None) -> None:
    message = Message(
        id=uuid.uuid4(),
        session_id=uuid.uuid4(),
        seq=7,
        role="assistant" if usage else "user",
        content="héllo",
        status="complete",
        client_id=client_id,
        reply_to=reply_to,
        usage=usage,
        attachments=[],
        created_at=WHEN,
        rev=9,
    )
    # A reply never regenerated has itself as its one variant; a user message has none.
    variants = (
        [{"index": 0, "content": "héllo", "status": "complete", "usage": usage, "created_at": WHEN_JSON}]
        if usage
        else []
    )
    assert MessageOut.model_validate(message).model_dump(mode="json") == {
        "id": str(message.id),
        "session_id": str(message.session_id),
        "seq": 7,
        "rev": 9,
        "role": message.role,
        "kind": "message",
        "content": "héllo",
        "status": "complete",
        "client_id": str(client_id) if client_id else None,
        "reply_to": str(reply_to) if reply_to else None,
        "usage": usage,
        "attachments": [],
        "variant": 0,
        "variants": variants,
        "edited_at": None,
        "created_at": WHEN_JSON,
    }
    keys = list(MessageOut.model_validate(message).model_dump(mode="json"))
    assert keys[:3] == ["id", "session_id", "seq"] and keys[-1] == "created_at"


def test_session_shape_leaves_the_owner_out() -> None:
    session = ChatSession(
        id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        persona_id=None,
        title="Chat",
        pinned=True,
        last_seq=4,
        created_at=WHEN,
        updated_at=WHEN,
        last_rev=6,
    )
    assert SessionOut.model_validate(session).model_dump(mode="json") == {
        "id": str(session.id),
        "persona_id": None,
        "title": "Chat",
        "pinned": True,
        "last_seq": 4,
        "last_rev": 6,
        "created_at": WHEN_JSON,
        "updated_at": WHEN_JSON,
    }


def test_user_shape_has_no_secret() -> None:
    principal = Principal(
        id=uuid.uuid4(),
        email="a@example.com",
        display_name="A",
        role="user",
        plan="free",
        timezone="UTC",
        session_version=3,
        created_at=WHEN,
        has_password=True,
        firebase_linked=False,
        banned=False,
    )
    shape = UserOut.model_validate(principal).model_dump(mode="json")
    assert list(shape) == [
        "id",
        "email",
        "display_name",
        "role",
        "plan",
        "timezone",
        "created_at",
        "has_password",
        "firebase_linked",
        "banned",
        "avatar_file_id",
        "avatar_url",
    ]
    assert "session_version" not in shape and shape["created_at"] == WHEN_JSON


def test_persona_definition_only_for_those_who_may_read_it() -> None:
    owner, other = uuid.uuid4(), uuid.uuid4()
    closed = _persona(owner, remixable=False)
    assert PersonaOut.for_viewer(closed, owner).personality == "secret prompt"
    hidden = PersonaOut.for_viewer(closed, other).model_dump(mode="json")
    assert hidden["personality"] is None and hidden["name"] == "Ada" and hidden["greeting"] == "Hello"
    assert hidden["alternate_greetings"] == ["Good day"]  # greetings are not the definition
    assert PersonaOut.for_viewer(_persona(owner, remixable=True), other).personality == "secret prompt"
    scored = ScoredPersonaOut.for_viewer_scored(ScoredPersona(closed, 0.5), other).model_dump(mode="json")
    assert scored["personality"] is None and scored["score"] == 0.5
    assert list(scored)[-1] == "score"


def test_invoice_names_the_provider_subscription() -> None:
    invoice = Invoice(
        id="in_1",
        user_id=uuid.uuid4(),
        subscription_id="sub_1",
        amount_cents=999,
        currency="usd",
        status="paid",
        hosted_url=None,
        period_end=None,
        created_at=WHEN.astimezone(UTC),
    )
    shape = InvoiceOut.of(invoice).model_dump(mode="json")
    assert shape["provider_subscription_id"] == "sub_1" and "user_id" not in shape and "subscription_id" not in shape


def test_a_wire_model_refuses_what_the_contract_does_not_allow() -> None:
    good = {
        "id": str(uuid.uuid4()),
        "persona_id": None,
        "title": "t",
        "pinned": False,
        "last_seq": 0,
        "last_rev": 0,
        "created_at": WHEN_JSON,
        "updated_at": WHEN_JSON,
    }
    SessionOut.model_validate(good)
    with pytest.raises(ValidationError):
        SessionOut.model_validate({**good, "extra": 1})  # an unknown key
    with pytest.raises(ValidationError):
        SessionOut.model_validate({**good, "last_seq": -1})
