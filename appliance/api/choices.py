"""`n` > 1: several answers to one chat request, as one event stream tagged by choice index.

Each answer is its own runtime request (choice i gets seed + i when the client gave a seed).
The first is started alone and awaited to its first event: by then its prompt is in the KV
cache, so the engine places the others on that prefix (a KV copy between sequences, no
second prefill). They then run side by side in the engine's continuous batch.

At temperature 0 the answers are one answer by definition, so it is computed once and sent
as every choice. Computing it n times would not even be exact: a prompt's last token
evaluated in a long prefill batch and the same token evaluated alone after a KV copy round
differently in llama.cpp's CPU kernels, which can flip a near tie.

The merged stream ends each answer with an event carrying its finish reason but no usage
(`ends_choice`), and closes with one event carrying the summed usage: completion tokens
added up, the prompt counted once, as OpenAI reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable

from runtimes.base import ChatRequest, Event, Usage

MAX_CHOICES = 8  # more answers per request than this is a 400: each one holds a slot


def seeded(req: ChatRequest, index: int) -> ChatRequest:
    """The request for answer `index`: its own seed, so sampled answers differ reproducibly."""
    seed = req.sampling.seed
    sampling = dataclasses.replace(req.sampling, seed=None if seed is None else seed + index)
    return dataclasses.replace(req, sampling=sampling, n=1)


async def fan_out(
    start: Callable[[ChatRequest], AsyncIterator[Event]], req: ChatRequest
) -> AsyncIterator[Event]:
    """The events of `req.n` answers, merged as they come; an error in any ends them all."""
    if req.sampling.greedy:
        async for ev in _replicate(start(seeded(req, 0)), req.n):
            yield ev
        return
    streams = [start(seeded(req, 0))]
    queue: asyncio.Queue[tuple[int, Event | BaseException | None]] = asyncio.Queue()
    tasks: list[asyncio.Task[None]] = []

    async def pump(i: int, first: Event | None) -> None:
        try:
            if first is not None:
                await queue.put((i, first))
                async for ev in streams[i]:
                    await queue.put((i, ev))
            await queue.put((i, None))
        except Exception as exc:  # handed to the consumer, which raises it
            await queue.put((i, exc))

    try:
        first = await anext(streams[0], None)  # errors before any output surface here, as for n=1
        streams += [start(seeded(req, i)) for i in range(1, req.n)]
        # Every answer must start (or fail) before the merged stream says anything.
        firsts = await asyncio.gather(*(anext(s, None) for s in streams[1:]), return_exceptions=True)
        for ev in firsts:
            if isinstance(ev, BaseException):
                raise ev
        tasks = [asyncio.create_task(pump(i, ev)) for i, ev in enumerate([first, *firsts])]  # type: ignore[arg-type]
        async for ev in _merge(queue, req.n):
            yield ev
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in streams:
            with contextlib.suppress(Exception):
                await s.aclose()  # type: ignore[attr-defined]


async def _replicate(stream: AsyncIterator[Event], n: int) -> AsyncIterator[Event]:
    """One greedy answer's events, sent as each of `n` choices; usage as if computed n times."""
    try:
        async for ev in stream:
            if ev.finish_reason is not None and ev.usage is not None:
                for i in range(n):
                    yield dataclasses.replace(ev, choice=i, usage=None)
                yield Event(finish_reason=ev.finish_reason, usage=_total({i: ev.usage for i in range(n)}))
                return
            for i in range(n):
                yield dataclasses.replace(ev, choice=i)
    finally:
        with contextlib.suppress(Exception):
            await stream.aclose()  # type: ignore[attr-defined]


async def _merge(queue: asyncio.Queue, n: int) -> AsyncIterator[Event]:
    live, finishes, usages = n, dict[int, str](), dict[int, Usage]()
    while live:
        i, item = await queue.get()
        if isinstance(item, BaseException):
            raise item
        if item is None:
            live -= 1
            continue
        if item.finish_reason is not None and item.usage is not None:  # answer i is complete
            finishes[i], usages[i] = item.finish_reason, item.usage
            yield dataclasses.replace(item, choice=i, usage=None)
            continue
        yield dataclasses.replace(item, choice=i)
    yield Event(finish_reason=_overall(finishes), usage=_total(usages))  # type: ignore[arg-type]


def _overall(finishes: dict[int, str]) -> str:
    """A failed or cancelled answer makes the whole response fail; else answer 0's reason."""
    for bad in ("error", "cancelled"):
        if bad in finishes.values():
            return bad
    return finishes.get(0, "stop")


def _total(usages: dict[int, Usage]) -> Usage:
    first = usages.get(0, Usage())
    return Usage(
        prompt_tokens=first.prompt_tokens,
        completion_tokens=sum(u.completion_tokens for u in usages.values()),
        cached_tokens=first.cached_tokens,
    )
