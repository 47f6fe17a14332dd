"""Fire-and-forget tasks, kept alive until they end: the event loop holds only weak references to tasks, so
one nobody references can be garbage-collected mid-run."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class TaskSet:
    """Strong references to running tasks, each dropped when its task ends."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        return self.keep(asyncio.create_task(coro, name=name))

    def keep(self, task: asyncio.Task[T]) -> asyncio.Task[T]:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))  # a copy: tasks leave the set as they end

    def cancel_all(self) -> None:
        for task in self:
            task.cancel()
