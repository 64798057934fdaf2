"""How much latency the appliance adds when it proxies a request to a cloud provider.

Three processes: a fake OpenAI provider on loopback (tests/fakes; real providers cannot
be reached here), the appliance's app routing an explicit cloud model to it (uvicorn,
as `appliance serve` runs it, usage log on), and this client. The same streamed chat
request goes to the provider directly and through the appliance, interleaved (ABAB...)
so drift hits both alike; we report medians and the median of the paired differences.

    .venv/bin/python scripts/bench_proxy_overhead.py [--n 500] [--no-stream] [--json]

`--words 1000` makes every answer a 1000-chunk stream instead: the added time divided by the
chunk count is what forwarding costs per streamed token (the vLLM runtime forwards the same way).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-bench-key"
BODY = {
    "model": "gpt-frontier",
    "stream": True,
    "stream_options": {"include_usage": True},
    "max_tokens": 16,
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say hello in five words."},
    ],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_provider(port: int, words: int) -> None:
    import uvicorn

    sys.path.insert(0, str(REPO / "tests"))
    from fakes.openai_provider import FakeOpenAI
    from fakes.provider_base import Reply

    text = " ".join(f"w{i}" for i in range(words)) if words else "Hello there, how are you?"
    fake = FakeOpenAI(api_key=KEY, reply=Reply(text=text))
    uvicorn.run(fake.app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def serve_appliance(port: int, provider_port: int) -> None:
    import uvicorn

    from appliance.api import ModelRegistry, create_app
    from appliance.config import ServeConfig
    from appliance.serve.routing import build_routing

    os.environ["BENCH_PROVIDER_KEY"] = KEY
    cloud = {"providers": [{
        "name": "fake", "kind": "openai", "base_url": f"http://127.0.0.1:{provider_port}/v1",
        "api_key_env": "BENCH_PROVIDER_KEY",
        "models": {"gpt-frontier": {"upstream": "gpt-4o", "price": {"input": 2.5, "output": 10}}},
    }]}
    registry = ModelRegistry()
    app = create_app(registry, routing=build_routing(ServeConfig(cloud=cloud), registry))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def wait_up(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def one(client: httpx.Client, url: str, headers: dict[str, str], body: dict = BODY) -> float:
    t0 = time.perf_counter()
    with client.stream("POST", url, json=body, headers=headers) as r:
        r.raise_for_status()
        for _ in r.iter_bytes():
            pass
    return (time.perf_counter() - t0) * 1000


def measure(n: int, warmup: int, stream: bool = True, words: int = 0) -> dict:
    pport, aport = free_port(), free_port()
    me = [sys.executable, __file__]
    env = {**os.environ, "APPLIANCE_HOME": tempfile.mkdtemp(prefix="bench-proxy-")}
    procs = [
        subprocess.Popen(
            [*me, "--role", "provider", "--port", str(pport), "--words", str(words)], env=env, cwd=REPO
        ),
        subprocess.Popen([*me, "--role", "appliance", "--port", str(aport), "--provider-port", str(pport)],
                         env=env, cwd=REPO),
    ]
    try:
        wait_up(f"http://127.0.0.1:{pport}/v1/models", procs[0])
        wait_up(f"http://127.0.0.1:{aport}/health", procs[1])
        direct = (f"http://127.0.0.1:{pport}/v1/chat/completions", {"authorization": f"Bearer {KEY}"})
        proxied = (f"http://127.0.0.1:{aport}/v1/chat/completions", {"authorization": "Bearer client"})
        a, b = [], []
        body = BODY if stream else {k: v for k, v in BODY.items() if k not in ("stream", "stream_options")}
        if words:
            body = {**body, "max_tokens": 2 * words}
        with httpx.Client(timeout=30) as client:
            for i in range(warmup + n):
                da = one(client, *direct, body)
                db = one(client, *proxied, body)
                if i >= warmup:
                    a.append(da)
                    b.append(db)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
    diffs = sorted(y - x for x, y in zip(a, b, strict=True))
    return {
        "n": n,
        "stream": stream,
        "words": words,
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "direct_p50_ms": statistics.median(a),
        "proxied_p50_ms": statistics.median(b),
        "added_p50_ms": statistics.median(b) - statistics.median(a),
        "paired_diff_p50_ms": statistics.median(diffs),
        "paired_diff_p90_ms": diffs[int(0.9 * (len(diffs) - 1))],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=["bench", "provider", "appliance"], default="bench")
    ap.add_argument("--port", type=int)
    ap.add_argument("--provider-port", type=int)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-stream", action="store_true", help="whole answers instead of SSE streams")
    ap.add_argument("--words", type=int, default=0, help="answers of this many chunks (per-token cost)")
    args = ap.parse_args()
    if args.role == "provider":
        serve_provider(args.port, args.words)
        return 0
    if args.role == "appliance":
        serve_appliance(args.port, args.provider_port)
        return 0
    res = measure(args.n, args.warmup, stream=not args.no_stream, words=args.words)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        kind = "streamed chat, 7 content chunks" if res["stream"] else "whole chat answers"
        if res["words"]:
            kind = f"streamed chat, {res['words']} content chunks"
        print(f"requests: {res['n']} each way, interleaved ({kind})")
        print(f"direct to provider   p50 {res['direct_p50_ms']:.2f} ms")
        print(f"through appliance    p50 {res['proxied_p50_ms']:.2f} ms")
        print(f"added latency        p50 {res['paired_diff_p50_ms']:.2f} ms (paired), "
              f"p90 {res['paired_diff_p90_ms']:.2f} ms")
        if res["words"]:
            per = res["paired_diff_p50_ms"] * 1000 / res["words"]
            print(f"added per streamed chunk: {per:.1f} us")
        print(f"load average (1 min) after the run: {res['load_avg_1m_after']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
