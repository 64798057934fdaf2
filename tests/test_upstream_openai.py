"""OpenAICompatUpstream against a fake OpenAI-compatible provider on loopback.

The provider is a fake (tests/fakes/openai_provider.py), a real HTTP server standing
in for cloud providers that cannot be reached here; our client talks to it over a
real socket, so streaming, auth headers, HTTP errors and dropped connections are real.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator

import openai
import pytest
from fakes.openai_provider import FakeOpenAI
from fakes.provider_base import Reply
from live_server import running_server

from appliance.api import ModelRegistry, create_app
from runtimes.base import (
    ChatRequest,
    CompletionRequest,
    ContextLengthExceeded,
    Event,
    Overloaded,
    Sampling,
    UpstreamError,
)
from runtimes.upstream.http import Timeouts
from runtimes.upstream.openai_compat import ChunkReader, OpenAICompatUpstream

KEY = "sk-test-0123456789abcdef-SECRET"
USER = [{"role": "user", "content": "Say hello."}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    }
]


@pytest.fixture
def provider() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY, models=["gpt-up"]) as p:
        yield p


def upstream(p: FakeOpenAI, **kw) -> OpenAICompatUpstream:
    kw.setdefault("timeouts", Timeouts(connect=2, read=5))
    kw.setdefault("n_ctx", 128000)
    return OpenAICompatUpstream(p.api_base, "gpt-up", id="cloud-big", api_key=KEY, provider="fakeai", **kw)


def chat(messages=USER, **kw) -> ChatRequest:
    return ChatRequest(model="cloud-big", messages=messages, sampling=kw.pop("sampling", Sampling()), **kw)


def collect(up: OpenAICompatUpstream, req: ChatRequest) -> list[Event]:
    async def run() -> list[Event]:
        try:
            return [ev async for ev in up.chat(req)]
        finally:
            await up.close()

    return asyncio.run(run())


def test_streams_text_and_usage_and_sends_key_and_upstream_model(provider: FakeOpenAI) -> None:
    provider.reply = Reply(text="Hello there, friend.")
    events = collect(upstream(provider), chat())
    assert "".join(e.content for e in events) == "Hello there, friend."
    last = events[-1]
    assert last.finish_reason == "stop"
    assert last.usage is not None and last.usage.completion_tokens == 3 and last.usage.prompt_tokens > 8
    (req,) = provider.requests
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.body["model"] == "gpt-up" and req.body["stream"] is True
    assert req.body["stream_options"] == {"include_usage": True}
    assert all(e.finish_reason is None for e in events[:-1])


def test_tool_call_round_trip(provider: FakeOpenAI) -> None:
    provider.reply = Reply(text="", tool_calls=[("read_file", {"path": "src/calc.py"})])
    events = collect(upstream(provider), chat(tools=TOOLS, tool_choice="auto"))
    pieces = [p for e in events for p in e.tool_calls]
    assert pieces[0].id == "call_0" and pieces[0].name == "read_file"
    assert json.loads("".join(p.arguments for p in pieces)) == {"path": "src/calc.py"}
    assert events[-1].finish_reason == "tool_calls"
    sent = provider.requests[0].body
    assert sent["tools"] == TOOLS and sent["tool_choice"] == "auto"

    # The next turn carries the call and its result; both reach the provider as sent.
    history = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "read_file", "arguments": {"path": "a"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "print(1)"},
    ]
    provider.reply = Reply(text="It prints 1.")
    events = collect(upstream(provider), chat(history, tools=TOOLS))
    assert "".join(e.content for e in events) == "It prints 1."
    sent_msgs = provider.requests[1].body["messages"]
    assert sent_msgs[1]["tool_calls"][0]["function"]["arguments"] == '{"path": "a"}'  # a string upstream
    assert sent_msgs[2] == {"role": "tool", "tool_call_id": "call_0", "content": "print(1)"}


def test_sampling_is_translated_and_engine_defaults_are_not_sent(provider: FakeOpenAI) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    s = Sampling(
        max_tokens=20, temperature=0.2, seed=7, stop=["END"], json_schema=schema, top_k=5, ignore_eos=True
    )
    collect(upstream(provider), chat(sampling=s))
    body = provider.requests[0].body
    assert body["max_tokens"] == 20 and body["temperature"] == 0.2 and body["seed"] == 7
    assert body["stop"] == ["END"]
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema},
    }
    for absent in ("top_p", "top_k", "min_p", "repetition_penalty", "frequency_penalty", "ignore_eos"):
        assert absent not in body  # cloud APIs reject llama.cpp extras; defaults stay the provider's
    collect(upstream(provider, vendor_params=True), chat(sampling=s, enable_thinking=False))
    body = provider.requests[1].body
    assert body["top_k"] == 5 and body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["ignore_eos"] is True  # vLLM and llama-server take it


def test_completions_stream(provider: FakeOpenAI) -> None:
    provider.reply = Reply(text="def add(a, b):")
    up = upstream(provider)

    async def run() -> list[Event]:
        req = CompletionRequest(model="cloud-big", prompt="# add", sampling=Sampling(max_tokens=8))
        events = [ev async for ev in up.complete(req)]
        await up.close()
        return events

    events = asyncio.run(run())
    assert "".join(e.content for e in events) == "def add(a, b):"
    assert events[-1].usage is not None and events[-1].usage.completion_tokens == 3
    assert provider.requests[0].path == "/v1/completions"


def test_http_errors_map_to_our_errors(provider: FakeOpenAI) -> None:
    provider.fail_next(1, 429, retry_after=7)
    with pytest.raises(Overloaded) as rate:
        collect(upstream(provider), chat())
    assert rate.value.retry_after_s == 7 and rate.value.status == 429

    provider.fail_next(1, 503)
    with pytest.raises(UpstreamError) as down:
        collect(upstream(provider), chat())
    assert down.value.upstream_status == 503 and down.value.retryable and down.value.status == 502

    provider.n_ctx = 10
    with pytest.raises(ContextLengthExceeded) as ctx:
        collect(upstream(provider), chat())
    assert "maximum context length" in str(ctx.value)

    provider.n_ctx = None
    wrong = OpenAICompatUpstream(provider.api_base, "gpt-up", api_key="sk-wrong-key-abcdef123456")
    with pytest.raises(UpstreamError) as auth:
        collect(wrong, chat())
    assert auth.value.upstream_status == 401 and not auth.value.retryable
    assert "sk-wrong-key-abcdef123456" not in str(auth.value)


def test_unreachable_provider_is_a_retryable_upstream_error() -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    up = OpenAICompatUpstream(f"http://127.0.0.1:{port}/v1", "m", api_key=KEY, provider="gone")
    with pytest.raises(UpstreamError) as exc:
        collect(up, chat())
    assert exc.value.upstream_status is None and exc.value.retryable
    assert "gone could not be reached" in str(exc.value)


def test_mid_stream_drop_raises_after_the_first_tokens(provider: FakeOpenAI) -> None:
    provider.reply = Reply(text="one two three four five six")
    provider.drop_next(1, after_chunks=2)
    got: list[Event] = []

    async def run() -> None:
        up = upstream(provider)
        try:
            async for ev in up.chat(chat()):
                got.append(ev)
        finally:
            await up.close()

    with pytest.raises(UpstreamError) as exc:
        asyncio.run(asyncio.wait_for(run(), 10))
    assert "".join(e.content for e in got) == "one two "
    assert exc.value.retryable and "dropped" in str(exc.value)


def test_silent_upstream_is_an_error_not_a_hang(provider: FakeOpenAI) -> None:
    provider.ttft_s = 2.0
    with pytest.raises(UpstreamError) as exc:
        collect(upstream(provider, timeouts=Timeouts(connect=1, read=0.3)), chat())
    assert "read timeout" in str(exc.value)


def test_upstream_stalling_mid_stream_is_an_error_not_a_hang(provider: FakeOpenAI) -> None:
    provider.reply = Reply(text="first second third")
    provider.token_s = 2.0  # the first word comes at once, then silence
    got: list[Event] = []

    async def run() -> None:
        up = upstream(provider, timeouts=Timeouts(connect=1, read=0.3))
        try:
            async for ev in up.chat(chat()):
                got.append(ev)
        finally:
            await up.close()

    with pytest.raises(UpstreamError) as exc:
        asyncio.run(asyncio.wait_for(run(), 5))
    assert "".join(e.content for e in got) == "first " and "read timeout" in str(exc.value)


def test_key_never_in_repr_errors_or_logs(provider: FakeOpenAI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    up = upstream(provider)
    assert KEY not in repr(up) and KEY not in str(vars(up))
    provider.fail_next(1, 500, message=f"boom, your key was {KEY}")
    with pytest.raises(UpstreamError) as exc:
        collect(up, chat())
    assert KEY not in str(exc.value) and "[redacted]" in str(exc.value)
    collect(upstream(provider), chat())
    assert KEY not in caplog.text


def test_served_through_our_api_with_the_openai_sdk(provider: FakeOpenAI) -> None:
    """How the vLLM runtime uses it: an upstream in the registry, clients on our API."""
    provider.reply = Reply(text="Forwarded fine.")
    registry = ModelRegistry()
    registry.add(upstream(provider))
    with running_server(create_app(registry)) as server:
        client = openai.OpenAI(base_url=server.api_base, api_key="x", max_retries=0, timeout=10)
        stream = client.chat.completions.create(
            model="cloud-big", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Forwarded fine."
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2

        provider.fail_next(1, 429, retry_after=3)
        with pytest.raises(openai.RateLimitError) as rate:
            client.chat.completions.create(model="cloud-big", messages=USER)
        assert rate.value.response.headers["retry-after"] == "3"

        provider.reply = Reply(text="a b c d e f")
        provider.drop_next(1, after_chunks=2)
        with pytest.raises(openai.APIError) as dropped:
            list(client.chat.completions.create(model="cloud-big", messages=USER, stream=True))
        assert "dropped the connection" in str(dropped.value)


def test_client_hanging_up_stops_the_upstream_stream(provider: FakeOpenAI) -> None:
    """A client that leaves mid-answer must not leave us reading (and paying for) the rest."""
    provider.reply = Reply(text=" ".join(f"w{i}" for i in range(200)))
    provider.token_s = 0.02  # 200 words: about 4 s if read to the end
    registry = ModelRegistry()
    registry.add(upstream(provider))
    with running_server(create_app(registry)) as server:
        client = openai.OpenAI(base_url=server.api_base, api_key="x", max_retries=0, timeout=10)
        stream = client.chat.completions.create(model="cloud-big", messages=USER, stream=True)
        for i, _ in enumerate(stream):
            if i == 3:
                break
        stream.close()
        deadline = time.monotonic() + 3
        while not provider.stream_outcomes and time.monotonic() < deadline:
            time.sleep(0.02)
    assert provider.stream_outcomes == ["cut"]


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _serve_in_pieces(body: bytes, piece: int) -> Handler:
    """A raw HTTP server that answers once with `body` as a chunked SSE stream, `piece` bytes
    per chunk, so lines, CRLFs and UTF-8 characters are split across reads."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
        length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
        await reader.readexactly(length)  # the request body
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
        writer.write(b"transfer-encoding: chunked\r\n\r\n")
        for i in range(0, len(body), piece):
            part = body[i : i + piece]
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    return answer


