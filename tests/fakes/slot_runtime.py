"""A scripted runtime with real slots and a real queue: each request waits for one of
`slots` slots (asyncio), then plays its script slowly. Its stats are live (busy slots, queue
depth), as the engine's are, so the router's queue bounds and the HTTP layer can be tested
through the real app without a model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fakes.scripted_runtime import ScriptedRuntime
from runtimes.base import ChatRequest, CompletionRequest, Event, RuntimeStats


@dataclass
class SlotRuntime(ScriptedRuntime):
    slots: int = 2
    busy: int = 0
    waiting: int = 0
    most_waiting: int = 0  # the deepest the queue ever got
    _free: asyncio.Semaphore | None = field(default=None, repr=False)

    def stats(self) -> RuntimeStats:
        return RuntimeStats(
            slots_total=self.slots, slots_busy=self.busy, queue_depth=self.waiting, loaded=True
        )

    async def _play(self, req: ChatRequest | CompletionRequest) -> AsyncIterator[Event]:
        if self._free is None:
            self._free = asyncio.Semaphore(self.slots)
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        try:
            await self._free.acquire()
        finally:
            self.waiting -= 1
        self.busy += 1
        try:
            async for ev in super()._play(req):
                yield ev
        finally:
            self.busy -= 1
            self._free.release()
