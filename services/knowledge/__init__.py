"""A persona's knowledge base: the service (entries, files, the chunks for a prompt, Character Cards), how
text is chunked, and how files are read."""

from services.knowledge.chunking import CHUNK_MAX, CHUNK_MIN, split_into_chunks
from services.knowledge.extraction import TEXT_MAX_CHARS
from services.knowledge.service import KnowledgeChunk, KnowledgeService

__all__ = ["CHUNK_MAX", "CHUNK_MIN", "TEXT_MAX_CHARS", "KnowledgeChunk", "KnowledgeService", "split_into_chunks"]
