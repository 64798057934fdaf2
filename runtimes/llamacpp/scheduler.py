"""The scheduler thread: carries out the policy's plan for each step on the llama.cpp context.

Every step the policy (policy.py) decides what runs; this module builds one llama_batch
holding the next token of each generating sequence and the planned prefill chunks, calls
llama_decode once, samples each sequence whose row has logits, and hands the results to
asyncio.

Only this thread touches the llama.cpp context. The asyncio side submits requests and
sets cancel flags under the policy's lock; results travel back with loop.call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runtimes.base import ContextLengthExceeded, InvalidRequest, RuntimeError_, Sampling
from runtimes.llamacpp.drafting import DraftConfig
from runtimes.llamacpp.logprobs import to_token_logprob
from runtimes.llamacpp.model import Batch, Context, Model
from runtimes.llamacpp.plan import StepPlan
from runtimes.llamacpp.policy import Arrival, Policy
from runtimes.llamacpp.requests import ReqState, Request, Step
from runtimes.llamacpp.sampling import SamplerChain, TextAssembler, check_sampling, request_grammar

if TYPE_CHECKING:
    from runtimes.llamacpp.prefix_store import PrefixStore

log = logging.getLogger("appliance.llamacpp")


@dataclass(slots=True, eq=False)
class Tie:
    """A verify row whose best two logits were too close to decide in the batch (`_verify`),
    kept for `_confirm` once the step's other rows are sampled."""

    req: Request
    drafts: list[int]
    row: int  # the tied row: its input token is decoded again alone
    token: int  # that input token
    pos: int  # and its position
    guesses: list[int]  # the batch's argmax of the tied row and the verified rows after it
    tie_after: bool  # the guesses stop at another near tie


