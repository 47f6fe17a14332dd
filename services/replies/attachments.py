"""The files a reply's prompt carries, loaded through FilesService for the messages of the conversation.

The messages being answered now send their images' bytes (the processed image that was stored); earlier
messages name their images only, so a long chat does not send every picture again on every turn. Text,
Markdown and PDF files go as their text (extracted off the event loop and cached: a file's bytes never
change), for the messages being answered and the few newest earlier files. Audio is named, not sent. A file
deleted since it was sent is left out; one whose bytes cannot be read is named with a note and logged, and
never fails the reply."""

from __future__ import annotations

import asyncio
import io
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from uuid import UUID

import structlog

from core.entities import Message, StoredFile
from core.errors import AppError
from providers.ai.base import Attachment
from providers.blobs.base import BlobStoreError
from services.files.service import FilesService
from services.knowledge.extraction import extract_file_text

log = structlog.get_logger(__name__)

TEXT_TYPES = frozenset({"text/plain", "text/markdown", "application/pdf"})
# Image bytes sent inline in one request: Gemini refuses requests past 20 MB (base64 adds a third).
IMAGE_BYTES_MAX = 12 * 1024 * 1024
# Text files of earlier messages read for one reply, newest first; older ones are named only.
EARLIER_TEXT_FILES = 8
CACHED_TEXTS = 64

EARLIER_IMAGE = "sent earlier; not shown again"
EARLIER_TEXT = "sent earlier; its text is not repeated"
AUDIO = "audio is not passed to the model"
TOO_MANY_IMAGES = "not shown: the images of this turn are too large together"
UNREADABLE = "could not be loaded"
NO_TEXT = "no text could be read from it"


@dataclass
class _Caps:
    image_bytes: int = IMAGE_BYTES_MAX
    earlier_texts: int = EARLIER_TEXT_FILES


def _file_ids(message: Message) -> list[UUID]:
    """The file ids a stored message lists (file objects; anything else is ignored)."""
    ids: list[UUID] = []
    for entry in message.attachments or ():
        try:
            ids.append(UUID(str(entry["id"])))
        except (TypeError, KeyError, ValueError):
            continue
    return ids


def _first_frame_png(data: bytes) -> bytes:
    """A GIF or animated WebP as a PNG of its first frame: models take still PNG, JPEG and WebP images (Gemini
    refuses GIF). CPU work: run it off the event loop. The bytes are already processed (at most
    IMAGE_MAX_SIDE), so decoding them is bounded."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.seek(0)
        out = io.BytesIO()
        image.convert("RGBA").save(out, "PNG")
    return out.getvalue()


def _is_animated(data: bytes) -> bool:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return bool(getattr(image, "is_animated", False))


async def _model_image(data: bytes, content_type: str) -> tuple[bytes, str]:
    if content_type == "image/gif" or (content_type == "image/webp" and await asyncio.to_thread(_is_animated, data)):
        return await asyncio.to_thread(_first_frame_png, data), "image/png"
    return data, content_type


class AttachmentLoader:
    def __init__(self, files: FilesService, *, max_text_chars: int) -> None:
        self._files = files
        self._max_text_chars = max_text_chars  # more can never fit in the prompt
        self._texts: OrderedDict[UUID, tuple[str | None, str]] = OrderedDict()

    async def load(
        self, user_id: UUID, history: Sequence[Message], pending: Sequence[Message]
    ) -> dict[UUID, tuple[Attachment, ...]]:
        """The attachments of the history's user messages, by message id; `pending` are the messages
        being answered now."""
        wanted = {m.id: _file_ids(m) for m in history if m.role == "user" and m.attachments}
        ids = [i for file_ids in wanted.values() for i in file_ids]
        if not ids:
            return {}
        stored = {f.id: f for f in await self._files.attached(user_id, list(dict.fromkeys(ids)))}
        now = {m.id for m in pending}
        caps = _Caps()
        loaded: dict[UUID, tuple[Attachment, ...]] = {}
        for message in reversed(history):  # newest first: the newest messages get the caps' room
            files = [stored[i] for i in wanted.get(message.id, ()) if i in stored]
            if files:
                current = message.id in now
                plans = [self._plan(f, current=current, caps=caps) for f in files]
                loaded[message.id] = tuple(await asyncio.gather(*plans))
        return loaded

    def _plan(self, stored: StoredFile, *, current: bool, caps: _Caps) -> Awaitable[Attachment]:
        """How one file is sent, decided in message order (the caps are spent here, before anything is
        awaited); the returned coroutine loads it."""
        if stored.is_image:
            if not current:
                return _given(_mention(stored, EARLIER_IMAGE))
            if stored.size > caps.image_bytes:
                return _given(_mention(stored, TOO_MANY_IMAGES))
            caps.image_bytes -= stored.size
            return self._image(stored)
        if stored.content_type in TEXT_TYPES:
            if not current:
                if caps.earlier_texts <= 0:
                    return _given(_mention(stored, EARLIER_TEXT))
                caps.earlier_texts -= 1
            return self._text(stored)
        return _given(_mention(stored, AUDIO if stored.content_type.startswith("audio/") else ""))

    async def _image(self, stored: StoredFile) -> Attachment:
        try:
            data, content_type = await _model_image(await self._files.read_bytes(stored), stored.content_type)
        except (AppError, BlobStoreError, OSError, ValueError) as err:  # Pillow raises OSError/ValueError
            log.warning("attachment not loaded", file_id=str(stored.id), error=f"{type(err).__name__}: {err}")
            return _mention(stored, UNREADABLE)
        return Attachment(stored.filename, content_type, len(data), data=data)

    async def _text(self, stored: StoredFile) -> Attachment:
        cached = self._texts.get(stored.id)
        if cached is None:
            try:
                data = await self._files.read_bytes(stored)
            except (AppError, BlobStoreError, OSError) as err:  # not cached: the store may be back next time
                log.warning("attachment not loaded", file_id=str(stored.id), error=f"{type(err).__name__}: {err}")
                return _mention(stored, UNREADABLE)
            cached = await self._extract(stored, data)
            self._texts[stored.id] = cached
            while len(self._texts) > CACHED_TEXTS:
                self._texts.popitem(last=False)
        else:
            self._texts.move_to_end(stored.id)
        text, note = cached
        if text is None:
            return _mention(stored, note)
        return Attachment(stored.filename, stored.content_type, stored.size, text=text)

    async def _extract(self, stored: StoredFile, data: bytes) -> tuple[str | None, str]:
        try:
            _, text = await asyncio.to_thread(extract_file_text, data, stored.filename)
        except AppError as err:  # no text (a scanned PDF), password-protected, damaged
            log.info("attachment without text", file_id=str(stored.id), reason=str(err))
            return None, NO_TEXT
        return text[: self._max_text_chars], ""


def _mention(stored: StoredFile, note: str) -> Attachment:
    return Attachment(stored.filename, stored.content_type, stored.size, note=note)


async def _given(attachment: Attachment) -> Attachment:
    return attachment
