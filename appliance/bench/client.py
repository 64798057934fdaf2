"""One timed chat-completion request: when each token arrived, and what the server reported.

Every figure in the bench is derived from these arrival times, so the client is as thin
as possible: raw httpx, SSE lines parsed by hand, `perf_counter` stamped as each line
arrives. Token counts come from the server's usage when it reports them, else from the
number of content-bearing chunks (recorded in `tokens_source`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from appliance.bench.stats import gaps, percentile
from appliance.bench.targets import Target


@dataclass
class RequestResult:
    ok: bool = False
    error: str | None = None
    status: int | None = None
    streamed: bool = True
    start: float = 0.0  # perf_counter at send (for cross-request arithmetic; not saved)
    ttft_s: float | None = None
    total_s: float | None = None
    token_times: list[float] = field(default_factory=list)  # seconds after send, one per chunk
    chunks: int = 0
    completion_tokens: int | None = None
    tokens_source: str = "chunks"  # "usage" or "chunks"
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    finish_reason: str | None = None
    text_chars: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    text: str | None = None  # the answer's content, kept only when asked (`chat(keep_text=True)`)
    timings: dict[str, Any] | None = None  # llama-server's per-request timings (drafted tokens)

    @property
    def decode_tok_s(self) -> float | None:
        """Completion tokens after the first over the time after the first."""
        if self.completion_tokens is None or self.completion_tokens < 2 or len(self.token_times) < 2:
            return None
        span = self.token_times[-1] - self.token_times[0]
        return (self.completion_tokens - 1) / span if span > 0 else None

    @property
    def prefill_tok_s(self) -> float | None:
        """Prompt tokens over time to first token (includes the HTTP round trip)."""
        if not self.prompt_tokens or not self.ttft_s:
            return None
        return self.prompt_tokens / self.ttft_s

    def itl(self, q: float) -> float | None:
        return percentile(gaps(self.token_times), q)

    def metrics(self) -> dict[str, Any]:
        """The per-sample figures stored in the results file."""
        return {
            "ok": self.ok,
            "error": self.error,
            "status": self.status,
            "ttft_s": self.ttft_s,
            "total_s": self.total_s,
            "decode_tok_s": self.decode_tok_s,
            "prefill_tok_s": self.prefill_tok_s,
            "itl_p50_s": self.itl(50),
            "itl_p95_s": self.itl(95),
            "completion_tokens": self.completion_tokens,
            "tokens_source": self.tokens_source,
            "chunks": self.chunks,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "finish_reason": self.finish_reason,
        }

    def raw(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("start")
        return d


KEPT_HEADERS = ("server", "x-")


def _keep_headers(headers: httpx.Headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower().startswith(KEPT_HEADERS)}


def _error_text(status: int, body: bytes) -> str:
    try:
        err = json.loads(body)
        msg = err.get("error", err)
        if isinstance(msg, dict):
            msg = msg.get("message", msg)
        return f"HTTP {status}: {msg}"[:500]
    except (ValueError, AttributeError):
        return f"HTTP {status}: {body[:300].decode(errors='replace')}"


def _apply_usage(res: RequestResult, usage: dict[str, Any] | None) -> None:
    if not usage:
        return
    if usage.get("completion_tokens") is not None:
        res.completion_tokens = int(usage["completion_tokens"])
        res.tokens_source = "usage"
    if usage.get("prompt_tokens") is not None:
        res.prompt_tokens = int(usage["prompt_tokens"])
    details = usage.get("prompt_tokens_details") or {}
    if details.get("cached_tokens") is not None:
        res.cached_tokens = int(details["cached_tokens"])


def _delta_has_token(choice: dict[str, Any]) -> int:
    """Characters of generated output in one streamed choice (content, reasoning, tool calls)."""
    delta = choice.get("delta") or {}
    n = len(delta.get("content") or "") + len(delta.get("reasoning_content") or "")
    for call in delta.get("tool_calls") or []:
        fn = call.get("function") or {}
        n += len(fn.get("name") or "") + len(fn.get("arguments") or "") or 1
    return n


async def chat(
    client: httpx.AsyncClient,
    target: Target,
    body: dict[str, Any],
    timeout_s: float = 600.0,
    keep_text: bool = False,
) -> RequestResult:
    """POST /chat/completions and time it; never raises for server or network faults.
    `keep_text`: keep the answer's content (the edit workload compares outputs between targets)."""
    res = RequestResult(streamed=bool(body.get("stream")), text="" if keep_text else None)
    url = target.url + "/chat/completions"
    res.start = t0 = time.perf_counter()
    try:
        if res.streamed:
            await _stream(client, url, target, body, res, t0, timeout_s)
        else:
            await _plain(client, url, target, body, res, t0, timeout_s)
    except httpx.TimeoutException as e:
        res.error = f"timeout: {type(e).__name__}"
    except httpx.HTTPError as e:
        res.error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    res.total_s = time.perf_counter() - t0
    if res.completion_tokens is None and res.status == 200:
        res.completion_tokens = res.chunks
    res.ok = res.error is None
    return res


async def _plain(client, url, target, body, res: RequestResult, t0: float, timeout_s: float) -> None:
    r = await client.post(url, json=body, headers=target.headers(), timeout=timeout_s)
    res.status = r.status_code
    res.headers = _keep_headers(r.headers)
    if r.status_code != 200:
        res.error = _error_text(r.status_code, r.content)
        return
    data = r.json()
    choice = (data.get("choices") or [{}])[0]
    res.finish_reason = choice.get("finish_reason")
    msg = choice.get("message") or {}
    res.text_chars = len(msg.get("content") or "")
    if res.text is not None:
        res.text = msg.get("content") or ""
    res.timings = data.get("timings") or res.timings
    _apply_usage(res, data.get("usage"))


async def _stream(client, url, target, body, res: RequestResult, t0: float, timeout_s: float) -> None:
    timeout = httpx.Timeout(timeout_s, connect=10.0)
    async with client.stream("POST", url, json=body, headers=target.headers(), timeout=timeout) as r:
        res.status = r.status_code
        res.headers = _keep_headers(r.headers)
        if r.status_code != 200:
            res.error = _error_text(r.status_code, await r.aread())
            return
        done = False
        async for line in r.aiter_lines():
            now = time.perf_counter() - t0
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                done = True
                break
            try:
                event = json.loads(payload)
            except ValueError:
                res.error = f"bad SSE data: {payload[:200]}"
                return
            if "error" in event:
                res.error = f"error event: {json.dumps(event['error'])[:300]}"
                return
            _apply_usage(res, event.get("usage"))
            res.timings = event.get("timings") or res.timings
            for choice in event.get("choices") or []:
                if res.text is not None:
                    res.text += (choice.get("delta") or {}).get("content") or ""
                n = _delta_has_token(choice)
                if n:
                    res.chunks += 1
                    res.text_chars += n
                    res.token_times.append(now)
                    if res.ttft_s is None:
                        res.ttft_s = now
                if choice.get("finish_reason"):
                    res.finish_reason = choice["finish_reason"]
        if not done and res.finish_reason is None:
            res.error = f"stream cut after {res.chunks} chunks (no finish_reason, no [DONE])"
