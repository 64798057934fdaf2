"""The workloads: what is sent to a target for one case, and the figures derived from it.

decode      prompts of ~128..8k tokens, `max_tokens` out: TTFT, decode and prefill tok/s, ITL
prefill     the same prompts, one token out: TTFT and prefill tok/s alone
concurrency N streams at once: aggregate and per-stream throughput, TTFT under load, served
trace       an agent's requests replayed in order: per-request TTFT, total, cached tokens
session     a new agent session with the same system prompt and tools, after other work:
            its first TTFT against a cold one (what a prefix store beyond the slots buys)
restart     the same, with the server restarted in between by the target's `restart=CMD`
            (targets without one are skipped): what survives a restart
edit        a coding agent's edit requests (the whole file back, real lengths, `edit.py`):
            total time, output tokens, output hashes, speculative drafts accepted
"""

from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import dataclass
from typing import Any

import httpx

from appliance.bench import edit as edit_mod
from appliance.bench import synthetic
from appliance.bench import traces as trace_mod
from appliance.bench.client import RequestResult, chat
from appliance.bench.sample import Sample
from appliance.bench.settings import Settings, TargetState
from appliance.bench.stats import percentile


@dataclass
class Case:
    workload: str
    key: str
    param: Any  # prompt size, stream count, or a Trace


def cases(
    settings: Settings, loaded_traces: list[trace_mod.Trace], edits: list[edit_mod.EditCase] | None = None
) -> list[Case]:
    out: list[Case] = []
    for w in settings.workloads:
        if w in ("decode", "prefill"):
            out += [Case(w, f"prompt={n}", n) for n in settings.prompt_sizes]
        elif w == "concurrency":
            out += [Case(w, f"streams={n}", n) for n in settings.concurrency]
        elif w == "trace":
            out += [Case(w, f"trace={t.name}", t) for t in loaded_traces]
        elif w in ("session", "restart"):  # the agent's first request: one trace is enough
            if loaded_traces:
                out.append(Case(w, f"trace={loaded_traces[0].name}", loaded_traces[0]))
        elif w == "edit":  # one case per request, so targets interleave request by request
            todo = edits if edits is not None else edit_mod.load_edits(settings.edit_cases)
            out += [Case(w, f"edit={e.name}", e) for e in todo]
        else:
            raise ValueError(f"unknown workload {w!r}")
    return out


def _key(settings: Settings, sample: Sample) -> str:
    """What makes a sample's prompts unique. The target is in it: two targets behind one server
    (appliance -> vLLM, and vLLM itself) must not find each other's prompts in its prefix cache."""
    return f"{settings.run_id}-{sample.target}-r{sample.rep}"


