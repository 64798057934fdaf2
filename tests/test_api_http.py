"""The HTTP layer over real loopback HTTP, with the official openai SDK and httpx as clients.

The runtime is scripted (tests/fakes): these tests prove shapes, framing, errors,
disconnect handling and metrics, not generation; real-model tests live elsewhere.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import httpx
import openai
import pytest
from fakes.scripted_runtime import ScriptedRuntime, text_events, tool_call_events
from live_server import LiveServer, running_server
from openai import OpenAI

from appliance.api import ModelRegistry, catalog_resolver, create_app
from runtimes.base import ContextLengthExceeded, Event, Overloaded, RuntimeStats, ToolCallDelta, Usage
from tests.conftest import fixture_file

MODEL = "qwen2.5-coder-0.5b-instruct"
USER = [{"role": "user", "content": "Say hello."}]

Serve = Callable[..., LiveServer]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start apps on loopback for the test's duration: serve(registry, **create_app_kwargs)."""
    with ExitStack() as stack:

        def start(registry: ModelRegistry, **kwargs) -> LiveServer:
            return stack.enter_context(running_server(create_app(registry, **kwargs)))

        yield start


@pytest.fixture
def runtime() -> ScriptedRuntime:
    return ScriptedRuntime(id=MODEL, n_ctx=32768)


@pytest.fixture
def registry(runtime: ScriptedRuntime) -> ModelRegistry:
    reg = ModelRegistry(catalog_resolver())
    reg.add(runtime, roles=["main"])
    return reg


@pytest.fixture
def server(serve: Serve, registry: ModelRegistry) -> LiveServer:
    return serve(registry)


@pytest.fixture
def client(server: LiveServer) -> OpenAI:
    return OpenAI(base_url=server.api_base, api_key="unused", max_retries=0, timeout=10)


def post(
    server: LiveServer, path: str, body: object, *, timeout: float = 10, headers: dict[str, str] | None = None
) -> httpx.Response:
    content = body if isinstance(body, str | bytes) else json.dumps(body)
    return httpx.post(
        server.base_url + path,
        content=content,
        timeout=timeout,
        headers={"content-type": "application/json", **(headers or {})},
    )


def sse_frames(text: str) -> list[str]:
    """The `data:` payloads of an SSE body, checking the framing on the way."""
    assert text.endswith("\n\n")
    frames = text.split("\n\n")[:-1]
    assert all(f.startswith("data: ") for f in frames), frames
    return [f[len("data: ") :] for f in frames]


def wait_for(cond: Callable[[], bool], timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


# -- shapes ----------------------------------------------------------------------------------
def test_chat_non_stream(client: OpenAI, runtime: ScriptedRuntime) -> None:
    runtime.script = text_events("Hello there, friend!", prompt_tokens=30, cached=24)
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=USER, max_tokens=16)
    resp = raw.parse()
    assert resp.object == "chat.completion" and resp.id.startswith("chatcmpl-")
    assert resp.model == MODEL
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == "Hello there, friend!"
    assert resp.choices[0].message.tool_calls is None
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (30, 3, 33)
    assert resp.usage.prompt_tokens_details is not None
    assert resp.usage.prompt_tokens_details.cached_tokens == 24
    assert raw.headers["x-appliance-model"] == MODEL
    assert raw.headers["x-appliance-route"] == "local"
    assert raw.headers["x-request-id"].startswith("req_")
    sent = runtime.records[-1].request
    assert sent.sampling.max_tokens == 16 and sent.messages == USER and sent.request_id


