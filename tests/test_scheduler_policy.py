"""The scheduling policy without a model: a fake KV context and plain token lists.

`step` stands in for the executor (scheduler.py): it takes the plan, records what
llama_decode would have written, and "samples" token 7 for every row that has logits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from runtimes.base import Overloaded, QueueTimeout, RuntimeError_, Sampling
from runtimes.llamacpp.cache_manager import RECOMPUTE_BELOW
from runtimes.llamacpp.plan import CacheMove, StepPlan
from runtimes.llamacpp.policy import GATHER_S, Arrival, Policy
from runtimes.llamacpp.prefix_store import PrefixStore
from runtimes.llamacpp.requests import ReqState, Request

WAITING, PREFILL, GENERATING, DONE = ReqState.WAITING, ReqState.PREFILL, ReqState.GENERATING, ReqState.DONE


class FakeKv:
    """A KvContext that records calls; every sequence's saved state is `state_size` bytes."""

    def __init__(self, n_ctx: int, n_batch: int, n_ubatch: int, state_size: int = 10):
        self.n_ctx, self.n_batch, self.n_ubatch = n_ctx, n_batch, n_ubatch
        self.state_size = state_size
        self.calls: list[tuple] = []

    def seq_rm(self, seq: int, p0: int = -1, p1: int = -1) -> bool:
        self.calls.append(("rm", seq, p0, p1))
        return True

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        self.calls.append(("cp", src, dst, p0, p1))

    def seq_pos_min(self, seq: int) -> int:
        return 0

    def seq_state_size(self, seq: int) -> int:
        return self.state_size

    def seq_state(self, seq: int) -> bytes:
        self.calls.append(("save", seq))
        return bytes(self.state_size)

    def set_seq_state(self, seq: int, data: bytes) -> bool:
        self.calls.append(("load", seq))
        return True


def policy(n_slots=2, *, n_ctx=1000, n_batch=64, n_ubatch=16, state_size=10, max_queue=8, **kw) -> Policy:
    kv = FakeKv(n_ctx, n_batch, n_ubatch, state_size)
    return Policy(kv, n_slots, max_queue=max_queue, **kw)


@pytest.fixture
def new():
    """Make a request for a prompt (the policy never emits, but a Request carries a loop)."""
    loop = asyncio.new_event_loop()

    def make(prompt: Iterable[int], max_new: int = 8) -> Request:
        return Request(list(prompt), Sampling(), max_new, loop, asyncio.Queue())

    yield make
    loop.close()


def step(p: Policy) -> StepPlan:
    """One step as the executor runs it, with token 7 as every sampled token."""
    plan = p.schedule()
    ends = [c.req for c in plan.prefill if c.start + len(c.tokens) == len(c.req.prompt)]
    p.commit(plan)
    for r in [*plan.decode, *ends]:
        r.generated.append(7)
        r.last_token = 7
    return plan


def chunks(plan: StepPlan) -> list[tuple[Request, int, int]]:
    return [(c.req, c.start, len(c.tokens)) for c in plan.prefill]


def store_at(tmp_path, **kw) -> PrefixStore:
    return PrefixStore(tmp_path, model_key="m", min_tokens=32, **kw)


# -- admission ----------------------------------------------------------------------------


def test_admission_is_first_come_first_served(new):
    p = policy(n_slots=2)
    a, b, c = new(range(0, 10)), new(range(100, 110)), new(range(200, 210))
    for r in (a, b, c):
        p.enqueue(r)
    plan = step(p)
    assert [x.req for x in plan.admitted] == [a, b] and [a.id, b.id, c.id] == [1, 2, 3]
    assert c.state is WAITING and list(p.waiting) == [c]
    p.retire(b, "stop")
    plan = step(p)
    assert [x.req for x in plan.admitted] == [c] and plan.admitted[0].pick.slot is b.slot
    assert plan.decode == [a]


