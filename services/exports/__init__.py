"""Exports of a user's data as files: transcript.py renders one chat session as JSON, plain text or PDF."""
