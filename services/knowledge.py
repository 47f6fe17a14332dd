"""KnowledgeService: per-persona knowledge base (text entries and TXT/Markdown/PDF files split into
chunks) and the chunks most relevant to a message. (Being filled in.)"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from services.personas import PersonaService


@dataclass(frozen=True)
class KnowledgeChunk:
    content: str
    rank: float


class KnowledgeService:
    def __init__(self, *, pool: asyncpg.Pool, personas: PersonaService, upload_max_bytes: int) -> None:
        self._pool = pool
        self._personas = personas
        self._upload_max_bytes = upload_max_bytes
