"""The one interface every AI provider implements, and the errors they raise."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


def size_label(size: int) -> str:
    """A file size as people read it: 830 B, 12 KB, 3.4 MB."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{round(size / 1024)} KB"
    return f"{size / (1024 * 1024):.1f} MB"


@dataclass(frozen=True)
class Attachment:
    """A file a user turn carries. `data`: an image's bytes, sent to the model as an image part; `text`: the
    text of a text, Markdown or PDF file, already cut to the prompt's budget; neither: a file the model only
    hears about (audio, an image of an earlier turn, text that did not fit or could not be read), with
    `note` saying why."""

    filename: str
    content_type: str
    size: int
    data: bytes | None = None
    text: str | None = None
    note: str = ""

    @property
    def is_image(self) -> bool:
        return self.content_type.startswith("image/")

    def block(self) -> str:
        """How the attachment reads in the turn's text (an image's bytes go beside it as a part)."""
        if self.text is not None:
            header = f"[Attached: {self.filename}" + (f" ({self.note})" if self.note else "") + "]"
            return f"{header}\n{self.text}"
        if self.data is not None:
            return f"[Attached image: {self.filename}]"
        described = f"{self.filename} ({self.content_type}, {size_label(self.size)})"
        return f"[Attached: {described}" + (f": {self.note}" if self.note else "") + "]"


@dataclass(frozen=True)
class Turn:
    role: Literal["user", "assistant"]
    text: str
    attachments: tuple[Attachment, ...] = ()

    @property
    def images(self) -> tuple[Attachment, ...]:
        """The attachments whose bytes go to the model as image parts."""
        return tuple(a for a in self.attachments if a.data is not None)

    @property
    def prompt_text(self) -> str:
        """What the model reads: the message text, then one block per attachment (text, or a mention)."""
        if not self.attachments:
            return self.text
        return "\n\n".join([self.text, *(a.block() for a in self.attachments)])


@dataclass(frozen=True)
class Prompt:
    system: str
    turns: list[Turn]
    max_output_tokens: int = 1024
    temperature: float | None = None
    # What the call is for: lets the offline demo provider give a sensible answer to every task.
    task: Literal["chat", "sentiment", "enhance"] = "chat"
    persona_name: str = ""


@dataclass(frozen=True)
class Piece:
    """One streamed delta; the last piece of a stream usually carries usage."""

    text: str = ""
    usage: Usage | None = None


@dataclass
class ProviderError(Exception):
    """A provider failure with a stable code for `ai:error`; `retryable` errors may be retried before
    the first token reaches the user."""

    code: str
    message: str
    retryable: bool = False
    status: int | None = field(default=None)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class AIProvider(Protocol):
    name: str
    model: str

    def stream(self, prompt: Prompt) -> AsyncIterator[Piece]:
        """Yield text deltas as they arrive. Cancelling the consuming task closes the upstream request."""
        ...

    async def aclose(self) -> None: ...


def error_for_status(status: int, message: str) -> ProviderError:
    """The common mapping of an upstream HTTP status to a stable code."""
    if status == 429:
        return ProviderError("provider_rate_limited", message, retryable=True, status=status)
    if status >= 500:
        return ProviderError("provider_unavailable", message, retryable=True, status=status)
    if status in (401, 403):
        return ProviderError("provider_auth", message, status=status)
    return ProviderError("provider_error", message, status=status)