def test_a_request_that_does_not_fit_blocks_those_behind_it(new):
    """Admission never skips the head of the queue, even for a request that would fit."""
    p = policy(n_slots=3, n_ctx=100)
    a = new(range(60))
    p.enqueue(a)
    step(p)  # a generates, holding 60 of 100 cells
    big, small = new(range(1000, 1050)), new(range(2000, 2005))
    p.enqueue(big)
    p.enqueue(small)
    plan = step(p)
    assert plan.admitted == [] and list(p.waiting) == [big, small] and plan.decode == [a]
    p.retire(a, "stop")
    plan = p.schedule()
    assert [x.req for x in plan.admitted] == [big, small]
    # Room for big came from a's idle cache, evicted (no store to keep it).
    assert plan.evicted == [CacheMove(a.slot.seq, 61, stored=False)]


def test_an_idle_engine_waits_for_requests_announced_with_the_first_and_prefills_them_together(new):
    """Prompts sent together reach the queue a few ms apart (each is rendered and tokenized
    first): the first step holds for the announced ones, then all prefill in one batch and
    start decoding in the same step, as llama-server's do."""
    p = policy(n_slots=4, n_batch=64)
    arrivals = [Arrival(p) for _ in range(3)]
    a, b, c = new(range(0, 10)), new(range(100, 110)), new(range(200, 210))
    p.enqueue(a, arrivals[0])
    p.enqueue(b, arrivals[1])
    plan = p.schedule()
    assert plan.admitted == [] and plan.t_step is None and p.incoming == 1  # c is still on its way
    p.enqueue(c, arrivals[2])
    plan = step(p)
    assert [x.req for x in plan.admitted] == [a, b, c] and {ch[0] for ch in chunks(plan)} == {a, b, c}
    assert step(p).decode == [a, b, c]


def test_a_withdrawn_arrival_or_the_gather_limit_releases_the_first_step(new):
    p = policy(n_slots=4)
    first, lost = Arrival(p), Arrival(p)
    a = new(range(10))
    p.enqueue(a, first)
    assert p.schedule().admitted == []
    lost.withdraw()  # its request failed before the queue (a bad template, a closed client)
    lost.withdraw()
    assert p.incoming == 0 and [x.req for x in p.schedule().admitted] == [a]

    late = Arrival(p)
    b = new(range(100, 110))
    p.retire(a, "stop")
    p.enqueue(b)
    b.t_submit -= GATHER_S  # b has waited as long as a first step may wait
    assert [x.req for x in p.schedule().admitted] == [b] and p.incoming == 1
    late.withdraw()


def test_a_busy_engine_or_a_full_house_does_not_wait_for_arrivals(new):
    """Only the first step from idle waits, and only for requests that could join it."""
    p = policy(n_slots=2)
    a = new(range(10))
    p.enqueue(a)
    step(p)
    Arrival(p)
    b = new(range(100, 110))
    p.enqueue(b)
    assert [x.req for x in p.schedule().admitted] == [b]  # a is decoding: b joins at once

    q = policy(n_slots=2)
    Arrival(q)
    c, d = new(range(10)), new(range(100, 110))
    q.enqueue(c)
    q.enqueue(d)  # two queued, two slots: an arrival could not start with them anyway
    assert [x.req for x in q.schedule().admitted] == [c, d]


def test_a_request_that_cannot_start_is_refused_and_the_next_one_starts(new):
    def prepare(req: Request) -> None:
        if req.prompt[0] == 666:
            raise RuntimeError_("bad grammar")

    p = policy(n_slots=1, prepare=prepare)
    bad, good = new([666, 1, 2]), new([5, 6, 7])
    p.enqueue(bad)
    p.enqueue(good)
    plan = p.schedule()
    assert [r for r, _ in plan.refused] == [bad] and bad.state is DONE
    assert [x.req for x in plan.admitted] == [good] and good.state is PREFILL


