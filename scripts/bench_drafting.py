"""Drafting policy, replayed without the model: how many tokens a DraftConfig drafts, wastes
and how long verifying them would take, on the edit workload's real outputs.

Why: at temperature 0 the answer does not depend on drafting (issue 16's exactness), so once
the prompt and answer tokens of each case are recorded, a drafting policy can be replayed on
them in milliseconds: each step proposes a draft, the answer says how much of it is accepted,
and the step's cost comes from the measured price of verifying n tokens in one batch
(`scripts/bench_verify_cost.py`'s table). A policy that looks better here is then checked for
real with `scripts/bench_edit.sh`.

    .venv/bin/python scripts/bench_drafting.py record /tmp/edits.json    # runs the model once
    .venv/bin/python scripts/bench_drafting.py replay /tmp/edits.json [--set k_long=32 ...]
    .venv/bin/python scripts/bench_drafting.py ab --variant "k_long=32" --variant off   # for real
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import dataclasses
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runtimes.llamacpp.drafting import DraftConfig, Drafter  # noqa: E402

# ms to verify n tokens in one batch with every row's logits, Qwen2.5-Coder-0.5B Q4_K_M,
# 2 threads, position ~1200 (BENCHMARKS.md "What one verified token costs", 2026-12-06).
VERIFY_MS = [(1, 24.3), (2, 49.7), (9, 139.1), (17, 205.1), (33, 361.0), (65, 538.0), (128, 891.5),
             (256, 1625.7)]


def verify_ms(n: int) -> float:
    """Linear interpolation in the measured table."""
    xs = [x for x, _ in VERIFY_MS]
    i = min(max(bisect.bisect_left(xs, n), 1), len(xs) - 1)
    (x0, y0), (x1, y1) = VERIFY_MS[i - 1], VERIFY_MS[i]
    return y0 + (y1 - y0) * (n - x0) / (x1 - x0)


def _runtime(model: str, threads: int, spec: str, draft: DraftConfig):
    from appliance.models.store import fetch
    from quantization.catalog import load_catalog
    from runtimes.llamacpp.engine import EngineConfig
    from runtimes.llamacpp.runtime import LlamaCppRuntime

    model_spec = load_catalog().get(model)
    path = fetch(model_spec, model_spec.artifacts[0], log=lambda *_: None)
    cfg = EngineConfig(model_path=path, n_ctx=8192, n_slots=1, n_threads=threads, n_threads_batch=threads,
                       spec=spec, draft=draft)
    return LlamaCppRuntime.load(model_spec, cfg)


def _answer(rt, case, tag: str | None) -> dict:
    """One greedy answer: its prompt and answer tokens, time to first token and total time."""
    from appliance.bench.edit import messages
    from runtimes.base import ChatRequest, Sampling

    sampling = Sampling(temperature=0.0, max_tokens=4096)
    req = ChatRequest(model=rt.id, messages=messages(case, tag), sampling=sampling)
    prompt = rt.engine.tokenize(rt.prepare_chat(req)[0], add_special=False, parse_special=True)

    async def run() -> dict:
        answer: list[int] = []
        t0, ttft = time.monotonic(), None
        async for step in rt.engine.generate(prompt, sampling):
            ttft = ttft or time.monotonic() - t0
            answer += step.token_ids
        return {"prompt": prompt, "answer": answer, "ttft_s": ttft, "total_s": time.monotonic() - t0}

    return asyncio.run(run())


def record(
    out: Path, model: str, threads: int, cases: list[str] | None, spec: str, draft: DraftConfig
) -> None:
    """Each edit case's prompt tokens and greedy answer tokens, from the real engine."""
    from appliance.bench.edit import load_edits

    rt = _runtime(model, threads, spec, draft)
    data = {}
    for case in load_edits(cases):
        r = data[case.name] = _answer(rt, case, None)
        r["pieces"] = [rt.engine.detokenize([t]) for t in r["prompt"] + r["answer"]]  # to show misses
        print(f"{case.name}: {len(r['answer'])} tokens, {r['total_s']:.1f} s (ttft {r['ttft_s']:.1f} s)")
    rt.engine.close()
    out.write_text(json.dumps(data))


