"""The llama.cpp engine on real models: batching, prefix reuse, limits, sampling, restarts.

Contexts are small and generations short so the suite stays quick on two shared cores.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from runtimes.base import ContextLengthExceeded, InvalidRequest, Overloaded, Sampling
from runtimes.llamacpp.engine import Engine, EngineConfig, Step

pytestmark = pytest.mark.slow

GREEDY = Sampling(temperature=0.0, max_tokens=24)
STORY = (
    "<|im_start|>system\nYou are a careful assistant who answers in plain English. "
    "You always explain your reasoning step by step, you never invent facts, and you keep "
    "answers short unless asked otherwise. When you are unsure you say so. You are helping "
    "a developer who works on a small inference server written in Python.<|im_end|>\n"
)


def chat(user: str, system: str = STORY) -> str:
    return f"{system}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def make(path: Path, **kw) -> Engine:
    cfg = dict(model_path=path, n_ctx=1024, n_slots=1, n_threads=2, n_batch=512, n_ubatch=512)
    cfg.update(kw)
    return Engine(EngineConfig(**cfg))


async def collect(engine: Engine, prompt: list[int], sampling: Sampling) -> tuple[str, list[Step]]:
    steps = [s async for s in engine.generate(prompt, sampling)]
    return "".join(s.text for s in steps), steps


def run(engine: Engine, prompt: list[int], sampling: Sampling = GREEDY) -> tuple[str, list[Step]]:
    return asyncio.run(collect(engine, prompt, sampling))


def reference_greedy(path: Path, prompt: list[int], n: int) -> list[int]:
    """Plain one-sequence greedy decoding: llama_batch_get_one and argmax, nothing shared."""
    import llama_cpp as lc
    import numpy as np

    from runtimes.llamacpp.model import Context, ContextParams, Model

    model = Model(path)
    ctx = Context(model, ContextParams(n_ctx=1024, n_seq=1, n_threads=2, n_batch=512))
    try:
        out: list[int] = []
        toks = list(prompt)
        for _ in range(n):
            arr = (lc.llama_token * len(toks))(*toks)
            assert lc.llama_decode(ctx.ptr, lc.llama_batch_get_one(arr, len(toks))) == 0
            logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx.ptr, -1), shape=(model.n_vocab,))
            tok = int(np.argmax(logits))
            out.append(tok)
            if model.is_eog(tok):
                break
            toks = [tok]
        return out
    finally:
        ctx.close()
        model.close()


@pytest.fixture(scope="module")
def smol(smollm_path) -> Engine:
    eng = make(smollm_path, n_slots=4, n_ctx=2048)
    yield eng
    eng.close()


def wait_idle(engine: Engine, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while engine.stats().slots_busy and time.monotonic() < deadline:
        time.sleep(0.02)


# -- correctness --------------------------------------------------------------------------


def test_greedy_equals_a_plain_single_sequence_reference(smol, smollm_path):
    prompt = smol.tokenize(chat("Name three colours of the rainbow."))
    text, steps = run(smol, prompt)
    ids = [t for s in steps for t in s.token_ids]
    assert ids == reference_greedy(smollm_path, prompt, len(ids))
    assert text and steps[-1].finish_reason in ("stop", "length")
    # Deterministic, also when the whole prompt now comes from the cache.
    again, steps2 = run(smol, prompt)
    assert again == text
    assert steps2[-1].usage.cached_tokens == len(prompt) - 1


def test_four_streams_are_batched_together(smol):
    prompts = [smol.tokenize(chat(f"Count from {i} to {i + 20}, one number per line.")) for i in range(4)]
    arrivals: list[tuple[int, float]] = []

    async def one(i: int) -> list[Step]:
        steps = []
        async for s in smol.generate(prompts[i], Sampling(temperature=0.0, max_tokens=16)):
            arrivals.append((i, time.monotonic()))
            steps.append(s)
        return steps

    async def main():
        return await asyncio.gather(*(one(i) for i in range(4)))

    steps_before = smol._sched.counters.decode_steps
    results = asyncio.run(main())
    assert all(r and r[-1].usage.completion_tokens > 0 for r in results)
    # Every stream got its first token before any stream finished: they ran together.
    first = {i: min(t for j, t in arrivals if j == i) for i in range(4)}
    last = {i: max(t for j, t in arrivals if j == i) for i in range(4)}
    assert max(first.values()) < min(last.values())
    # One decode per step for all four: far fewer steps than tokens.
    n_tokens = sum(r[-1].usage.completion_tokens for r in results)
    assert smol._sched.counters.decode_steps - steps_before < n_tokens * 0.6


def test_prompts_announced_together_are_prefilled_in_one_step(smol):
    """Four requests announced while their prompts are prepared (as the runtime does while it
    renders and tokenizes) reach the queue one after another; the idle engine waits for the
    stragglers, so all four prompts go into one batch and every first token comes out of
    that one step: no stream starts decoding while the others still prefill."""
    prompts = [smol.tokenize(chat(f"Write one line about the number {i}.")) for i in range(4)]

    async def one(i: int) -> list[Step]:
        with smol.arriving() as arrival:
            await asyncio.sleep(0.002 * i)  # the stragglers' tokenization
            return [s async for s in smol.generate(prompts[i], Sampling(max_tokens=1), arrival)]

    async def main():
        return await asyncio.gather(*(one(i) for i in range(4)))

    wait_idle(smol)
    steps_before = smol._sched.counters.decode_steps
    results = asyncio.run(main())
    assert [r[-1].usage.completion_tokens for r in results] == [1, 1, 1, 1]
    assert smol._sched.counters.decode_steps - steps_before == 1
    assert smol._sched.policy.incoming == 0


def test_shared_prefix_is_served_from_the_cache(smol):
    first = smol.tokenize(chat("What is a prefix cache?"))
    second = smol.tokenize(chat("What is a KV cache?"))
    shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
    assert shared > 60
    run(smol, first)
    before = smol.stats().prompt_tokens_processed
    _, steps = run(smol, second)
    usage = steps[-1].usage
    assert usage.cached_tokens == shared
    assert smol.stats().prompt_tokens_processed - before == len(second) - shared


def test_prefix_of_a_running_stream_is_copied(smollm_path):
    eng = make(smollm_path, n_slots=2)
    try:
        long_run = eng.tokenize(chat("Write a long story about a lighthouse keeper."))
        other = eng.tokenize(chat("Write one sentence about a cat."))
        shared = next(i for i, (a, b) in enumerate(zip(long_run, other, strict=False)) if a != b)

        async def main():
            agen = eng.generate(long_run, Sampling(temperature=0.0, max_tokens=200))
            await agen.__anext__()  # the first stream holds its slot and its prompt's KV
            text, steps = await collect(eng, other, GREEDY)
            await agen.aclose()
            return text, steps

        _, steps = asyncio.run(main())
        assert steps[-1].usage.cached_tokens == shared
        # Copied KV gives the same answer as computing the prompt from scratch.
        ids = [t for s in steps for t in s.token_ids]
        assert ids == reference_greedy(smollm_path, other, len(ids))
    finally:
        eng.close()


# -- limits and lifecycle -----------------------------------------------------------------


def test_cancelling_a_stream_frees_its_slot(smollm_path):
    eng = make(smollm_path, n_slots=1)
    try:
        prompt = eng.tokenize(chat("Write a very long essay about rivers."))

        async def close_early():
            agen = eng.generate(prompt, Sampling(temperature=0.0, max_tokens=500))
            for _ in range(3):
                await agen.__anext__()
            await agen.aclose()

        async def cancel_task():
            got = asyncio.Event()

            async def consume():
                async for _ in eng.generate(prompt, Sampling(temperature=0.0, max_tokens=500)):
                    got.set()

            task = asyncio.create_task(consume())
            await got.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        for scenario in (close_early, cancel_task):
            t0 = time.monotonic()
            asyncio.run(scenario())
            wait_idle(eng)
            assert eng.stats().slots_busy == 0
            assert time.monotonic() - t0 < 60  # did not run to 500 tokens
        assert eng.stats().requests_cancelled == 2
        # The freed slot serves the next request, reusing the cancelled one's prompt.
        _, steps = run(eng, prompt, Sampling(temperature=0.0, max_tokens=4))
        assert steps[-1].usage.cached_tokens == len(prompt) - 1
    finally:
        eng.close()


def test_prompt_longer_than_the_context_is_refused(smollm_path):
    eng = make(smollm_path, n_ctx=256)
    try:
        prompt = eng.tokenize("word " * 300)
        with pytest.raises(ContextLengthExceeded) as e:
            run(eng, prompt)
        assert e.value.prompt_tokens == len(prompt) and e.value.n_ctx == 256
    finally:
        eng.close()


def test_full_queue_is_overloaded(smollm_path):
    eng = make(smollm_path, n_slots=1, max_queue=1)
    try:
        prompt = eng.tokenize(chat("Tell me about the moon."))

        async def main():
            a = eng.generate(prompt, Sampling(temperature=0.0, max_tokens=200))
            await a.__anext__()  # running in the only slot
            b = eng.generate(prompt, Sampling(temperature=0.0, max_tokens=2))
            b_task = asyncio.create_task(collect_gen(b))
            await asyncio.sleep(0.05)
            assert eng.stats().queue_depth == 1
            with pytest.raises(Overloaded) as e:
                await eng.generate(prompt, GREEDY).__anext__()
            assert e.value.retry_after_s > 0
            await a.aclose()
            _, steps = await b_task  # the queued one still runs
            assert steps[-1].finish_reason == "length"

        async def collect_gen(agen):
            steps = [s async for s in agen]
            return "".join(s.text for s in steps), steps

        asyncio.run(main())
    finally:
        eng.close()


def test_max_tokens_is_clamped_to_the_context(smollm_path):
    eng = make(smollm_path, n_ctx=256)
    try:
        prompt = eng.tokenize(chat("Repeat the word 'ok' forever: " + "ok " * 180, system=""))
        assert 150 < len(prompt) < eng.n_ctx
        no_end = {t: -1e9 for t in range(eng.model.n_vocab) if eng.is_eog(t)}
        _, steps = run(eng, prompt, Sampling(temperature=0.0, max_tokens=32000, logit_bias=no_end))
        assert steps[-1].finish_reason == "length"
        assert steps[-1].usage.completion_tokens == eng.n_ctx - len(prompt)
        # A max_tokens that fits is honoured as asked.
        _, steps = run(eng, prompt, Sampling(temperature=0.0, max_tokens=5, logit_bias=no_end))
        assert steps[-1].finish_reason == "length" and steps[-1].usage.completion_tokens == 5
    finally:
        eng.close()


# -- sampling -----------------------------------------------------------------------------


def test_stop_strings_are_stripped(smol):
    prompt = smol.tokenize(chat("List the days of the week, comma separated."))
    full, _ = run(smol, prompt, Sampling(temperature=0.0, max_tokens=40))
    words = [w for w in full.split() if len(w) > 3]
    assert len(words) >= 3, full
    stop = words[2]
    text, steps = run(smol, prompt, Sampling(temperature=0.0, max_tokens=40, stop=[stop]))
    assert text == full[: full.index(stop)]
    assert steps[-1].finish_reason == "stop"


def test_seed_makes_sampling_reproducible(smol):
    prompt = smol.tokenize(chat("Invent a name for a pet dragon."))
    hot = dict(temperature=1.2, top_k=100, top_p=1.0, min_p=0.0, max_tokens=24)
    # Logits of a token computed alone can differ in the last bits from the same token
    # computed inside a longer batch, so compare runs that both start from the cache.
    run(smol, prompt, Sampling(temperature=0.0, max_tokens=1))
    a, _ = run(smol, prompt, Sampling(seed=42, **hot))
    b, _ = run(smol, prompt, Sampling(seed=42, **hot))
    others = {run(smol, prompt, Sampling(seed=s, **hot))[0] for s in (1, 2, 3)}
    assert a == b
    assert len(others | {a}) > 1


def test_json_schema_output_parses_and_validates(qwen_path):
    eng = make(qwen_path, n_ctx=1024)
    try:
        schema = {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
        }
        sys = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        prompt = eng.tokenize(chat("Give a JSON object describing a person named Ada aged 36.", sys))
        text, steps = run(eng, prompt, Sampling(temperature=0.0, max_tokens=60, json_schema=schema))
        assert steps[-1].finish_reason == "stop", text
        obj = json.loads(text)
        assert isinstance(obj["name"], str) and isinstance(obj["age"], int)
        assert set(obj) <= {"name", "age"}
        text, _ = run(eng, prompt, Sampling(temperature=0.0, max_tokens=60, json_schema={}))
        assert isinstance(json.loads(text), dict)
    finally:
        eng.close()


# -- prefix store -------------------------------------------------------------------------


def test_prefix_store_warms_a_fresh_engine(smollm_path, tmp_path):
    first = None
    eng = make(smollm_path, prefix_store_dir=tmp_path, prefix_store_min_tokens=32)
    try:
        first = eng.tokenize(chat("What does a compiler do?"))
        run(eng, first)
    finally:
        eng.close()  # flushes the store to disk
    assert list(tmp_path.rglob("*.kv"))

    eng = make(smollm_path, prefix_store_dir=tmp_path, prefix_store_min_tokens=32)
    try:
        second = eng.tokenize(chat("What does a linker do?"))
        shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
        _, steps = run(eng, second)
        assert steps[-1].usage.cached_tokens == shared
        assert eng.stats().prefix_store_hits == 1
        ids = [t for s in steps for t in s.token_ids]
        assert ids == reference_greedy(smollm_path, second, len(ids))
    finally:
        eng.close()


def test_engine_exposes_metadata_and_vocab(smol):
    assert "tokenizer.chat_template" in smol.metadata
    ids = smol.tokenize("Hello world", add_special=False)
    assert smol.detokenize(ids) == "Hello world"
    assert smol.eos_text
    st = smol.stats()
    assert st.slots_total == 4 and st.loaded and st.kv_cells_total == smol.n_ctx


def test_a_full_context_evicts_idle_caches_and_cuts_rather_than_fails(smollm_path):
    """More work than the shared KV cache holds: idle caches go first, then the longest
    running sequence ends with "length"; nothing errors and the bookkeeping stays exact."""
    eng = make(smollm_path, n_ctx=192, n_slots=3, n_batch=128, n_ubatch=128, max_queue=8)
    try:
        no_end = {t: -1e9 for t in range(eng.model.n_vocab) if eng.is_eog(t)}

        async def one(i: int) -> Step:
            prompt = eng.tokenize(f"Story {i}: " + "once upon a time " * (8 + 4 * i))
            steps = [
                s async for s in eng.generate(prompt, Sampling(seed=i, max_tokens=80, logit_bias=no_end))
            ]
            return steps[-1]

        async def main():
            return await asyncio.gather(*(one(i) for i in range(5)))

        last = asyncio.run(main())
        assert all(s.finish_reason == "length" and s.usage.completion_tokens > 0 for s in last)
        # Some ended before both their max_tokens and their own room in the context.
        assert any(s.usage.completion_tokens < min(80, 192 - s.usage.prompt_tokens) for s in last)
        wait_idle(eng)
        for slot in eng._sched.slots.slots:
            assert eng.ctx.seq_pos_max(slot.seq) == len(slot.tokens) - 1
        assert eng.stats().kv_cells_used <= 192
    finally:
        eng.close()


def test_penalties_match_llama_cpps_own_sampler(smollm_path):
    """Our numpy penalties + C chain pick exactly what llama.cpp's penalties sampler picks."""
    import llama_cpp as lc

    from runtimes.llamacpp.model import Batch, Context, ContextParams, Model
    from runtimes.llamacpp.sampling import SamplerChain

    model = Model(smollm_path)
    ctx = Context(model, ContextParams(n_ctx=512, n_seq=1, n_threads=2))
    prompt = model.tokenize("the cat sat on the mat and the dog sat on the log, the end. The")

    def generate(s: Sampling, ours: bool) -> list[int]:
        ctx.seq_rm(0)
        b = Batch(256, 1)
        idx = b.add(prompt, 0, 0, True)
        b.decode(ctx)
        if ours:
            chain = SamplerChain(model, s, prompt)
            pick = lambda i: chain.sample(ctx.ptr, i)  # noqa: E731
        else:
            ref = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
            pen = lc.llama_sampler_init_penalties(
                model.n_vocab, 64, s.repeat_penalty, s.frequency_penalty, s.presence_penalty
            )
            for t in prompt[-64:]:
                lc.llama_sampler_accept(pen, t)
            if s.temperature > 0:
                rest = [
                    lc.llama_sampler_init_top_k(s.top_k),
                    lc.llama_sampler_init_top_p(s.top_p, 1),
                    lc.llama_sampler_init_min_p(s.min_p, 1),
                    lc.llama_sampler_init_temp(s.temperature),
                    lc.llama_sampler_init_dist(s.seed),
                ]
            else:
                rest = [lc.llama_sampler_init_greedy()]
            for smpl in [pen, *rest]:
                lc.llama_sampler_chain_add(ref, smpl)
            pick = lambda i: lc.llama_sampler_sample(ref, ctx.ptr, i)  # noqa: E731
        out, pos = [], len(prompt)
        for _ in range(30):
            out.append(pick(idx))
            b.clear()
            idx = b.add([out[-1]], pos, 0, True)
            pos += 1
            b.decode(ctx)
        return out

    try:
        for s in (
            Sampling(temperature=0.0, repeat_penalty=1.3),
            Sampling(temperature=0.0, repeat_penalty=1.1, frequency_penalty=0.5, presence_penalty=0.3),
            Sampling(temperature=0.9, seed=5, repeat_penalty=1.2, presence_penalty=0.2),
        ):
            assert generate(s, ours=True) == generate(s, ours=False), s
    finally:
        ctx.close()
        model.close()


