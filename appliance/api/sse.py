"""Server-sent events: `data: {json}\\n\\n` frames, `data: [DONE]`, and a response
that always closes its generator.

Starlette cancels a streaming response when the client disconnects, but it does not
close the body generator; left to the garbage collector, the runtime would keep
decoding for nobody. `SSEResponse` closes it at once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

DONE = b"data: [DONE]\n\n"

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def sse_event(obj: dict[str, Any]) -> bytes:
    """A named frame, `event: <obj["type"]>` then its data (Anthropic's Messages stream)."""
    return f"event: {obj['type']}\n".encode() + sse(obj)


class SSEResponse(StreamingResponse):
    """A text/event-stream response whose body generator is closed however it ends."""

    media_type = "text/event-stream"

    def __init__(
        self,
        body: AsyncIterator[bytes],
        *,
        headers: dict[str, str],
        on_close: Callable[[], Awaitable[None]] | None = None,
    ):
        super().__init__(body, headers={**SSE_HEADERS, **headers})
        self._body = body
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                closer = getattr(self._body, "aclose", None)
                if closer is not None:
                    await closer()
                if self._on_close is not None:
                    await self._on_close()
