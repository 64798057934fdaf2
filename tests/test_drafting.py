"""Speculative decoding without a model: the n-gram drafter, its adaptive length, and the
policy's draft budget (a fake KV context; the executor is played by `step`)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from runtimes.base import Sampling
from runtimes.llamacpp.drafting import DraftConfig, Drafter, NgramIndex, spec_mode
from runtimes.llamacpp.policy import Policy
from runtimes.llamacpp.requests import ReqState, Request
from runtimes.llamacpp.sampling import near_tie
from tests.test_scheduler_policy import FakeKv


def test_index_finds_the_latest_earlier_occurrence_of_the_suffix():
    idx = NgramIndex(2, 4)
    idx.extend([1, 2, 3, 9, 1, 2, 3, 8, 5, 1, 2, 3])
    assert idx.find(3) == 7  # the later "1 2 3" (followed by 8), not the current suffix itself
    assert idx.find(4) is None  # "5 1 2 3" is new
    idx.extend([8])
    assert idx.find(4) == 8  # "1 2 3 8" occurred before, followed by 5


def test_index_grows_incrementally_like_a_bulk_build():
    tokens = [i % 7 for i in range(300)] + [3, 1, 4, 1, 5]
    bulk = NgramIndex(2, 4)
    bulk.extend(tokens)
    inc = NgramIndex(2, 4)
    for t in tokens:
        inc.extend([t])
    assert bulk._last == inc._last


def test_a_copy_is_drafted_from_the_prompt():
    cfg = DraftConfig(k_init=4)
    source = list(range(100, 140))
    d = Drafter([1, 2, *source, 3], cfg)
    d.sync(source[:5])  # the answer starts copying the source
    assert d.propose(4) == source[5:9]
    d.observe(4, 4)
    assert d.k == 8  # full accept: longer drafts
    d.sync(source[:10])
    assert d.propose(d.k) == source[10:18]


def test_a_copy_follows_its_source_not_a_later_look_alike():
    cfg = DraftConfig(n_max=3, n_min=2)
    a = [50, 51, 52, 53, 54, 55, 56]
    prompt = [*a, 9, 52, 53, 54, 99, 98]  # "52 53 54" again later, followed by 99
    d = Drafter(prompt, cfg)
    d.sync([50, 51, 52])
    assert d.propose(2) == [53, 54]
    d.observe(2, 2)
    d.sync([50, 51, 52, 53, 54])
    assert d.propose(2) == [55, 56]  # the latest "52 53 54" would have said 99


def test_drafting_pauses_where_it_does_not_pay_and_retries_later():
    cfg = DraftConfig(pause_steps=4, min_accept=0.3)
    d = Drafter([1, 2, 3, 4, 5, 1, 2, 3], cfg)
    d.sync([])
    for _ in range(10):
        if d.paused:
            break
        d.observe(d.wants(False) or 1, 0)
    assert d.paused == 4
    assert [d.wants(False) for _ in range(4)] == [0, 0, 0, 0]
    assert d.wants(False) > 0  # the retry
    d.observe(2, 0)  # it failed: a longer pause
    assert d.paused == 8


def test_draft_length_shrinks_to_what_was_accepted_and_grows_back():
    d = Drafter([1], DraftConfig(k_init=8, k_max=16))
    d.observe(8, 2)
    assert d.k == 3
    d.observe(3, 3)
    assert d.k == 6
    d.observe(6, 6)
    d.observe(12, 12)
    assert d.k == 16


def test_a_long_copy_drafts_long_and_doubles_up_to_k_copy_max():
    cfg = DraftConfig(long_match=12, k_long=16, k_copy_max=64, k_max=8)
    source = list(range(1000, 1400))
    d = Drafter([1, *source, 2], cfg)
    out = source[:20]  # 20 tokens copied: a copy in progress
    d.sync(out)
    assert d.wants(False) == 16
    draft = d.propose(d.wants(False))
    assert draft == source[20:36]
    d.observe(16, 16)
    out = source[:37]  # the 16 drafts and one more token
    d.sync(out)
    assert d.propose(d.wants(False)) == source[37:69]  # whole acceptance doubled the draft
    d.observe(32, 32)
    d.sync(source[:70])
    assert len(d.propose(d.wants(False))) == 64  # capped at k_copy_max
    d.observe(64, 10)
    assert d.k_copy == 16  # a miss starts again at k_long


def test_after_an_edit_the_copy_resumes_just_past_the_old_text():
    # "... a = f ( old ) ; b = ..." is rewritten with `new` for `old`: once the output has
    # written the new name and the ")" after it, the copy resumes after the old name's ")".
    cfg = DraftConfig(k_init=4, k_max=16, short_match_k=4)
    head = list(range(100, 130))
    tail = list(range(200, 240))
    old, new, close = 7, 8, 9
    d = Drafter([*head, old, close, *tail], cfg)
    d.sync(head[:10])
    assert d.propose(4) == head[10:14]
    d.observe(4, 4)
    d.sync(head)  # the copy went on to the edit...
    assert d.propose(8) == [old, close, *tail[:6]]
    d.observe(8, 0)  # ...where the model wrote `new` instead
    d.sync([*head, new])
    assert d.propose(8) == []  # `new` is nowhere in the source: nothing to guess from
    d.sync([*head, new, close])
    assert d.propose(8) == tail[:1]  # resynchronised on ")" after the old name; k is 1 after the miss
    d.observe(1, 1)
    d.sync([*head, new, close, *tail[:2]])
    assert d.propose(16) == tail[2:4]  # and followed from there, growing again
    d.observe(2, 2)
    d.sync([*head, new, close, *tail[:5]])
    assert d.propose(16) == tail[5:9]


def test_spec_mode_comes_from_config_then_environment(monkeypatch):
    monkeypatch.delenv("APPLIANCE_SPEC", raising=False)
    assert spec_mode(None) == "ngram"
    monkeypatch.setenv("APPLIANCE_SPEC", "off")
    assert spec_mode(None) == "off"
    assert spec_mode("ngram") == "ngram"
    with pytest.raises(ValueError):
        spec_mode("eagle")


def test_indexing_a_long_prompt_and_drafting_are_cheap():
    prompt = [(i * 7919) % 5000 for i in range(8000)]
    d = Drafter(prompt, DraftConfig())
    t0 = time.perf_counter()
    d.sync([])
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    generated: list[int] = []
    for i in range(1000):
        generated.append(prompt[i])
        d.sync(generated)
        d.propose(8)
    per_step = (time.perf_counter() - t0) / 1000
    assert build < 0.25 and per_step < 2e-4, (build, per_step)  # loose: shared CI cores


# -- the policy's draft budget --------------------------------------------------------------
@pytest.fixture
def new():
    loop = asyncio.new_event_loop()

    def make(prompt: list[int], max_new: int = 64) -> Request:
        return Request(list(prompt), Sampling(), max_new, loop, asyncio.Queue())

    yield make
    loop.close()


def spec_policy(n_slots=2, *, n_ctx=1000, n_batch=64, n_ubatch=16, cfg: DraftConfig | None = None) -> Policy:
    return Policy(FakeKv(n_ctx, n_batch, n_ubatch), n_slots, max_queue=8, drafting=cfg or DraftConfig())


def run_until_generating(p: Policy, reqs: list[Request]) -> None:
    """Prefill `reqs` (they must finish together: nothing has drafted yet when this returns)."""
    for _ in range(50):
        plan = p.schedule()
        ends = [c.req for c in plan.prefill if c.start + len(c.tokens) == len(c.req.prompt)]
        p.commit(plan)
        assert not plan.drafts
        for r in ends:  # each answer's first token continues the copy its prompt started
            r.generated, r.last_token = [COPY[3]], COPY[3]
        if all(r.state is ReqState.GENERATING for r in reqs):
            return
    raise AssertionError("prompts did not finish")


COPY = list(range(100, 130))


def test_a_decoding_copy_verifies_drafts_and_rejected_ones_leave_the_cache(new):
    p = spec_policy()
    r = new([*COPY, 1, *COPY[:3]])  # the prompt starts repeating COPY...
    p.enqueue(r)
    run_until_generating(p, [r])
    # ...and so does the answer
    plan = p.schedule()
    assert plan.decode == [r] and plan.drafts[r] == COPY[4:8]
    held = len(r.slot.tokens)
    p.commit(plan)
    assert len(r.slot.tokens) == held + 5  # the last token and 4 drafts were written
    p.kv.calls.clear()
    p.verified(r, 4, 1)  # the sampler agreed with one draft
    assert r.slot.tokens == [*r.prompt, COPY[3], COPY[4]]
    assert ("rm", r.slot.seq, held + 2, -1) in p.kv.calls
    assert p.slots.ledger.used == len(r.slot.cells)
    assert (p.counters.spec_drafted, p.counters.spec_accepted) == (4, 1)


def test_a_near_tie_takes_the_step_token_back_and_decodes_it_alone_next(new):
    # The executor found row 0 (the step's own token) too close to call in a batch: it and the
    # drafts leave the cache, and the next step decodes it alone, without drafts.
    p = spec_policy()
    r = new([*COPY, 1, *COPY[:3]])
    p.enqueue(r)
    run_until_generating(p, [r])
    held = len(r.slot.tokens)
    plan = p.schedule()
    p.commit(plan)
    k = (r.drafter.k, r.drafter.k_copy)
    r.solo_next = True  # what scheduler._verify sets on a near tie
    p.verified(r, len(plan.drafts[r]), -1)
    assert len(r.slot.tokens) == held and r.last_token == COPY[3]
    assert (r.drafter.k, r.drafter.k_copy) == k  # a tie says nothing about the drafts
    assert p.counters.spec_tie_steps == 1
    plan = p.schedule()
    assert plan.decode == [r] and r not in plan.drafts  # decoded alone
    p.commit(plan)
    assert len(r.slot.tokens) == held + 1
    r.generated.append(COPY[4])
    r.last_token = COPY[4]
    assert p.schedule().drafts.get(r)  # and drafting resumes


def test_near_tie_finds_logits_within_the_margin():
    row = np.array([0.0, 5.0, 4.6, -3.0], dtype=np.float32)
    assert near_tie(row, 0.5) and not near_tie(row, 0.3)
    assert not near_tie(np.array([1.0, 9.0, 2.0], dtype=np.float32), 0.5)


def test_drafts_stay_within_max_tokens_and_the_step_budget(new):
    cfg = DraftConfig(k_init=16, step_tokens=12)
    p = spec_policy(n_slots=3, n_batch=256, n_ubatch=128, cfg=cfg)
    reqs = [new([*COPY, 1, *COPY[:3]], max_new=m) for m in (4, 64, 64)]
    for r in reqs:
        p.enqueue(r)
    run_until_generating(p, reqs)
    plan = p.schedule()
    sizes = [len(plan.drafts.get(r, [])) for r in reqs]
    assert sizes[0] == 4 - 1 - 1  # one generated already; a step emits drafts + 1
    assert sizes[1] > 0
    assert len(plan.decode) + sum(sizes) == 12


def test_a_prefill_chunk_shrinks_by_the_drafts_beside_it(new):
    p = spec_policy(n_slots=2, n_ubatch=16)
    gen = new([*COPY, 1, *COPY[:3]])
    p.enqueue(gen)
    run_until_generating(p, [gen])
    p.enqueue(new(list(range(500, 600))))
    plan = p.schedule()
    drafted = len(plan.drafts[gen])
    assert drafted > 0
    assert sum(len(c.tokens) for c in plan.prefill) == 16 - drafted


def test_without_drafting_nothing_is_drafted(new):
    p = Policy(FakeKv(1000, 64, 16), 1, max_queue=8)
    r = new([*COPY, 1, *COPY[:3]])
    p.enqueue(r)
    run_until_generating(p, [r])
    plan = p.schedule()
    assert plan.decode == [r] and not plan.drafts and r.drafter is None

