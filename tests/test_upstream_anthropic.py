"""AnthropicUpstream against a fake Anthropic Messages API on loopback, and the shared
Anthropic <-> OpenAI message mapping.

The provider is a fake (tests/fakes/anthropic_provider.py): a real HTTP server standing
in for Anthropic, which cannot be reached here. Our client talks to it over a socket.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import pytest
from fakes.anthropic_provider import FakeAnthropic
from fakes.provider_base import Reply

from runtimes.base import (
    ChatRequest,
    ContextLengthExceeded,
    Event,
    InvalidRequest,
    Overloaded,
    Sampling,
    UpstreamError,
)
from runtimes.upstream.anthropic import API_VERSION, AnthropicUpstream
from runtimes.upstream.anthropic_format import from_anthropic, to_anthropic
from runtimes.upstream.http import Timeouts

KEY = "sk-ant-api03-test-0123456789-SECRET"
SYSTEM = {"role": "system", "content": "You are a coding agent."}
USER = {"role": "user", "content": "Read calc.py"}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read",
            "description": "Read a file",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
        },
    }
]
# An agent's turn: a tool call, its result, and the model's next answer.
AGENT_HISTORY = [
    SYSTEM,
    USER,
    {
        "role": "assistant",
        "content": "Reading it.",
        "tool_calls": [
            {
                "id": "toolu_01",
                "type": "function",
                "function": {"name": "read", "arguments": '{"path": "calc.py"}'},
            },
            {
                "id": "toolu_02",
                "type": "function",
                "function": {"name": "read", "arguments": '{"path": "t.py"}'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "toolu_01", "content": "def add(a, b): return a - b"},
    {"role": "tool", "tool_call_id": "toolu_02", "content": "assert add(1, 2) == 3"},
    {"role": "assistant", "content": "add subtracts; fix it."},
    {"role": "user", "content": "Go ahead."},
]


@pytest.fixture
def provider() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY, models=["claude-up"]) as p:
        yield p


def upstream(p: FakeAnthropic, **kw) -> AnthropicUpstream:
    kw.setdefault("timeouts", Timeouts(connect=2, read=5))
    return AnthropicUpstream(p.base_url, "claude-up", id="claude", api_key=KEY, provider="fakeant", **kw)


def chat(messages=None, **kw) -> ChatRequest:
    sampling = kw.pop("sampling", Sampling())
    return ChatRequest(model="claude", messages=messages or [SYSTEM, USER], sampling=sampling, **kw)


def collect(up: AnthropicUpstream, req: ChatRequest, into: list[Event] | None = None) -> list[Event]:
    got = [] if into is None else into

    async def run() -> list[Event]:
        try:
            async for ev in up.chat(req):
                got.append(ev)
            return got
        finally:
            await up.close()

    return asyncio.run(asyncio.wait_for(run(), 10))


def test_streams_text_with_usage_and_sends_messages_api_body(provider: FakeAnthropic) -> None:
    provider.reply = Reply(text="It subtracts.", reasoning="Look at the operator.")
    up = upstream(provider, cache_prompts=False)
    events = collect(up, chat(sampling=Sampling(temperature=0.3, stop=["END"])))
    assert "".join(e.content for e in events) == "It subtracts."
    assert "".join(e.reasoning for e in events) == "Look at the operator."
    last = events[-1]
    assert last.finish_reason == "stop" and last.usage is not None
    # message_delta's count (2 text + 4 thinking + 1 signature delta) replaces message_start's 1
    assert last.usage.prompt_tokens > 0 and last.usage.completion_tokens == 7
    (req,) = provider.requests
    assert req.path == "/v1/messages"
    assert req.headers["x-api-key"] == KEY and req.headers["anthropic-version"] == API_VERSION
    assert "authorization" not in req.headers
    body = req.body
    assert body["system"] == "You are a coding agent."
    assert body["messages"] == [{"role": "user", "content": "Read calc.py"}]
    assert body["max_tokens"] == 4096 and body["stream"] is True
    assert body["temperature"] == 0.3 and body["stop_sequences"] == ["END"]
    assert "top_k" not in body and "top_p" not in body


def test_tool_use_streams_as_tool_calls_and_history_goes_back_as_blocks(provider: FakeAnthropic) -> None:
    provider.reply = Reply(text="", tool_calls=[("read", {"path": "calc.py"}), ("list", {})])
    events = collect(upstream(provider, cache_prompts=False), chat(tools=TOOLS, tool_choice="required"))
    pieces = [p for e in events for p in e.tool_calls]
    heads = [p for p in pieces if p.name]
    assert [(h.index, h.id, h.name) for h in heads] == [(0, "toolu_00", "read"), (1, "toolu_01", "list")]
    args0 = "".join(p.arguments for p in pieces if p.index == 0)
    args1 = "".join(p.arguments for p in pieces if p.index == 1)
    assert json.loads(args0) == {"path": "calc.py"} and json.loads(args1) == {}
    assert events[-1].finish_reason == "tool_calls"
    sent = provider.requests[0].body
    assert sent["tools"] == [
        {"name": "read", "input_schema": TOOLS[0]["function"]["parameters"], "description": "Read a file"}
    ]
    assert sent["tool_choice"] == {"type": "any"}

    provider.reply = Reply(text="Fixed.")
    collect(upstream(provider, cache_prompts=False), chat(AGENT_HISTORY, tools=TOOLS))
    msgs = provider.requests[1].body["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[1]["content"] == [
        {"type": "text", "text": "Reading it."},
        {"type": "tool_use", "id": "toolu_01", "name": "read", "input": {"path": "calc.py"}},
        {"type": "tool_use", "id": "toolu_02", "name": "read", "input": {"path": "t.py"}},
    ]
    assert msgs[2]["content"] == [  # both results in the one user turn that follows the calls
        {"type": "tool_result", "tool_use_id": "toolu_01", "content": "def add(a, b): return a - b"},
        {"type": "tool_result", "tool_use_id": "toolu_02", "content": "assert add(1, 2) == 3"},
    ]


def test_prompt_cache_breakpoints_after_system_tools_and_latest_message(provider: FakeAnthropic) -> None:
    collect(upstream(provider), chat(AGENT_HISTORY, tools=TOOLS + TOOLS))
    body = provider.requests[0].body
    cached = {"type": "ephemeral"}
    assert body["system"] == [{"type": "text", "text": "You are a coding agent.", "cache_control": cached}]
    assert "cache_control" not in body["tools"][0] and body["tools"][1]["cache_control"] == cached
    assert body["messages"][-1]["content"] == [{"type": "text", "text": "Go ahead.", "cache_control": cached}]
    assert all("cache_control" not in json.dumps(m) for m in body["messages"][:-1])


def test_mapping_round_trips_an_agent_conversation() -> None:
    """OpenAI -> Anthropic -> OpenAI gives back the same conversation (the inbound and
    outbound directions are one mapping)."""
    system, messages = to_anthropic(AGENT_HISTORY)
    back = from_anthropic(system, messages)
    assert back[:2] == AGENT_HISTORY[:2]
    assert back[2]["content"] == "Reading it."
    assert [json.loads(c["function"]["arguments"]) for c in back[2]["tool_calls"]] == [
        {"path": "calc.py"},
        {"path": "t.py"},
    ]
    assert back[3:] == AGENT_HISTORY[3:]


def test_images_are_refused_before_anything_is_sent(provider: FakeAnthropic) -> None:
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:..."}}]}
    with pytest.raises(InvalidRequest) as exc:
        collect(upstream(provider), chat([image]))
    assert "image_url" in str(exc.value) and "text only" in str(exc.value)
    assert provider.requests == []


def test_structured_output_goes_as_output_config(provider: FakeAnthropic) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    collect(upstream(provider), chat(sampling=Sampling(json_schema=schema)))
    assert provider.requests[0].body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


def test_errors_map_to_ours_and_never_carry_the_key(provider: FakeAnthropic, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    provider.fail_next(1, 529, message="Overloaded")
    with pytest.raises(UpstreamError) as busy:
        collect(upstream(provider), chat())
    assert busy.value.upstream_status == 529 and busy.value.retryable

    provider.fail_next(1, 429, retry_after=2)
    with pytest.raises(Overloaded) as rate:
        collect(upstream(provider), chat())
    assert rate.value.retry_after_s == 2

    provider.n_ctx = 3
    with pytest.raises(ContextLengthExceeded):
        collect(upstream(provider), chat())
    provider.n_ctx = None

    bad = AnthropicUpstream(provider.base_url, "claude-up", api_key="sk-ant-wrong-987654321")
    with pytest.raises(UpstreamError) as auth:
        collect(bad, chat())
    assert auth.value.upstream_status == 401 and not auth.value.retryable
    assert "sk-ant-wrong-987654321" not in str(auth.value) and KEY not in repr(upstream(provider))
    assert KEY not in caplog.text and "sk-ant-wrong" not in caplog.text


def test_mid_stream_drop_is_an_error_after_the_first_tokens(provider: FakeAnthropic) -> None:
    provider.reply = Reply(text="one two three four five")
    provider.drop_next(1, after_chunks=2)
    got: list[Event] = []
    with pytest.raises(UpstreamError) as exc:
        collect(upstream(provider), chat(), into=got)
    assert "".join(e.content for e in got) == "one two "
    assert "dropped the connection" in str(exc.value)