def test_bad_sampling_options_are_refused_before_the_first_step(smol):
    from runtimes.base import InvalidRequest

    prompt = smol.tokenize("Hi")
    for bad in (Sampling(repeat_penalty=0.0), Sampling(json_schema={"type": "object", "$ref": "#/nowhere"})):
        with pytest.raises(InvalidRequest):
            run(smol, prompt, bad)
    assert smol.stats().slots_busy == 0


def test_a_long_prefill_parks_idle_caches_and_they_come_back(smollm_path, tmp_path):
    """Idle slots' caches slow every decode of the unified KV cache, so a long prompt first
    parks them in the prefix store; the parked conversation's next turn is restored from
    there (not recomputed) and answers exactly as a fresh computation would."""
    eng = make(
        smollm_path,
        n_ctx=2048,
        n_slots=2,
        prefix_store_dir=tmp_path,
        prefix_store_min_tokens=32,
        park_min_prefill=64,
    )
    try:
        first = eng.tokenize(chat("What does a compiler do?"))
        text, steps = run(eng, first)
        answered = first + [t for s in steps for t in s.token_ids]
        wait_idle(eng)
        assert eng.stats().kv_cells_used == len(answered) - 1  # the last token is never decoded

        other = eng.tokenize("Unrelated notes. " + "The quick brown fox jumps over the lazy dog. " * 12)
        assert len(other) >= 64
        _, other_steps = run(eng, other)
        wait_idle(eng)
        # Only the long prompt's own sequence is left in the KV cache.
        assert eng.stats().kv_cells_used == len(other) + other_steps[-1].usage.completion_tokens - 1

        follow = eng.tokenize(
            chat("What does a compiler do?")
            + text
            + "<|im_end|>\n<|im_start|>user\nAnd a linker?<|im_end|>\n<|im_start|>assistant\n"
        )
        _, steps = run(eng, follow)
        assert eng.stats().prefix_store_hits == 1
        assert steps[-1].usage.cached_tokens >= len(first)
        ids = [t for s in steps for t in s.token_ids]
        assert ids == reference_greedy(smollm_path, follow, len(ids))
    finally:
        eng.close()


def test_ignore_eos_runs_every_answer_to_max_tokens(smol):
    """Benchmarks compare servers on equal work: with ignore_eos an answer that would end
    after a few tokens keeps going to max_tokens, and ends with "length"."""
    prompt = smol.tokenize(chat("What is the capital of France?"))
    _, free = run(smol, prompt, Sampling(temperature=0.0, max_tokens=60))
    assert free[-1].finish_reason == "stop" and free[-1].usage.completion_tokens < 60
    _, forced = run(smol, prompt, Sampling(temperature=0.0, max_tokens=60, ignore_eos=True))
    assert forced[-1].finish_reason == "length" and forced[-1].usage.completion_tokens == 60
    assert not any(smol.is_eog(t) for s in forced for t in s.token_ids)


def test_ignore_eos_with_structured_output_is_refused(smol):
    with pytest.raises(InvalidRequest, match="ignore_eos"):
        run(smol, smol.tokenize(chat("Give JSON.")), Sampling(ignore_eos=True, json_schema={}))
