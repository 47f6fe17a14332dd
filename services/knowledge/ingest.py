"""A knowledge file turned into an entry to store, a bit at a time: a PDF page by page and the text a batch of
chunks at a time, each bit in a worker thread. Between the bits the coroutine is back on the event loop, so
it reports progress there and a cancel stops it within one bit's work."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator

from services.knowledge.chunking import Prepared, iter_chunks
from services.knowledge.extraction import PDF, PdfPages, finish_text, is_pdf, read_text_file

# progress(fraction, step): fraction from 0.0 to 1.0, never decreasing; step a short phrase for people
# ("page 3 of 40", "chunking: 150 chunks", "storing 220 chunks", "stored").
Progress = Callable[[float, str], Awaitable[None]]

# Where each stage ends on the 0..1 scale. Reading a PDF's pages is most of its work; a text file's reading
# is one quick step and its chunking the longest; storing is one transaction whose length is not known.
PAGES_END = 0.8
TEXT_READ_END = 0.05
CHUNKED = 0.9
# Chunks made per worker-thread call: about 50 KB of text, a few milliseconds.
CHUNK_BATCH = 50


class Reporter:
    """Calls `progress` (None: nobody listens) with fractions kept within 0..1 and never going back."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._last = 0.0

    async def __call__(self, fraction: float, step: str) -> None:
        if self._progress is None:
            return
        self._last = min(max(fraction, self._last), 1.0)
        await self._progress(self._last, step)


async def read_file(data: bytes, filename: str | None, title: str, report: Reporter) -> tuple[str, Prepared]:
    """(content type, the entry to store) from a TXT, Markdown or PDF file's bytes, with the 415/422 of
    `extract_file_text`. Reports up to CHUNKED; the caller reports storing."""
    if is_pdf(data):
        pdf = await asyncio.to_thread(PdfPages, data)
        while pdf.read < pdf.count:
            await asyncio.to_thread(pdf.read_next)
            await report(PAGES_END * pdf.read / pdf.count, f"page {pdf.read} of {pdf.count}")
        content_type, text = PDF, await asyncio.to_thread(lambda: finish_text(PDF, pdf.text()))
        start = PAGES_END
    else:
        content_type, text = await asyncio.to_thread(read_text_file, data, filename)
        start = TEXT_READ_END
        await report(start, "read the text")
    chunks = await _chunk(text, report, start=start)
    return content_type, Prepared(title, text, chunks)


async def _chunk(text: str, report: Reporter, *, start: float) -> list[str]:
    """`split_into_chunks(text)`, CHUNK_BATCH chunks per worker-thread call, reporting from `start` to
    CHUNKED by how much of the text was read."""
    pieces = iter_chunks(text)
    chunks: list[str] = []
    while batch := await asyncio.to_thread(_take, pieces, CHUNK_BATCH):
        chunks.extend(chunk for chunk, _ in batch)
        done = min(batch[-1][1] / len(text), 1.0)
        await report(start + (CHUNKED - start) * done, f"chunking: {len(chunks)} chunks")
    return chunks


def _take(pieces: Iterator[tuple[str, int]], count: int) -> list[tuple[str, int]]:
    return list(itertools.islice(pieces, count))
