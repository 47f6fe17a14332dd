"""README's Python client example, run as it is written against a real `python -m server` process: it signs
up (then, run again, logs in), sends a message and prints the streamed reply, which must be the stored one."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import free_port
from tests.processes import ROOT, _start, _stop, _wait_healthy

EXAMPLE_HEADING = "## Python client example"
# What the example prints: the user's line, the persona's name, the reply as it streamed, then the ending.
OUTPUT = re.compile(
    r"\Ayou: Hello! Who are you\?\n(?P<name>[^:\n]+): (?P<reply>.+)\n\(complete, \d+ tokens\)\n\Z", re.DOTALL
)


def readme_example() -> str:
    """The first ```python block under the README's client-example heading."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(EXAMPLE_HEADING) :]
    match = re.search(r"^```python\n(.*?)^```$", section, re.DOTALL | re.MULTILINE)
    assert match, "no python block under the client example heading"
    return match.group(1)


async def run_example(code: str, base_url: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLOR_")}
    env["PARLOR_URL"] = base_url
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    except TimeoutError:
        proc.kill()
        raise
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def stored_replies(base_url: str) -> list[str]:
    """Every assistant message of the example's account, oldest chat first."""
    async with aiohttp.ClientSession(base_url) as http:
        login = await http.post("/api/v1/auth/login", json={"email": "me@example.com", "password": "a long password"})
        assert login.status == 200, await login.text()
        auth = {"Authorization": f"Bearer {(await login.json())['access_token']}"}
        sessions = (await (await http.get("/api/v1/chat/sessions", headers=auth)).json())["items"]
        replies = []
        for session in sorted(sessions, key=lambda s: s["created_at"]):
            page: dict[str, Any] = await (
                await http.get(f"/api/v1/chat/sessions/{session['id']}/messages", headers=auth)
            ).json()
            replies += [m["content"] for m in page["items"] if m["role"] == "assistant"]
        return replies


async def test_readme_client_example_prints_the_streamed_reply(tmp_path: Path, empty_database: Any) -> None:
    code = readme_example()
    port = free_port()
    proc = _start(
        tmp_path,
        PORT=str(port),
        DATABASE_URL=empty_database(),
        JWT_SECRET="r" * 48,
        DATA_DIR=str(tmp_path / "data"),
        AI_PROVIDER="demo",
        DEMO_TOKEN_DELAY_MS="5",
        ARGON2_TIME_COST="1",
        ARGON2_MEMORY_KIB="8192",
    )
    try:
        await _wait_healthy(port)
        base_url = f"http://127.0.0.1:{port}"
        # First run: a new account (sign-up) and a new persona; second run: the account exists (login).
        outputs = [await run_example(code, base_url) for _ in range(2)]
        replies = await stored_replies(base_url)
    finally:
        _stop(proc)

    assert len(replies) == 2
    for output, stored in zip(outputs, replies, strict=True):
        match = OUTPUT.match(output)
        assert match, output
        assert match["name"] == "Ada"
        # What was printed chunk by chunk is exactly the reply the server stored: nothing lost, nothing twice.
        assert match["reply"] == stored
        assert stored.startswith("[demo] Ada here.") and "Hello! Who are you?" in stored