def ab(model: str, threads: int, cases: list[str] | None, variants: list[str]) -> None:
    """The variants (DraftConfig overrides, or "off") interleaved case by case in one engine,
    each with its own tag so none finds its prompt cached: decode seconds (total minus time to
    first token, which drafting does not touch) per variant, and whether the answers agree."""
    from appliance.bench.edit import load_edits

    rt = _runtime(model, threads, "ngram", DraftConfig())
    policy = rt.engine._sched.policy  # swapped between requests: a request keeps its own Drafter
    configs = [None if v == "off" else _config(v.split()) for v in variants]
    decode = [0.0] * len(variants)
    agree = 0
    for n, case in enumerate(load_edits(cases)):
        k = len(variants)
        order = [(n + j) % k for j in range(k)]  # a different variant goes first each case
        answers = {}
        for i in order:
            policy.drafting = configs[i]
            r = _answer(rt, case, f"[{variants[i] or 'default'} {n}]")
            decode[i] += r["total_s"] - r["ttft_s"]
            answers[i] = r["answer"]
        agree += len({tuple(a) for a in answers.values()}) == 1
        ref = variants.index("off") if "off" in variants else 0  # without drafts, if measured
        for i, a in answers.items():
            if a != answers[ref]:
                at = next((j for j, (x, y) in enumerate(zip(a, answers[ref], strict=False)) if x != y),
                          min(len(a), len(answers[ref])))
                print(f"  {case.name}: {variants[i] or 'default'} differs from {variants[ref] or 'default'}"
                      f" at token {at}")
        sums = ", ".join(f"{v or 'default'} {d:.1f}" for v, d in zip(variants, decode, strict=True))
        print(f"{case.name}: {sums}")
    base = decode[0]
    for v, d in zip(variants, decode, strict=True):
        print(f"{v or 'default':40} decode {d:7.1f} s  {d / base:.3f}x")
    print(f"answers identical across variants: {agree}/{n + 1}; verify steps cut short by a near tie: "
          f"{rt.engine._sched.counters.spec_tie_steps}")
    rt.engine.close()


def _config(sets: list[str]) -> DraftConfig:
    return dataclasses.replace(DraftConfig(), **{k: float(v) if "." in v else int(v)
                                                for k, v in (s.split("=") for s in sets)})


KEYS = ("tokens", "steps", "drafted", "wasted", "misses")


def replay(prompt: list[int], answer: list[int], cfg: DraftConfig, show=None) -> dict:
    """Steps, drafted and accepted tokens, and the modelled decode time of one answer."""
    d = Drafter(prompt, cfg)
    pos, steps, drafted, accepted, ms, misses = 0, 0, 0, 0, 0.0, 0
    while pos < len(answer):
        k = min(d.wants(shared=False), len(answer) - pos - 1, cfg.k_copy_max)
        draft: list[int] = []
        if k > 0:
            d.sync(answer[:pos])
            draft = d.propose(k)
        a = 0
        while a < len(draft) and draft[a] == answer[pos + a]:
            a += 1
        if show and a < len(draft):
            show(pos, draft, a)
        if draft:
            d.observe(len(draft), a)
            drafted, accepted, misses = drafted + len(draft), accepted + a, misses + (a < len(draft))
        ms += verify_ms(len(draft) + 1)
        pos += a + 1
        steps += 1
    return {"tokens": len(answer), "steps": steps, "drafted": drafted, "accepted": accepted,
            "wasted": drafted - accepted, "misses": misses, "decode_s": ms / 1000}


def _shower(name: str, case: dict):
    """Prints a miss: the answer around it and what the draft said instead."""
    piece = dict(zip(case["prompt"] + case["answer"], case["pieces"], strict=True))
    text = lambda toks: "".join(piece.get(t, "?") for t in toks).replace("\n", "⏎")  # noqa: E731

    def show(pos: int, draft: list[int], a: int) -> None:
        ans = case["answer"]
        print(f"  {name} @{pos} {a}/{len(draft)}: ...{text(ans[max(0, pos + a - 8):pos + a])}"
              f" | answer {text(ans[pos + a:pos + a + 6])!r} draft {text(draft[a:a + 6])!r}")

    return show


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("out", type=Path)
    rec.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    rec.add_argument("--threads", type=int, default=2)
    rec.add_argument("--cases", help="comma list of edit case names (default: all)")
    rec.add_argument("--spec", default="ngram", choices=("ngram", "off"))
    abp = sub.add_parser("ab", help="variants interleaved case by case, in one engine")
    abp.add_argument("--variant", action="append", default=[""],
                     help='space-separated field=value overrides, or "off" (repeatable; the default first)')
    abp.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    abp.add_argument("--threads", type=int, default=2)
    abp.add_argument("--cases", help="comma list of edit case names (default: all)")
    rep = sub.add_parser("replay")
    rep.add_argument("data", type=Path)
    for p in (rec, rep):
        p.add_argument("--set", action="append", default=[], help="DraftConfig field=value (repeatable)")
    rep.add_argument("--misses", action="store_true", help="print each draft's miss in context")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows in a log file as it comes
    if args.cmd == "ab":
        cases = args.cases.split(",") if args.cases else None
        ab(args.model, args.threads, cases, args.variant)
        return 0
    cfg = _config(args.set)
    if args.cmd == "record":
        cases = args.cases.split(",") if args.cases else None
        record(args.out, args.model, args.threads, cases, args.spec, cfg)
        return 0
    data = json.loads(args.data.read_text())
    total: dict[str, float] = {}
    head = ("case", "tokens", "steps", "drafted", "wasted", "misses", "decode s")
    print(f"{head[0]:24} " + " ".join(f"{h:>8}" for h in head[1:]))
    for name, case in data.items():
        show = _shower(name, case) if args.misses else None
        r = replay(case["prompt"], case["answer"], cfg, show)
        print(f"{name:24} " + " ".join(f"{r[k]:8.0f}" for k in KEYS) + f" {r['decode_s']:8.1f}")
        for key, v in r.items():
            total[key] = total.get(key, 0) + v
    print(f"{'total':24} " + " ".join(f"{total[k]:8.0f}" for k in KEYS) + f" {total['decode_s']:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
