"""The Code enum is the catalogue of error codes: every code the source gives a client is listed there."""

from __future__ import annotations

import re
from pathlib import Path

from core.errors import AppError, Code, NotFound

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("core", "handlers", "realtime", "scheduler", "server", "services", "providers", "storage")
# Where the source hands out an error code: AppError(..., code="x"), class defaults, socket ack
# failed("x", ...), ProviderError("x", ...), and {"code": "x"} in connect refusals and `ai:error` payloads.
PATTERNS = (
    re.compile(r"""\bcode\s*=\s*"([a-z_]+)\""""),
    re.compile(r"""\bfailed\(\s*"([a-z_]+)\""""),
    re.compile(r"""\bProviderError\(\s*"([a-z_]+)\""""),
    re.compile(r""""code":\s*"([a-z_]+)\""""),
)


def _codes_in_source() -> dict[str, str]:
    found: dict[str, str] = {}
    for layer in LAYERS:
        for path in (ROOT / layer).rglob("*.py"):
            text = path.read_text()
            for pattern in PATTERNS:
                for match in pattern.finditer(text):
                    found.setdefault(match.group(1), str(path.relative_to(ROOT)))
    return found


def test_every_code_in_the_source_is_in_the_catalogue() -> None:
    found = _codes_in_source()
    assert len(found) > 30  # the scan sees the source at all
    missing = {code: where for code, where in found.items() if code not in Code.__members__.values()}
    assert missing == {}


def test_codes_are_plain_strings_on_the_wire() -> None:
    err = NotFound("gone")
    assert err.to_dict() == {"code": "not_found", "message": "gone"}
    assert AppError("x", code=Code.NO_PERSONA, status=409).code == "no_persona"
