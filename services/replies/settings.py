"""What a reply needs to know from the configuration: a plain frozen object, not the environment."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReplySettings:
    first_token_timeout: float
    idle_timeout: float
    max_attempts: int
    coalesce_seconds: float
    context_tokens: int
    max_output_tokens: int
    knowledge_chunks: int
    lease_seconds: float