def chat_body(
    state: TargetState, settings: Settings, messages: list[dict], max_tokens: int
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": state.model,
        "messages": messages,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return {**body, **equal_work(state, settings)}


def equal_work(state: TargetState, settings: Settings) -> dict[str, Any]:
    """What makes every server do the same work for a request: the same sampling
    temperature (greedy by default) and, where the server takes it, ignore_eos (answers run
    to max_tokens instead of ending wherever each server's sampling happened to stop)."""
    out: dict[str, Any] = {}
    if settings.temperature is not None:
        out["temperature"] = settings.temperature
    if state.ignore_eos:
        out["ignore_eos"] = True
    return out


CONTEXT_WORDS = ("context", "too long", "exceed", "maximum")


def is_context_error(res: RequestResult) -> bool:
    msg = (res.error or "").lower()
    return res.status in (400, 413, 422) and any(w in msg for w in CONTEXT_WORDS)


def _fits(state: TargetState, prompt: int, out: int) -> bool:
    return state.n_ctx is None or prompt + out <= state.n_ctx


async def run_case(
    client: httpx.AsyncClient, state: TargetState, settings: Settings, case: Case, rep: int
) -> Sample:
    sample = Sample(target=state.target.name, workload=case.workload, case=case.key, rep=rep)
    if case.workload in ("decode", "prefill"):
        out = settings.max_tokens if case.workload == "decode" else 1
        await _single(client, state, settings, sample, case.param, out)
    elif case.workload == "concurrency":
        await _concurrency(client, state, settings, sample, case.param)
    elif case.workload == "trace":
        await _trace(client, state, settings, sample, case.param)
    elif case.workload in ("session", "restart"):
        await _session(client, state, settings, sample, case.param, restart=case.workload == "restart")
    elif case.workload == "edit":
        await edit_mod.run_edit(client, state, settings, sample, case.param)
    return sample


async def _single(
    client, state: TargetState, settings: Settings, sample: Sample, size: int, out: int
) -> None:
    if not _fits(state, size, out):
        sample.status, sample.error = "skipped", f"{size}+{out} tokens exceed the context ({state.n_ctx})"
        return
    nonce = f"{_key(settings, sample)}-{sample.workload}-{size}"
    words = state.calibration.words_for(size)
    messages = synthetic.story_messages(words, nonce, seed=size)
    res = await chat(client, state.target, chat_body(state, settings, messages, out), settings.timeout_s)
    source = "usage"
    if res.prompt_tokens is None and res.ok and state.calibration.measured:
        res.prompt_tokens = state.calibration.tokens_for(words)  # the server's own count, fitted
        source = "calibration"
    sample.metrics = {"target_prompt_tokens": size, "prompt_tokens_source": source, **res.metrics()}
    sample.raw = {"request": res.raw()}
    if is_context_error(res):
        sample.status, sample.error = "skipped", res.error
    elif not res.ok:
        sample.status, sample.error = "error", res.error


async def _concurrency(client, state: TargetState, settings: Settings, sample: Sample, n: int) -> None:
    words = state.calibration.words_for(settings.concurrency_prompt)
    bodies = [
        chat_body(
            state,
            settings,
            synthetic.story_messages(words, f"{_key(settings, sample)}-c{n}-s{i}", seed=f"stream{i}"),
            settings.max_tokens,
        )
        for i in range(n)
    ]
    results = await asyncio.gather(*(chat(client, state.target, b, settings.timeout_s) for b in bodies))
    sample.metrics = concurrency_metrics(results)
    sample.raw = {"streams": [r.raw() for r in results]}
    if sample.metrics["streams_served"] == 0:
        sample.status = "error"
        sample.error = next((r.error for r in results if r.error), "no stream received a token")


def concurrency_metrics(results: list[RequestResult]) -> dict[str, Any]:
    """Aggregate figures of streams sent together (times are perf_counter based)."""
    t0 = min(r.start for r in results)
    t_end = max(r.start + (r.total_s or 0.0) for r in results)
    served = [r for r in results if r.chunks > 0]
    tokens = sum((r.completion_tokens if r.ok else r.chunks) or 0 for r in served)
    firsts = [r.start + r.token_times[0] for r in served]
    lasts = [r.start + r.token_times[-1] for r in served]
    after_first = sum(max(((r.completion_tokens if r.ok else r.chunks) or 0) - 1, 0) for r in served)
    decode_span = (max(lasts) - min(firsts)) if served else 0.0
    ttfts = [r.ttft_s for r in served if r.ttft_s is not None]
    per_stream = [r.decode_tok_s for r in served if r.decode_tok_s is not None]
    return {
        "streams": len(results),
        "streams_served": len(served),
        "all_served": len(served) == len(results) and all(r.ok for r in results),
        "stream_errors": [r.error for r in results if r.error],
        "completion_tokens": tokens,
        "wall_s": t_end - t0,
        "aggregate_tok_s": tokens / (t_end - t0) if t_end > t0 else None,
        "aggregate_decode_tok_s": after_first / decode_span if decode_span > 0 else None,
        "per_stream_decode_tok_s": percentile(per_stream, 50),
        "per_stream_decode_min_tok_s": min(per_stream) if per_stream else None,
        "ttft_s": percentile(ttfts, 50),
        "ttft_max_s": max(ttfts) if ttfts else None,
        "tokens_source": "usage" if served and all(r.tokens_source == "usage" for r in served) else "chunks",
    }


async def _trace(
    client, state: TargetState, settings: Settings, sample: Sample, trace: trace_mod.Trace
) -> None:
    tag = f"[bench session {_key(settings, sample)}-{trace.name}]" if settings.trace_cold else None
    steps_raw: list[dict[str, Any]] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    for i, step in enumerate(trace.steps):
        extra = equal_work(state, settings) if settings.trace_max_tokens is not None else {}
        bodies = [
            trace_mod.prepare(b, state.model or "", settings.trace_max_tokens, tag, extra) for _, b in step
        ]
        results = await asyncio.gather(*(chat(client, state.target, b, settings.timeout_s) for b in bodies))
        for (label, _), res in zip(step, results, strict=True):
            steps_raw.append({"step": i, "label": label, **res.metrics(), "request": res.raw()})
            if res.error:
                errors.append(f"{label}: {res.error}")
    total = time.perf_counter() - t0
    sample.metrics = trace_metrics(steps_raw, total)
    sample.raw = {"requests": steps_raw}
    if errors:
        sample.status, sample.error = "error", "; ".join(errors)[:1000]


def trace_metrics(steps: list[dict[str, Any]], total_s: float) -> dict[str, Any]:
    def total(key: str) -> int | None:
        vals = [s[key] for s in steps if s.get(key) is not None]
        return sum(vals) if vals else None

    return {
        "total_s": total_s,
        "requests": len(steps),
        "requests_ok": sum(1 for s in steps if s["ok"]),
        "ttft_sum_s": sum(s["ttft_s"] or 0.0 for s in steps),
        "prompt_tokens": total("prompt_tokens"),
        "cached_tokens": total("cached_tokens"),
        "completion_tokens": total("completion_tokens"),
        "step_ttft_s": {s["label"]: s["ttft_s"] for s in steps},
        "step_total_s": {s["label"]: s["total_s"] for s in steps},
        "step_cached_tokens": {s["label"]: s["cached_tokens"] for s in steps},
    }


def _lists(models: Any, model: str | None) -> bool:
    """Whether a /v1/models answer lists `model` (servers answer before their model is loaded)."""
    ids = {m.get("id") for m in (models or {}).get("data") or [] if isinstance(m, dict)}
    return bool(ids) and (model is None or model in ids)


async def restart_target(client, state: TargetState, command: str, timeout_s: float) -> float:
    """Run the target's restart command, then wait until it lists the model again."""
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_shell(command)
    if await proc.wait() != 0:
        raise RuntimeError(f"restart command exited {proc.returncode}")
    while time.perf_counter() - t0 < timeout_s:
        try:
            r = await client.get(f"{state.target.url}/models", headers=state.target.headers(), timeout=5)
            if r.status_code == 200 and _lists(r.json(), state.model):
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.5)
    raise TimeoutError(f"target not ready {timeout_s:.0f} s after restart")