def test_a_full_queue_is_overloaded_with_retry_after_from_recent_requests(new):
    p = policy(n_slots=1, max_queue=1)
    first = new(range(10))
    p.enqueue(first)
    step(p)
    p.enqueue(new(range(20, 30)))
    with pytest.raises(Overloaded) as e:
        p.enqueue(new(range(40, 50)))
    assert e.value.retry_after_s == 10.0  # 5 s starting average x 2 in line / 1 slot
    first.t_submit -= 15  # it took 15 s: the average moves a fifth of the way to it
    p.retire(first, "stop")
    step(p)
    p.enqueue(new(range(60, 70)))
    with pytest.raises(Overloaded) as e:
        p.enqueue(new(range(80, 90)))
    assert e.value.retry_after_s == 14.0  # (0.8 x 5 + 0.2 x 15) x 2 / 1


def test_a_request_waiting_past_the_queue_timeout_gets_a_clean_503(new):
    p = policy(n_slots=1, queue_timeout_s=60)
    running, old, young = new(range(10)), new(range(100, 110)), new(range(200, 210))
    for r in (running, old, young):
        p.enqueue(r)
    step(p)
    old.t_submit -= 61  # waited past the timeout behind a long generation
    young.t_submit -= 30
    plan = step(p)
    assert [r for r, _ in plan.refused] == [old] and old.state is DONE
    err = plan.refused[0][1]
    assert isinstance(err, QueueTimeout) and err.status == 503 and err.retry_after_s >= 1
    assert "60 s" in str(err)
    assert list(p.waiting) == [young] and plan.decode == [running]  # the rest goes on


def test_cancelling_leaves_the_queue_at_once_and_a_slot_at_the_next_step(new):
    p = policy(n_slots=1)
    running, queued = new(range(10)), new(range(100, 110))
    p.enqueue(running)
    p.enqueue(queued)
    step(p)
    p.cancel(queued)
    assert queued.state is DONE and not p.waiting and p.counters.requests_cancelled == 1
    p.cancel(running)
    assert running.state is GENERATING
    plan = p.schedule()
    assert plan.cancelled == [running] and running.state is DONE and not running.slot.busy
    assert plan.t_step is None and p.counters.requests_cancelled == 2


# -- what one step computes ---------------------------------------------------------------


def test_a_lone_prompt_is_prefilled_in_n_batch_chunks(new):
    p = policy(n_batch=64, n_ubatch=16)
    r = new(range(1000, 1150))
    p.enqueue(r)
    assert [chunks(step(p)) for _ in range(3)] == [[(r, 0, 64)], [(r, 64, 64)], [(r, 128, 22)]]
    assert r.state is GENERATING and step(p).decode == [r]
    assert p.counters.prompt_tokens_processed == 150


def test_prompts_share_the_budget_shortest_remaining_first(new):
    p = policy(n_batch=64)
    longer, shorter = new(range(1000, 1040)), new(range(2000, 2030))
    p.enqueue(longer)
    p.enqueue(shorter)
    assert chunks(step(p)) == [(shorter, 0, 30), (longer, 0, 34)]


def test_running_sequences_decode_every_step_beside_n_ubatch_chunks(new):
    p = policy(n_slots=3, n_batch=64, n_ubatch=16)
    g1, g2 = new(range(10)), new(range(100, 110))
    p.enqueue(g1)
    p.enqueue(g2)
    step(p)
    long = new(range(1000, 1100))
    p.enqueue(long)
    starts = []
    while long.state is not GENERATING:
        plan = step(p)
        assert plan.decode == [g1, g2]
        assert sum(len(c.tokens) for c in plan.prefill) <= 16
        starts += [c.start for c in plan.prefill]
    assert starts == list(range(0, 100, 16))
    assert step(p).decode == [g1, g2, long]


def test_decode_rows_count_against_n_batch(new):
    p = policy(n_slots=3, n_batch=20, n_ubatch=20)
    for i in range(2):
        p.enqueue(new(range(10 * i, 10 * i + 5)))
    step(p)
    long = new(range(1000, 1100))
    p.enqueue(long)
    assert chunks(step(p)) == [(long, 0, 18)]


