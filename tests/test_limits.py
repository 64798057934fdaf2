"""Bounded input: oversized, deeply nested and over-counted requests are refused cheaply,
in each dialect's error shape, over real loopback HTTP.

The 300 MB body goes to the real app in its own process (tests/fakes/scripted_app_server.py),
so the server's own memory can be read from /proc while the client streams the body from a
generator (the client never holds it either).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from fakes.scripted_runtime import ScriptedRuntime
from live_server import LiveServer, running_server

from appliance.api import ModelRegistry, catalog_resolver, create_app
from runtimes.base import ChatRequest

MODEL = "qwen2.5-coder-0.5b-instruct"
USER = [{"role": "user", "content": "Say hello."}]
SERVER = Path(__file__).resolve().parent / "fakes" / "scripted_app_server.py"
MB = 1024 * 1024


class CountingRuntime(ScriptedRuntime):
    """A scripted runtime that can count tokens, and counts how often it was asked to."""

    counted: int = 0

    def count_prompt_tokens(self, req: ChatRequest) -> int | None:
        self.counted += 1
        return sum(len(str(m.get("content", ""))) for m in req.messages)


@pytest.fixture
def runtime() -> CountingRuntime:
    return CountingRuntime(id=MODEL, n_ctx=64)


@pytest.fixture
def server(runtime: CountingRuntime) -> Iterator[LiveServer]:
    registry = ModelRegistry(catalog_resolver())
    registry.add(runtime, roles=["main"])
    with running_server(create_app(registry)) as live:
        yield live


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_HEAD = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": ""}]})[:-4].encode()
_TAIL = b'"}]}'


def _huge_body(total: int) -> Iterator[bytes]:
    """A chat body whose one message is `total` bytes, produced a megabyte at a time."""
    yield _HEAD
    chunk = b"a" * MB
    for _ in range(total // MB):
        yield chunk
    yield _TAIL


def test_300_mb_body_gets_413_and_server_memory_stays_flat() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the app server did not start"
            time.sleep(0.1)
        before = _rss_kb(proc.pid)
        peak = [before]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _rss_kb(proc.pid))
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        headers = {"content-type": "application/json"}
        try:
            # Chunked: the server learns the size only while reading.
            chunked = httpx.post(
                base + "/v1/chat/completions", content=_huge_body(300 * MB), headers=headers, timeout=60
            )
            # A declared length: refused before a byte of the body is read, in Anthropic's shape.
            declared = httpx.post(
                base + "/v1/messages",
                content=_huge_body(300 * MB),
                timeout=60,
                headers={**headers, "content-length": str(len(_HEAD) + 300 * MB + len(_TAIL))},
            )
        finally:
            stop.set()
            sampler.join()
        assert chunked.status_code == 413
        assert chunked.json()["error"]["code"] == "request_too_large"
        assert declared.status_code == 413
        assert declared.json() == {
            "type": "error",
            "error": {"type": "request_too_large", "message": declared.json()["error"]["message"]},
        }
        assert "32 MiB" in declared.json()["error"]["message"]
        assert (peak[0] - before) < 200 * 1024, f"RSS grew {(peak[0] - before) // 1024} MB"
        # The server is still fine afterwards.
        ok = httpx.post(base + "/v1/chat/completions", json={"model": MODEL, "messages": USER}, timeout=10)
        assert ok.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_body_within_the_limit_is_served_even_when_chunked(server: LiveServer) -> None:
    body = json.dumps({"model": MODEL, "messages": USER}).encode()
    r = httpx.post(
        server.base_url + "/v1/chat/completions",
        content=iter([body[:10], body[10:]]),
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 200, r.text


def _deep(levels: int) -> bytes:
    return (
        b'{"model": "%s", "max_tokens": 5, "messages": ' % MODEL.encode()
        + b"[" * levels
        + b"]" * levels
        + b"}"
    )


def test_deep_nesting_gets_400_in_each_dialect(server: LiveServer) -> None:
    headers = {"content-type": "application/json"}
    oa = httpx.post(server.base_url + "/v1/chat/completions", content=_deep(100_000), headers=headers)
    assert oa.status_code == 400
    assert oa.json()["error"]["code"] == "too_deep" and "limit is 64" in oa.json()["error"]["message"]
    an = httpx.post(server.base_url + "/v1/messages", content=_deep(100_000), headers=headers)
    assert an.status_code == 400
    assert an.json()["type"] == "error" and an.json()["error"]["type"] == "invalid_request_error"
    assert "levels deep" in an.json()["error"]["message"]
    # Brackets inside strings are text, not nesting.
    text = "[" * 10_000 + "{" * 10_000
    ok = httpx.post(
        server.base_url + "/v1/chat/completions",
        timeout=10,
        json={"model": MODEL, "messages": [{"role": "user", "content": text}]},
    )
    assert ok.status_code != 400 or "deep" not in ok.text


def test_counts_and_schema_sizes_are_bounded(server: LiveServer) -> None:
    oa = openai.OpenAI(base_url=server.api_base, api_key="unused", max_retries=0, timeout=10)
    huge_schema = {"type": "object", "description": "x" * 300_000}
    with pytest.raises(openai.BadRequestError) as schema:
        oa.chat.completions.create(
            model=MODEL,
            messages=USER,
            tools=[  # type: ignore[arg-type,list-item]
                {"type": "function", "function": {"name": "f", "parameters": huge_schema}}
            ],
        )
    assert schema.value.code == "schema_too_large" and schema.value.param == "tools[0]"
    with pytest.raises(openai.BadRequestError) as fmt:
        oa.chat.completions.create(
            model=MODEL,
            messages=USER,
            response_format={  # type: ignore[arg-type]
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": huge_schema},
            },
        )
    assert fmt.value.code == "schema_too_large"
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as tools:
        oa.chat.completions.create(model=MODEL, messages=USER, tools=[tool] * 513)  # type: ignore[list-item]
    assert tools.value.code == "too_many_items" and tools.value.param == "tools"

    an = anthropic.Anthropic(base_url=server.base_url, api_key="unused", max_retries=0, timeout=10)
    many = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}] * 2049
    with pytest.raises(anthropic.BadRequestError) as msgs:
        an.messages.create(model=MODEL, max_tokens=5, messages=many)  # type: ignore[arg-type]
    assert msgs.value.status_code == 400 and "limit is 4096" in str(msgs.value)


def test_far_too_long_prompt_is_refused_without_tokenizing(
    server: LiveServer, runtime: CountingRuntime
) -> None:
    """n_ctx is 64 here: 64 * 256 bytes cannot fit whatever the vocabulary, so nothing is counted."""
    oa = openai.OpenAI(base_url=server.api_base, api_key="unused", max_retries=0, timeout=10)
    with pytest.raises(openai.BadRequestError) as exc:
        oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x" * (64 * 256 + 1)}])
    assert exc.value.code == "context_length_exceeded"
    assert "at least 64 tokens" in str(exc.value)
    assert runtime.counted == 0
    # Near the limit the runtime's own count decides, as before.
    with pytest.raises(openai.BadRequestError):
        oa.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x" * 100}])
    assert runtime.counted >= 1
