"""A scripted Runtime: plays back given Events, with optional delays and errors.

It stands in for the engine ONLY to test the HTTP layer (shapes, SSE framing,
errors, disconnects, metrics) quickly and deterministically. It generates nothing;
tests against real models and the real llama.cpp engine live elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from runtimes.base import (
    ChatRequest,
    CompletionRequest,
    Event,
    Runtime,
    RuntimeStats,
    ToolCallDelta,
    Usage,
)

Script = list[Event] | Callable[[ChatRequest | CompletionRequest], list[Event]]


@dataclass
class StreamRecord:
    """What happened to one request: what was asked, how far it got, how it ended."""

    request: ChatRequest | CompletionRequest
    emitted: int = 0
    finished: bool = False  # played the whole script
    closed: bool = False  # stopped early: closed or cancelled by the API


@dataclass
class ScriptedRuntime(Runtime):
    id: str = "scripted"
    n_ctx: int = 4096
    script: Script = field(default_factory=lambda: text_events("Hello there!"))
    delay_s: float = 0.0  # before each event
    first_delay_s: float = 0.0  # extra wait before the first event (a slow prefill)
    fail_before: Exception | None = None  # raised instead of the first event
    fail_after: tuple[int, Exception] | None = None  # (n, exc): raised after n events
    stats_value: RuntimeStats = field(
        default_factory=lambda: RuntimeStats(slots_total=2, slots_busy=0, queue_depth=0, loaded=True)
    )
    records: list[StreamRecord] = field(default_factory=list)
    closed_runtime: bool = False

    def chat(self, req: ChatRequest) -> AsyncIterator[Event]:
        return self._play(req)

    def complete(self, req: CompletionRequest) -> AsyncIterator[Event]:
        return self._play(req)

    def stats(self) -> RuntimeStats:
        return self.stats_value

    async def close(self) -> None:
        self.closed_runtime = True

    async def _play(self, req: ChatRequest | CompletionRequest) -> AsyncIterator[Event]:
        rec = StreamRecord(req)
        self.records.append(rec)
        events = self.script(req) if callable(self.script) else list(self.script)
        try:
            if self.first_delay_s:
                await asyncio.sleep(self.first_delay_s)
            if self.fail_before is not None:
                raise self.fail_before
            for ev in events:
                if self.fail_after is not None and rec.emitted == self.fail_after[0]:
                    raise self.fail_after[1]
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                rec.emitted += 1
                yield ev
            rec.finished = True
        finally:
            if not rec.finished:
                rec.closed = True


def text_events(
    text: str, *, prompt_tokens: int = 12, cached: int = 0, finish: str = "stop", pieces: int | None = None
) -> list[Event]:
    """`text` as word-sized content events, then a final event with finish and usage."""
    words = text.split(" ")
    chunks = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
    if pieces is not None:
        chunks = (chunks * pieces)[:pieces]
    events = [Event(content=c) for c in chunks]
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=len(chunks), cached_tokens=cached)
    return [*events, Event(finish_reason=finish, usage=usage)]  # type: ignore[arg-type]


def tool_call_events(
    name: str,
    arguments: str,
    *,
    call_id: str | None = "call_1",
    index: int = 0,
    split: int = 4,
    prompt_tokens: int = 40,
) -> list[Event]:
    """One tool call streamed as a header piece then argument pieces of `split` chars."""
    out = [Event(tool_calls=[ToolCallDelta(index=index, id=call_id, name=name)])]
    out += [
        Event(tool_calls=[ToolCallDelta(index=index, arguments=arguments[i : i + split])])
        for i in range(0, len(arguments), split)
    ]
    out.append(
        Event(
            finish_reason="tool_calls", usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=len(out))
        )
    )
    return out
