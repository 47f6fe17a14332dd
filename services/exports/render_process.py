"""Renders a transcript in a process of its own: a PDF of thousands of messages is seconds of CPU, and in a
thread it would hold the GIL against the event loop (every socket's acks). The process runs at the lowest
CPU priority, reports its progress over a pipe, and is killed when the job is cancelled or the worker
stops, so a cancel takes effect at once whatever the renderer is doing.

Started by `forkserver`, as the image workers are: forking a server with live sockets, pools and threads
is unsafe."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

from services.exports import transcript

# Niceness added in the child (0..19): the server's own work goes first.
NICENESS = 19
# How often the parent looks at the pipe (and so reports progress and notices a cancel).
POLL_SECONDS = 0.2
_CONTEXT = multiprocessing.get_context("forkserver")


class RenderFailed(Exception):
    """The render process failed (its error's name and message), or died without an answer."""


def _child(conn: Connection, fmt: transcript.Format, document: transcript.Transcript) -> None:
    os.nice(NICENESS)
    try:
        data = transcript.render(fmt, document, progress=lambda f: conn.send(("progress", f)))
    except BaseException as err:  # noqa: BLE001 - every failure goes back to the parent as a message
        conn.send(("error", f"{type(err).__name__}: {err}"))
    else:
        conn.send(("done", data))
    finally:
        conn.close()


async def render(
    fmt: transcript.Format, document: transcript.Transcript, progress: Callable[[float | None], Awaitable[None]]
) -> bytes:
    """The file's bytes. `progress(fraction)` is awaited on the loop as the child reports, and
    `progress(None)` every POLL_SECONDS without news; whatever it raises (a cancel) kills the child and goes
    on, as does the cancellation of this coroutine."""
    parent, child = _CONTEXT.Pipe(duplex=False)
    process = _CONTEXT.Process(target=_child, args=(child, fmt, document), name="parlor-export", daemon=True)
    process.start()
    child.close()
    try:
        while True:
            message = await asyncio.to_thread(_next, parent)
            if message is None:
                if not process.is_alive():
                    raise RenderFailed(f"the render process died (exit code {process.exitcode})")
                await progress(None)  # nothing new: the caller still gets to notice a cancel
                continue
            kind, value = message
            if kind == "progress":
                await progress(float(value))
            elif kind == "done":
                return bytes(value)
            else:
                raise RenderFailed(str(value))
    finally:
        if process.is_alive():
            process.kill()
        await asyncio.to_thread(process.join, 5)
        parent.close()


def _next(conn: Connection) -> tuple[str, Any] | None:
    """The child's next message within POLL_SECONDS; None when there is none yet, or the pipe closed."""
    try:
        if conn.poll(POLL_SECONDS):
            message: tuple[str, Any] = conn.recv()
            return message
    except (EOFError, OSError):
        return None
    return None
