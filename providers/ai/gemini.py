"""Gemini through google-genai (async streaming, system instruction, safety settings, usage)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from providers.ai.base import Piece, Prompt, ProviderError, Turn, Usage, error_for_status

SAFETY = [
    types.SafetySetting(category=category, threshold=types.HarmBlockThreshold.BLOCK_MEDIUM_AND_ABOVE)
    for category in (
        types.HarmCategory.HARM_CATEGORY_HARASSMENT,
        types.HarmCategory.HARM_CATEGORY_HATE_SPEECH,
        types.HarmCategory.HARM_CATEGORY_SEXUALLY_EXPLICIT,
        types.HarmCategory.HARM_CATEGORY_DANGEROUS_CONTENT,
    )
]


def _content(turn: Turn) -> types.Content:
    """A turn as Gemini content: its images as inline data (before the text, as Gemini advises), then
    the text with each attachment's block."""
    images = [types.Part.from_bytes(data=a.data, mime_type=a.content_type) for a in turn.images if a.data]
    return types.Content(
        role="model" if turn.role == "assistant" else "user", parts=[*images, types.Part(text=turn.prompt_text)]
    )


class GeminiProvider:
    name = "gemini"

    def __init__(self, *, api_key: str, model: str, base_url: str | None, timeout_seconds: float) -> None:
        self.model = model
        options = types.HttpOptions(
            api_version="v1beta",  # pinned explicitly: 3.x defaults to v1
            base_url=base_url,
            timeout=int(timeout_seconds * 1000),  # milliseconds
        )
        # Retries are ours (before the first token only), so the SDK's stay off.
        self._client = genai.Client(api_key=api_key, http_options=options)

    async def stream(self, prompt: Prompt) -> AsyncIterator[Piece]:
        contents = [_content(t) for t in prompt.turns]
        config = types.GenerateContentConfig(
            system_instruction=prompt.system or None,
            safety_settings=SAFETY,
            max_output_tokens=prompt.max_output_tokens,
            temperature=prompt.temperature,
        )
        usage: Usage | None = None
        try:
            response = await self._client.aio.models.generate_content_stream(
                model=self.model, contents=contents, config=config
            )
            async for chunk in response:
                meta = chunk.usage_metadata
                if meta is not None and meta.total_token_count is not None:
                    usage = Usage(
                        prompt_tokens=meta.prompt_token_count or 0,
                        completion_tokens=meta.candidates_token_count or 0,
                        total_tokens=meta.total_token_count or 0,
                    )
                text = chunk.text  # None when blocked or empty
                if text:
                    yield Piece(text=text)
        except genai_errors.APIError as err:
            raise error_for_status(int(err.code or 500), str(err.message or err)) from err
        except (httpx.TimeoutException, TimeoutError) as err:
            raise ProviderError("provider_timeout", "the AI provider timed out", retryable=True) from err
        except (httpx.TransportError, OSError) as err:
            raise ProviderError(
                "provider_unavailable", f"connection to the AI provider failed: {err}", retryable=True
            ) from err
        except ValueError as err:  # a malformed or cut stream
            raise ProviderError("provider_error", f"bad response from the AI provider: {err}") from err
        if usage is not None:
            yield Piece(usage=usage)

    async def aclose(self) -> None:
        await self._client.aio.aclose()
