"""Slots: which tokens each sequence's KV cache holds, and where a new prompt should go.

A slot owns one llama.cpp sequence id. Its `tokens` are exactly what the KV cache holds
for that sequence (position i holds tokens[i]), so the longest common prefix with a new
prompt is what need not be computed again.

The KV cache is unified: cells are shared by all sequences, and a prefix copied from one
sequence to another shares its cells instead of duplicating them. `CellLedger` counts
distinct cells so the scheduler knows how many are free without asking llama.cpp.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Protocol

# A slot is taken over for its prefix only when the match covers this share of the prompt
# (llama-server's default similarity threshold); below it, an empty or LRU slot is used.
MIN_SIMILARITY = 0.1
# Copy a prefix into an empty slot, rather than cutting the matching slot's own cache,
# when cutting would throw away more than this many of its tokens.
COPY_INSTEAD_OF_CUT = 64


class KvOps(Protocol):
    """The KV cache operations slots need (implemented by model.Context; faked in tests)."""

    n_ctx: int

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> bool: ...
    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None: ...
    def seq_pos_min(self, seq: int) -> int: ...


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix; compares in C-speed chunks."""
    n = min(len(a), len(b))
    i, step = 0, 256
    while i + step <= n and a[i : i + step] == b[i : i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


class CellLedger:
    """Reference counts of KV cells, so shared prefixes are counted once."""

    def __init__(self, n_cells: int):
        self.n_cells = n_cells
        self._refs: dict[int, int] = {}
        self._ids = itertools.count()

    @property
    def used(self) -> int:
        return len(self._refs)

    @property
    def free(self) -> int:
        return self.n_cells - len(self._refs)

    def new(self, k: int) -> list[int]:
        ids = [next(self._ids) for _ in range(k)]
        for i in ids:
            self._refs[i] = 1
        return ids

    def retain(self, ids: list[int]) -> None:
        refs = self._refs
        for i in ids:
            refs[i] += 1

    def release(self, ids: list[int]) -> None:
        refs = self._refs
        for i in ids:
            n = refs[i] - 1
            if n:
                refs[i] = n
            else:
                del refs[i]

    def exclusive(self, ids: list[int]) -> int:
        """How many of these cells would be freed if their owner dropped them."""
        refs = self._refs
        return sum(1 for i in ids if refs[i] == 1)


@dataclass
class Slot:
    seq: int
    tokens: list[int] = field(default_factory=list)
    cells: list[int] = field(default_factory=list)
    busy: bool = False
    last_used: int = 0


@dataclass
class SlotPick:
    """Where a prompt goes: the slot, how much of its cache it keeps, or which slot to copy."""

    slot: Slot
    keep: int  # tokens of the slot's own cache kept (when not copying)
    copy_from: Slot | None = None
    copy_len: int = 0

    @property
    def reused(self) -> int:
        return self.copy_len if self.copy_from is not None else self.keep

    def discarded(self) -> int:
        """Tokens of the target slot's cache this pick throws away."""
        if self.copy_from is not None:
            return len(self.slot.tokens)
        return len(self.slot.tokens) - self.keep


class SlotTable:
    """The slots of one context, their KV bookkeeping, and the placement policy."""

    def __init__(self, kv: KvOps, n_slots: int, n_swa: int = 0):
        self.kv = kv
        self.slots = [Slot(seq=i) for i in range(n_slots)]
        self.ledger = CellLedger(kv.n_ctx)
        self.n_swa = n_swa
        self._clock = itertools.count(1)

    # -- queries ----------------------------------------------------------------------------
    def idle(self) -> list[Slot]:
        return [s for s in self.slots if not s.busy]

    @property
    def busy_count(self) -> int:
        return sum(1 for s in self.slots if s.busy)

    def cached_tokens(self) -> int:
        return sum(len(s.tokens) for s in self.slots)

    # -- placement policy -------------------------------------------------------------------
    def place(self, prompt: list[int]) -> SlotPick | None:
        """Choose a slot for `prompt` (None when every slot is busy)."""
        idle = self.idle()
        if not idle:
            return None
        match = {s.seq: common_prefix(s.tokens, prompt) for s in self.slots}
        need = max(1, int(MIN_SIMILARITY * len(prompt)))
        empty = [s for s in idle if not s.tokens]

        # The longest match anywhere; on ties prefer an idle slot (no copy needed).
        src = max(self.slots, key=lambda s: (match[s.seq], not s.busy, s.last_used))
        best = match[src.seq]
        if best >= need:
            if not src.busy:
                if len(src.tokens) - best > COPY_INSTEAD_OF_CUT and empty:
                    # Keep src's own longer history for its owner; share the prefix instead.
                    return SlotPick(empty[0], 0, copy_from=src, copy_len=best)
                return SlotPick(src, best)
            target = empty[0] if empty else min(idle, key=lambda s: s.last_used)
            if match[target.seq] >= best:
                return SlotPick(target, match[target.seq])
            return SlotPick(target, 0, copy_from=src, copy_len=best)
        target = empty[0] if empty else min(idle, key=lambda s: s.last_used)
        return SlotPick(target, match[target.seq])

    def lru_idle_with_cache(self) -> list[Slot]:
        """Idle slots holding cells, least recently used first (eviction order)."""
        return sorted((s for s in self.idle() if s.tokens), key=lambda s: s.last_used)

    # -- KV operations (scheduler thread only) ----------------------------------------------
    def acquire(self, slot: Slot) -> None:
        slot.busy = True
        slot.last_used = next(self._clock)

    def release(self, slot: Slot) -> None:
        slot.busy = False
        slot.last_used = next(self._clock)

    def truncate(self, slot: Slot, n: int) -> int:
        """Drop the slot's cache from position n on; returns how many tokens remain."""
        if n >= len(slot.tokens):
            return len(slot.tokens)
        if n > 0 and self.n_swa > 0:
            # Sliding-window layers keep only the last n_swa positions: the tail can be
            # recomputed on top of the prefix only if the window before n is still there.
            pos_min = self.kv.seq_pos_min(slot.seq)
            if pos_min > max(0, n - self.n_swa):
                n = 0
        if n > 0 and not self.kv.seq_rm(slot.seq, n, -1):
            n = 0  # partial removal unsupported (e.g. recurrent state): start over
        if n == 0:
            self.kv.seq_rm(slot.seq, -1, -1)
        self.ledger.release(slot.cells[n:])
        del slot.tokens[n:]
        del slot.cells[n:]
        return n

    def evict(self, slot: Slot) -> int:
        """Empty a slot's cache; returns how many cells that freed."""
        freed = self.ledger.exclusive(slot.cells)
        self.truncate(slot, 0)
        return freed

    def copy_prefix(self, src: Slot, dst: Slot, n: int) -> None:
        """Make dst hold src's first n tokens, sharing src's cells."""
        self.truncate(dst, 0)
        self.kv.seq_cp(src.seq, dst.seq, 0, n)
        dst.tokens = src.tokens[:n]
        dst.cells = src.cells[:n]
        self.ledger.retain(dst.cells)

    def appended(self, slot: Slot, tokens: list[int]) -> None:
        """Record tokens llama_decode has just written to the slot's sequence."""
        slot.tokens.extend(tokens)
        slot.cells.extend(self.ledger.new(len(tokens)))

    def restored(self, slot: Slot, tokens: list[int]) -> None:
        """Record a sequence state loaded into an (emptied) slot."""
        slot.tokens = list(tokens)
        slot.cells = self.ledger.new(len(tokens))
