"""Capacity: does a request fit the local model's context, and how long would it wait?

Counting uses the local runtime's own tokenizer when it has one
(`count_prompt_tokens` returns a number, as LlamaCppRuntime's does), but only near the limit: byte
length bounds the token count from above (byte-level BPE vocabularies make at
most about one token per byte, plus template framing), so short prompts need no
tokenization at all. Queue wait is estimated from the runtime's stats and the
measured duration of recent local requests.

The local queue is bounded twice: by count (`router.max_queue`, default 4 per slot: beyond that
a client waits minutes and memory grows with every queued prompt) and by estimated wait
(`router.queue_wait_bound_s`). Over either, the router spills to the cloud when it may, and
otherwise the request gets a 429 with Retry-After at once rather than an unbounded wait.
"""

from __future__ import annotations

import json
import math

from runtimes.base import ChatRequest, Runtime, RuntimeStats
from runtimes.queue_wait import QueueWait

FRAMING_TOKENS_PER_MESSAGE = 16  # role markers and separators a chat template adds
CHARS_PER_TOKEN_ESTIMATE = 3.0  # used only when the runtime cannot count
# No token is longer than this many bytes (the longest in the vocabularies we serve: Qwen2.5's,
# 256 bytes of byte-level text), so a prompt of more than n_ctx * this many bytes cannot fit:
# it is refused without rendering or tokenizing megabytes on the event loop.
MAX_BYTES_PER_TOKEN = 256
QUEUE_PER_SLOT = 4  # waiting local requests per slot when `router.max_queue` is not set


def _request_bytes(req: ChatRequest) -> int:
    n = 0
    for msg in req.messages:
        content = msg.get("content")
        n += len(content.encode()) if isinstance(content, str) else 0
        if msg.get("tool_calls"):
            n += len(json.dumps(msg["tool_calls"]).encode())
    if req.tools:
        n += len(json.dumps(req.tools).encode())
    return n


def prompt_tokens(runtime: Runtime, req: ChatRequest) -> int:
    """The prompt's token count: exact when the runtime can count, else an estimate."""
    exact = runtime.count_prompt_tokens(req)
    if exact is not None:
        return exact
    n_bytes = _request_bytes(req)
    return int(n_bytes / CHARS_PER_TOKEN_ESTIMATE) + FRAMING_TOKENS_PER_MESSAGE * (len(req.messages) + 1)


def fits_context(runtime: Runtime, req: ChatRequest) -> bool:
    """True if the prompt leaves at least one token of the local context for the answer."""
    n_bytes = _request_bytes(req)
    upper = n_bytes + FRAMING_TOKENS_PER_MESSAGE * (len(req.messages) + 1) + 512
    if upper < runtime.n_ctx:
        return True  # cannot be too long: skip tokenizing
    if n_bytes > runtime.n_ctx * MAX_BYTES_PER_TOKEN:
        return False  # cannot fit: skip tokenizing
    return prompt_tokens(runtime, req) < runtime.n_ctx


def overflow_detail(runtime: Runtime, req: ChatRequest) -> str:
    """Why a prompt does not fit, in numbers (exact tokens unless it is far too long to count)."""
    n_bytes = _request_bytes(req)
    if n_bytes > runtime.n_ctx * MAX_BYTES_PER_TOKEN:
        n = f"{n_bytes} bytes (at least {n_bytes // MAX_BYTES_PER_TOKEN} tokens)"
    else:
        n = f"{prompt_tokens(runtime, req)} tokens"
    return f"the prompt has {n}; the local context holds {runtime.n_ctx}"


def _stats(runtime: Runtime) -> RuntimeStats | None:
    try:
        return runtime.stats()
    except Exception:
        return None


def queue_over(wait: QueueWait, runtime: Runtime, max_queue: int | None, bound_s: float) -> str | None:
    """The reason tag when a new local request would be over a queue bound, else None:
    `capacity:queue-full(N)` (N already waiting, the count bound) or `capacity:queue(Ws)`
    (the estimated wait over `bound_s`). Never while a slot is free and nobody waits."""
    st = _stats(runtime)
    if st is None or st.slots_total <= 0 or (st.slots_busy < st.slots_total and st.queue_depth == 0):
        return None
    limit = max_queue if max_queue is not None else QUEUE_PER_SLOT * st.slots_total
    if st.queue_depth >= limit:
        return f"capacity:queue-full({st.queue_depth})"
    waited = wait.estimate_s(st.queue_depth + 1, st.slots_total)
    return f"capacity:queue({waited:.0f}s)" if waited > bound_s else None


def retry_after_s(wait: QueueWait, runtime: Runtime) -> int:
    """Seconds until a slot is likely to free (one request's share of the slots), at least 1."""
    st = _stats(runtime)
    slots = st.slots_total if st is not None and st.slots_total > 0 else 1
    return max(1, math.ceil(wait.estimate_s(1, slots)))
