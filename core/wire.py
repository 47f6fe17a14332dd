"""Wire models: the shapes clients read, one pydantic model per public shape. REST responses, socket acks,
events, the OpenAPI document and the AsyncAPI document all use these, so a shape is written once.
Field names and order are the JSON's: `model_dump(mode="json")` is what goes on the wire. Each is built
from its core entity (`Model.model_validate(entity)` reads it by attribute, or a named constructor
where the shape is not the entity's fields)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema, model_validator

from core import limits
from core.entities import Invoice, Persona, Principal, ScoredPersona, StoredFile
from core.timefmt import iso

# Every time on every wire: ISO 8601 in UTC with a `Z` (core.timefmt.iso), whatever the datetime's zone.
Timestamp = Annotated[
    datetime,
    PlainSerializer(iso, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
Period = Literal["daily", "monthly", "yearly", "lifetime"]


class Wire(BaseModel):
    """Unknown fields refused, so a test that validates what it received sees any key the model lacks.
    Every field is always sent, so the documents list fields with defaults as required too."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_serialization_defaults_required=True)


class Out(Wire):
    """A shape made from an entity: read by attribute (only the model's fields; the entity may hold more)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, from_attributes=True, json_schema_serialization_defaults_required=True
    )


def _with_avatar_url(model: type[BaseModel], entity: object, url: str | None) -> dict[str, Any]:
    """An entity's fields the model has, and the avatar's URL (made here: the entity holds only the id)."""
    fields = {name: getattr(entity, name) for name in model.model_fields if hasattr(entity, name)}
    return {**fields, "avatar_url": url}


class UserOut(Out):
    """The signed-in user (a core Principal): nothing secret."""

    id: UUID
    email: str
    display_name: str
    role: Literal["user", "admin"]
    plan: str
    timezone: str
    created_at: Timestamp
    has_password: bool
    firebase_linked: bool
    banned: bool
    avatar_file_id: UUID | None = Field(description="The profile picture: one of the user's own image files")
    avatar_url: str | None = Field(description="Where the picture's bytes are (GET, with the user's token)")

    @model_validator(mode="before")
    @classmethod
    def _from_principal(cls, data: Any) -> Any:
        if isinstance(data, Principal):
            file_id = data.avatar_file_id
            return _with_avatar_url(cls, data, f"/api/v1/files/{file_id}/content" if file_id else None)
        return data


class SessionOut(Out):
    id: UUID
    persona_id: UUID | None
    title: str
    pinned: bool
    last_seq: int = Field(ge=0)
    last_rev: int = Field(ge=0, description="The newest `rev` of its messages: what `sync {after_rev}` starts from")
    created_at: Timestamp
    updated_at: Timestamp


class TokenUsage(Wire):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)


# The files a message carries, as a sender names them (message:send, the REST sends).
AttachmentIds = Annotated[
    list[UUID],
    Field(
        max_length=limits.ATTACHMENTS_MAX,
        description="Up to 4 of my files (chat_attachment, or any image) the message carries and the AI sees",
    ),
]
UploadCategory = Literal["avatar", "persona_image", "chat_attachment", "knowledge_base"]
# `export`: files a job made for the user (chat and usage exports); never uploaded.
FileCategory = Literal["avatar", "persona_image", "chat_attachment", "knowledge_base", "export"]


class FileOut(Wire):
    """An uploaded file (its bytes: GET /files/{id}/content)."""

    id: UUID
    category: FileCategory
    content_type: str = Field(description="What the content turned out to be (decided from its bytes)")
    size: int = Field(ge=0, description="Bytes of the stored file (an image's after processing)")
    width: int | None = Field(description="Images: pixels, after processing")
    height: int | None = Field(description="Images: pixels, after processing")
    thumbnail: bool = Field(description="Whether ?variant=thumbnail exists (images)")
    filename: str
    created_at: Timestamp

    @classmethod
    def of(cls, stored: StoredFile) -> FileOut:
        return cls(
            id=stored.id,
            category=stored.category,  # type: ignore[arg-type]  # the table's CHECK allows only these
            content_type=stored.content_type,
            size=stored.size,
            width=stored.width,
            height=stored.height,
            thumbnail=stored.thumb_key is not None,
            filename=stored.filename,
            created_at=stored.created_at,
        )


class VariantOut(Wire):
    """One variant of a reply (regenerations and a greeting's alternates)."""

    index: int = Field(ge=0)
    content: str
    status: Literal["complete", "streaming", "stopped", "failed"]
    usage: TokenUsage | None
    created_at: Timestamp


class MessageOut(Out):
    """A stored message (SPEC Appendix C). `content`, `status` and `usage` are the selected variant's."""

    id: UUID
    session_id: UUID
    seq: int = Field(ge=1)
    rev: int = Field(ge=0, description="Raised by every change to the message; `sync {after_rev}` returns higher ones")
    role: Literal["user", "assistant"]
    kind: Literal["message", "greeting"]
    content: str = Field(description="Empty for a deleted message")
    status: Literal["complete", "streaming", "stopped", "failed", "deleted"]
    client_id: UUID | None
    reply_to: UUID | None
    usage: TokenUsage | None
    attachments: list[FileOut] = Field(description="The files the message carries")
    variant: int = Field(ge=0, description="The selected variant's index")
    variants: list[VariantOut] = Field(
        validation_alias=AliasChoices("all_variants", "variants"),
        description="Every variant of a reply (one for a reply never regenerated); [] for user messages and "
        "deleted ones",
    )
    edited_at: Timestamp | None
    created_at: Timestamp


# The persona's definition: what makes it answer as it does. Only those who may read it see these fields
# (Persona.definition_readable_by); everyone else gets them as null. A new definition field belongs here.
DEFINITION_FIELDS = ("personality",)
REMIXABLE = (
    "Whether other users may read the definition (personality, knowledge), export and clone this persona when "
    "it is public. Anyone may chat with a public persona either way."
)
_HIDDEN = " Null when the caller may not read the definition: someone else's persona that is not remixable."


class PersonaOut(Out):
    id: UUID
    owner_id: UUID
    name: str
    description: str
    personality: str | None = Field(description="The system prompt: who the persona is." + _HIDDEN)
    greeting: str
    # Not a definition field: like `greeting`, what a chat with the persona starts with, so anyone may see it.
    alternate_greetings: list[str] = Field(
        description="The greeting's other variants (a new chat's first message can be swiped to each)"
    )
    tags: list[str]
    visibility: Literal["private", "public"]
    remixable: bool = Field(description=REMIXABLE)
    avatar_file_id: UUID | None
    avatar_url: str | None = Field(
        description="The avatar's bytes, for whoever may read the persona (GET; `?variant=thumbnail` too)"
    )
    cloned_from: UUID | None
    created_at: Timestamp
    updated_at: Timestamp

    @model_validator(mode="before")
    @classmethod
    def _from_persona(cls, data: Any) -> Any:
        if isinstance(data, Persona):
            url = f"/api/v1/personas/{data.id}/avatar" if data.avatar_file_id else None
            return _with_avatar_url(cls, data, url)
        return data

    @classmethod
    def for_viewer(cls, persona: Persona, viewer_id: UUID) -> PersonaOut:
        """The persona as `viewer_id` may see it: every path that returns a persona goes through here, so
        the definition never reaches someone who may not read it."""
        out = cls.model_validate(persona)
        if persona.definition_readable_by(viewer_id):
            return out
        return out.model_copy(update=dict.fromkeys(DEFINITION_FIELDS))


class ScoredPersonaOut(PersonaOut):
    score: float = Field(description="Search rank, or trending score (0 for no recent activity)")

    @classmethod
    def for_viewer_scored(cls, scored: ScoredPersona, viewer_id: UUID) -> ScoredPersonaOut:
        persona = PersonaOut.for_viewer(scored.persona, viewer_id)
        return cls(**persona.model_dump(), score=scored.score)


class KnowledgeEntryOut(Out):
    """A knowledge entry without its text (what lists show)."""

    id: UUID
    persona_id: UUID
    title: str
    source: Literal["text", "file", "character_book"]
    filename: str | None = Field(description="The uploaded file's name (source `file`)")
    content_type: str | None = Field(description="text/plain, text/markdown or application/pdf (source `file`)")
    keys: list[str] = Field(description="A character book entry's trigger words")
    chars: int = Field(ge=0)
    chunks: int = Field(ge=0)
    created_at: Timestamp


class KnowledgeEntryDetail(KnowledgeEntryOut):
    """A knowledge entry with its whole text."""

    content: str


class LedgerEntryOut(Out):
    """One change to the credit balance (the idempotency key stays on the server)."""

    id: int
    delta: int
    balance_after: int = Field(ge=0)
    reason: str
    ref_type: str | None
    ref_id: str | None
    created_at: Timestamp


class AuditEntryOut(Out):
    """One admin action, as the audit log shows it."""

    id: int
    actor_id: UUID | None = Field(description="The admin who acted (null once their account is deleted)")
    action: str = Field(description="user.ban, user.unban, user.promote, user.demote, credits.grant, ...")
    target_type: str
    target_id: str
    details: dict[str, Any]
    created_at: Timestamp


class SubscriptionOut(Out):
    id: UUID
    provider: Literal["stripe", "google_play", "admin"]
    plan: str
    period: Period
    status: str = Field(description="active, past_due, in_grace, canceled, expired, incomplete or paused")
    current_period_end: Timestamp | None
    grace_until: Timestamp | None
    cancel_at_period_end: bool
    created_at: Timestamp


class InvoiceOut(Wire):
    id: str
    provider_subscription_id: str | None
    amount_cents: int
    currency: str
    status: Literal["paid", "payment_failed"]
    hosted_url: str | None
    period_end: Timestamp | None
    created_at: Timestamp

    @classmethod
    def of(cls, invoice: Invoice) -> InvoiceOut:
        return cls(
            id=invoice.id,
            provider_subscription_id=invoice.subscription_id,
            amount_cents=invoice.amount_cents,
            currency=invoice.currency,
            status=invoice.status,  # type: ignore[arg-type]  # the store writes only these two
            hosted_url=invoice.hosted_url,
            period_end=invoice.period_end,
            created_at=invoice.created_at,
        )


NotificationKind = Literal["reply_ready", "job_done", "subscription", "credits", "broadcast"]
NOTIFICATION_KINDS: tuple[NotificationKind, ...] = ("reply_ready", "job_done", "subscription", "credits", "broadcast")
DevicePlatform = Literal["android", "ios", "web"]


class NotificationOut(Out):
    """A stored notification (also the `notification` event's payload)."""

    id: UUID
    kind: NotificationKind
    title: str
    body: str
    data: dict[str, Any] = Field(description="Deep-link data for the app, e.g. a session id; {} when none")
    read_at: Timestamp | None = Field(description="When it was marked read; null while unread")
    created_at: Timestamp


class KindPreference(Wire):
    """How one kind of notification reaches the user."""

    in_app: bool = Field(description="Stored and sent as the `notification` event")
    push: bool = Field(description="Pushed to the user's devices while no socket of theirs is connected")


class PreferencesOut(Wire):
    """Every notification kind with its preference (defaults: both on)."""

    kinds: dict[NotificationKind, KindPreference]


JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobKind = Literal["chat_export", "usage_export", "knowledge_ingest", "broadcast"]


class JobRunOut(Wire):
    """One attempt of a job: when it started and ended, why it failed, when the next try was due."""

    attempt: int
    started_at: Timestamp
    finished_at: Timestamp | None = None
    error: str | None = None
    retry_at: Timestamp | None = Field(default=None, description="When the next attempt was scheduled (backoff)")


class JobOut(Out):
    """A background job, as its owner sees it (GET /jobs/{id}); `result` holds a signed download `url`
    where the job made a file."""

    id: UUID
    kind: str = Field(description="chat_export, usage_export, knowledge_ingest, broadcast")
    status: JobStatus
    progress: float = Field(ge=0, le=1)
    step: str | None = Field(description="What the job is doing now, for people")
    attempts: int = Field(description="Attempts started so far")
    max_attempts: int
    result: dict[str, Any] | None = Field(description="What the job produced (succeeded jobs); null before")
    error: str | None = Field(description="Why the last attempt failed; null when it did not")
    runs: list[JobRunOut] = Field(description="Every attempt, oldest first")
    created_at: Timestamp
    updated_at: Timestamp
    finished_at: Timestamp | None
