"""One reply's stream on this process: the queue that carries the provider's pieces, the end, errors and
the stop request, and the loop that coalesces pieces into chunks over the window."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from providers.ai.base import Piece, ProviderError


class Stop:
    """Put on a reply's queue by `ai:stop` (or shutdown)."""


STOP = Stop()
# A piece, the end (None), the producer's error, or the stop request: one queue, no task per piece.
QueueItem = Piece | BaseException | Stop | None
SendChunk = Callable[[int, str], Awaitable[None]]


@dataclass
class Live:
    """A reply running on this process, by stream id."""

    queue: asyncio.Queue[QueueItem] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None

    def stop(self) -> None:
        self.queue.put_nowait(STOP)


class ReplyStream:
    """Pieces in, chunks out: text is held until `window` seconds have passed since the last chunk, then
    sent as the next chunk (index 0, 1, ...). Ends on the provider's end, its error or a stop; what it
    ended with is read from `texts`, `usage`, `error` and `stopped`."""

    def __init__(self, queue: asyncio.Queue[QueueItem], *, window: float, send: SendChunk) -> None:
        self._queue = queue
        self._window = window
        self._send = send
        self._held: list[str] = []
        self._last_send = 0.0
        self.texts: list[str] = []  # the chunks sent
        self.usage: dict[str, Any] | None = None
        self.error: ProviderError | None = None
        self.stopped = False

    @property
    def delivered_nothing(self) -> bool:
        """Failed, or stopped before the first chunk: the answered messages' charges come back."""
        return self.error is not None or (self.stopped and not self.texts)

    def fail(self, error: ProviderError) -> None:
        self.error = error

    async def run(self, producer: Coroutine[Any, Any, None]) -> None:
        """Run `producer` (provider → queue) and coalesce what it puts on the queue until the end."""
        task = asyncio.create_task(producer)
        try:
            while await self._step():
                pass
        except Exception:
            task.cancel()  # closes the upstream request
            raise
        if not task.done():  # a stop: the provider may still be sending
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.error is None:
            await self._flush()
            if not self.texts and not self.stopped:
                self.error = ProviderError("empty_reply", "the AI provider returned no text (blocked or empty)")

    async def _step(self) -> bool:
        """Take the next item, or send what is held when the window closes; False once the stream ended."""
        try:
            async with asyncio.timeout(self._until_window_closes()):
                item = await self._queue.get()
        except TimeoutError:
            await self._flush()  # the coalescing window closed with nothing new
            return True
        if isinstance(item, Stop):
            self.stopped = True
            return False
        if item is None:
            return False
        if isinstance(item, BaseException):
            self.error = item if isinstance(item, ProviderError) else ProviderError("provider_error", str(item))
            return False
        await self._take(item)
        return True

    def _until_window_closes(self) -> float | None:
        if not self._held:
            return None
        return max(0.0, self._last_send + self._window - time.monotonic())

    async def _take(self, piece: Piece) -> None:
        if piece.usage is not None:
            self.usage = piece.usage.as_dict()
        if piece.text:
            self._held.append(piece.text)
            if time.monotonic() - self._last_send >= self._window:
                await self._flush()

    async def _flush(self) -> None:
        if not self._held:
            return
        text = "".join(self._held)
        self._held.clear()
        index = len(self.texts)
        self.texts.append(text)
        self._last_send = time.monotonic()
        await self._send(index, text)
