"""A persona's knowledge base: the service (entries, files, the chunks for a prompt, Character Cards), how
text is chunked, how files are read, and how a file is ingested a bit at a time with progress."""

from services.knowledge.chunking import CHUNK_MAX, CHUNK_MIN, split_into_chunks
from services.knowledge.extraction import LARGE_FILE_BYTES, LARGE_PDF_PAGES, TEXT_MAX_CHARS, is_large_file
from services.knowledge.ingest import Progress
from services.knowledge.service import KnowledgeChunk, KnowledgeService

__all__ = [
    "CHUNK_MAX",
    "CHUNK_MIN",
    "LARGE_FILE_BYTES",
    "LARGE_PDF_PAGES",
    "TEXT_MAX_CHARS",
    "KnowledgeChunk",
    "KnowledgeService",
    "Progress",
    "is_large_file",
    "split_into_chunks",
]
