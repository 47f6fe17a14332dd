"""A local fake of the Gemini API speaking its wire format: `POST /v1beta/models/{model}:streamGenerateContent
?alt=sse` answers `text/event-stream` with one `data: <GenerateContentResponse>` per chunk, the last one
carrying `finishReason` and `usageMetadata`; errors are non-2xx with `{"error": {code, message, status}}`.
Each request takes the next scripted behaviour: delays, errors, hangs and cuts mid-stream."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.server import serve

STATUS_NAMES = {400: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


@dataclass
class Behaviour:
    tokens: list[str] = field(default_factory=lambda: ["Hello", " from", " the", " fake", " Gemini."])
    delay: float = 0.0  # before each token
    status: int = 200  # non-200: answer this error instead of a stream
    cut_after: int | None = None  # close the connection abruptly after this many tokens
    hang: bool = False  # accept, then send nothing
    usage: tuple[int, int, int] = (11, 5, 16)


def _bytes(encoded: str) -> bytes:
    """Proto3 JSON bytes: standard or URL-safe base64, padded or not."""
    encoded = encoded.replace("-", "+").replace("_", "/").rstrip("=")
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)


@dataclass
class Call:
    path: str
    body: dict[str, Any]
    api_key: str | None
    started: float
    ended: float | None = None
    client_gone: bool = False
    tokens_sent: int = 0

    def parts(self, role: str = "user") -> list[dict[str, Any]]:
        """Every part of the request's contents of that role, in order."""
        return [p for c in self.body.get("contents", []) if c.get("role") == role for p in c.get("parts", [])]

    def inline_images(self) -> list[tuple[str, bytes]]:
        """The (mime type, decoded bytes) of each inline-data part the user contents carried. The SDK writes
        the blob's fields as `mime_type` and its bytes URL-safe; the API, like any proto3 JSON parser, takes
        `mimeType` and standard base64 too."""
        blobs = [p.get("inlineData", p.get("inline_data")) for p in self.parts()]
        return [(b.get("mimeType", b.get("mime_type")), _bytes(b["data"])) for b in blobs if b is not None]

    def user_text(self) -> str:
        """All the text of the user contents, joined."""
        return "\n".join(p["text"] for p in self.parts() if "text" in p)


class FakeGemini:
    def __init__(self) -> None:
        self.script: deque[Behaviour] = deque()
        self.default = Behaviour()
        self.calls: list[Call] = []  # every request, with its parsed JSON body
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [call.body for call in self.calls]

    def then(self, *behaviours: Behaviour) -> FakeGemini:
        self.script.extend(behaviours)
        return self

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/{version}/models/{target}", self._handle)
        # Cancel the handler the moment the client goes: that is how we see "upstream closed".
        self._runner, self.url = await serve(app, cancel_on_disconnect=True)
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _chunk(text: str) -> dict[str, Any]:
        return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}]}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        call = Call(request.path, await request.json(), request.headers.get("x-goog-api-key"), time.monotonic())
        self.calls.append(call)
        behaviour = self.script.popleft() if self.script else self.default
        if not request.match_info["target"].endswith(":streamGenerateContent"):
            return web.json_response(
                {"error": {"code": 404, "message": "not faked", "status": "NOT_FOUND"}}, status=404
            )
        if behaviour.status != 200:
            call.ended = time.monotonic()
            error = {
                "code": behaviour.status,
                "message": f"fake error {behaviour.status}",
                "status": STATUS_NAMES.get(behaviour.status, "UNKNOWN"),
            }
            return web.json_response({"error": error}, status=behaviour.status)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            if behaviour.hang:
                await asyncio.sleep(3600)
            for index, token in enumerate(behaviour.tokens):
                if behaviour.cut_after is not None and index >= behaviour.cut_after:
                    assert request.transport is not None
                    request.transport.close()  # a connection cut mid-stream
                    call.ended = time.monotonic()
                    return response
                if behaviour.delay:
                    await asyncio.sleep(behaviour.delay)
                await response.write(f"data: {json.dumps(self._chunk(token))}\r\n\r\n".encode())
                call.tokens_sent += 1
            prompt, completion, total = behaviour.usage
            last = self._chunk("")
            last["candidates"][0]["finishReason"] = "STOP"
            last["usageMetadata"] = {
                "promptTokenCount": prompt,
                "candidatesTokenCount": completion,
                "totalTokenCount": total,
            }
            await response.write(f"data: {json.dumps(last)}\r\n\r\n".encode())
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            call.client_gone = True
            call.ended = time.monotonic()
            raise
        call.ended = time.monotonic()
        return response

    async def wait_client_gone(self, call: Call, limit: float) -> float:
        """Seconds until the client closed the stream, or raise if it did not within `limit`."""
        deadline = time.monotonic() + limit
        while not call.client_gone:
            if time.monotonic() > deadline:
                raise AssertionError("the client kept the upstream request open")
            await asyncio.sleep(0.01)
        assert call.ended is not None
        return call.ended - call.started