def test_a_short_request_starts_answering_during_a_long_prefill(new):
    """With a slot free, a short request is admitted at the next step and its prompt goes
    first; the long prompt goes on beside its decode in n_ubatch chunks."""
    p = policy(n_slots=2, n_batch=64, n_ubatch=16)
    long = new(range(1000, 1500))
    p.enqueue(long)
    step(p)
    short = new(range(2000, 2010))
    p.enqueue(short)
    plan = step(p)
    assert [x.req for x in plan.admitted] == [short]
    assert chunks(plan) == [(short, 0, 10), (long, 64, 54)]
    plan = step(p)
    assert plan.decode == [short] and chunks(plan) == [(long, 118, 16)]


def test_with_every_slot_busy_a_short_request_waits_for_the_whole_long_request(new):
    """Current behaviour: no preemption. Behind a long prompt in the only slot, a short
    request waits until the long one has prefilled and generated to its end."""
    p = policy(n_slots=1, n_batch=64, n_ubatch=16)
    long, short = new(range(1000, 1300), max_new=3), new(range(2000, 2010))
    p.enqueue(long)
    p.enqueue(short)
    steps = 0
    while long.state is not DONE:
        step(p)
        steps += 1
        assert short.state is WAITING
        if len(long.generated) == long.max_new:
            p.retire(long, "length")
    assert steps == 7  # five chunks (the last one samples the first token), two decodes
    assert [x.req for x in step(p).admitted] == [short]


# -- prefix reuse -------------------------------------------------------------------------


def test_a_prompt_reuses_the_slot_with_the_longest_prefix(new):
    p = policy(n_slots=3, n_batch=256)
    a, b = new(range(100)), new([*range(50), *[7] * 10])
    p.enqueue(a)
    p.enqueue(b)
    step(p)
    p.retire(a, "stop")
    p.retire(b, "stop")
    follow = new([*range(100), 1, 2])
    p.enqueue(follow)
    plan = step(p)
    (adm,) = plan.admitted
    assert adm.pick.slot is a.slot and adm.pick.copy_from is None and adm.cached == 100
    assert chunks(plan) == [(follow, 100, 2)]
    assert p.counters.prompt_tokens_cached == 100


def test_a_fully_cached_prompt_still_computes_its_last_token(new):
    """Its logits start the answer, so the cache gives all but the last prompt token."""
    p = policy(n_slots=1)
    idle_caches(p, new, range(40))
    again = new(range(40))
    p.enqueue(again)
    plan = p.schedule()
    assert again.cached == 39 and chunks(plan) == [(again, 39, 1)]


def test_the_prefix_of_a_running_sequence_is_copied_into_a_free_slot(new):
    p = policy(n_slots=2, n_batch=256)
    running = new(range(200))
    p.enqueue(running)
    step(p)
    other = new([*range(150), 9, 9])
    p.enqueue(other)
    plan = p.schedule()
    (adm,) = plan.admitted
    assert adm.pick.slot is not running.slot and adm.pick.copy_from is running.slot
    assert adm.pick.copy_len == 150 and other.cached == 150
    assert ("cp", running.slot.seq, other.slot.seq, 0, 150) in p.kv.calls
    assert plan.decode == [running] and chunks(plan) == [(other, 150, 2)]
    assert p.slots.ledger.used == 200  # the copied prefix shares its cells


@pytest.mark.parametrize(("held", "cached"), [(0, 120), (90, 90)])
def test_a_stored_prefix_is_restored_only_when_it_saves_enough(tmp_path, new, held, cached):
    """RESTORE_MIN_GAIN: 120 stored tokens replace a slot's 0, not its 90."""
    store = store_at(tmp_path)
    store.prompt_done(FakeKv(1000, 64, 16), 0, list(range(120)))
    p = policy(n_slots=1, store=store)
    p.slots.appended(p.slots.slots[0], list(range(held)))
    r = new([*range(120), 7, 7])
    p.enqueue(r)
    plan = p.schedule()
    assert r.cached == cached
    assert plan.restored == ([CacheMove(0, 120, stored=True)] if held == 0 else [])
    assert (("load", 0) in p.kv.calls) == (held == 0)
    store.close()


# -- parking idle caches ------------------------------------------------------------------


