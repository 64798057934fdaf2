"""The scheduler thread: admission, continuous batching, sampling, hand-off to asyncio.

Every step builds one llama_batch holding the next token of each generating sequence
and prefill chunks of admitted prompts, calls llama_decode once, then samples each
sequence whose row has logits. Prefill chunks are capped (n_ubatch while anything is
generating) so running streams keep receiving tokens during a long prompt.

Only this thread touches the llama.cpp context. The asyncio side submits requests and
sets cancel flags under a lock; results travel back with loop.call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runtimes.base import ContextLengthExceeded, InvalidRequest, Overloaded, RuntimeError_, Sampling, Usage
from runtimes.llamacpp.model import Batch, Context, Model
from runtimes.llamacpp.sampling import SamplerChain, TextAssembler, check_sampling, schema_to_grammar
from runtimes.llamacpp.slots import Slot, SlotTable

if TYPE_CHECKING:
    from runtimes.llamacpp.prefix_store import PrefixStore

log = logging.getLogger("appliance.llamacpp")

WAITING, PREFILL, GENERATING, DONE = range(4)
# A stored prefix is restored only when it saves at least this many more tokens.
RESTORE_MIN_GAIN = 32
# Before a long prefill, a kept prefix shorter than this is recomputed instead (see _start).
RECOMPUTE_BELOW = 256


@dataclass
class Step:
    """One piece of a generation stream (the public unit engine.generate yields)."""

    text: str
    token_ids: list[int]
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" on the last step
    usage: Usage | None = None  # on the last step


@dataclass
class Counters:
    prompt_tokens_cached: int = 0
    prompt_tokens_processed: int = 0
    tokens_generated: int = 0
    requests_total: int = 0
    requests_cancelled: int = 0
    decode_steps: int = 0
    decode_seconds: float = 0.0  # inside llama_decode
    step_seconds: float = 0.0  # whole steps: decode plus our Python work around it


@dataclass(eq=False)
class Request:
    prompt: list[int]
    sampling: Sampling
    max_new: int
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    id: int = 0
    state: int = WAITING
    slot: Slot | None = None
    chain: SamplerChain | None = None
    text: TextAssembler | None = None
    generated: list[int] = field(default_factory=list)
    last_token: int = -1
    cached: int = 0
    cancelled: bool = False
    grammar: str | None = None  # GBNF from the JSON schema, converted at submission
    t_submit: float = field(default_factory=time.monotonic)
    t_first: float = 0.0

    def emit(self, item: Step | BaseException) -> bool:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
            return True
        except RuntimeError:  # the consumer's event loop is gone
            self.cancelled = True
            return False


class Scheduler:
    """Owns the slots and the step loop; `submit` and `cancel` are thread-safe."""

    def __init__(
        self,
        model: Model,
        ctx: Context,
        n_slots: int,
        max_queue: int,
        store: PrefixStore | None = None,
        *,
        park_min_prefill: int = 512,
    ):
        self.model = model
        self.park_min_prefill = park_min_prefill
        self.ctx = ctx
        self.n_ctx = ctx.n_ctx
        self.slots = SlotTable(ctx, n_slots, n_swa=0 if model.n_swa <= 0 else model.n_swa)
        self.store = store
        self.max_queue = max_queue
        self.batch = Batch(ctx.n_batch, n_slots)
        self.counters = Counters()
        self._waiting: collections.deque[Request] = collections.deque()
        self._active: list[Request] = []  # admission order
        self._cv = threading.Condition()
        self._stopping = False
        self._ids = itertools.count(1)
        self._avg_request_s = 5.0
        self._thread = threading.Thread(target=self._run, name="llamacpp-scheduler", daemon=True)
        self._thread.start()

    # -- asyncio side -----------------------------------------------------------------------
    def submit(self, prompt: list[int], sampling: Sampling, loop: asyncio.AbstractEventLoop) -> Request:
        """Validate and enqueue; raises ContextLengthExceeded / Overloaded / InvalidRequest."""
        if not prompt:
            raise InvalidRequest("the prompt is empty")
        if len(prompt) >= self.n_ctx:
            raise ContextLengthExceeded(len(prompt), self.n_ctx)
        if any(t < 0 or t >= self.model.n_vocab for t in prompt):
            raise InvalidRequest("the prompt holds token ids outside the vocabulary")
        check_sampling(sampling)
        grammar = schema_to_grammar(sampling.json_schema) if sampling.json_schema is not None else None
        room = self.n_ctx - len(prompt)
        max_new = room if sampling.max_tokens is None else max(1, min(sampling.max_tokens, room))
        req = Request(list(prompt), sampling, max_new, loop, asyncio.Queue(), grammar=grammar)
        with self._cv:
            if self._stopping:
                raise RuntimeError_("the engine is closed")
            idle = len(self.slots.slots) - self.slots.busy_count
            if len(self._waiting) >= self.max_queue + idle:
                raise Overloaded(self._retry_after())
            req.id = next(self._ids)
            self._waiting.append(req)
            self._cv.notify()
        return req

    def cancel(self, req: Request) -> None:
        with self._cv:
            if req.state == DONE:
                return
            req.cancelled = True
            if req.state == WAITING:
                try:
                    self._waiting.remove(req)
                except ValueError:
                    pass
                else:
                    req.state = DONE
                    self.counters.requests_cancelled += 1
            self._cv.notify()

    def queue_depth(self) -> int:
        return len(self._waiting)

    def close(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join()

    def _retry_after(self) -> float:
        n = len(self._waiting) + 1
        return round(min(60.0, max(1.0, self._avg_request_s * n / max(1, len(self.slots.slots)))), 1)

    # -- the loop ---------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and not self._waiting and not self._active:
                    self._cv.wait()
                if self._stopping:
                    break
            try:
                self._reap_cancelled()
                self._admit()
                if self._active:
                    t0 = time.perf_counter()
                    self._step()
                    self.counters.step_seconds += time.perf_counter() - t0
                elif self._waiting:
                    time.sleep(0.001)  # nothing admissible yet (should not last)
            except Exception as e:  # never let the thread die silently
                log.exception("scheduler step failed")
                self._fail_all(e)
        self._shutdown()

    def _reap_cancelled(self) -> None:
        for req in [r for r in self._active if r.cancelled]:
            self._finish(req, "cancelled", "")

    # -- admission --------------------------------------------------------------------------
    def _admit(self) -> None:
        while True:
            with self._cv:
                if not self._waiting or not self.slots.idle():
                    return
                req = self._waiting[0]
                placement = self.slots.place(req.prompt)
                if placement is None:
                    return
                if self._active and not self._cells_available_for(req, placement):
                    return  # wait for running sequences to finish and free cells
                self._waiting.popleft()
                req.state = PREFILL
                self.slots.acquire(placement.slot)
            self._start(req, placement)

    def _cells_available_for(self, req: Request, placement: Any) -> bool:
        reserved = sum(len(r.prompt) - len(r.slot.tokens) for r in self._active if r.state == PREFILL)
        need = len(req.prompt) - placement.reused + 1
        ledger = self.slots.ledger
        evictable = 0
        for s in self.slots.idle():
            if s is placement.slot:
                evictable += ledger.exclusive(s.cells[placement.keep :])
            elif s is placement.copy_from:
                evictable += ledger.exclusive(s.cells[placement.copy_len :])
            else:
                evictable += ledger.exclusive(s.cells)
        return ledger.free + evictable - reserved >= need

    def _start(self, req: Request, placement: Any) -> None:
        slot = placement.slot
        try:
            req.chain = SamplerChain(self.model, req.sampling, req.prompt, req.grammar)
        except RuntimeError_ as e:  # e.g. a grammar llama.cpp cannot parse
            with self._cv:
                self.slots.release(slot)
                req.state = DONE
            req.emit(e)
            return
        req.slot = slot
        if placement.discarded() > 0 and self.store is not None:
            self.store.offer(self.ctx, slot.seq, slot.tokens)
        if placement.copy_from is not None:
            self.slots.copy_prefix(placement.copy_from, slot, placement.copy_len)
        else:
            self.slots.truncate(slot, placement.keep)
        if self.store is not None:
            self._restore_from_store(req, slot)
        # The last prompt token is always evaluated again: its logits start the answer.
        keep = self.slots.truncate(slot, min(len(slot.tokens), len(req.prompt) - 1))
        if len(req.prompt) - keep >= self.park_min_prefill and self.store is not None:
            self._park_idle(protect=slot)
            if keep < RECOMPUTE_BELOW:
                # A few kept tokens may sit in high cells (placed after another cache that is
                # parked now), and attention spans up to the highest used cell: starting the
                # long prompt at cell 0 costs these tokens once and saves on every chunk.
                keep = self.slots.truncate(slot, 0)
        req.cached = keep
        self.counters.prompt_tokens_cached += keep
        self.counters.requests_total += 1
        self._make_room(len(req.prompt) - keep)
        req.text = TextAssembler(req.sampling.stop)
        self._active.append(req)

    def _restore_from_store(self, req: Request, slot: Slot) -> None:
        """Load a stored prefix longer than what the slots offer (e.g. after a restart)."""
        assert self.store is not None
        hit = self.store.lookup(req.prompt, better_than=len(slot.tokens) + RESTORE_MIN_GAIN)
        if hit is None:
            return
        entry, n = hit
        self.slots.truncate(slot, 0)
        self._make_room(len(entry.tokens))
        if self.slots.ledger.free < len(entry.tokens):
            return
        data = self.store.load(entry)
        if data is None:
            return
        if not self.ctx.set_seq_state(slot.seq, data):
            self.ctx.seq_rm(slot.seq)
            self.store.forget(entry)
            log.warning("prefix store: could not restore a saved state; dropped it")
            return
        self.slots.restored(slot, entry.tokens)
        self.slots.truncate(slot, n)
        self.store.hit(n)

    def _park_idle(self, protect: Slot) -> None:
        """Move idle slots' caches into the prefix store before a long prefill.

        In the unified KV cache every decode attends over all cells up to the highest used
        one, whoever owns them: another slot's idle 8k-token cache made a cold 6k-token
        prefill 8% slower here (BENCHMARKS.md). Parked caches come back from RAM with one
        copy when their conversation returns (`_restore_from_store`), which costs far less.
        Without a store nothing is parked, and a cache the store cannot take (larger than its
        RAM) stays where it is: dropping it could mean recomputing a whole conversation.
        """
        assert self.store is not None
        for slot in self.slots.lru_idle_with_cache():
            if slot is protect or self.slots.ledger.exclusive(slot.cells) == 0:
                continue
            short = len(slot.tokens) < self.store.min_tokens  # cheap to recompute
            if self.store.offer(self.ctx, slot.seq, slot.tokens, exact=True) or short:
                self.slots.evict(slot)

    def _make_room(self, need: int, protect: Slot | None = None) -> None:
        """Evict idle slots' caches (least recently used first) until `need` cells are free."""
        ledger = self.slots.ledger
        for slot in self.slots.lru_idle_with_cache():
            if ledger.free >= need:
                return
            if slot is protect:
                continue
            if self.store is not None:
                self.store.offer(self.ctx, slot.seq, slot.tokens)
            self.slots.evict(slot)

    # -- one step ---------------------------------------------------------------------------
    def _step(self) -> None:
        gens = [r for r in self._active if r.state == GENERATING]
        # Shortest remaining prompt first: a short request (a title, a quick question)
        # starts answering at once instead of queueing behind a long prompt's chunks.
        fills = sorted(
            (r for r in self._active if r.state == PREFILL), key=lambda r: len(r.prompt) - len(r.slot.tokens)
        )
        ledger = self.slots.ledger
        want = len(gens) + sum(len(r.prompt) - len(r.slot.tokens) for r in fills)
        if ledger.free < want:
            self._make_room(want)
        while ledger.free < len(gens):
            # The shared context is full: cut the longest running sequence short.
            victim = max(gens, key=lambda r: len(r.slot.tokens))
            gens.remove(victim)
            self._finish(victim, "length", victim.text.finish())
            self._make_room(len(gens))
        budget_cap = self.ctx.n_ubatch if gens else self.ctx.n_batch
        budget = min(budget_cap, self.ctx.n_batch - len(gens), ledger.free - len(gens))

        batch = self.batch
        batch.clear()
        rows: list[tuple[Request, int]] = []
        chunks: list[tuple[Request, list[int]]] = []
        for r in gens:
            rows.append((r, batch.add([r.last_token], len(r.slot.tokens), r.slot.seq, True)))
        for r in fills:
            if budget <= 0:
                break
            done = len(r.slot.tokens)
            take = r.prompt[done : done + budget]
            last = done + len(take) == len(r.prompt)
            idx = batch.add(take, done, r.slot.seq, last)
            chunks.append((r, take))
            if last:
                rows.append((r, idx))
            budget -= len(take)
        if batch.n == 0:
            return

        t0 = time.perf_counter()
        ret = batch.decode(self.ctx)
        self.counters.decode_seconds += time.perf_counter() - t0
        if ret != 0:
            self._decode_failed(ret)
            return
        self.counters.decode_steps += 1

        for r in gens:
            self.slots.appended(r.slot, [r.last_token])
        for r, take in chunks:
            self.slots.appended(r.slot, take)
            self.counters.prompt_tokens_processed += len(take)
        prompts_done = []
        for r, _ in chunks:
            if len(r.slot.tokens) == len(r.prompt):
                r.state = GENERATING
                prompts_done.append((r.slot.seq, list(r.slot.tokens)))
        ctx_ptr = self.ctx.ptr
        for r, idx in rows:
            if r.cancelled:
                self._finish(r, "cancelled", "")
                continue
            self._on_token(r, r.chain.sample(ctx_ptr, idx))
        if self.store is not None:
            # After the first tokens went out; the sequences still hold exactly the prompt.
            for seq, tokens in prompts_done:
                self.store.prompt_done(self.ctx, seq, tokens)

    def _on_token(self, r: Request, tok: int) -> None:
        if not r.t_first:
            r.t_first = time.monotonic()
        r.generated.append(tok)
        self.counters.tokens_generated += 1
        if self.model.is_eog(tok):
            self._finish(r, "stop", r.text.finish(), [tok])
            return
        text = r.text.feed(self.model.piece(tok))
        if r.text.stopped:
            self._finish(r, "stop", text, [tok])
        elif len(r.generated) >= r.max_new:
            self._finish(r, "length", text + r.text.finish(), [tok])
        else:
            r.last_token = tok
            if not r.emit(Step(text, [tok])):
                self._finish(r, "cancelled", "")

    def _finish(self, r: Request, reason: str, text: str, ids: list[int] | None = None) -> None:
        if r.state == DONE:
            return
        usage = Usage(prompt_tokens=len(r.prompt), completion_tokens=len(r.generated), cached_tokens=r.cached)
        with self._cv:
            r.state = DONE
            if r in self._active:
                self._active.remove(r)
            if r.slot is not None:
                self.slots.release(r.slot)
        if reason == "cancelled":
            self.counters.requests_cancelled += 1
        else:
            dt = time.monotonic() - r.t_submit
            self._avg_request_s = 0.8 * self._avg_request_s + 0.2 * dt
        if r.chain is not None:
            r.chain.free()
        r.emit(Step(text, ids or [], reason, usage))

    def _decode_failed(self, ret: int) -> None:
        if ret == 1:
            # No room in the KV cache despite the ledger (fragmentation, SWA): free an idle
            # cache, or else stop the longest sequence, and let the next step retry.
            idle = self.slots.lru_idle_with_cache()
            if idle:
                self.slots.evict(idle[0])
                return
            victim = max(self._active, key=lambda r: len(r.slot.tokens))
            self._finish(victim, "length", victim.text.finish() if victim.text else "")
            return
        raise RuntimeError_(f"llama_decode failed ({ret})")

    def _fail_all(self, err: Exception) -> None:
        e = err if isinstance(err, RuntimeError_) else RuntimeError_(f"engine error: {err}")
        for r in list(self._active):
            with self._cv:
                r.state = DONE
                self._active.remove(r)
                if r.slot is not None:
                    self.slots.release(r.slot)
                    self.slots.evict(r.slot)
            if r.chain is not None:
                r.chain.free()
            r.emit(e)

    def _shutdown(self) -> None:
        for r in list(self._active):
            self._finish(r, "cancelled", "")
        with self._cv:
            waiting, self._waiting = list(self._waiting), collections.deque()
        for r in waiting:
            r.state = DONE
            r.emit(RuntimeError_("the engine is closed"))
        if self.store is not None:
            # Keep what the slots hold (e.g. a conversation's latest turn) for the next run.
            for slot in self.slots.slots:
                if slot.tokens:
                    self.store.offer(self.ctx, slot.seq, slot.tokens)
            self.store.close()
