"""Uploaded files: deciding a file's type from its content, and making uploaded images safe to serve."""
