"""Embedded defaults for the zero-configuration run: PostgreSQL from `pgserver`, a generated JWT secret."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
import warnings
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)


async def start_embedded_postgres(data_dir: Path) -> tuple[str, Any]:
    """Start (or join) the embedded PostgreSQL in DATA_DIR/postgres; returns its DSN and handle."""
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
        warnings.simplefilter("ignore")
        import pgserver  # imported lazily: production runs never need it
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # it logs every initdb/pg_ctl line

    pg_dir = (data_dir / "postgres").resolve()
    pg_dir.parent.mkdir(parents=True, exist_ok=True)
    # get_server blocks while initdb/pg_ctl run; 'stop' shuts it down when the last user exits.
    server = await asyncio.to_thread(pgserver.get_server, pg_dir, cleanup_mode="stop")
    dsn = server.get_uri()
    log.info("embedded postgresql started", data_dir=str(pg_dir))
    return dsn, server


def load_or_create_secret(data_dir: Path, name: str = "jwt_secret") -> str:
    """A secret generated once into DATA_DIR, shared by every process using that folder."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / name
    try:
        # O_EXCL: when several processes start together exactly one writes, the others read.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):
            value = path.read_text().strip()
            if value:
                return value
            time.sleep(0.05)
        raise RuntimeError(f"{path} is empty") from None
    value = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    log.info("generated a signing secret for this data folder", path=str(path))
    return value