class Scheduler:
    """Owns the thread, the batch and the samplers; `submit` and `cancel` are thread-safe."""

    def __init__(
        self,
        model: Model,
        ctx: Context,
        n_slots: int,
        max_queue: int,
        store: PrefixStore | None = None,
        *,
        park_min_prefill: int = 512,
        drafting: DraftConfig | None = None,
        queue_timeout_s: float | None = None,
    ):
        self.model = model
        self.ctx = ctx
        self.n_ctx = ctx.n_ctx
        self.store = store
        self.policy = Policy(
            ctx,
            n_slots,
            max_queue=max_queue,
            store=store,
            park_min_prefill=park_min_prefill,
            n_swa=0 if model.n_swa <= 0 else model.n_swa,
            prepare=self._prepare,
            drafting=drafting,
            queue_timeout_s=queue_timeout_s,
        )
        self.slots = self.policy.slots
        self.counters = self.policy.counters
        self.batch = Batch(ctx.n_batch, n_slots)
        # The sequence a near tie is decided on (Engine gives the context one beyond the slots).
        self.scratch = n_slots if drafting is not None and ctx.n_seq > n_slots else None
        self.solo = Batch(1, ctx.n_seq)
        self._thread = threading.Thread(target=self._run, name="llamacpp-scheduler", daemon=True)
        self._thread.start()

    # -- asyncio side -----------------------------------------------------------------------
    def announce(self) -> Arrival:
        """A request is being prepared for `submit` (see policy.Arrival)."""
        return Arrival(self.policy)

    def submit(
        self,
        prompt: list[int],
        sampling: Sampling,
        loop: asyncio.AbstractEventLoop,
        arrival: Arrival | None = None,
    ) -> Request:
        """Validate and enqueue; raises ContextLengthExceeded / Overloaded / InvalidRequest."""
        if not prompt:
            raise InvalidRequest("the prompt is empty")
        if len(prompt) >= self.n_ctx:
            raise ContextLengthExceeded(len(prompt), self.n_ctx)
        if any(t < 0 or t >= self.model.n_vocab for t in prompt):
            raise InvalidRequest("the prompt holds token ids outside the vocabulary")
        check_sampling(sampling)
        grammar = request_grammar(sampling)
        room = self.n_ctx - len(prompt)
        max_new = room if sampling.max_tokens is None else max(1, min(sampling.max_tokens, room))
        req = Request(list(prompt), sampling, max_new, loop, asyncio.Queue(), grammar=grammar)
        self.policy.enqueue(req, arrival)
        return req

    def cancel(self, req: Request) -> None:
        self.policy.cancel(req)

    def queue_depth(self) -> int:
        return len(self.policy.waiting)

    def close(self) -> None:
        with self.policy.cv:
            self.policy.closed = True
            self.policy.cv.notify()
        self._thread.join()

    # -- the loop ---------------------------------------------------------------------------
    def _run(self) -> None:
        policy = self.policy
        while True:
            with policy.cv:
                while not policy.closed and not policy.waiting and not policy.active:
                    policy.cv.wait()
                if policy.closed:
                    break
            plan = StepPlan()
            try:
                try:
                    policy.schedule(plan)
                finally:
                    self._emit_ended(plan)
                if plan.t_step is not None:
                    self._execute(plan)
                    self.counters.step_seconds += time.perf_counter() - plan.t_step
                elif policy.waiting:
                    with policy.cv:  # nothing admissible yet: an arrival or a timeout wakes us
                        policy.cv.wait(0.001)
            except Exception as e:  # never let the thread die silently
                log.exception("scheduler step failed")
                self._fail_all(e)
        self._shutdown()

    def _prepare(self, req: Request) -> None:
        """Called by the policy when a request gets its slot; raises RuntimeError_ to refuse it."""
        req.chain = SamplerChain(self.model, req.sampling, req.prompt, req.grammar)
        req.text = TextAssembler(req.sampling.stop)

    def _emit_ended(self, plan: StepPlan) -> None:
        """The last step of requests the policy ended while planning."""
        for r in plan.cancelled:
            self._close(r, "cancelled", "")
        for r, err in plan.refused:
            r.emit(err)
        for r in plan.cut_short:
            self._close(r, "length", r.text.finish())

    # -- one step ---------------------------------------------------------------------------
    def _execute(self, plan: StepPlan) -> None:
        rows = self._fill_batch(plan)
        if self.batch.n == 0:
            return
        t0 = time.perf_counter()
        ret = self.batch.decode(self.ctx)
        self.counters.decode_seconds += time.perf_counter() - t0
        if ret != 0:
            self._decode_failed(ret, plan)
            return
        self.counters.decode_steps += 1
        prompts_done = self.policy.commit(plan)
        ctx_ptr = self.ctx.ptr
        ties: list[Tie] = []
        for r, idx, drafts in rows:
            if r.cancelled:
                self._finish(r, "cancelled", "")
                if drafts:
                    self.policy.verified(r, len(drafts), 0)
                continue
            if not drafts:
                self._on_token(r, r.chain.sample(ctx_ptr, idx))
                continue
            accepted = self._verify(r, ctx_ptr, idx, drafts, ties)
            if accepted is not None:
                self.policy.verified(r, len(drafts), accepted)
        for tie in ties:  # after every row of the batch is read: _confirm decodes again
            self.policy.verified(tie.req, len(tie.drafts), self._confirm(tie))
        if self.store is not None:
            # After the first tokens went out; the sequences still hold exactly the prompt.
            for seq, tokens in prompts_done:
                self.store.prompt_done(self.ctx, seq, tokens)

    def _verify(
        self, r: Request, ctx_ptr: object, idx: int, drafts: list[int], ties: list[Tie]
    ) -> int | None:
        """Speculative decoding's check, exact at any temperature: sample each verified
        position with the request's own chain (which advances grammar, penalties and the
        seeded RNG as one step would) and keep going while the sample equals the draft; the
        first differing sample is still the right next token. With a draft that is a single
        token (not a distribution), this is the standard speculative-sampling rule. Each
        token goes out through `_on_token`, so stops, limits and logprobs behave as without
        drafts. Returns how many drafts were accepted; -1 when row `idx` itself is not
        trusted; None when a near tie waits in `ties` for `_confirm`.

        Greedy answers must equal those without drafts, but a batch of n rows runs other CPU
        kernels than a 1-token decode, and their logits differ by up to ~0.5. A row whose best
        two logits are that close is therefore not decided here (see `_confirm`)."""
        margin = self.policy.drafting.tie_margin if self.policy.drafting else 0.0
        guard = r.chain.plain_greedy and margin > 0
        for i in range(len(drafts) + 1):
            if guard and r.chain.near_tie(ctx_ptr, idx + i, margin):
                if self.scratch is None or r.chain.logprobs is not None:
                    r.solo_next = True
                    return i - 1  # the batch token of row i (last_token or a draft) is decoded again
                pos = len(r.slot.tokens) - len(drafts) - 1 + i
                guesses, tie_after = self._guesses(r, ctx_ptr, idx, drafts, i, margin)
                ties.append(Tie(r, drafts, i, r.last_token, pos, guesses, tie_after))
                self.counters.spec_tie_steps += 1
                return None
            tok = r.chain.sample(ctx_ptr, idx + i)
            self._on_token(r, tok)
            if i == len(drafts) or tok != drafts[i] or r.state is ReqState.DONE:
                return i
        raise AssertionError("unreachable")

    @staticmethod
    def _guesses(
        r: Request, ctx_ptr: object, idx: int, drafts: list[int], i: int, margin: float
    ) -> tuple[list[int], bool]:
        """The batch's choices from tied row i on, as `_verify` would make them (argmax: the
        chain is plain greedy), read now because the next decode overwrites the logits."""
        out: list[int] = []
        for j in range(i, len(drafts) + 1):
            if j > i and r.chain.near_tie(ctx_ptr, idx + j, margin):
                return out, True
            tok = r.chain.argmax(ctx_ptr, idx + j)
            out.append(tok)
            if j == len(drafts) or tok != drafts[j]:
                break
        return out, False

    def _confirm(self, t: Tie) -> int:
        """Decide a near tie as a step without drafts would: decode the tied row's input
        token alone, on a scratch sequence that shares the prefix's cells. If it chooses what
        the batch chose, the rows verified after the tie stand (one 1-token decode instead of
        redoing them); if not, its cell replaces the batch's and the answer goes on from its
        token. Returns the drafts accepted, as `_verify`."""
        r, ctx, seq, scratch = t.req, self.ctx, t.req.slot.seq, self.scratch
        assert scratch is not None
        ctx.seq_cp(seq, scratch, 0, t.pos)
        self.solo.clear()
        self.solo.add([t.token], t.pos, scratch, True)
        t0 = time.perf_counter()
        ret = self.solo.decode(ctx)
        self.counters.decode_seconds += time.perf_counter() - t0
        if ret != 0:  # no cell free for it: decode it alone next step instead
            ctx.seq_rm(scratch)
            r.solo_next = True
            return t.row - 1
        tok = r.chain.sample(ctx.ptr, 0)
        ctx.seq_rm(seq, t.pos, t.pos + 1)  # the solo cell replaces the batch's, as without drafts
        ctx.seq_cp(scratch, seq, t.pos, t.pos + 1)
        ctx.seq_rm(scratch)
        if tok != t.guesses[0]:
            self.counters.spec_tie_flips += 1
            self._on_token(r, tok)
            return t.row
        for k, tok in enumerate(t.guesses):
            row = t.row + k
            self._on_token(r, tok)
            if row == len(t.drafts) or tok != t.drafts[row] or r.state is ReqState.DONE:
                return row
        r.solo_next = True  # the guesses stopped at another near tie: that row's token goes alone
        return t.row + len(t.guesses) - 1

    def _fill_batch(self, plan: StepPlan) -> list[tuple[Request, int, list[int]]]:
        """Put the plan into the llama_batch; returns (request, first batch row to sample,
        drafts to verify after it) per sequence that samples."""
        batch = self.batch
        batch.clear()
        rows: list[tuple[Request, int, list[int]]] = []
        drafts = plan.drafts
        for r in plan.decode:
            pos = len(r.slot.tokens)
            d = drafts.get(r)
            if d:
                last = batch.add([r.last_token, *d], pos, r.slot.seq, True, all_logits=True)
                rows.append((r, last - len(d), d))
            else:
                rows.append((r, batch.add([r.last_token], pos, r.slot.seq, True), []))
        for c in plan.prefill:
            r = c.req
            last = c.start + len(c.tokens) == len(r.prompt)
            idx = batch.add(c.tokens, c.start, r.slot.seq, last)
            if last:
                rows.append((r, idx, []))
        return rows

    def _on_token(self, r: Request, tok: int) -> None:
        first = not r.t_first
        if first:
            r.t_first = time.monotonic()
        r.generated.append(tok)
        self.counters.tokens_generated += 1
        if self.model.is_eog(tok):  # the end marker is not part of the answer: no logprob for it
            self._finish(r, "stop", r.text.finish(), [tok])
            return
        if r.chain.logprobs is not None:
            r.logprobs.append(to_token_logprob(r.chain.logprobs, self.model.piece))
        text = r.text.feed(self.model.piece(tok))
        if r.text.stopped:
            self._finish(r, "stop", text, [tok])
        elif len(r.generated) >= r.max_new:
            self._finish(r, "length", text + r.text.finish(), [tok])
        else:
            r.last_token = tok
            step = Step(text, [tok], logprobs=r.take_logprobs(), prompt=r.usage() if first else None)
            if not r.emit(step):
                self._finish(r, "cancelled", "")

    def _finish(self, r: Request, reason: str, text: str, ids: list[int] | None = None) -> None:
        if r.state is ReqState.DONE:
            return
        self.policy.retire(r, reason)
        self._close(r, reason, text, ids)

    def _close(self, r: Request, reason: str, text: str, ids: list[int] | None = None) -> None:
        """Free the sampler of a retired request and send its last step."""
        if r.chain is not None:
            r.chain.free()
        r.emit(Step(text, ids or [], reason, r.usage(), logprobs=r.take_logprobs()))

    def _decode_failed(self, ret: int, plan: StepPlan) -> None:
        if ret == 1:
            victim = self.policy.on_decode_full(plan)
            if victim is not None:
                self._close(victim, "length", victim.text.finish() if victim.text else "")
            return
        raise RuntimeError_(f"llama_decode failed ({ret})")

    def _fail_all(self, err: Exception) -> None:
        e = err if isinstance(err, RuntimeError_) else RuntimeError_(f"engine error: {err}")
        for r in self.policy.abort_all():
            if r.chain is not None:
                r.chain.free()
            r.emit(e)

    def _shutdown(self) -> None:
        for r in list(self.policy.active):
            self._finish(r, "cancelled", "")
        for r in self.policy.drain_waiting():
            r.emit(RuntimeError_("the engine is closed"))
        self.policy.cache.keep_for_restart()