def test_chat_stream_with_usage(client: OpenAI, runtime: ScriptedRuntime) -> None:
    runtime.script = text_events("one two three", prompt_tokens=50, cached=40)
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens == 50 and last.usage.completion_tokens == 3
    assert (
        last.usage.prompt_tokens_details is not None and last.usage.prompt_tokens_details.cached_tokens == 40
    )
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_raw_framing_without_usage(server: LiveServer) -> None:
    with httpx.stream(
        "POST",
        server.base_url + "/v1/chat/completions",
        timeout=10,
        json={"model": MODEL, "messages": USER, "stream": True},
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-appliance-model"] == MODEL
        body = r.read().decode()
    frames = sse_frames(body)
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(f) for f in frames[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert all("usage" not in c for c in chunks)


def test_tool_call_stream_reassembled_by_sdk(client: OpenAI, runtime: ScriptedRuntime) -> None:
    args = '{"pattern": "**/*.py", "path": "/home/dev"}'
    runtime.script = tool_call_events("glob", args, call_id=None)
    tools = [{"type": "function", "function": {"name": "glob", "parameters": {"type": "object"}}}]
    with client.chat.completions.stream(model=MODEL, messages=USER, tools=tools) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].type == "function" and calls[0].id.startswith("call_")
    assert calls[0].function.name == "glob" and calls[0].function.arguments == args
    assert runtime.records[-1].request.tools == tools


def test_two_tool_calls_raw_deltas_and_non_stream(
    server: LiveServer, client: OpenAI, runtime: ScriptedRuntime
) -> None:
    runtime.script = [
        Event(content="Let me look."),
        Event(tool_calls=[ToolCallDelta(0, id="call_a", name="read", arguments='{"f":')]),
        Event(tool_calls=[ToolCallDelta(0, arguments='"a.py"}'), ToolCallDelta(1, id="call_b", name="ls")]),
        Event(tool_calls=[ToolCallDelta(1, arguments="{}")]),
        Event(finish_reason="stop", usage=Usage(9, 5)),  # the API reports tool_calls when tools were called
    ]
    r = post(server, "/v1/chat/completions", {"model": MODEL, "messages": USER, "stream": True})
    deltas = [json.loads(f)["choices"][0]["delta"] for f in sse_frames(r.text)[:-1]]
    tool_deltas = [d["tool_calls"] for d in deltas if "tool_calls" in d]
    assert tool_deltas[0] == [
        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "read", "arguments": '{"f":'}}
    ]
    assert tool_deltas[1] == [
        {"index": 0, "function": {"arguments": '"a.py"}'}},
        {"index": 1, "id": "call_b", "type": "function", "function": {"name": "ls", "arguments": ""}},
    ]
    msg = client.chat.completions.create(model=MODEL, messages=USER).choices[0]
    assert msg.finish_reason == "tool_calls"
    assert msg.message.content == "Let me look."
    assert [(c.id, c.function.name, c.function.arguments) for c in msg.message.tool_calls or []] == [
        ("call_a", "read", '{"f":"a.py"}'),
        ("call_b", "ls", "{}"),
    ]


def test_reasoning_content(server: LiveServer, runtime: ScriptedRuntime) -> None:
    runtime.script = [
        Event(reasoning="think "),
        Event(reasoning="hard"),
        Event(content="42"),
        Event(finish_reason="stop", usage=Usage(3, 3)),
    ]
    r = post(server, "/v1/chat/completions", {"model": MODEL, "messages": USER, "stream": True})
    deltas = [json.loads(f)["choices"][0]["delta"] for f in sse_frames(r.text)[:-1]]
    assert [d.get("reasoning_content") for d in deltas[1:3]] == ["think ", "hard"]
    whole = post(server, "/v1/chat/completions", {"model": MODEL, "messages": USER}).json()
    assert whole["choices"][0]["message"]["reasoning_content"] == "think hard"
    assert whole["choices"][0]["message"]["content"] == "42"


def test_text_completions(client: OpenAI, runtime: ScriptedRuntime) -> None:
    runtime.script = text_events("return a + b", prompt_tokens=5)
    resp = client.completions.create(model=MODEL, prompt="def add(a, b):", max_tokens=8)
    assert resp.object == "text_completion" and resp.choices[0].text == "return a + b"
    assert resp.usage is not None and resp.usage.prompt_tokens == 5
    chunks = list(
        client.completions.create(
            model=MODEL, prompt="x", stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "return a + b"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert runtime.records[-1].request.prompt == "x"


def test_opencode_trace_request_is_served(server: LiveServer, runtime: ScriptedRuntime) -> None:
    raw = json.loads(fixture_file("traces", "opencode-fixcalc", "req03.json").read_text())
    raw["model"] = "appliance/" + MODEL
    r = post(server, "/v1/chat/completions", raw)
    assert r.status_code == 200 and sse_frames(r.text)[-1] == "[DONE]"
    sent = runtime.records[-1].request
    assert json.dumps(sent.tools) == json.dumps(raw["tools"])
    assert sent.tool_choice == "auto" and sent.sampling.max_tokens == 32000


# -- model ids -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        MODEL,
        "Qwen2.5-Coder-0.5B-Instruct",
        "qwen2.5-coder:0.5b",
        "default",
        "main",
        "appliance/" + MODEL,
        "openai/default",
        "local/qwen2.5-coder-0.5b",
    ],
)
def test_model_names_agents_send(server: LiveServer, name: str) -> None:
    r = post(server, "/v1/chat/completions", {"model": name, "messages": USER})
    assert r.status_code == 200, r.text
    assert r.headers["x-appliance-model"] == MODEL and r.json()["model"] == MODEL


