"""Engine parts that need no model: text assembly, slot placement, KV cell ledger, prefix store."""

from __future__ import annotations

import pytest

from runtimes.llamacpp.prefix_store import PrefixStore
from runtimes.llamacpp.sampling import TextAssembler
from runtimes.llamacpp.slots import CellLedger, SlotTable, common_prefix

# -- text assembly ------------------------------------------------------------------------


def feed_all(asm: TextAssembler, pieces: list[bytes]) -> str:
    return "".join(asm.feed(p) for p in pieces) + asm.finish()


def test_multibyte_character_is_held_until_complete():
    snow = "☃".encode()  # 3 bytes
    asm = TextAssembler([])
    assert asm.feed(b"a" + snow[:1]) == "a"
    assert asm.feed(snow[1:2]) == ""
    assert asm.feed(snow[2:] + b"b") == "☃b"
    assert asm.finish() == ""


def test_broken_bytes_at_the_end_become_a_replacement_character():
    asm = TextAssembler([])
    assert asm.feed(b"x\xe2\x98") == "x"
    assert asm.finish() == "\ufffd"


def test_stop_string_is_stripped_and_held_back_while_partial():
    asm = TextAssembler(["</end>"])
    assert asm.feed(b"hello </") == "hello "  # "</" could start the stop string
    assert not asm.stopped
    assert asm.feed(b"en") == ""
    assert asm.feed(b"d> more") == ""
    assert asm.stopped


def test_partial_stop_that_does_not_complete_is_released():
    asm = TextAssembler(["STOP"])
    assert asm.feed(b"ST") == ""
    assert asm.feed(b"ART") == "START"
    assert asm.feed(b" S") == " "
    assert asm.finish() == "S"  # generation ended: the held text is just text


def test_earliest_of_several_stop_strings_wins():
    asm = TextAssembler(["bb", "a"])
    assert feed_all(asm, [b"xxbba"]) == "xx"
    assert asm.stopped


# -- slots --------------------------------------------------------------------------------


class FakeKvOps:
    """Records KV calls; behaves like a unified cache with full-attention layers."""

    def __init__(self, n_ctx: int = 1000):
        self.n_ctx = n_ctx
        self.calls: list[tuple] = []

    def seq_rm(self, seq, p0=-1, p1=-1):
        self.calls.append(("rm", seq, p0, p1))
        return True

    def seq_cp(self, src, dst, p0=-1, p1=-1):
        self.calls.append(("cp", src, dst, p0, p1))

    def seq_pos_min(self, seq):
        return 0


def test_common_prefix():
    a = list(range(1000))
    assert common_prefix(a, a) == 1000
    assert common_prefix(a, [*a[:700], -1]) == 700
    assert common_prefix([], a) == 0
    assert common_prefix(a[:10], a) == 10


def test_prompt_goes_to_the_slot_with_the_longest_prefix():
    table = SlotTable(FakeKvOps(), 3)
    table.appended(table.slots[0], list(range(100)))
    table.appended(table.slots[1], [*range(50), 7, 7, 7])
    p = table.place([*range(100), 1, 2])
    assert p is not None and p.slot is table.slots[0] and p.keep == 100 and p.copy_from is None


def test_unrelated_prompt_takes_an_empty_slot_not_a_cached_one():
    table = SlotTable(FakeKvOps(), 2)
    table.appended(table.slots[0], list(range(100)))
    p = table.place([5000, *range(100)])
    assert p is not None and p.slot is table.slots[1]


def test_unrelated_prompt_takes_the_least_recently_used_slot():
    table = SlotTable(FakeKvOps(), 2)
    for s in table.slots:
        table.acquire(s)
        table.appended(s, [s.seq + 900] * 10)
    table.release(table.slots[1])
    table.release(table.slots[0])  # slot 1 is now the least recently used
    p = table.place([1, 2, 3])
    assert p is not None and p.slot is table.slots[1]


def test_prefix_of_a_busy_slot_is_copied_not_recomputed():
    mem = FakeKvOps()
    table = SlotTable(mem, 2)
    table.acquire(table.slots[0])
    table.appended(table.slots[0], list(range(200)))
    p = table.place([*range(150), 9, 9])
    assert p is not None and p.slot is table.slots[1]
    assert p.copy_from is table.slots[0] and p.copy_len == 150
    table.copy_prefix(p.copy_from, p.slot, p.copy_len)
    assert ("cp", 0, 1, 0, 150) in mem.calls
    assert table.slots[1].tokens == list(range(150))
    assert table.ledger.used == 200  # the copied prefix shares cells