def idle_caches(p: Policy, new, *prompts: Iterable[int]) -> list[Request]:
    """Run prompts side by side, then end them: their slots stay idle holding their caches."""
    reqs = [new(pr) for pr in prompts]
    for r in reqs:
        p.enqueue(r)
    step(p)
    for r in reqs:
        p.retire(r, "stop")
    return reqs


def test_idle_caches_are_parked_before_a_long_prompt(tmp_path, new):
    store = store_at(tmp_path)
    p = policy(n_slots=3, n_batch=512, store=store, park_min_prefill=64)
    conv, tiny = idle_caches(p, new, range(100), range(500, 530))
    p.enqueue(new(range(6000, 6080)))
    plan = p.schedule()
    # The store holds conv; tiny is below its min_tokens, cheap to recompute: dropped.
    assert plan.parked == [CacheMove(conv.slot.seq, 100, True), CacheMove(tiny.slot.seq, 30, False)]
    assert not conv.slot.tokens and not tiny.slot.tokens
    assert store.lookup(list(range(100)), better_than=0) is not None
    store.close()


@pytest.mark.parametrize("with_store", [True, False])
def test_nothing_is_parked_before_a_short_prompt_or_without_a_store(tmp_path, new, with_store):
    store = store_at(tmp_path) if with_store else None
    p = policy(n_slots=2, n_batch=512, store=store, park_min_prefill=64)
    (conv,) = idle_caches(p, new, range(100))
    prompt = range(6000, 6030) if with_store else range(6000, 6080)  # short / long
    p.enqueue(new(prompt))
    plan = p.schedule()
    assert plan.parked == [] and len(conv.slot.tokens) == 100
    if store is not None:
        store.close()


def test_a_cache_the_store_cannot_take_is_not_parked(tmp_path, new):
    store = store_at(tmp_path, ram_bytes=50)
    p = policy(n_slots=2, n_batch=512, store=store, park_min_prefill=64, state_size=100)
    (conv,) = idle_caches(p, new, range(100))
    p.enqueue(new(range(6000, 6080)))
    plan = p.schedule()
    assert plan.parked == [] and len(conv.slot.tokens) == 100
    store.close()


@pytest.mark.parametrize("shared", [50, RECOMPUTE_BELOW + 24])
def test_before_a_long_prompt_a_short_kept_prefix_is_recomputed(tmp_path, new, shared):
    """RECOMPUTE_BELOW: the long prompt then starts at cell 0."""
    store = store_at(tmp_path)
    p = policy(n_slots=1, n_batch=512, store=store, park_min_prefill=64)
    idle_caches(p, new, range(300))
    r = new([*range(shared), *range(5000, 5100)])
    p.enqueue(r)
    plan = p.schedule()
    assert plan.admitted[0].pick.keep == shared
    assert r.cached == (0 if shared < RECOMPUTE_BELOW else shared)
    assert chunks(plan)[0][1] == r.cached
    store.close()


# -- a full context -----------------------------------------------------------------------


def test_a_full_context_evicts_idle_caches_before_cutting_anyone(new):
    p = policy(n_slots=3, n_ctx=40)
    (old,) = idle_caches(p, new, range(500, 510))
    a, b = new(range(15)), new(range(100, 112))
    p.enqueue(a)
    p.enqueue(b)
    step(p)  # 27 prompt tokens + the idle 10: 37 of 40 cells
    step(p)  # two decodes: 39
    plan = step(p)
    assert plan.evicted == [CacheMove(old.slot.seq, 10, False)] and plan.cut_short == []
    assert plan.decode == [a, b]


def test_a_full_context_cuts_the_longest_running_sequence_short(new):
    p = policy(n_slots=2, n_ctx=40)
    a, b = new(range(20)), new(range(100, 115))
    p.enqueue(a)
    p.enqueue(b)
    for _ in range(3):  # the prompts, then two decodes: 39 of 40 cells
        step(p)
    plan = step(p)
    assert plan.cut_short == [a] and a.state is DONE and plan.decode == [b]
    assert plan.evicted == [] and not a.slot.busy  # its cache stays until the cells are needed
    plan = step(p)
    assert plan.decode == [b] and plan.evicted == [CacheMove(a.slot.seq, 22, False)]
