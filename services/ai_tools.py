"""One-shot AI helpers outside a chat: sentiment of a text, and rewriting a persona description. Provider
failures come out as AppErrors (502, or 504 for a timeout) with the provider's error code."""

from __future__ import annotations

import asyncio
import re

from core.errors import AppError, Code
from providers.ai.base import AIProvider, Prompt, ProviderError, Turn

SENTIMENT_SYSTEM = (
    "Classify the sentiment of the user's text. Answer with exactly one word: positive, neutral or negative."
)
ENHANCE_SYSTEM = (
    "Rewrite the user's persona description into a vivid, specific character brief for a chat persona: "
    "voice, personality, background, how they talk. Keep it under 200 words. Answer with the brief only."
)
_LABEL = re.compile(r"\b(positive|neutral|negative)\b", re.I)


class AITools:
    def __init__(self, provider: AIProvider, *, timeout_seconds: float) -> None:
        self._provider = provider
        self._timeout = timeout_seconds

    async def _complete(self, prompt: Prompt) -> str:
        parts: list[str] = []
        try:
            async with asyncio.timeout(self._timeout):
                async for piece in self._provider.stream(prompt):
                    parts.append(piece.text)
        except TimeoutError as err:
            raise AppError("the AI provider timed out", code="provider_timeout", status=504) from err
        except ProviderError as err:
            status = 504 if err.code == Code.PROVIDER_TIMEOUT else 502
            raise AppError(err.message, code=err.code, status=status) from err
        return "".join(parts).strip()

    async def sentiment(self, text: str) -> str:
        answer = await self._complete(
            Prompt(system=SENTIMENT_SYSTEM, turns=[Turn("user", text)], max_output_tokens=8, task="sentiment")
        )
        match = _LABEL.search(answer)
        return match.group(1).lower() if match else "neutral"

    async def enhance_prompt(self, text: str) -> str:
        answer = await self._complete(
            Prompt(system=ENHANCE_SYSTEM, turns=[Turn("user", text)], max_output_tokens=600, task="enhance")
        )
        if not answer:
            raise AppError("the AI provider returned no text", code="empty_reply", status=502)
        return answer
