"""A fake OpenAI-compatible LLM server whose timing is set exactly, to check the bench's arithmetic.

It stands in for an LLM server (llama-server, vLLM, our appliance) in the bench's tests:
a real HTTP server on loopback (FastAPI + uvicorn in a thread) that answers
`/v1/chat/completions` by emitting one token every `token_s` seconds after a first-token
delay of `ttft_s`, on an absolute schedule so the rate does not drift. Since the true
figures are known (a token every 10 ms is 100 tok/s), the bench's measured figures can be
checked against them. It also reports usage (prompt tokens = words in the messages plus
a fixed overhead; cached tokens = the common word prefix with the previous prompt, like a
one-slot prefix cache) and can misbehave on purpose: unknown model, HTTP 500 after some
requests, a stream cut mid-way, a context limit, no usage.

Run alone: `python tests/fakes/timed_server.py --port 8099 --token-ms 10 --ttft-ms 50`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

OVERHEAD_TOKENS = 12  # what a chat template adds around the messages


@dataclass
class FakeConfig:
    ttft_s: float = 0.05
    token_s: float = 0.01
    prefill_token_s: float = 0.0  # added to the TTFT per prompt token not found in the cache
    models: list[str] = field(default_factory=lambda: ["fake-model"])
    strict_model: bool = True  # unknown model: 404
    report_usage: bool = True
    stream_usage: bool = True  # False: usage only without streaming (like llama_cpp.server)
    report_cached: bool = True
    n_ctx: int | None = None  # prompt + max_tokens beyond this: 400 context_length_exceeded
    advertise_ctx: bool = False  # put n_ctx in /v1/models as context_length
    fail_after_requests: int | None = None  # chat requests after this many: HTTP 500
    cut_after_tokens: int | None = None  # drop the connection after this many tokens
    reject_ignore_eos: bool = False


def prompt_words(body: dict[str, Any]) -> list[str]:
    words: list[str] = []
    for tool in body.get("tools") or []:  # rendered before the messages, as chat templates do
        words += json.dumps(tool).split()
    for m in body.get("messages") or []:
        content = m.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        words += (content or "").split()
        for call in m.get("tool_calls") or []:
            words += json.dumps(call).split()
    return words


def common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _error(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "code": code}}, status
    )


def create_app(cfg: FakeConfig) -> FastAPI:
    app = FastAPI()
    state: dict[str, Any] = {"requests": 0, "last_prompt": [], "bodies": []}
    app.state.fake = state

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [{"id": m, "object": "model", "owned_by": "fake"} for m in cfg.models]
        if cfg.advertise_ctx and cfg.n_ctx:
            for d in data:
                d["context_length"] = cfg.n_ctx
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        t0 = time.perf_counter()
        body = await request.json()
        state["bodies"].append(body)
        state["requests"] += 1
        if cfg.fail_after_requests is not None and state["requests"] > cfg.fail_after_requests:
            return _error(500, "internal error (on purpose)", "server_error")
        if cfg.strict_model and body.get("model") not in cfg.models:
            return _error(404, f"model {body.get('model')!r} not found", "model_not_found")
        if cfg.reject_ignore_eos and "ignore_eos" in body:
            return _error(400, "unknown parameter: ignore_eos", "invalid_request_error")
        words = prompt_words(body)
        prompt_tokens = len(words) + OVERHEAD_TOKENS
        n_out = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        if cfg.n_ctx is not None and prompt_tokens + n_out > cfg.n_ctx:
            msg = f"prompt of {prompt_tokens} tokens exceeds the context of {cfg.n_ctx}"
            return _error(400, msg, "context_length_exceeded")
        cached = common_prefix(words, state["last_prompt"])
        state["last_prompt"] = words
        ttft = cfg.ttft_s + cfg.prefill_token_s * (prompt_tokens - cached)
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": n_out,
            "total_tokens": prompt_tokens + n_out,
        }
        if cfg.report_cached:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        if not body.get("stream"):
            await asyncio.sleep(max(0.0, t0 + ttft + (n_out - 1) * cfg.token_s - time.perf_counter()))
            out = {
                "id": "fake",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "tok " * n_out},
                        "finish_reason": "length",
                    }
                ],
            }
            if cfg.report_usage:
                out["usage"] = usage
            return out
        include_usage = (body.get("stream_options") or {}).get("include_usage") and cfg.report_usage
        include_usage = include_usage and cfg.stream_usage
        return StreamingResponse(
            _stream(cfg, t0 + ttft, n_out, body.get("model"), usage if include_usage else None),
            media_type="text/event-stream",
        )

    return app


def _chunk(model: str | None, delta: dict[str, Any], finish: str | None = None) -> str:
    event = {
        "id": "fake",
        "object": "chat.completion.chunk",
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(event)}\n\n"


async def _stream(cfg: FakeConfig, t_first: float, n_out: int, model: str | None, usage: dict | None):
    yield _chunk(model, {"role": "assistant", "content": ""})
    for i in range(n_out):
        due = t_first + i * cfg.token_s  # absolute schedule: no drift
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        if cfg.cut_after_tokens is not None and i >= cfg.cut_after_tokens:
            raise ConnectionResetError("stream cut on purpose")
        yield _chunk(model, {"content": f"t{i} "})
    yield _chunk(model, {}, "length")
    if usage:
        yield f"data: {json.dumps({'id': 'fake', 'choices': [], 'usage': usage})}\n\n"
    yield "data: [DONE]\n\n"


class TimedServer:
    """Runs the fake in a background thread on a free loopback port: `with TimedServer() as s:`."""

    def __init__(self, cfg: FakeConfig | None = None, port: int = 0):
        self.cfg = cfg or FakeConfig()
        self.app = create_app(self.cfg)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="error", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return self.app.state.fake["bodies"]

    def start(self) -> TimedServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)

    def __enter__(self) -> TimedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    p = argparse.ArgumentParser(description="fake timed OpenAI-compatible server")
    p.add_argument("--port", type=int, default=8099)
    p.add_argument("--token-ms", type=float, default=10)
    p.add_argument("--ttft-ms", type=float, default=50)
    p.add_argument("--model", default="fake-model")
    a = p.parse_args()
    cfg = FakeConfig(ttft_s=a.ttft_ms / 1000, token_s=a.token_ms / 1000, models=[a.model])
    uvicorn.run(create_app(cfg), host="127.0.0.1", port=a.port, log_level="error")


if __name__ == "__main__":
    main()
