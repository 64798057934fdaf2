"""LeanTransport against real HTTP servers on loopback: framing, keep-alive, failures.

A small asyncio HTTP/1.1 server written here serves each framing (content-length,
chunked, read-to-close) and can misbehave (close idle connections, stall); the fake
OpenAI provider checks the transport under the real upstream client.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest
from fakes.openai_provider import FakeOpenAI
from fakes.provider_base import Reply

from runtimes.base import ChatRequest, Sampling
from runtimes.upstream.lean_transport import LeanTransport, transport_for_url
from runtimes.upstream.openai_compat import OpenAICompatUpstream

BODY = b"hello, lean transport"


class Server:
    """Answers by path: /length, /chunked, /close, /stall; `drop_idle` closes after each answer."""

    def __init__(self) -> None:
        self.connections = 0
        self.drop_idle = False
        self.seen: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length)
                self.seen.append(head + body)
                path = head.split(b" ")[1]
                if path == b"/stall":
                    await asyncio.sleep(5)
                if path == b"/chunked":
                    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (BODY[:5], BODY[5:]))
                    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                    writer.write(head + chunks + b"0\r\n\r\n")
                elif path == b"/close":
                    writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + BODY)
                    await writer.drain()
                    writer.close()
                    return
                else:
                    head = b"HTTP/1.1 201 Created\r\ncontent-length: %d\r\nx-a: 1\r\n\r\n" % len(BODY)
                    writer.write(head + BODY)
                await writer.drain()
                if self.drop_idle:
                    writer.close()
                    return


async def with_server(fn) -> None:  # type: ignore[no-untyped-def]
    state = Server()
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(transport=LeanTransport(), base_url=f"http://127.0.0.1:{port}") as c:
            await fn(c, state)
    finally:
        server.close()


def test_framings_and_keep_alive() -> None:
    async def check(c: httpx.AsyncClient, state: Server) -> None:
        for path in ("/length", "/chunked", "/length", "/chunked"):
            r = await c.post(path, json={"q": 1})
            assert r.content == BODY
        assert r.status_code == 200 and state.connections == 1  # one connection for all four
        r = await c.get("/length")
        assert (r.status_code, r.headers["x-a"]) == (201, "1")
        r = await c.get("/close")
        assert r.content == BODY
        await c.get("/length")
        assert state.connections == 2  # the closed one was not reused
        assert b'{"q":1}' in state.seen[0] and b"content-length: 7" in state.seen[0].lower()

    asyncio.run(with_server(check))


def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async def check(c: httpx.AsyncClient, state: Server) -> None:
        state.drop_idle = True
        for _ in range(3):
            assert (await c.post("/length", content=b"x")).content == BODY
            await asyncio.sleep(0.05)
        assert state.connections == 3

    asyncio.run(with_server(check))


def test_timeouts_and_refused_connections_are_httpx_errors() -> None:
    async def check(c: httpx.AsyncClient, state: Server) -> None:
        with pytest.raises(httpx.ReadTimeout):
            await c.get("/stall", timeout=httpx.Timeout(5, read=0.2))

    asyncio.run(with_server(check))

    async def refused() -> None:
        async with httpx.AsyncClient(transport=LeanTransport()) as c:
            with pytest.raises(httpx.ConnectError):
                await c.get("http://127.0.0.1:9/")

    asyncio.run(refused())


def test_upstream_client_streams_through_it() -> None:
    with FakeOpenAI(api_key="sk-k", reply=Reply(text="one two three")) as fake:
        async def run() -> list[str]:
            up = OpenAICompatUpstream(fake.api_base, "m", api_key="sk-k", transport=LeanTransport())
            texts = []
            for _ in range(3):
                msgs = [{"role": "user", "content": "hi"}]
                req = ChatRequest(model="m", messages=msgs, sampling=Sampling())
                events = [ev async for ev in up.chat(req)]
                assert events[-1].usage is not None and events[-1].finish_reason == "stop"
                texts.append("".join(e.content for e in events))
            await up.close()
            return texts

        assert asyncio.run(run()) == ["one two three"] * 3
    assert len(fake.requests) == 3


def test_proxied_urls_keep_httpx_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy.internal:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert transport_for_url("https://api.example.com/v1") is None
    assert isinstance(transport_for_url("http://127.0.0.1:8000/v1"), LeanTransport)
