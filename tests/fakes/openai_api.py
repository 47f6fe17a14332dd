"""A local fake of an OpenAI-compatible server (OpenAI, Ollama, vLLM, LM Studio): streaming
`POST /v1/chat/completions` as `data: <chat.completion.chunk>` lines, a usage chunk when
`stream_options.include_usage` is set, then `data: [DONE]`."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

from aiohttp import web

from tests.fakes.gemini import Behaviour
from tests.fakes.server import serve


class FakeOpenAI:
    def __init__(self) -> None:
        self.default = Behaviour(tokens=["Hi", " from", " the", " fake", " OpenAI."], usage=(9, 5, 14))
        self.script: list[Behaviour] = []
        self.bodies: list[dict[str, Any]] = []  # every request's parsed JSON body
        self._runner: web.AppRunner | None = None
        self.url = ""

    @staticmethod
    def user_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
        """The user messages' content as parts (a plain string content is one text part)."""
        parts: list[dict[str, Any]] = []
        for message in body.get("messages", []):
            if message.get("role") != "user":
                continue
            content = message.get("content")
            parts += [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
        return parts

    @classmethod
    def images(cls, body: dict[str, Any]) -> list[tuple[str, bytes]]:
        """The (media type, decoded bytes) of each `image_url` data URL the user messages carried."""
        found = []
        for part in cls.user_parts(body):
            if part.get("type") == "image_url":
                header, _, data = part["image_url"]["url"].partition(",")
                assert header.startswith("data:") and header.endswith(";base64"), header
                found.append((header[5:-7], base64.b64decode(data)))
        return found

    @classmethod
    def user_text(cls, body: dict[str, Any]) -> str:
        return "\n".join(p["text"] for p in cls.user_parts(body) if p.get("type") == "text")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner, base = await serve(app, cancel_on_disconnect=True)
        self.url = f"{base}/v1"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        behaviour = self.script.pop(0) if self.script else self.default
        if behaviour.status != 200:
            error = {"message": f"fake error {behaviour.status}", "type": "server_error", "code": None}
            return web.json_response({"error": error}, status=behaviour.status)
        model = body.get("model", "fake")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(
            f"data: {json.dumps(self._chunk(model, {'role': 'assistant', 'content': ''}))}\n\n".encode()
        )
        for token in behaviour.tokens:
            if behaviour.delay:
                await asyncio.sleep(behaviour.delay)
            await response.write(f"data: {json.dumps(self._chunk(model, {'content': token}))}\n\n".encode())
        await response.write(f"data: {json.dumps(self._chunk(model, {}, 'stop'))}\n\n".encode())
        if body.get("stream_options", {}).get("include_usage"):
            prompt, completion, total = behaviour.usage
            usage = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total},
            }
            await response.write(f"data: {json.dumps(usage)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
