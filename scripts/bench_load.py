"""Load benchmark (issue 15, "hold under abuse"): many clients against a real `appliance serve`.

First the 4-stream figure (4 concurrent streamed chats, ignore_eos, completion tokens/s), then
CLIENTS clients for MINUTES mixing streamed and whole chats, tool calls, json_schema answers,
streams cancelled mid-way, over-long prompts and bad bodies. Reports statuses by kind (expected
vs unexpected: a 429 with Retry-After from the bounded queue is expected, any 5xx or cut stream
is not), slots busy and queued at the end, the server's RSS at minute 1 (a fifth of the run when
shorter) vs the end, its open file descriptors at the start vs the end, and throughput vs the
4-stream figure. Then, to tell the mix's own cost from the abuse's, the same mix (valid kinds
only) from as many clients as slots, which never overload it: the "clean mix" figure.

    .venv/bin/python scripts/bench_load.py [--minutes 5] [--clients 32] [--model NAME] [--json OUT]
        [--serve-arg=--no-prefix-store]   # any extra `serve` flag, repeatable

Targets: zero unexpected statuses, every slot free at the end, RSS growth < 5%, no fd growth,
throughput within 10% of the 4-stream figure.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]
SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "person", "schema": {
        "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }},
}
# kind: (weight, expected statuses)
KINDS = {
    "stream": (30, {200, 429}), "whole": (20, {200, 429}), "tools": (12, {200, 429}),
    "json_schema": (12, {200, 429}), "cancel": (12, {200, 429}),
    "too_long": (7, {400}), "bad_body": (7, {400}),
}


def model_store(name: str) -> Path:
    from appliance.models.store import fetch
    from quantization.catalog import load_catalog

    model = load_catalog().get(name)
    assert model is not None, name
    return fetch(model, model.artifacts[0], log=lambda *_: None).parents[1]


def start_server(
    home: Path, model: str, slots: int, ctx: int, extra: list[str]
) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "appliance.cli", "serve", "--model", model, "--small-model", "none",
           "--no-pull", "--slots", str(slots), "--ctx", str(ctx), "--port", str(port), *extra]
    log = open(home / "serve.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(cmd, env={**os.environ, "APPLIANCE_HOME": str(home)}, stdout=log, stderr=log,
                            cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"appliance serve did not start; see {home / 'serve.log'}")
        time.sleep(0.5)


def rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1))


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def body_for(kind: str, i: int, ctx: int) -> dict | bytes:
    msg = [{"role": "user", "content": f"Request {i}: write a short note about the number {i}."}]
    base = {"model": "default", "max_tokens": 64, "messages": msg}
    if kind in ("stream", "cancel"):
        return {**base, "stream": True, "stream_options": {"include_usage": True}}
    if kind == "tools":
        return {**base, "tools": TOOLS,
                "messages": [{"role": "user", "content": f"What is the weather in city {i}?"}]}
    if kind == "json_schema":
        return {**base, "response_format": SCHEMA}
    if kind == "too_long":
        return {**base, "messages": [{"role": "user", "content": "lorem ipsum " * ctx * 2}]}
    if kind == "bad_body":
        return random.choice([b"{not json", b'{"messages": 7}', b'{"model": "x", "messages": [{"role": 1}]}'])
    return base


async def one(
    client: httpx.AsyncClient, base: str, kind: str, i: int, ctx: int
) -> tuple[int | str, int, float]:
    """(status or 'cut', completion tokens, retry-after seconds)."""
    body = body_for(kind, i, ctx)
    url = base + "/v1/chat/completions"
    kw = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) \
        else {"json": body}
    if isinstance(body, dict) and body.get("stream"):
        tokens = 0
        try:
            async with client.stream("POST", url, **kw) as r:
                if r.status_code != 200:
                    await r.aread()
                    return r.status_code, 0, float(r.headers.get("retry-after", 0))
                chunks = 0
                async for line in r.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    data = json.loads(line[6:])
                    if "error" in data:
                        return "stream_error", tokens, 0
                    chunks += 1
                    if data.get("usage"):
                        tokens = data["usage"]["completion_tokens"]
                    if kind == "cancel" and chunks >= 5:
                        return 200, 0, 0  # hang up mid-stream
                return 200, tokens, 0
        except httpx.HTTPError:
            return "cut", tokens, 0
    try:
        r = await client.post(url, **kw)
    except httpx.HTTPError:
        return "cut", 0, 0
    tokens = r.json().get("usage", {}).get("completion_tokens", 0) if r.status_code == 200 else 0
    return r.status_code, tokens, float(r.headers.get("retry-after", 0))


async def four_streams(base: str, seconds: float) -> float:
    """Completion tokens/s of 4 concurrent streamed chats (ignore_eos), for `seconds`."""
    end = time.monotonic() + seconds
    total = 0

    async def stream(k: int) -> None:
        nonlocal total
        async with httpx.AsyncClient(timeout=300) as c:
            while time.monotonic() < end:
                body = {"model": "default", "max_tokens": 128, "ignore_eos": True,
                        "messages": [{"role": "user", "content": f"Count from {k} upwards."}]}
                r = await c.post(base + "/v1/chat/completions", json=body)
                total += r.json()["usage"]["completion_tokens"]

    started = time.monotonic()
    await asyncio.gather(*(stream(k) for k in range(4)))
    return total / (time.monotonic() - started)


# The same mix from clients that never overload the server and send nothing invalid: what the
# engine does on the mix itself, to tell its cost apart from the abuse's.
CLEAN = ("stream", "whole", "tools", "json_schema", "cancel")


async def load(
    base: str, pid: int, clients: int, seconds: float, ctx: int, slots: int,
    kinds: tuple[str, ...] = tuple(KINDS),
) -> dict:
    statuses: dict[str, collections.Counter] = {k: collections.Counter() for k in kinds}
    unexpected: collections.Counter = collections.Counter()
    tokens = 0
    rss: list[tuple[float, int]] = []
    started = time.monotonic()
    end = started + seconds
    names, weights = list(kinds), [KINDS[k][0] for k in kinds]
    counter = iter(range(10**9))

    async def client(seed: int) -> None:
        nonlocal tokens
        rnd = random.Random(seed)
        async with httpx.AsyncClient(timeout=httpx.Timeout(300, connect=10)) as c:
            while time.monotonic() < end:
                kind = rnd.choices(names, weights)[0]
                status, n, retry = await one(c, base, kind, next(counter), ctx)
                statuses[kind][str(status)] += 1
                tokens += n
                if status not in KINDS[kind][1]:
                    unexpected[f"{kind}:{status}"] += 1
                if status == 429:
                    await asyncio.sleep(min(retry or 1, 5))

    occupancy: list[tuple[float, float]] = []  # (slots busy, queued), every 2 s

    async def sample() -> None:
        async with httpx.AsyncClient(timeout=10) as c:
            while time.monotonic() < end:
                rss.append((time.monotonic() - started, rss_kib(pid)))
                occupancy.append(scrape((await c.get(base + "/metrics")).text)[:2])
                await asyncio.sleep(2)

    async with httpx.AsyncClient(timeout=10) as c:
        counted_before = scrape((await c.get(base + "/metrics")).text)[2:]
    await asyncio.gather(sample(), *(client(s) for s in range(clients)))
    elapsed = time.monotonic() - started
    async with httpx.AsyncClient(timeout=10) as c:
        counted_after = scrape((await c.get(base + "/metrics")).text)[2:]
    counted = [b - a for a, b in zip(counted_before, counted_after, strict=True)]
    mark = min(60.0, seconds / 5)
    at_mark = next((kib for t, kib in rss if t >= mark), rss[-1][1])
    return {
        "statuses": {k: dict(v) for k, v in statuses.items()}, "unexpected": dict(unexpected),
        "tokens_per_s": tokens / elapsed, "rss_mark_s": mark, "rss_at_mark_kib": at_mark,
        "rss_end_kib": rss_kib(pid),
        # Where the time went: the slots' mean occupancy, how often a slot sat idle with nothing
        # queued (clients asleep on a Retry-After), and the work the engine did (its own counters:
        # prompt tokens computed, not from the cache, and completion tokens, hung-up streams too).
        "slots_busy_mean": sum(b for b, _ in occupancy) / max(1, len(occupancy)),
        "idle_with_empty_queue": sum(q == 0 and b < slots for b, q in occupancy) / max(1, len(occupancy)),
        "engine_prompt_tokens_computed_per_s": (counted[0] - counted[2]) / elapsed,
        "engine_completion_tokens_per_s": counted[1] / elapsed,
        "rss_mib_by_minute": {f"{t / 60:.0f}": round(kib / 1024) for t, kib in rss if t % 60 < 2},
    }


def scrape(text: str) -> tuple[float, ...]:
    """(slots busy, queued, prompt tokens, completion tokens, cached prompt tokens) from /metrics."""
    names = ("appliance_slots_busy", "appliance_queue_depth", "appliance_prompt_tokens_total",
             "appliance_completion_tokens_total", "appliance_cached_prompt_tokens_total")
    return tuple(sum(float(m) for m in re.findall(rf"^{n}\{{[^}}]*\}} (\S+)", text, re.M)) for n in names)


def slots_now(base: str) -> tuple[int, int]:
    busy, queued = scrape(httpx.get(base + "/metrics", timeout=10).text)[:2]
    return int(busy), int(queued)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--baseline-s", type=float, default=30.0, help="length of the 4-stream measurement")
    ap.add_argument("--mix-baseline-s", type=float, default=90.0,
                    help="length of the clean-mix measurement (SLOTS clients, valid requests only)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--serve-arg", action="append", default=[], help="extra `serve` flag (repeatable)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "models").symlink_to(model_store(args.model))
        proc, base = start_server(home, args.model, args.slots, args.ctx, args.serve_arg)
        try:
            four = asyncio.run(four_streams(base, args.baseline_s))
            fd_start = fds(proc.pid)
            result = asyncio.run(load(base, proc.pid, args.clients, args.minutes * 60, args.ctx, args.slots))
            deadline = time.monotonic() + 30
            while slots_now(base) != (0, 0) and time.monotonic() < deadline:
                time.sleep(0.5)
            busy, queued = slots_now(base)
            # After the load (so the load's RSS figures are as before): the clean mix.
            clean = asyncio.run(
                load(base, proc.pid, args.slots, args.mix_baseline_s, args.ctx, args.slots, CLEAN)
            )
            result.update(four_stream_tokens_per_s=four, clean_mix_tokens_per_s=clean["tokens_per_s"],
                          clean_mix_slots_busy_mean=clean["slots_busy_mean"],
                          fd_start=fd_start, fd_end=fds(proc.pid),
                          slots_busy_end=busy, queue_end=queued, clients=args.clients,
                          minutes=args.minutes, model=args.model, slots=args.slots)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    growth = result["rss_end_kib"] / result["rss_at_mark_kib"] - 1
    ratio = result["tokens_per_s"] / result["four_stream_tokens_per_s"]
    checks = {
        "zero unexpected statuses": not result["unexpected"],
        "every slot free at the end": (result["slots_busy_end"], result["queue_end"]) == (0, 0),
        "RSS growth < 5%": growth < 0.05,
        "no fd growth": result["fd_end"] <= result["fd_start"],
        "throughput within 10% of 4 streams": ratio >= 0.9,
    }
    print(json.dumps(result, indent=1))
    print(f"RSS {result['rss_at_mark_kib'] / 1024:.0f} MiB at {result['rss_mark_s']:.0f} s -> "
          f"{result['rss_end_kib'] / 1024:.0f} MiB at the end ({growth:+.1%}); fds {result['fd_start']} -> "
          f"{result['fd_end']}; {result['tokens_per_s']:.1f} tok/s vs 4 streams "
          f"{result['four_stream_tokens_per_s']:.1f} ({ratio:.2f}x); the same mix from {args.slots} clean "
          f"clients: {result['clean_mix_tokens_per_s']:.1f} tok/s (load / clean mix "
          f"{result['tokens_per_s'] / result['clean_mix_tokens_per_s']:.2f}x)")
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    if args.json:
        args.json.write_text(json.dumps({**result, "checks": checks}, indent=1))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
