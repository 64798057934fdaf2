"""The scheduling policy: who gets a slot, and what each step computes.

`Policy.schedule()` decides one step and returns it as a `StepPlan` (plan.py): requests
reaped or cut short, admissions, cache moves, the sequences that decode one token and the
prompt chunks that prefill. The policy owns the queues and the slot bookkeeping; it never
builds a batch or samples (scheduler.py does), so tests drive it with a fake KV context
(`cache_manager.KvContext`) and plain token lists.

`enqueue` and `cancel` come from asyncio threads; everything else runs on the scheduler
thread. Queue and slot-busy changes happen under `cv`.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runtimes.base import Overloaded, QueueTimeout, RuntimeError_
from runtimes.llamacpp.cache_manager import CacheManager, KvContext
from runtimes.llamacpp.drafting import DraftConfig, Drafter
from runtimes.llamacpp.plan import Admission, Chunk, StepPlan
from runtimes.llamacpp.requests import ReqState, Request
from runtimes.llamacpp.slots import SlotPick, SlotTable
from runtimes.queue_wait import QueueWait

if TYPE_CHECKING:
    from runtimes.llamacpp.prefix_store import PrefixStore

# Module names for the states the per-step scans compare (an enum attribute lookup costs
# three times a plain name there).
WAITING, PREFILL, GENERATING, DONE = ReqState.WAITING, ReqState.PREFILL, ReqState.GENERATING, ReqState.DONE

# How long an idle engine holds its first step for requests announced but not yet queued
# (Arrival). Prompts sent together reach the queue within a few ms of each other (their
# templates are rendered and tokenized one after another); prefilled in one step they all
# start decoding at once, as llama-server's do, instead of the first ones decoding in small
# batches while the rest prefill.
GATHER_S = 0.025


class Arrival:
    """A request on its way to this engine: its prompt is being rendered and tokenized.

    The runtime announces it before that work and the queue settles it on `enqueue`;
    `withdraw` (idempotent) covers a request that never gets there."""

    __slots__ = ("_policy", "pending")

    def __init__(self, policy: Policy):
        self._policy = policy
        self.pending = True
        with policy.cv:
            policy.incoming += 1

    def settle(self) -> None:
        """Called with the policy's lock held."""
        if self.pending:
            self.pending = False
            self._policy.incoming -= 1
            self._policy.cv.notify()

    def withdraw(self) -> None:
        with self._policy.cv:
            self.settle()


@dataclass
class Counters:
    """Totals since start for EngineStats: the policy counts requests and prompt work, the
    executor decoding."""

    prompt_tokens_cached: int = 0
    prompt_tokens_processed: int = 0
    tokens_generated: int = 0
    requests_total: int = 0
    requests_cancelled: int = 0
    decode_steps: int = 0
    decode_seconds: float = 0.0  # inside llama_decode
    step_seconds: float = 0.0  # whole steps: decode plus our Python work around it
    spec_drafted: int = 0  # draft tokens verified (speculative decoding)
    spec_accepted: int = 0  # of which the sampler agreed with
    spec_tie_steps: int = 0  # near ties met in verify rows (DraftConfig.tie_margin)
    spec_tie_flips: int = 0  # of which the 1-token decode chose another token than the batch


# Running requests always hold a slot (set at admission).
def _remaining(r: Request) -> int:
    """Prompt tokens still to compute (the slot holds the rest)."""
    return len(r.prompt) - len(r.slot.tokens)


def _held(r: Request) -> int:
    """Tokens in the request's KV sequence."""
    return len(r.slot.tokens)


