"""The offline `demo` provider: deterministic, labelled replies so the server works with no AI key."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from providers.ai.base import Attachment, Piece, Prompt, Turn, Usage, size_label

LABEL = "[demo]"
_POSITIVE = {"good", "great", "love", "happy", "thanks", "thank", "awesome", "nice", "wonderful", "excellent", "like"}
_NEGATIVE = {"bad", "hate", "sad", "angry", "terrible", "awful", "horrible", "worst", "annoyed", "upset", "dislike"}


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def sentiment_label(text: str) -> str:
    words = re.findall(r"[a-z']+", text.lower())
    score = sum(w in _POSITIVE for w in words) - sum(w in _NEGATIVE for w in words)
    return "positive" if score > 0 else "negative" if score < 0 else "neutral"


def _seen(attachments: tuple[Attachment, ...]) -> str:
    """One sentence naming each file the turn carried, so that a newcomer sees attachments arrive."""
    if not attachments:
        return ""
    named = [
        f"your {'image' if a.is_image else 'file'} {a.filename} ({a.content_type}, {size_label(a.size)})"
        for a in attachments
    ]
    listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
    return f"I see {listed}. "


class DemoProvider:
    name = "demo"
    model = "demo-1"

    def __init__(self, *, token_delay_seconds: float = 0.03) -> None:
        self._delay = token_delay_seconds

    def _answer(self, prompt: Prompt) -> str:
        turn = next((t for t in reversed(prompt.turns) if t.role == "user"), Turn("user", ""))
        last = turn.text
        if prompt.task == "sentiment":
            return sentiment_label(last)
        if prompt.task == "enhance":
            cleaned = " ".join(last.split())
            return (
                f"{LABEL} {cleaned.rstrip('.')}. Speaks in a consistent voice, stays in character, asks "
                "follow-up questions, and keeps replies concise and warm."
            )
        name = prompt.persona_name or "Your persona"
        quoted = " ".join(last.split())[:200]
        return (
            f"{LABEL} {name} here. You said: \u201c{quoted}\u201d. {_seen(turn.attachments)}This reply comes "
            "from the built-in demo provider; set GEMINI_API_KEY, or AI_PROVIDER=openai with OPENAI_BASE_URL, "
            "for real replies."
        )

    async def stream(self, prompt: Prompt) -> AsyncIterator[Piece]:
        answer = self._answer(prompt)
        words = re.findall(r"\S+\s*", answer)
        for word in words:
            if self._delay:
                await asyncio.sleep(self._delay)
            yield Piece(text=word)
        prompt_tokens = _tokens(prompt.system) + sum(_tokens(t.prompt_text) for t in prompt.turns)
        yield Piece(usage=Usage(prompt_tokens, len(words), prompt_tokens + len(words)))

    async def aclose(self) -> None:
        return None