@pytest.mark.parametrize("piece", [1, 2, 3, 7])
def test_sse_lines_split_anywhere_still_parse(piece: int) -> None:
    """CRLF and LF line ends, a multi-line data field and multi-byte characters, delivered a few
    bytes at a time through the lean transport: the text arrives whole and in order."""
    from runtimes.upstream.lean_transport import LeanTransport

    def chunk(delta: dict, finish: str | None = None) -> dict:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {"id": "c", "object": "chat.completion.chunk", "choices": [choice]}

    first = json.dumps(chunk({"role": "assistant", "content": "Grüße, "}), ensure_ascii=False)
    second = json.dumps(chunk({"content": "日本 "}), ensure_ascii=False)
    third = json.dumps(chunk({"content": "ok"}), indent=1)  # a JSON spread over several data: lines
    done = chunk({}, "stop")
    body = (
        f"data: {first}\r\n\r\n"
        f"data: {second}\n\n"
        + "".join(f"data: {line}\n" for line in third.splitlines())
        + "\n"
        + f"data: {json.dumps(done)}\r\n\r\ndata: [DONE]\r\n\r\n"
    ).encode()

    async def run() -> list[Event]:
        server = await asyncio.start_server(_serve_in_pieces(body, piece), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        up = OpenAICompatUpstream(
            f"http://127.0.0.1:{port}/v1", "m", provider="raw", n_ctx=4096,
            timeouts=Timeouts(connect=2, read=5), transport=LeanTransport(),
        )  # fmt: skip
        try:
            return [ev async for ev in up.chat(chat())]
        finally:
            await up.close()
            server.close()

    events = asyncio.run(run())
    assert "".join(e.content for e in events) == "Grüße, 日本 ok"
    assert events[-1].finish_reason == "stop"


def test_logprobs_in_stream_chunks_become_event_logprobs() -> None:
    """vLLM and OpenAI send logprobs per chunk; they reach our events as computed upstream."""
    entry = {"token": "Hi", "logprob": -0.25, "bytes": [72, 105]}
    chunk = {"choices": [{"index": 0, "delta": {"content": "Hi"},
                          "logprobs": {"content": [{**entry, "top_logprobs": [entry]}]}}]}
    ev = ChunkReader(chat=True, provider="p").feed(chunk)
    assert ev is not None and ev.content == "Hi"
    [lp] = ev.logprobs
    assert (lp.token, lp.logprob, lp.bytes) == ("Hi", -0.25, [72, 105])
    assert [(t.token, t.logprob) for t in lp.top_logprobs] == [("Hi", -0.25)]