def test_long_idle_history_is_shared_into_an_empty_slot_instead_of_cut():
    table = SlotTable(FakeKvOps(), 2)
    table.appended(table.slots[0], list(range(1000)))
    p = table.place([*range(600), 1, 2, 3])
    assert p is not None and p.slot is table.slots[1] and p.copy_from is table.slots[0]


def test_all_busy_means_no_placement():
    table = SlotTable(FakeKvOps(), 1)
    table.acquire(table.slots[0])
    assert table.place([1, 2]) is None


def test_truncate_and_evict_keep_the_ledger_exact():
    mem = FakeKvOps()
    table = SlotTable(mem, 2)
    a, b = table.slots
    table.appended(a, list(range(100)))
    table.copy_prefix(a, b, 60)
    table.appended(b, [1] * 10)
    assert table.ledger.used == 110
    table.truncate(a, 50)  # cells 50..59 still belong to b
    assert table.ledger.used == 70
    assert table.evict(b) == 20  # b alone held 50..59 and its 10 own tokens
    assert table.ledger.used == 50
    assert ("rm", 0, 50, -1) in mem.calls and ("rm", 1, -1, -1) in mem.calls


def test_ledger_counts_shared_cells_once():
    led = CellLedger(10)
    ids = led.new(4)
    led.retain(ids[:2])
    assert led.used == 4 and led.free == 6
    assert led.exclusive(ids) == 2
    led.release(ids)
    assert led.used == 2


# -- prefix store (with a fake context) ---------------------------------------------------


class FakeStateCtx:
    def __init__(self, states: dict[int, bytes]):
        self.states = states

    def seq_state_size(self, seq: int) -> int:
        return len(self.states[seq])

    def seq_state(self, seq: int) -> bytes:
        return self.states[seq]


def test_prefix_store_survives_a_restart(tmp_path):
    toks = list(range(300))
    store = PrefixStore(tmp_path, model_key="m", min_tokens=100)
    store.prompt_done(FakeStateCtx({0: b"state-300"}), 0, toks)
    store.close()

    again = PrefixStore(tmp_path, model_key="m", min_tokens=100)
    hit = again.lookup([*range(250), 7, 7], better_than=0)
    assert hit is not None
    entry, n = hit
    assert n == 250 and entry.tokens == toks
    assert again.load(entry) == b"state-300"
    assert again.lookup([*range(250), 7, 7], better_than=250) is None
    assert PrefixStore(tmp_path, model_key="other").lookup(toks, better_than=0) is None


def test_prefix_store_skips_short_and_covered_prefixes_and_supersedes(tmp_path):
    store = PrefixStore(tmp_path, model_key="m", min_tokens=100)
    ctx = FakeStateCtx({0: b"a", 1: b"b", 2: b"c"})
    assert not store.offer(ctx, 0, list(range(50)))  # too short
    assert store.stats().entries == 0
    assert store.offer(ctx, 0, list(range(200)))
    assert store.offer(ctx, 1, list(range(250)))  # only 50 new tokens: covered
    assert store.stats().entries == 1
    store.offer(ctx, 2, list(range(400)))  # extends the first: replaces it
    store.flush()
    st = store.stats()
    assert st.entries == 1 and st.saves == 2
    assert len(list(store.dir.glob("*.kv"))) == 1
    store.close()


def test_prefix_store_says_when_it_cannot_take_a_state(tmp_path):
    """Parking evicts a cache only if the store holds it; one larger than its RAM is refused."""
    store = PrefixStore(tmp_path, model_key="m", min_tokens=10, ram_bytes=100)
    assert not store.offer(FakeStateCtx({0: b"x" * 101}), 0, list(range(20)), exact=True)
    assert store.stats().entries == 0
    assert store.offer(FakeStateCtx({0: b"x" * 100}), 0, list(range(20)), exact=True)
    store.close()


@pytest.mark.parametrize("limit", [15])
def test_prefix_store_ram_is_bounded(tmp_path, limit):
    store = PrefixStore(tmp_path, model_key="m", min_tokens=10, ram_bytes=limit)
    ctx = FakeStateCtx({0: b"x" * 10, 1: b"y" * 10})
    store.offer(ctx, 0, list(range(20)))
    store.flush()
    store.offer(ctx, 1, [9, *range(20)])
    store.flush()
    st = store.stats()
    assert st.ram_bytes <= limit and st.entries == 2 and st.disk_bytes == 20
    store.close()
