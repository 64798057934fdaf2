"""The last minutes of traffic in memory, for the console's live panel.

Prometheus counters (metrics.py) say how much since the start; a person watching the
appliance wants "how fast now". Each finished request is spread over the seconds it ran:
its uncached prompt tokens over the time to its first token (prefill), its generated
tokens over the rest (decode). So the chart shows the throughput the engine delivered in
each second, not a spike at each request's end. Only local answers count towards tok/s
(a cloud provider's speed is not this machine's); the totals count every request.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from runtimes.base import Usage

WINDOW_S = 600  # what the chart can show: the last ten minutes
TTFT_SAMPLES = 4096


@dataclass
class Totals:
    """Since the server started: every request that produced a generation, any route."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    local_requests: int = 0
    cloud_requests: int = 0


class LiveWindow:
    """Per-second prefill/decode token counts over the last WINDOW_S seconds, TTFT samples
    and running totals. Written from the event loop as requests close, read by the console;
    a lock keeps the two consistent."""

    def __init__(self, window_s: int = WINDOW_S, clock: Callable[[], float] = time.time):
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._prefill: dict[int, float] = {}  # unix second -> tokens prefilled in it
        self._decode: dict[int, float] = {}
        self._ttft: deque[tuple[float, float]] = deque(maxlen=TTFT_SAMPLES)  # (when, seconds)
        # (when, prompt tokens, cached tokens) of local requests, for the window's cache hit rate
        self._window_prompt: deque[tuple[float, int, int]] = deque(maxlen=TTFT_SAMPLES)
        self.totals = Totals()

    def record(self, route: str, usage: Usage | None, elapsed_s: float, ttft_s: float | None) -> None:
        """One request closed now, after `elapsed_s`, its first token after `ttft_s` (None: none)."""
        end = self.clock()
        start = end - max(0.0, elapsed_s)
        u = usage or Usage()
        with self._lock:
            t = self.totals
            t.requests += 1
            t.prompt_tokens += u.prompt_tokens
            t.cached_tokens += u.cached_tokens
            t.completion_tokens += u.completion_tokens
            if route == "cloud":
                t.cloud_requests += 1
                return
            t.local_requests += 1
            first = start + ttft_s if ttft_s is not None else end
            _spread(self._prefill, start, first, max(0, u.prompt_tokens - u.cached_tokens))
            _spread(self._decode, first, end, u.completion_tokens)
            if ttft_s is not None:
                self._ttft.append((end, ttft_s))
            if u.prompt_tokens:
                self._window_prompt.append((end, u.prompt_tokens, u.cached_tokens))
            self._prune(end)

    def snapshot(self, step_s: int = 5) -> dict:
        """The window as the console draws it: one point per `step_s` seconds (tok/s averaged
        over the step), TTFT percentiles and the prefix-cache hit rate of the window."""
        now = self.clock()
        with self._lock:
            self._prune(now)
            last = int(now) // step_s * step_s  # the step in progress is drawn as it fills
            first = last - (self.window_s // step_s - 1) * step_s
            points = []
            for t0 in range(first, last + step_s, step_s):
                seconds = range(t0, t0 + step_s)
                span = min(step_s, max(1.0, now - t0))
                points.append({
                    "t": t0,
                    "prefill_tok_s": round(sum(self._prefill.get(s, 0.0) for s in seconds) / span, 2),
                    "decode_tok_s": round(sum(self._decode.get(s, 0.0) for s in seconds) / span, 2),
                })
            ttfts = sorted(v for _, v in self._ttft)
            prompt = sum(p for _, p, _ in self._window_prompt)
            cached = sum(c for _, _, c in self._window_prompt)
            t = self.totals
            totals = dict(vars(t))
            last_ttft = self._ttft[-1][1] if self._ttft else None
        return {
            "now": now,
            "window_s": self.window_s,
            "step_s": step_s,
            "series": points,
            "ttft_s": {
                "p50": _percentile(ttfts, 0.5), "p90": _percentile(ttfts, 0.9),
                "last": last_ttft, "samples": len(ttfts),
            },
            "cache_hit_rate": cached / prompt if prompt else None,
            "cache_hit_rate_total": t.cached_tokens / t.prompt_tokens if t.prompt_tokens else None,
            "totals": totals,
        }

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        for table in (self._prefill, self._decode):
            for second in [s for s in table if s < horizon - 1]:
                del table[second]
        while self._ttft and self._ttft[0][0] < horizon:
            self._ttft.popleft()
        while self._window_prompt and self._window_prompt[0][0] < horizon:
            self._window_prompt.popleft()


def _spread(table: dict[int, float], start: float, end: float, amount: float) -> None:
    """Add `amount` to the seconds of [start, end] in proportion to their overlap."""
    if amount <= 0:
        return
    if end - start < 1e-3:
        table[int(end)] = table.get(int(end), 0.0) + amount
        return
    rate = amount / (end - start)
    s = math.floor(start)
    while s < end:
        overlap = min(end, s + 1) - max(start, s)
        if overlap > 0:
            table[s] = table.get(s, 0.0) + rate * overlap
        s += 1


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]