def test_models_endpoints(client: OpenAI, server: LiveServer) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    card = httpx.get(server.api_base + "/models").json()
    assert card["object"] == "list"
    assert card["data"][0] | {"created": 0} == {
        "id": MODEL,
        "object": "model",
        "created": 0,
        "owned_by": "appliance",
        "context_length": 32768,
        "roles": ["main"],
        "aliases": [],
    }
    assert client.models.retrieve("appliance/" + MODEL).id == MODEL
    assert httpx.get(server.api_base + "/models/default").json()["id"] == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


# -- errors ----------------------------------------------------------------------------------
def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_bad_json(server: LiveServer) -> None:
    err = _error(post(server, "/v1/chat/completions", '{"model": "x", "messages": ['), 400)
    assert err["code"] == "invalid_json" and err["type"] == "invalid_request_error"
    assert _error(post(server, "/v1/chat/completions", ""), 400)["code"] == "invalid_json"
    assert _error(post(server, "/v1/chat/completions", "[1, 2]"), 400)["code"] == "invalid_json"


def test_wrong_types_name_the_field(server: LiveServer, client: OpenAI) -> None:
    err = _error(
        post(server, "/v1/chat/completions", {"model": MODEL, "messages": USER, "max_tokens": "lots"}), 400
    )
    assert err["param"] == "max_tokens" and "max_tokens" in err["message"]
    err = _error(post(server, "/v1/chat/completions", {"model": MODEL}), 400)
    assert err["param"] == "messages" and err["code"] == "missing_required_parameter"
    err = _error(
        post(
            server,
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": {"x": 1}}]},
        ),
        400,
    )
    assert err["param"] == "messages[0].content"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=USER, temperature="warm")  # type: ignore[arg-type]
    assert info.value.param == "temperature"


def test_n_above_the_cap_is_refused(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=USER, n=9)
    assert info.value.param == "n"


def test_n_answers_are_n_requests_with_their_own_seeds(client: OpenAI, runtime: ScriptedRuntime) -> None:
    resp = client.chat.completions.create(model=MODEL, messages=USER, n=3, seed=7)
    assert [(c.index, c.message.content, c.finish_reason) for c in resp.choices] == [
        (i, "Hello there!", "stop") for i in range(3)
    ]
    assert [r.request.sampling.seed for r in runtime.records] == [7, 8, 9]
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (12, 6)  # prompt once
    runtime.fail_before = Overloaded(retry_after_s=2)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=MODEL, messages=USER, n=2)


def test_n_greedy_answers_are_one_request(client: OpenAI, runtime: ScriptedRuntime) -> None:
    runtime.records.clear()
    resp = client.chat.completions.create(model=MODEL, messages=USER, n=3, temperature=0)
    assert [(c.index, c.message.content, c.finish_reason) for c in resp.choices] == [
        (i, "Hello there!", "stop") for i in range(3)
    ]
    assert len(runtime.records) == 1  # greedy: one answer, sent as each choice
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (12, 6)


def test_unknown_model(server: LiveServer, client: OpenAI) -> None:
    # A name nobody knows is served by the main model, as llama-server does, and says so.
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)
    assert raw.parse().model == MODEL and raw.headers["x-appliance-reason"].endswith(",model:unknown")
    # A catalog model that is not loaded is still a 404: the client asked for something specific.
    err = _error(post(server, "/v1/chat/completions", {"model": "gemma3-270m", "messages": USER}), 404)
    assert "gemma-3-270m" in err["message"] and "not loaded" in err["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_context_length_exceeded(server: LiveServer, runtime: ScriptedRuntime, stream: bool) -> None:
    runtime.fail_before = ContextLengthExceeded(prompt_tokens=40000, n_ctx=32768)
    err = _error(
        post(server, "/v1/chat/completions", {"model": MODEL, "messages": USER, "stream": stream}), 400
    )
    assert err["code"] == "context_length_exceeded" and "40000" in err["message"]
    assert err["type"] == "invalid_request_error"


def test_overloaded_gives_429_with_retry_after(
    server: LiveServer, client: OpenAI, runtime: ScriptedRuntime
) -> None:
    runtime.fail_before = Overloaded(retry_after_s=2.5)
    r = post(server, "/v1/chat/completions", {"model": MODEL, "messages": USER, "stream": True})
    assert _error(r, 429)["code"] == "rate_limit_exceeded"
    assert r.headers["retry-after"] == "3"
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=MODEL, messages=USER)


