"""/v1/messages (the Anthropic dialect Claude Code speaks) over real loopback HTTP, with the
official anthropic SDK as the client.

Most tests serve a scripted runtime (tests/fakes/scripted_runtime.py), a fake of OUR engine,
to check shapes, streaming, tool use, errors and the translation into our ChatRequest. The
slow test at the end serves the real Qwen2.5-Coder-0.5B through the real llama.cpp engine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest
from fakes.scripted_runtime import ScriptedRuntime, text_events, tool_call_events
from live_server import LiveServer, running_server

from appliance.api import ModelRegistry, catalog_resolver, create_app
from runtimes.base import ChatRequest, ContextLengthExceeded, Event, Overloaded, Sampling, UpstreamError

MODEL = "qwen2.5-coder-0.5b-instruct"
USER = [{"role": "user", "content": "Say hello."}]
READ_TOOL = {
    "name": "read",
    "description": "Read a file",
    "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
}


@pytest.fixture
def runtime() -> ScriptedRuntime:
    return ScriptedRuntime(id=MODEL, n_ctx=32768)


@pytest.fixture
def server(runtime: ScriptedRuntime) -> Iterator[LiveServer]:
    registry = ModelRegistry(catalog_resolver())
    registry.add(runtime, roles=["main"])
    with running_server(create_app(registry)) as srv:
        yield srv


@pytest.fixture
def client(server: LiveServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key="unused", max_retries=0, timeout=10)


def sent(runtime: ScriptedRuntime, i: int = -1) -> ChatRequest:
    req = runtime.records[i].request
    assert isinstance(req, ChatRequest)
    return req


def test_whole_message_and_what_the_runtime_receives(client, runtime) -> None:
    runtime.script = text_events("Hello there!", prompt_tokens=20, cached=4)
    raw = client.messages.with_raw_response.create(
        model=MODEL,
        max_tokens=64,
        system="Be brief.",
        messages=USER,
        stop_sequences=["###"],
        extra_body={"temperature": 0.2},  # older clients send it; this SDK has no parameter for it
    )
    msg = raw.parse()
    assert raw.headers["x-appliance-route"] == "local" and raw.headers["x-appliance-model"] == MODEL
    assert msg.type == "message" and msg.role == "assistant" and msg.model == MODEL
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == "Hello there!"
    assert msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.output_tokens) == (16, 4, 2)
    req = sent(runtime)
    assert req.messages == [{"role": "system", "content": "Be brief."}, *USER]
    assert req.sampling.max_tokens == 64 and req.sampling.temperature == 0.2 and req.sampling.stop == ["###"]


def test_streamed_text_through_the_sdk(client, runtime) -> None:
    runtime.script = text_events("one two three four", prompt_tokens=30)
    with client.messages.stream(model=MODEL, max_tokens=32, messages=USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "one two three four" and final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 4 and final.usage.input_tokens == 30


def test_tool_use_streamed_and_whole(client, runtime) -> None:
    runtime.script = tool_call_events("read", '{"path": "src/calc.py"}', call_id="toolu_abc")
    with client.messages.stream(model=MODEL, max_tokens=64, messages=USER, tools=[READ_TOOL]) as stream:
        final = stream.get_final_message()
    (block,) = final.content
    assert block.type == "tool_use" and block.id == "toolu_abc" and block.name == "read"
    assert block.input == {"path": "src/calc.py"} and final.stop_reason == "tool_use"
    req = sent(runtime)
    assert req.tools == [
        {
            "type": "function",
            "function": {
                "name": "read",
                "description": "Read a file",
                "parameters": READ_TOOL["input_schema"],
            },
        }
    ]

    runtime.script = [
        Event(content="Let me look."),
        *tool_call_events("read", '{"path": "a.py"}', call_id=None),
    ]
    msg = client.messages.create(
        model=MODEL, max_tokens=64, messages=USER, tools=[READ_TOOL], tool_choice={"type": "any"}
    )
    assert [b.type for b in msg.content] == ["text", "tool_use"]
    assert msg.content[1].input == {"path": "a.py"} and msg.content[1].id.startswith("toolu_")
    assert sent(runtime).tool_choice == "required"


def test_tool_results_reach_the_runtime_as_openai_messages(client, runtime) -> None:
    history = [
        {"role": "user", "content": "Fix calc.py"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Reading."},
                {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "calc.py"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "def add(a, b): return a - b"},
                {"type": "text", "text": "Now fix it."},
            ],
        },
    ]
    client.messages.create(model=MODEL, max_tokens=16, messages=history, tools=[READ_TOOL])
    assert sent(runtime).messages == [
        {"role": "user", "content": "Fix calc.py"},
        {
            "role": "assistant",
            "content": "Reading.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "read", "arguments": '{"path": "calc.py"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "def add(a, b): return a - b"},
        {"role": "user", "content": "Now fix it."},
    ]


def test_system_turns_inside_messages_stay_in_place(client, runtime) -> None:
    """Claude Code sends its environment notes as a `system` turn after the first user turn."""
    history = [
        {"role": "user", "content": [{"type": "text", "text": "Say ping"}]},
        {
            "role": "system",
            "content": [{"type": "text", "text": "# Environment"}, {"type": "text", "text": "cwd: /w"}],
        },
    ]
    client.messages.create(model=MODEL, max_tokens=8, system="Top.", messages=history)  # type: ignore[arg-type]
    assert sent(runtime).messages == [
        {"role": "system", "content": "Top."},
        {"role": "user", "content": "Say ping"},
        {"role": "system", "content": "# Environment\ncwd: /w"},
    ]


def test_thinking_streams_as_a_thinking_block(client, runtime) -> None:
    runtime.script = [Event(reasoning="Hmm. "), Event(reasoning="Easy."), *text_events("4")]
    with client.messages.stream(
        model=MODEL, max_tokens=64, messages=USER, thinking={"type": "enabled", "budget_tokens": 1024}
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Hmm. Easy." and final.content[1].text == "4"
    assert sent(runtime).enable_thinking is True


def error_of(exc: anthropic.APIStatusError) -> dict:
    body = exc.response.json()
    assert body["type"] == "error" and set(body["error"]) >= {"type", "message"}
    return body["error"]


def test_bad_requests_get_anthropic_errors(client, server, runtime) -> None:
    # The SDK itself insists on max_tokens, so this one goes out raw.
    missing = httpx.post(server.base_url + "/v1/messages", json={"model": MODEL, "messages": USER}, timeout=5)
    assert missing.status_code == 400 and missing.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in missing.json()["error"]["message"]

    image = [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
            ],
        }
    ]
    with pytest.raises(anthropic.BadRequestError) as img:
        client.messages.create(model=MODEL, max_tokens=8, messages=image)
    assert "text only" in error_of(img.value)["message"]

    web = {"type": "web_search_20250305", "name": "web_search"}
    with pytest.raises(anthropic.BadRequestError) as tool:
        client.messages.create(model=MODEL, max_tokens=8, messages=USER, tools=[web])  # type: ignore[list-item]
    assert "web_search_20250305" in error_of(tool.value)["message"]

    with pytest.raises(anthropic.NotFoundError) as unknown:
        client.messages.create(model="gemma3-270m", max_tokens=8, messages=USER)  # in the catalog, not loaded
    assert error_of(unknown.value)["type"] == "not_found_error"

    bad_json = httpx.post(server.base_url + "/v1/messages", content=b"{nope", timeout=5)
    assert bad_json.status_code == 400 and bad_json.json()["type"] == "error"
    assert runtime.records == []  # none of these reached the runtime


def test_runtime_errors_before_and_after_the_first_token(client, runtime) -> None:
    runtime.fail_before = ContextLengthExceeded(40000, 32768)
    with pytest.raises(anthropic.BadRequestError) as ctx:
        client.messages.create(model=MODEL, max_tokens=8, messages=USER)
    assert "32768" in error_of(ctx.value)["message"]

    runtime.fail_before = Overloaded(3.0)
    with pytest.raises(anthropic.RateLimitError) as busy:
        client.messages.create(model=MODEL, max_tokens=8, messages=USER)
    assert busy.value.response.headers["retry-after"] == "3"
    assert error_of(busy.value)["type"] == "rate_limit_error"

    runtime.fail_before = None
    runtime.script = text_events("a b c d e f")
    runtime.fail_after = (2, UpstreamError("vllm dropped the connection"))
    got = []
    stream_it = client.messages.stream(model=MODEL, max_tokens=8, messages=USER)
    with pytest.raises(anthropic.APIStatusError) as mid, stream_it as stream:  # the stream's `error` event
        got.extend(stream.text_stream)
    assert "".join(got) == "a b " and "dropped the connection" in str(mid.value)


def test_structured_output_reaches_the_runtime_as_json_schema(client, runtime) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    runtime.script = text_events('{"n": 4}')
    msg = client.messages.create(
        model=MODEL,
        max_tokens=16,
        messages=USER,
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    assert json.loads(msg.content[0].text) == {"n": 4}
    assert sent(runtime).sampling.json_schema == schema


def test_count_tokens(client) -> None:
    short = client.messages.count_tokens(model=MODEL, messages=USER)
    long = client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "Say hello. " * 200}], tools=[READ_TOOL]
    )
    assert 0 < short.input_tokens < long.input_tokens


def test_the_key_is_accepted_as_x_api_key(runtime) -> None:
    registry = ModelRegistry(catalog_resolver())
    registry.add(runtime, roles=["main"])
    with running_server(create_app(registry, api_key="local-secret")) as srv:
        ok = anthropic.Anthropic(base_url=srv.base_url, api_key="local-secret", max_retries=0, timeout=10)
        assert ok.messages.create(model=MODEL, max_tokens=8, messages=USER).content[0].type == "text"
        wrong = anthropic.Anthropic(base_url=srv.base_url, api_key="nope", max_retries=0, timeout=10)
        with pytest.raises(anthropic.AuthenticationError) as denied:
            wrong.messages.create(model=MODEL, max_tokens=8, messages=USER)
        assert error_of(denied.value)["type"] == "authentication_error"


@pytest.mark.slow
def test_real_model_over_messages_api(qwen_path: Path, tmp_path: Path) -> None:
    """Real Qwen2.5-Coder-0.5B through our llama.cpp engine, spoken to in Anthropic's dialect."""
    from quantization.catalog import load_catalog
    from runtimes.llamacpp.engine import EngineConfig
    from runtimes.llamacpp.runtime import LlamaCppRuntime

    cfg = EngineConfig(
        model_path=qwen_path,
        n_ctx=4096,
        n_slots=1,
        n_threads=2,
        n_threads_batch=2,
        max_queue=4,
        prefix_store_dir=tmp_path / "prefix",
    )
    rt = LlamaCppRuntime.load(load_catalog().get(MODEL), cfg)
    try:
        registry = ModelRegistry(catalog_resolver())
        registry.add(rt, roles=["main"])
        with running_server(create_app(registry)) as srv:
            client = anthropic.Anthropic(base_url=srv.base_url, api_key="unused", max_retries=0, timeout=300)
            with client.messages.stream(
                model=MODEL,
                max_tokens=16,
                extra_body={"temperature": 0},
                system="Answer with a number only.",
                messages=[{"role": "user", "content": "What is 2+2?"}],
            ) as stream:
                text = "".join(stream.text_stream)
                final = stream.get_final_message()
            assert "4" in text and final.stop_reason in ("end_turn", "max_tokens")
            assert final.usage.input_tokens > 10 and 0 < final.usage.output_tokens <= 16

            weather = {
                "name": "get_weather",
                "description": "Get the current weather for a city",
                "input_schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            }
            msg = client.messages.create(
                model=MODEL,
                max_tokens=64,
                extra_body={"temperature": 0},
                tools=[weather],
                tool_choice={"type": "any"},
                messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            )
            calls = [b for b in msg.content if b.type == "tool_use"]
            assert msg.stop_reason == "tool_use" and calls and calls[0].name == "get_weather"
            assert "paris" in json.dumps(calls[0].input).lower()

            counted = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "hi"}])
            assert counted.input_tokens == rt.count_prompt_tokens(
                ChatRequest(model=MODEL, messages=[{"role": "user", "content": "hi"}], sampling=Sampling())
            )
    finally:
        rt.engine.close()