def _session_bodies(trace: trace_mod.Trace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The trace's first agent request (the one with tools), and the same with a new task."""
    bodies = [b for step in trace.steps for _, b in step]
    first = next((b for b in bodies if b.get("tools")), max(bodies, key=lambda b: len(str(b))))
    other = copy.deepcopy(first)
    users = [m for m in other.get("messages") or [] if m.get("role") == "user"]
    if users:
        users[-1]["content"] = "A different task: explain what the main module of this project does."
    return first, other


async def _session(
    client,
    state: TargetState,
    settings: Settings,
    sample: Sample,
    trace: trace_mod.Trace,
    restart: bool = False,
) -> None:
    command = state.target.options.get("restart")
    if restart and not command:
        sample.status, sample.error = "skipped", "no restart=CMD for this target"
        return
    tag = f"[bench session {_key(settings, sample)}-{'x' if restart else 's'}]"
    first, other = _session_bodies(trace)
    send = trace_mod.prepare
    cold = await chat(
        client,
        state.target,
        send(first, state.model or "", settings.trace_max_tokens, tag),
        settings.timeout_s,
    )
    fillers: list[RequestResult] = []
    for i in range(settings.session_fillers):  # other work in between: fills (and evicts) the slots
        words = state.calibration.words_for(1024)
        msgs = synthetic.story_messages(words, f"{_key(settings, sample)}-fill{i}", seed=f"fill{i}")
        fillers.append(
            await chat(client, state.target, chat_body(state, settings, msgs, 4), settings.timeout_s)
        )
    if restart and command:
        try:
            restart_s = await restart_target(client, state, command, settings.timeout_s)
        except (OSError, RuntimeError, TimeoutError) as exc:
            sample.status, sample.error = "error", f"restart: {exc}"
            return
    warm = await chat(
        client,
        state.target,
        send(other, state.model or "", settings.trace_max_tokens, tag),
        settings.timeout_s,
    )
    sample.raw = {"cold": cold.raw(), "warm": warm.raw(), "fillers": [f.metrics() for f in fillers]}
    sample.metrics = {
        "cold_ttft_s": cold.ttft_s,
        "warm_ttft_s": warm.ttft_s,
        "warm_over_cold": warm.ttft_s / cold.ttft_s if warm.ttft_s and cold.ttft_s else None,
        "cold_cached_tokens": cold.cached_tokens,
        "warm_cached_tokens": warm.cached_tokens,
        "prompt_tokens": warm.prompt_tokens,
        "fillers": len(fillers),
        **({"restart_s": restart_s} if restart else {}),
    }
    errors = [f"{n}: {r.error}" for n, r in (("cold", cold), ("warm", warm)) if r.error]
    errors += [f"filler: {f.error}" for f in fillers if f.error]
    if errors:
        sample.status, sample.error = "error", "; ".join(errors)[:1000]