class Policy:
    """Admission (FIFO), prefix reuse, chunked prefill beside decodes, cuts when the context is full."""

    def __init__(
        self,
        kv: KvContext,
        n_slots: int,
        *,
        max_queue: int,
        store: PrefixStore | None = None,
        park_min_prefill: int = 512,
        n_swa: int = 0,
        prepare: Callable[[Request], None] | None = None,
        drafting: DraftConfig | None = None,
        queue_timeout_s: float | None = None,
    ):
        self.kv = kv
        self.queue_timeout_s = queue_timeout_s  # None: a waiting request waits as long as it takes
        self.slots = SlotTable(kv, n_slots, n_swa=n_swa)
        self.cache = CacheManager(kv, self.slots, store, park_min_prefill)
        self.max_queue = max_queue
        self.counters = Counters()
        self.waiting: collections.deque[Request] = collections.deque()
        self.incoming = 0  # announced requests not yet queued (Arrival)
        self.active: list[Request] = []  # admission order
        self.cv = threading.Condition()
        self.closed = False  # set by the scheduler's close: no new requests
        # Called once a request has a slot, before its KV is touched (the executor builds its
        # sampler there); raising RuntimeError_ refuses the request.
        self._prepare = prepare
        self.drafting = drafting  # None: no speculative decoding
        self._ids = itertools.count(1)
        self.wait = QueueWait(initial_s=5.0)  # until measured: a guess for Retry-After

    # -- the queue (any thread) -------------------------------------------------------------
    def enqueue(self, req: Request, arrival: Arrival | None = None) -> None:
        """Queue a validated request; raises Overloaded when the queue is full."""
        with self.cv:
            if arrival is not None:
                arrival.settle()
            if self.closed:
                raise RuntimeError_("the engine is closed")
            idle = len(self.slots.slots) - self.slots.busy_count
            if len(self.waiting) >= self.max_queue + idle:
                raise Overloaded(self.retry_after())
            req.id = next(self._ids)
            self.waiting.append(req)
            self.cv.notify()

    def cancel(self, req: Request) -> None:
        """A waiting request leaves the queue now; a running one at the next step."""
        with self.cv:
            if req.state is DONE:
                return
            req.cancelled = True
            if req.state is WAITING:
                try:
                    self.waiting.remove(req)
                except ValueError:
                    pass
                else:
                    req.state = DONE
                    self.counters.requests_cancelled += 1
            self.cv.notify()

    def retry_after(self) -> float:
        """Seconds until a slot is likely free: the queue times a moving average request time."""
        n = len(self.waiting) + 1
        return round(min(60.0, max(1.0, self.wait.estimate_s(n, len(self.slots.slots)))), 1)

    # -- one step (scheduler thread) --------------------------------------------------------
    def schedule(self, plan: StepPlan | None = None) -> StepPlan:
        """Decide the next step. The caller may pass `plan` to keep what was decided (requests
        that ended and need their last step) if this raises halfway."""
        plan = StepPlan() if plan is None else plan
        for req in [r for r in self.active if r.cancelled]:
            self.retire(req, "cancelled")
            plan.cancelled.append(req)
        self._expire_waiting(plan)
        self._admit(plan)
        if self.active:
            plan.t_step = time.perf_counter()
            self._plan_batch(plan)
        return plan

    def _admit(self, plan: StepPlan) -> None:
        """Start waiting requests in arrival order while slots and KV cells allow; the first
        one that does not fit blocks those behind it."""
        while True:
            with self.cv:
                if not self.waiting or not self.slots.idle() or self._gathering():
                    return
                req = self.waiting[0]
                pick = self.slots.place(req.prompt)
                if pick is None:
                    return
                if self.active and not self._fits(req, pick):
                    return  # wait for running sequences to finish and free cells
                self.waiting.popleft()
                req.state = PREFILL
                self.slots.acquire(pick.slot)
            self._start(req, pick, plan)

    def _gathering(self) -> bool:
        """Whether an idle engine should hold its first step: requests announced together
        are still on their way and would find a free slot beside the queued ones."""
        return (
            self.incoming > 0
            and not self.active
            and len(self.waiting) < len(self.slots.idle())
            and time.monotonic() - self.waiting[0].t_submit < GATHER_S
        )

    def _expire_waiting(self, plan: StepPlan) -> None:
        """Refuse the waiting requests that have waited past the queue timeout (oldest first)."""
        limit = self.queue_timeout_s
        if limit is None:
            return
        now = time.monotonic()
        with self.cv:
            while self.waiting and now - self.waiting[0].t_submit > limit:
                req = self.waiting.popleft()
                req.state = DONE
                waited = now - req.t_submit
                plan.refused.append((req, QueueTimeout(
                    self.retry_after(), f"waited {waited:.0f} s in the queue without a free slot "
                    f"(the queue timeout is {limit:g} s); try again later"
                )))

    def _fits(self, req: Request, pick: SlotPick) -> bool:
        """Whether the prompt's new cells fit beside the cells running prefills still need,
        counting what evicting idle caches (all but the prefix this pick reuses) frees."""
        reserved = sum(_remaining(r) for r in self.active if r.state is PREFILL)
        need = len(req.prompt) - pick.reused + 1
        ledger = self.slots.ledger
        evictable = 0
        for s in self.slots.idle():
            if s is pick.slot:
                evictable += ledger.exclusive(s.cells[pick.keep :])
            elif s is pick.copy_from:
                evictable += ledger.exclusive(s.cells[pick.copy_len :])
            else:
                evictable += ledger.exclusive(s.cells)
        return ledger.free + evictable - reserved >= need

    def _start(self, req: Request, pick: SlotPick, plan: StepPlan) -> None:
        try:
            if self._prepare is not None:
                self._prepare(req)
        except RuntimeError_ as e:  # e.g. a grammar llama.cpp cannot parse
            with self.cv:
                self.slots.release(pick.slot)
                req.state = DONE
            plan.refused.append((req, e))
            return
        req.slot = pick.slot
        if self.drafting is not None:
            req.drafter = Drafter(req.prompt, self.drafting)
        keep = self.cache.setup(req.prompt, pick, plan)
        req.cached = keep
        self.counters.prompt_tokens_cached += keep
        self.counters.requests_total += 1
        plan.admitted.append(Admission(req, pick, keep))
        self.active.append(req)

    def _plan_batch(self, plan: StepPlan) -> None:
        """Every generating sequence decodes one token; prompt chunks fill the rest of the batch."""
        gens = [r for r in self.active if r.state is GENERATING]
        # Shortest remaining prompt first: a short request (a title, a quick question)
        # starts answering at once instead of queueing behind a long prompt's chunks.
        fills = sorted((r for r in self.active if r.state is PREFILL), key=_remaining)
        ledger = self.slots.ledger
        want = len(gens) + sum(_remaining(r) for r in fills)
        if ledger.free < want:
            self.cache.make_room(want, plan)
        while ledger.free < len(gens):
            # The shared context is full: cut the longest running sequence short.
            victim = max(gens, key=_held)
            gens.remove(victim)
            self.retire(victim, "length")
            plan.cut_short.append(victim)
            self.cache.make_room(len(gens), plan)
        plan.decode = gens
        drafted = self._plan_drafts(gens, plan) if self.drafting is not None and gens else 0
        # While anything generates, chunks stay at n_ubatch so streams keep receiving tokens.
        n_batch = self.kv.n_batch
        used = len(gens) + drafted
        budget = min(self.kv.n_ubatch - drafted if gens else n_batch, n_batch - used, ledger.free - used)
        for r in fills:
            if budget <= 0:
                break
            done = _held(r)
            take = r.prompt[done : done + budget]
            plan.prefill.append(Chunk(r, done, take))
            budget -= len(take)

    def _plan_drafts(self, gens: list[Request], plan: StepPlan) -> int:
        """Draft tokens for the generating sequences to verify this step; returns how many.

        The step's verified tokens (decodes + drafts) stay within `step_tokens`: with many
        slots decoding, the batch is already large and drafts would slow every slot's step.
        Sequences with the best recent acceptance draft first; those that do not pay have
        paused themselves (drafting.Drafter).
        """
        cfg = self.drafting
        assert cfg is not None
        shared = len(gens) > 1
        budget = min(cfg.step_budget(shared), self.kv.n_batch, self.slots.ledger.free) - len(gens)
        if budget <= 0:
            return 0
        wanted = []
        for r in gens:
            if r.solo_next:
                r.solo_next = False
                continue
            if r.drafter is not None:
                # Up to max_tokens: a verified step emits at most its drafts plus one.
                k = min(r.drafter.wants(shared), r.max_new - len(r.generated) - 1)
                if k > 0:
                    wanted.append((r, k))
        if len(wanted) > 1:
            wanted.sort(key=lambda w: -w[0].drafter.accept_ema)
        total = 0
        for r, k in wanted:
            if budget <= 0:
                break
            r.drafter.sync(r.generated)
            toks = r.drafter.propose(min(k, budget))
            if toks:
                plan.drafts[r] = toks
                total += len(toks)
                budget -= len(toks)
        return total

    def commit(self, plan: StepPlan) -> list[tuple[int, list[int]]]:
        """Record what llama_decode wrote for `plan`; returns (seq, tokens) of the prompts it
        completed (now generating). Drafts are recorded whole; `verified` rolls back the
        rejected ones."""
        slots = self.slots
        drafts = plan.drafts
        for r in plan.decode:
            slots.appended(r.slot, [r.last_token, *drafts[r]] if r in drafts else [r.last_token])
        for c in plan.prefill:
            slots.appended(c.req.slot, c.tokens)
            self.counters.prompt_tokens_processed += len(c.tokens)
        done = []
        for c in plan.prefill:
            r = c.req
            if _remaining(r) == 0:
                r.state = GENERATING
                done.append((r.slot.seq, list(r.slot.tokens)))
        return done

    def verified(self, r: Request, drafted: int, accepted: int) -> None:
        """The sampler agreed with the first `accepted` of `r`'s `drafted` draft tokens: drop
        the rest from its KV sequence (kept consistent with `slot.tokens`), adapt its drafter.
        accepted -1: the step's own token goes too (decoded again alone, scheduler._verify)."""
        assert r.slot is not None
        if accepted < drafted:
            self.slots.truncate(r.slot, len(r.slot.tokens) - (drafted - accepted))
        if r.drafter is not None and not r.solo_next:  # a near tie says nothing of the drafts
            r.drafter.observe(drafted, accepted)
        self.counters.spec_drafted += drafted
        self.counters.spec_accepted += max(0, accepted)
        self.counters.spec_tie_steps += r.solo_next

    # -- endings ----------------------------------------------------------------------------
    def retire(self, r: Request, reason: str) -> None:
        """End a request ("stop", "length", "cancelled"): its slot is free and keeps its cache."""
        with self.cv:
            r.state = DONE
            if r in self.active:
                self.active.remove(r)
            if r.slot is not None:
                self.slots.release(r.slot)
        if reason == "cancelled":
            self.counters.requests_cancelled += 1
        else:
            self.wait.observe(time.monotonic() - r.t_submit)

    def on_decode_full(self, plan: StepPlan) -> Request | None:
        """llama_decode found no room despite the ledger (fragmentation, SWA): free an idle
        cache, or else cut the longest sequence short (returned); the next step retries."""
        if self.cache.evict_lru_idle(plan):
            return None
        victim = max(self.active, key=_held)
        self.retire(victim, "length")
        return victim

    def abort_all(self) -> list[Request]:
        """After an engine error: end every running request and drop its cache, which may not
        match the bookkeeping any more."""
        aborted = list(self.active)
        for r in aborted:
            with self.cv:
                r.state = DONE
                self.active.remove(r)
                if r.slot is not None:
                    self.slots.release(r.slot)
                    self.slots.evict(r.slot)
        return aborted

    def drain_waiting(self) -> list[Request]:
        """At shutdown: empty the queue; returns the requests that never started."""
        with self.cv:
            waiting, self.waiting = list(self.waiting), collections.deque()
        for r in waiting:
            r.state = DONE
        return waiting
