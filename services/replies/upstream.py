"""The provider's side of a reply: open its stream with retries before the first token, then put each
piece on the reply's queue, with a timeout for the first piece and between pieces."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from providers.ai.base import AIProvider, Piece, Prompt, ProviderError
from services.replies.settings import ReplySettings
from services.replies.stream import QueueItem

log = structlog.get_logger(__name__)


def _retryable(err: BaseException) -> bool:
    return isinstance(err, ProviderError) and err.retryable


class Upstream:
    def __init__(self, provider: AIProvider, settings: ReplySettings) -> None:
        self._provider = provider
        self._settings = settings

    async def produce(self, prompt: Prompt, queue: asyncio.Queue[QueueItem]) -> None:
        """Upstream → queue: pieces, then None, or the error. Cancelled (by stop or shutdown) it closes the
        upstream request at once."""
        try:
            iterator, first = await self._open(prompt)
            if first is not None:
                queue.put_nowait(first)
                await self._rest(iterator, queue)
            queue.put_nowait(None)
        except asyncio.CancelledError:
            raise
        except ProviderError as err:
            queue.put_nowait(err)
        except Exception as err:  # a provider bug must end the reply, not hang it
            log.exception("provider failed unexpectedly")
            queue.put_nowait(ProviderError("provider_error", f"AI provider failed: {type(err).__name__}"))

    async def _open(self, prompt: Prompt) -> tuple[AsyncIterator[Piece], Piece | None]:
        """Open the upstream stream and wait for its first piece, retrying transient failures (429, 5xx,
        timeouts) with backoff; once a token has reached the user a failure is final."""
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._settings.max_attempts),
            wait=wait_exponential_jitter(initial=0.2, max=2.0),
            retry=retry_if_exception(_retryable),
            reraise=True,
        ):
            with attempt:
                iterator = aiter(self._provider.stream(prompt))
                try:
                    async with asyncio.timeout(self._settings.first_token_timeout):
                        return iterator, await anext(iterator)
                except StopAsyncIteration:
                    return iterator, None
                except TimeoutError as err:
                    with contextlib.suppress(Exception):
                        await iterator.aclose()  # type: ignore[attr-defined]
                    raise ProviderError("provider_timeout", "no answer from the AI provider", retryable=True) from err
        raise AssertionError("unreachable")

    async def _rest(self, iterator: AsyncIterator[Piece], queue: asyncio.Queue[QueueItem]) -> None:
        """The pieces after the first, until the provider ends; silence past the idle timeout fails."""
        while True:
            try:
                async with asyncio.timeout(self._settings.idle_timeout):
                    piece = await anext(iterator)
            except StopAsyncIteration:
                return
            except TimeoutError as err:
                raise ProviderError("provider_timeout", "the AI provider stopped sending") from err
            queue.put_nowait(piece)