def test_anthropic_client_to_anthropic_provider_keeps_tools_intact(tmp_path: Path, monkeypatch) -> None:
    """anthropic SDK -> our /v1/messages -> router (client chose the cloud model) -> CloudPool ->
    the fake Anthropic provider (a real HTTP server on loopback standing in for Anthropic) and back.
    The tool definitions, the tool_use and the tool_result cross both translations unchanged."""
    from fakes.anthropic_provider import FakeAnthropic
    from fakes.provider_base import Reply

    from appliance.config import ServeConfig
    from appliance.serve.routing import build_routing

    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    monkeypatch.setenv("E2E_ANTHROPIC_KEY", "sk-ant-e2e-0123456789")
    local = ScriptedRuntime(id=MODEL, n_ctx=32768)
    registry = ModelRegistry(catalog_resolver())
    registry.add(local, roles=["main"])
    reply = Reply(text="Reading it.", tool_calls=[("read", {"path": "calc.py"})])
    with FakeAnthropic(api_key="sk-ant-e2e-0123456789", models=["claude-up"], reply=reply) as provider:
        cloud = {
            "providers": [
                {
                    "name": "anthropic",
                    "kind": "anthropic",
                    "base_url": provider.base_url,
                    "api_key_env": "E2E_ANTHROPIC_KEY",
                    "models": {"claude-cloud": "claude-up"},
                }
            ]
        }
        routing = build_routing(ServeConfig(cloud=cloud), registry)
        with running_server(create_app(registry, routing=routing)) as srv:
            client = anthropic.Anthropic(base_url=srv.base_url, api_key="unused", max_retries=0, timeout=10)
            first = client.messages.create(
                model="claude-cloud",
                max_tokens=64,
                system="Be brief.",
                tools=[READ_TOOL],
                messages=[{"role": "user", "content": "What does calc.py do?"}],
            )
            assert [b.type for b in first.content] == ["text", "tool_use"] and first.stop_reason == "tool_use"
            call = first.content[1]
            assert call.name == "read" and call.input == {"path": "calc.py"}

            provider.reply = Reply(text="It subtracts.")
            history = [
                {"role": "user", "content": "What does calc.py do?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Reading it."},
                        {"type": "tool_use", "id": call.id, "name": "read", "input": {"path": "calc.py"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": call.id,
                            "content": "def add(a, b): return a - b",
                        }
                    ],
                },
            ]
            with client.messages.stream(
                model="claude-cloud", max_tokens=64, system="Be brief.", tools=[READ_TOOL], messages=history
            ) as stream:
                assert "".join(stream.text_stream) == "It subtracts."
    assert local.records == []  # all of it went to the provider
    sent_first, sent_second = (without_cache_marks(r.body) for r in provider.requests)
    assert (
        sent_first["system"] == [{"type": "text", "text": "Be brief."}] and sent_first["model"] == "claude-up"
    )
    assert sent_first["tools"] == [READ_TOOL]
    assert sent_second["messages"][:2] == history[:2]
    assert sent_second["messages"][2]["content"] == history[2]["content"]


def without_cache_marks(obj):
    """The body minus the prompt-cache breakpoints our Anthropic client adds."""
    if isinstance(obj, dict):
        return {k: without_cache_marks(v) for k, v in obj.items() if k != "cache_control"}
    if isinstance(obj, list):
        return [without_cache_marks(v) for v in obj]
    return obj