def test_error_mid_stream_is_an_sse_error_event(
    server: LiveServer, client: OpenAI, runtime: ScriptedRuntime
) -> None:
    runtime.script = text_events("a b c d e f")
    runtime.fail_after = (2, ValueError("boom"))
    r = post(server, "/v1/chat/completions", {"model": MODEL, "messages": USER, "stream": True})
    frames = sse_frames(r.text)
    assert frames[-1] == "[DONE]"
    err = json.loads(frames[-2])["error"]
    assert err["type"] == "server_error" and "boom" not in err["message"]
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model=MODEL, messages=USER, stream=True))


def test_unexpected_exception_is_a_generic_500(
    server: LiveServer, runtime: ScriptedRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    runtime.fail_before = KeyError("internal detail")
    with caplog.at_level(logging.ERROR, logger="appliance.api"):
        r = post(server, "/v1/chat/completions", {"model": MODEL, "messages": USER})
    err = _error(r, 500)
    assert err["type"] == "server_error" and "internal detail" not in r.text and "Traceback" not in r.text
    assert r.headers["x-request-id"] in err["message"]
    assert "internal detail" in caplog.text  # the traceback stays in the server log


def test_unknown_route_and_method(server: LiveServer) -> None:
    assert _error(httpx.get(server.base_url + "/v1/nope"), 404)["code"] == "not_found"
    r = httpx.get(server.base_url + "/v1/chat/completions")
    assert _error(r, 405)["code"] == "method_not_allowed"
    assert "POST" in r.headers["allow"]


# -- health, metrics, auth ---------------------------------------------------------------------
def test_health_loading_then_ready(serve: Serve) -> None:
    reg = ModelRegistry(loading=True)
    server = serve(reg)
    r = httpx.get(server.base_url + "/health")
    assert r.status_code == 503 and r.json()["status"] == "loading"
    err = _error(post(server, "/v1/chat/completions", {"model": "default", "messages": USER}), 503)
    assert err["code"] == "model_loading"
    reg.add(ScriptedRuntime(id=MODEL))
    reg.loading = False
    r = httpx.get(server.base_url + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_metrics_after_requests(server: LiveServer, client: OpenAI, runtime: ScriptedRuntime) -> None:
    runtime.script = text_events("a b c d", prompt_tokens=100, cached=64)
    runtime.stats_value = RuntimeStats(
        slots_total=4, slots_busy=1, queue_depth=2, loaded=True,
        spec_drafted_tokens=40, spec_accepted_tokens=30,
    )
    client.chat.completions.create(model=MODEL, messages=USER)
    list(client.chat.completions.create(model=MODEL, messages=USER, stream=True))
    httpx.get(server.base_url + "/v1/nope")
    text = httpx.get(server.base_url + "/metrics").text
    m = f'model="{MODEL}"'
    for line in [
        'appliance_requests_total{route="/v1/chat/completions",status="200"} 2.0',
        'appliance_requests_total{route="unmatched",status="404"} 1.0',
        f"appliance_prompt_tokens_total{{{m}}} 200.0",
        f"appliance_completion_tokens_total{{{m}}} 8.0",
        f"appliance_cached_prompt_tokens_total{{{m}}} 128.0",
        f"appliance_time_to_first_token_seconds_count{{{m}}} 2.0",
        f"appliance_inter_token_latency_seconds_count{{{m}}} 6.0",
        f"appliance_slots_total{{{m}}} 4.0",
        f"appliance_slots_busy{{{m}}} 1.0",
        f"appliance_queue_depth{{{m}}} 2.0",
        f"appliance_requests_in_flight{{{m}}} 0.0",
        f"appliance_spec_drafted_tokens_total{{{m}}} 40.0",
        f"appliance_spec_accepted_tokens_total{{{m}}} 30.0",
        f"appliance_spec_acceptance_rate{{{m}}} 0.75",
    ]:
        assert line in text, line


def test_bearer_auth(serve: Serve, registry: ModelRegistry) -> None:
    server = serve(registry, api_key="s3cret")
    err = _error(post(server, "/v1/chat/completions", {"model": MODEL, "messages": USER}), 401)
    assert err["code"] == "invalid_api_key"
    bad = OpenAI(base_url=server.api_base, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    good = OpenAI(base_url=server.api_base, api_key="s3cret", max_retries=0)
    assert good.chat.completions.create(model=MODEL, messages=USER).choices[0].message.content
    assert httpx.get(server.base_url + "/health").status_code == 200


def test_no_auth_by_default_and_client_request_id(server: LiveServer) -> None:
    r = post(
        server,
        "/v1/chat/completions",
        {"model": MODEL, "messages": USER},
        headers={"x-request-id": "agent-42", "authorization": "Bearer anything"},
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == "agent-42"


def test_prompt_text_never_logged(server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    secret = [{"role": "user", "content": "PATIENT-RECORD-7731"}]
    with caplog.at_level(logging.DEBUG):
        post(server, "/v1/chat/completions", {"model": MODEL, "messages": secret})
        post(server, "/v1/chat/completions", {"model": MODEL, "messages": secret, "stream": True})
        post(server, "/v1/chat/completions", {"model": MODEL, "messages": secret, "max_tokens": "x"})
    assert "request req_" in caplog.text  # the access line is there, with ids and counts
    assert "PATIENT-RECORD-7731" not in caplog.text


# -- disconnects and concurrency ----------------------------------------------------------------
def test_disconnect_mid_stream_closes_runtime_iterator(server: LiveServer, runtime: ScriptedRuntime) -> None:
    runtime.script = text_events("tok", pieces=400)
    runtime.delay_s = 0.02
    with httpx.stream(
        "POST",
        server.base_url + "/v1/chat/completions",
        timeout=10,
        json={"model": MODEL, "messages": USER, "stream": True},
    ) as r:
        lines = r.iter_lines()
        seen = 0
        for line in lines:
            seen += line.startswith("data: ")
            if seen >= 5:
                break
    assert wait_for(lambda: runtime.records[-1].closed), "runtime stream was not closed"
    rec = runtime.records[-1]
    assert not rec.finished and rec.emitted < 100
    in_flight = f'appliance_requests_in_flight{{model="{MODEL}"}} 0.0'
    assert wait_for(lambda: in_flight in httpx.get(server.base_url + "/metrics").text)


def test_disconnect_before_first_token_closes_runtime_iterator(
    server: LiveServer, runtime: ScriptedRuntime
) -> None:
    runtime.first_delay_s = 5.0  # a long prefill
    for stream in (True, False):
        with pytest.raises(httpx.ReadTimeout):
            post(
                server,
                "/v1/chat/completions",
                {"model": MODEL, "messages": USER, "stream": stream},
                timeout=0.3,
            )
        assert wait_for(lambda: runtime.records[-1].closed), f"not closed (stream={stream})"


def test_disconnect_during_non_stream_closes_runtime_iterator(
    server: LiveServer, runtime: ScriptedRuntime
) -> None:
    runtime.script = text_events("tok", pieces=200)
    runtime.delay_s = 0.02
    with pytest.raises(httpx.ReadTimeout):
        post(server, "/v1/chat/completions", {"model": MODEL, "messages": USER}, timeout=0.5)
    assert wait_for(lambda: runtime.records[-1].closed)
    assert runtime.records[-1].emitted < 100


def test_concurrent_streams_all_complete(server: LiveServer, runtime: ScriptedRuntime) -> None:
    runtime.script = text_events("x", pieces=20)
    runtime.delay_s = 0.02  # 0.4 s per stream; four in series would take 1.6 s
    results: list[str] = []

    def one() -> None:
        c = OpenAI(base_url=server.api_base, api_key="unused", max_retries=0)
        chunks = c.chat.completions.create(model=MODEL, messages=USER, stream=True)
        results.append("".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices))

    started = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == ["x" * 20] * 4
    assert time.perf_counter() - started < 1.4
