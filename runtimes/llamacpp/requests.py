"""A request's life in the scheduler, and the `Step`s its consumer receives.

The asyncio side creates a `Request` and waits on its queue; the scheduler thread moves it
through `ReqState` and hands each `Step` back with loop.call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runtimes.base import Sampling, TokenLogprob, Usage

if TYPE_CHECKING:
    from runtimes.llamacpp.drafting import Drafter
    from runtimes.llamacpp.sampling import SamplerChain, TextAssembler
    from runtimes.llamacpp.slots import Slot


class ReqState(enum.Enum):
    WAITING = enum.auto()  # queued, no slot yet
    PREFILL = enum.auto()  # holds a slot; prompt tokens still to compute
    GENERATING = enum.auto()  # prompt computed; one new token per step
    DONE = enum.auto()  # finished, cancelled or failed; its slot is released


@dataclass
class Step:
    """One piece of a generation stream (the public unit engine.generate yields)."""

    text: str
    token_ids: list[int]
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" on the last step
    usage: Usage | None = None  # on the last step
    logprobs: list[TokenLogprob] = field(default_factory=list)  # of token_ids, when asked for
    prompt: Usage | None = None  # on the first step: the prompt's tokens, cached ones among them


@dataclass(eq=False)
class Request:
    prompt: list[int]
    sampling: Sampling
    max_new: int
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    id: int = 0
    state: ReqState = ReqState.WAITING
    slot: Slot | None = None
    chain: SamplerChain | None = None
    text: TextAssembler | None = None
    drafter: Drafter | None = None  # speculative decoding's n-gram drafts (None: off)
    solo_next: bool = False  # decode the next step without drafts (a near tie to decide exactly)
    generated: list[int] = field(default_factory=list)
    last_token: int = -1
    cached: int = 0
    cancelled: bool = False
    grammar: str | None = None  # GBNF (the request's, or its JSON schema's), made at submission
    logprobs: list[TokenLogprob] = field(default_factory=list)  # not yet emitted
    t_submit: float = field(default_factory=time.monotonic)
    t_first: float = 0.0

    def emit(self, item: Step | BaseException) -> bool:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
            return True
        except RuntimeError:  # the consumer's event loop is gone
            self.cancelled = True
            return False

    def take_logprobs(self) -> list[TokenLogprob]:
        out, self.logprobs = self.logprobs, []
        return out

    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=len(self.prompt), completion_tokens=len(self.generated), cached_tokens=self.cached
        )
