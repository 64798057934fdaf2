"""Keeps the unified KV cache in order for the policy: sets up a slot for an admitted prompt
(kept or copied prefix, a restore from the prefix store), parks idle caches before a long
prefill, and evicts idle caches when cells run out.

Everything here goes through `KvContext`, so tests drive it with a fake context.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from runtimes.llamacpp.plan import CacheMove, StepPlan
from runtimes.llamacpp.slots import KvOps, Slot, SlotPick, SlotTable

if TYPE_CHECKING:
    from runtimes.llamacpp.prefix_store import PrefixStore

log = logging.getLogger("appliance.llamacpp")

# A stored prefix is restored only when it saves at least this many more tokens.
RESTORE_MIN_GAIN = 32
# Before a long prefill, a kept prefix shorter than this is recomputed instead (see `setup`).
RECOMPUTE_BELOW = 256


class KvContext(KvOps, Protocol):
    """What scheduling needs of the llama.cpp context (model.Context has it all)."""

    n_batch: int
    n_ubatch: int

    def seq_state_size(self, seq: int) -> int: ...
    def seq_state(self, seq: int) -> bytes: ...
    def set_seq_state(self, seq: int, data: bytes) -> bool: ...


class CacheManager:
    """The slots' KV caches and the prefix store behind them (scheduler thread only)."""

    def __init__(self, kv: KvContext, slots: SlotTable, store: PrefixStore | None, park_min_prefill: int):
        self.kv = kv
        self.slots = slots
        self.store = store
        self.park_min_prefill = park_min_prefill

    def setup(self, prompt: list[int], pick: SlotPick, plan: StepPlan) -> int:
        """Make `pick.slot` hold the reusable start of `prompt`; returns how many tokens it keeps."""
        slot = pick.slot
        if pick.discarded() > 0 and self.store is not None:
            self.store.offer(self.kv, slot.seq, slot.tokens)
        if pick.copy_from is not None:
            self.slots.copy_prefix(pick.copy_from, slot, pick.copy_len)
        else:
            self.slots.truncate(slot, pick.keep)
        if self.store is not None:
            self._restore(prompt, slot, plan)
        # The last prompt token is always evaluated again: its logits start the answer.
        keep = self.slots.truncate(slot, min(len(slot.tokens), len(prompt) - 1))
        if len(prompt) - keep >= self.park_min_prefill and self.store is not None:
            self._park_idle(slot, plan)
            if keep < RECOMPUTE_BELOW:
                # A few kept tokens may sit in high cells (placed after another cache that is
                # parked now), and attention spans up to the highest used cell: starting the
                # long prompt at cell 0 costs these tokens once and saves on every chunk.
                keep = self.slots.truncate(slot, 0)
        self.make_room(len(prompt) - keep, plan)
        return keep

    def _restore(self, prompt: list[int], slot: Slot, plan: StepPlan) -> None:
        """Load a stored prefix longer than what the slots offer (e.g. after a restart)."""
        assert self.store is not None
        hit = self.store.lookup(prompt, better_than=len(slot.tokens) + RESTORE_MIN_GAIN)
        if hit is None:
            return
        entry, n = hit
        self.slots.truncate(slot, 0)
        self.make_room(len(entry.tokens), plan)
        if self.slots.ledger.free < len(entry.tokens):
            return
        data = self.store.load(entry)
        if data is None:
            return
        if not self.kv.set_seq_state(slot.seq, data):
            self.kv.seq_rm(slot.seq)
            self.store.forget(entry)
            log.warning("prefix store: could not restore a saved state; dropped it")
            return
        self.slots.restored(slot, entry.tokens)
        self.slots.truncate(slot, n)
        self.store.hit(n)
        plan.restored.append(CacheMove(slot.seq, n, stored=True))

    def _park_idle(self, protect: Slot, plan: StepPlan) -> None:
        """Move idle slots' caches into the prefix store before a long prefill.

        In the unified KV cache every decode attends over all cells up to the highest used
        one, whoever owns them: another slot's idle 8k-token cache made a cold 6k-token
        prefill 8% slower here (BENCHMARKS.md). Parked caches come back from RAM with one
        copy when their conversation returns (`_restore`), which costs far less.
        Without a store nothing is parked, and a cache the store cannot take (larger than its
        RAM) stays where it is: dropping it could mean recomputing a whole conversation.
        """
        assert self.store is not None
        for slot in self.slots.lru_idle_with_cache():
            if slot is protect or self.slots.ledger.exclusive(slot.cells) == 0:
                continue
            short = len(slot.tokens) < self.store.min_tokens  # cheap to recompute
            stored = self.store.offer(self.kv, slot.seq, slot.tokens, exact=True)
            if stored or short:
                plan.parked.append(CacheMove(slot.seq, len(slot.tokens), stored))
                self.slots.evict(slot)

    def make_room(self, need: int, plan: StepPlan) -> None:
        """Evict idle slots' caches (least recently used first) until `need` cells are free."""
        ledger = self.slots.ledger
        for slot in self.slots.lru_idle_with_cache():
            if ledger.free >= need:
                return
            stored = self.store is not None and self.store.offer(self.kv, slot.seq, slot.tokens)
            plan.evicted.append(CacheMove(slot.seq, len(slot.tokens), stored))
            self.slots.evict(slot)

    def evict_lru_idle(self, plan: StepPlan) -> bool:
        """Drop the least recently used idle cache, without saving it; False if there is none."""
        idle = self.slots.lru_idle_with_cache()
        if not idle:
            return False
        plan.evicted.append(CacheMove(idle[0].seq, len(idle[0].tokens)))
        self.slots.evict(idle[0])
        return True

    def keep_for_restart(self) -> None:
        """Offer what the slots hold (e.g. a conversation's latest turn) to the store, and close it."""
        if self.store is None:
            return
        for slot in self.slots.slots:
            if slot.tokens:
                self.store.offer(self.kv, slot.seq, slot.tokens)
        self.store.close()
