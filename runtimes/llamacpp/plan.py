"""What one scheduler step does, as plain data: `Policy.schedule` fills a `StepPlan`, the
executor (scheduler.py) turns it into one llama_batch, decodes, samples and emits.

Cache moves (parking, restores, evictions) and admissions are already done in the slot
bookkeeping when the plan comes back; they are recorded here so that a test, a log or a
reader sees what the policy decided without a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runtimes.llamacpp.requests import Request
from runtimes.llamacpp.slots import SlotPick


@dataclass(slots=True, eq=False)
class Admission:
    """A request taken from the queue into a slot; `cached` prompt tokens need no compute."""

    req: Request
    pick: SlotPick  # which slot, and the prefix kept or copied from another slot
    cached: int


@dataclass(slots=True, eq=False)
class Chunk:
    """Prompt tokens prefilled this step: positions start .. start + len(tokens)."""

    req: Request
    start: int
    tokens: list[int]


@dataclass(slots=True)
class CacheMove:
    """A slot's idle cache that left the KV cache (parked or evicted), or came back into it."""

    seq: int
    n_tokens: int
    stored: bool = False  # whether the prefix store holds those tokens now


@dataclass(slots=True, eq=False)
class StepPlan:
    """One step: what ended or started while planning, then the batch to decode."""

    cancelled: list[Request] = field(default_factory=list)  # reaped; their final step is due
    refused: list[tuple[Request, BaseException]] = field(default_factory=list)  # e.g. a bad grammar
    admitted: list[Admission] = field(default_factory=list)
    parked: list[CacheMove] = field(default_factory=list)  # idle caches moved out before a long prefill
    restored: list[CacheMove] = field(default_factory=list)  # prefixes loaded from the prefix store
    evicted: list[CacheMove] = field(default_factory=list)  # idle caches dropped to make room
    cut_short: list[Request] = field(default_factory=list)  # ended "length": the context is full
    decode: list[Request] = field(default_factory=list)  # generating: each adds its last token
    # Draft tokens a decoding request verifies after its last token (speculative decoding,
    # drafting.py): every one gets logits; the executor keeps those its sampler agrees with.
    drafts: dict[Request, list[int]] = field(default_factory=dict)
    prefill: list[Chunk] = field(default_factory=list)  # shortest remaining prompt first
    t_step: float | None = None  # perf_counter when the batch was planned (None: nothing active)
