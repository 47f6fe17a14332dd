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


@dataclass(frozen=True)
class Turn:
    role: Literal["user", "assistant"]
    text: str


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
