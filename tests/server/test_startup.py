"""`python -m server` start-up: the log says which URL to open; a busy port is one clear line, not a
traceback, and a non-zero exit before anything else starts."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

from server.config import Settings
from tests.helpers import free_port
from tests.processes import LOW_COST, _start, _stop, _wait_healthy


def log_lines(tmp_path: Path, port: int) -> list[dict[str, object]]:
    text = (tmp_path / f"server-{port}.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_log_says_which_url_to_open(settings: Settings, tmp_path: Path) -> None:
    assert settings.database_url is not None
    port = free_port()
    proc = _start(tmp_path, PORT=str(port), DATABASE_URL=settings.database_url, LOG_FORMAT="json", **LOW_COST)
    try:
        await _wait_healthy(port)
    finally:
        assert _stop(proc) == 0
    urls = [line.get("url") for line in log_lines(tmp_path, port) if line.get("url")]
    assert urls == [f"http://127.0.0.1:{port}/"]  # the web app; the API docs beside it


def test_busy_port_is_one_clear_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # No DATABASE_URL: had it got that far, the embedded PostgreSQL would have been started.
        proc = _start(tmp_path, PORT=str(port), LOG_FORMAT="json", **LOW_COST)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code != 0
    text = (tmp_path / f"server-{port}.log").read_text()
    assert "Traceback" not in text
    errors = [line for line in log_lines(tmp_path, port) if line.get("level") == "error"]
    assert len(errors) == 1, text
    assert f"127.0.0.1:{port}" in str(errors[0]["event"]) and "in use" in str(errors[0]["event"])
    assert not (tmp_path / ".data" / "postgres").exists()


def test_docs_url_for_wildcard_and_ipv6_hosts() -> None:
    from server.__main__ import docs_url

    assert docs_url("0.0.0.0", 8080) == "http://127.0.0.1:8080/api/docs"
    assert docs_url("::", 8080) == "http://[::1]:8080/api/docs"
    assert docs_url("parlor.local", 80) == "http://parlor.local:80/api/docs"
