"""Entities every layer shares, as plain frozen dataclasses: the stores return them, services work on
them, and the wire models in core.wire turn them into what clients read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class Principal:
    """The signed-in user as handlers, socket events and services see them: who they are and what they may
    do, and nothing secret (no password hash). Made by AuthService from the stored user."""

    id: UUID
    email: str
    display_name: str
    role: str
    plan: str
    timezone: str
    session_version: int
    created_at: datetime
    has_password: bool
    firebase_linked: bool
    banned: bool
    avatar_file_id: UUID | None = None  # one of the user's own image files

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class ChatSession:
    """A conversation with one persona; `last_seq` is its newest message's seq."""

    id: UUID
    user_id: UUID
    persona_id: UUID | None
    title: str
    pinned: bool
    last_seq: int
    created_at: datetime
    updated_at: datetime
    last_rev: int = 0  # the newest rev of any of its messages (sync by rev)


@dataclass(frozen=True)
class Message:
    """A stored chat message; seqs are gap-free per session."""

    id: UUID
    session_id: UUID
    seq: int
    role: str
    content: str
    status: str
    client_id: UUID | None
    reply_to: UUID | None
    usage: dict[str, Any] | None
    attachments: list[Any]
    created_at: datetime
    # Raised from the session's counter by every change to the message (sync by rev).
    rev: int = 0
    kind: str = "message"  # "greeting": the persona's greeting, seq 1
    variant: int = 0  # the selected variant; content, status and usage are its
    variants: list[dict[str, Any]] = field(default_factory=list)  # stored once there is more than one
    edited_at: datetime | None = None

    @property
    def all_variants(self) -> list[dict[str, Any]]:
        """Every variant of a reply ({index, content, status, usage, created_at}); a reply with one has it
        alone; user messages and tombstones have none."""
        if self.variants:
            return self.variants
        if self.role != "assistant" or self.status == "deleted":
            return []
        return [
            {
                "index": 0,
                "content": self.content,
                "status": self.status,
                "usage": self.usage,
                "created_at": self.created_at,
            }
        ]


@dataclass(frozen=True)
class Persona:
    id: UUID
    owner_id: UUID
    name: str
    description: str
    personality: str
    greeting: str
    # The greeting's other variants (SPEC §13), in order; like `greeting`, for whoever may read the persona.
    alternate_greetings: list[str]
    tags: list[str]
    visibility: str
    remixable: bool
    avatar_file_id: UUID | None
    cloned_from: UUID | None
    created_at: datetime
    updated_at: datetime

    @property
    def is_public(self) -> bool:
        return self.visibility == "public"

    def readable_by(self, user_id: UUID) -> bool:
        """May see the persona (name, description, greetings, tags, avatar) and chat with it."""
        return self.owner_id == user_id or self.is_public

    def definition_readable_by(self, user_id: UUID) -> bool:
        """May also see its definition (DEFINITION_FIELDS and the knowledge base), export and clone it."""
        return self.owner_id == user_id or (self.is_public and self.remixable)


@dataclass(frozen=True)
class PersonaDraft:
    """What a new persona is made of (create, clone, Character Card import); the service adds the owner."""

    name: str
    description: str = ""
    personality: str = ""
    greeting: str = ""
    alternate_greetings: Sequence[str] = ()
    tags: Sequence[str] = ()
    visibility: str = "private"
    remixable: bool = False


@dataclass(frozen=True)
class ScoredPersona:
    """A persona with its search rank or trending score."""

    persona: Persona
    score: float


@dataclass(frozen=True)
class KnowledgeEntry:
    """An entry without its text (what lists show)."""

    id: UUID
    persona_id: UUID
    title: str
    source: str
    filename: str | None
    content_type: str | None
    keys: list[str]
    chars: int
    chunks: int
    created_at: datetime


@dataclass(frozen=True)
class KnowledgeDocument:
    """An entry with its whole text."""

    entry: KnowledgeEntry
    content: str


@dataclass(frozen=True)
class Invoice:
    """A Stripe invoice as recorded from its webhooks (the id is Stripe's)."""

    id: str
    user_id: UUID
    subscription_id: str | None
    amount_cents: int
    currency: str
    status: str
    hosted_url: str | None
    period_end: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class SubscriptionState:
    """A subscription as a provider (or the scheduler) last saw it, at provider time `state_at`."""

    provider: str
    external_id: str
    plan: str
    period: str
    status: str
    current_period_end: datetime | None
    grace_until: datetime | None
    cancel_at_period_end: bool
    state_at: datetime


@dataclass(frozen=True)
class Subscription(SubscriptionState):
    """A stored subscription: its last known state, and who it belongs to. The user's plan is derived from
    these (Stripe, Google Play or an admin)."""

    id: UUID
    user_id: UUID
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class CreditChange:
    """A change to a user's credit balance, applied at most once per idempotency key."""

    user_id: UUID
    delta: int  # negative to spend
    reason: str
    idempotency_key: str
    ref_type: str | None = None
    ref_id: str | None = None


@dataclass(frozen=True)
class LedgerEntry:
    """One change to a user's credit balance, applied once per idempotency key."""

    id: int
    delta: int
    balance_after: int
    reason: str
    idempotency_key: str
    ref_type: str | None
    ref_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class StoredFile:
    """An uploaded file: what its row says. Its bytes are in the blob store under `blob_key` (and an image's
    thumbnail under `thumb_key`)."""

    id: UUID
    user_id: UUID
    category: str
    content_type: str
    size: int
    stored_bytes: int
    width: int | None
    height: int | None
    filename: str
    blob_key: str
    thumb_key: str | None
    etag: str
    attached_at: datetime | None
    created_at: datetime

    @property
    def is_image(self) -> bool:
        return self.content_type.startswith("image/")


@dataclass(frozen=True)
class Notification:
    """A notification stored for one user; `read_at` is None while unread."""

    id: UUID
    user_id: UUID
    kind: str
    title: str
    body: str
    data: dict[str, Any]
    read_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class Device:
    """A push device (an FCM registration token) of one user."""

    token: str
    user_id: UUID
    platform: str
    created_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True)
class Job:
    """A background job as its owner sees it. `runs` holds one entry per attempt ({attempt, started_at,
    finished_at, error, retry_at}); `params` is what the job works on."""

    id: UUID
    user_id: UUID
    kind: str
    status: str
    progress: float
    step: str | None
    attempts: int
    max_attempts: int
    priority: int
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    runs: list[dict[str, Any]]
    queue_job_id: int | None
    result_file_id: UUID | None
    result_expires_at: datetime | None
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled")
