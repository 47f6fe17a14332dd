"""Any OpenAI-compatible chat-completions server (OpenAI, Ollama, vLLM, LM Studio) via the openai SDK."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any, cast

import openai

from providers.ai.base import Piece, Prompt, ProviderError, Turn, Usage, error_for_status


def _content(turn: Turn) -> str | list[dict[str, Any]]:
    """A turn's content: plain text, or with images a list of parts, the text first and each image as
    an `image_url` data URL (the chat-completions format every OpenAI-compatible server takes)."""
    if not turn.images:
        return turn.prompt_text
    parts: list[dict[str, Any]] = [{"type": "text", "text": turn.prompt_text}]
    for image in turn.images:
        encoded = base64.b64encode(image.data or b"").decode("ascii")
        parts.append({"type": "image_url", "image_url": {"url": f"data:{image.content_type};base64,{encoded}"}})
    return parts


class OpenAICompatProvider:
    name = "openai"

    def __init__(self, *, base_url: str | None, api_key: str | None, model: str, timeout_seconds: float) -> None:
        self.model = model
        # max_retries=0: retries happen above, and only before the first token.
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key or "not-needed", timeout=timeout_seconds, max_retries=0
        )

    async def stream(self, prompt: Prompt) -> AsyncIterator[Piece]:
        messages: list[dict[str, Any]] = []
        if prompt.system:
            messages.append({"role": "system", "content": prompt.system})
        messages += [{"role": t.role, "content": _content(t)} for t in prompt.turns]
        usage: Usage | None = None
        try:
            stream = await self._client.chat.completions.create(
                model=self.model,
                messages=cast(Any, messages),
                stream=True,
                stream_options={"include_usage": True},
                max_tokens=prompt.max_output_tokens,
                temperature=prompt.temperature,
            )
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = Usage(
                        prompt_tokens=chunk.usage.prompt_tokens,
                        completion_tokens=chunk.usage.completion_tokens,
                        total_tokens=chunk.usage.total_tokens,
                    )
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        yield Piece(text=choice.delta.content)
        except openai.APIStatusError as err:
            raise error_for_status(err.status_code, err.message) from err
        except openai.APITimeoutError as err:
            raise ProviderError("provider_timeout", "the AI provider timed out", retryable=True) from err
        except openai.APIConnectionError as err:
            raise ProviderError("provider_unavailable", "connection to the AI provider failed", retryable=True) from err
        if usage is not None:
            yield Piece(usage=usage)

    async def aclose(self) -> None:
        await self._client.close()
