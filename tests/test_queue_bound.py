"""The bounded local queue through the real app (issue 15): with every slot busy and
`max_queue` (4 per slot) requests waiting, further requests get a 429 with Retry-After at once,
in their dialect's error shape, instead of joining an unbounded queue; a queued client that
gives up leaves the queue; the queue never grows past its bound and everything drains."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from fakes.scripted_runtime import text_events
from fakes.slot_runtime import SlotRuntime
from live_server import LiveServer, running_server

from appliance.api import ModelRegistry, create_app

SLOTS, BOUND = 2, 8  # the default bound: 4 waiting requests per slot
CHAT = {"model": "default", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def served() -> Iterator[tuple[LiveServer, SlotRuntime]]:
    rt = SlotRuntime(id="local-model", slots=SLOTS, delay_s=0.05, script=text_events("word", pieces=30))
    registry = ModelRegistry()
    registry.add(rt, roles=["main"])
    with running_server(create_app(registry)) as live:
        yield live, rt


def _wait_for(cond, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_requests_beyond_the_queue_bound_get_429_with_retry_after(
    served: tuple[LiveServer, SlotRuntime],
) -> None:
    live, rt = served
    statuses: list[int] = []
    gave_up: list[str] = []

    def queued(i: int) -> None:
        timeout = 0.5 if i == SLOTS + BOUND - 1 else 30  # the last one gives up while queued
        try:
            r = httpx.post(live.api_base + "/chat/completions", json={**CHAT, "stream": i % 2 == 0},
                           timeout=timeout)
            statuses.append(r.status_code)
        except httpx.TimeoutException as e:
            gave_up.append(type(e).__name__)

    threads = []
    for i in range(SLOTS + BOUND):  # one at a time, so the router sees each one queued
        threads.append(threading.Thread(target=queued, args=(i,)))
        threads[-1].start()
        _wait_for(lambda n=i + 1: rt.busy + rt.waiting == n)
    assert (rt.busy, rt.waiting) == (SLOTS, BOUND)

    over = [
        httpx.post(live.api_base + "/chat/completions", json=CHAT, timeout=5),
        httpx.post(live.api_base + "/chat/completions", json={**CHAT, "stream": True}, timeout=5),
        httpx.post(live.base_url + "/v1/messages", json={**CHAT, "model": "claude-x"}, timeout=5),
    ]
    for r in over:
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) >= 1
        assert f"capacity:queue-full({BOUND}),no-provider" in r.headers["x-appliance-reason"]
    openai_err = over[0].json()["error"]
    assert openai_err["type"] == "rate_limit_error" and openai_err["code"] == "queue_full"
    assert over[2].json()["type"] == "error" and over[2].json()["error"]["type"] == "rate_limit_error"

    _wait_for(lambda: bool(gave_up))  # the client that gave up left the queue at once
    _wait_for(lambda: rt.waiting <= BOUND - 1, timeout_s=2)
    for t in threads:
        t.join(timeout=60)
    assert statuses == [200] * (SLOTS + BOUND - 1) and gave_up == ["ReadTimeout"]
    assert (rt.busy, rt.waiting) == (0, 0) and rt.most_waiting == BOUND  # never past the bound
    assert len(rt.records) == SLOTS + BOUND - 1  # neither the refused nor the one that gave up ran
    assert httpx.post(live.api_base + "/chat/completions", json=CHAT, timeout=30).status_code == 200
