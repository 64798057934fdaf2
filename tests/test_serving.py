"""The serving path end to end: real Qwen2.5-Coder-0.5B, our engine, real HTTP on loopback,
the official openai SDK as the client. What a coding agent sees, checked the way it sees it.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from live_server import running_server
from openai import OpenAI

from appliance.api import ModelRegistry, catalog_resolver, create_app
from quantization.catalog import load_catalog
from runtimes.llamacpp.engine import EngineConfig
from runtimes.llamacpp.runtime import LlamaCppRuntime
from tests.conftest import fixture_file

pytestmark = pytest.mark.slow
MODEL = "qwen2.5-coder-0.5b-instruct"
N_CTX = 16384


@pytest.fixture(scope="module")
def runtime(qwen_path: Path, tmp_path_factory):
    cfg = EngineConfig(
        model_path=qwen_path, n_ctx=N_CTX, n_slots=4, n_threads=2, n_threads_batch=2, max_queue=8,
        prefix_store_dir=tmp_path_factory.mktemp("prefix"),
    )
    rt = LlamaCppRuntime.load(load_catalog().get(MODEL), cfg)
    yield rt
    rt.engine.close()


@pytest.fixture(scope="module")
def server(runtime):
    registry = ModelRegistry(catalog_resolver())
    registry.add(runtime, roles=["main"])
    with running_server(create_app(registry)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=server.api_base, api_key="unused", timeout=600, max_retries=0)


def wait_idle(runtime, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while runtime.stats().slots_busy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runtime.stats().slots_busy == 0, "a slot stayed busy"


def test_chat_and_headers(server, client):
    raw = client.chat.completions.with_raw_response.create(
        model="default", messages=[{"role": "user", "content": "What is 2+2? Answer with a number."}],
        max_tokens=16, temperature=0,
    )
    resp = raw.parse()
    assert raw.headers["x-appliance-model"] == MODEL
    assert raw.headers["x-appliance-route"] == "local"
    assert "4" in resp.choices[0].message.content
    assert resp.usage.prompt_tokens > 10 and 0 < resp.usage.completion_tokens <= 16


def test_stream_with_usage(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name three colors."}], max_tokens=24,
        temperature=0, stream=True, stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text.strip()
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens > 0


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}


def test_tool_call_parsed(client):
    resp = client.chat.completions.create(
        model=MODEL, tools=[WEATHER_TOOL], temperature=0, max_tokens=64,
        messages=[{"role": "user", "content": "What's the weather like in Paris right now?"}],
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message.content
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id
    assert "paris" in json.loads(call.function.arguments)["city"].lower()


def test_json_schema_output_validates(client):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    resp = client.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=60,
        messages=[{"role": "user", "content": "Invent a person. Reply in JSON with name and age."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    data = json.loads(resp.choices[0].message.content)
    assert set(data) == {"name", "age"}
    assert isinstance(data["name"], str) and isinstance(data["age"], int)


def test_stop_string(client):
    resp = client.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=60, stop=["5"],
        messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas, digits only."}],
    )
    text = resp.choices[0].message.content
    assert resp.choices[0].finish_reason == "stop"
    assert "4" in text and "5" not in text


def test_length_finish(client):
    resp = client.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=5,
        messages=[{"role": "user", "content": "Write a long essay about the sea."}],
    )
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 5


def test_four_concurrent_streams_all_complete(client, runtime):
    results: dict[int, dict] = {}

    def one(i: int) -> None:
        stream = client.chat.completions.create(
            model=MODEL, temperature=0.7, seed=i, max_tokens=32, stream=True,
            messages=[{"role": "user", "content": f"Tell me fact number {i} about rivers."}],
        )
        first = last = None
        text = ""
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                now = time.monotonic()
                first = first or now
                last = now
                text += chunk.choices[0].delta.content
        results[i] = {"first": first, "last": last, "text": text}

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(results) == [0, 1, 2, 3]
    assert all(r["text"] for r in results.values()), "a stream received no tokens"
    # Served together, not one after another: every stream starts before any other finishes.
    assert max(r["first"] for r in results.values()) < min(r["last"] for r in results.values())
    wait_idle(runtime)


def test_disconnect_frees_slot(server, runtime):
    body = {
        "model": MODEL, "stream": True, "max_tokens": 2000, "temperature": 0.8,
        "messages": [{"role": "user", "content": "Write a very long story about a lighthouse."}],
    }
    before = runtime.engine.stats().requests_cancelled
    with httpx.stream("POST", f"{server.api_base}/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        for n, _ in enumerate(r.iter_lines()):
            if n > 6:
                break
    wait_idle(runtime)
    assert runtime.engine.stats().requests_cancelled == before + 1


def trace(name: str) -> dict:
    body = json.loads(fixture_file("traces", "opencode-fixcalc", name).read_text())
    body.update(model=MODEL, max_tokens=8, temperature=0)
    body.pop("stream", None)
    body.pop("stream_options", None)
    return body


def test_second_agent_turn_is_mostly_cached(server):
    with httpx.Client(base_url=server.api_base, timeout=600) as http:
        first = http.post("/chat/completions", json=trace("req02.json"))
        assert first.status_code == 200, first.text
        second = http.post("/chat/completions", json=trace("req03.json"))
        assert second.status_code == 200, second.text
    usage = second.json()["usage"]
    assert usage["prompt_tokens"] > 6000
    assert usage["prompt_tokens_details"]["cached_tokens"] > 0.9 * usage["prompt_tokens"]


def error_of(resp: httpx.Response) -> dict:
    err = resp.json()["error"]
    assert set(err) >= {"message", "type", "code"}
    return err


def test_over_long_prompt_is_refused_not_truncated(server):
    long_text = "lorem ipsum dolor sit amet " * 5000  # ~20k tokens > 16k context
    r = httpx.post(f"{server.api_base}/chat/completions", timeout=120, json={
        "model": MODEL, "messages": [{"role": "user", "content": long_text}], "max_tokens": 4,
    })
    assert r.status_code == 400
    err = error_of(r)
    assert err["code"] == "context_length_exceeded"
    assert str(N_CTX) in err["message"]


@pytest.mark.parametrize(
    ("body", "status", "code_or_param"),
    [
        (b'{"model": "default", "messages": [', 400, "invalid_json"),
        (json.dumps({"model": "default", "messages": [{"role": "user", "content": "hi"}],
                     "temperature": "hot"}).encode(), 400, "temperature"),
        # A catalog model that is not loaded (a name nobody knows is served by the main model).
        (json.dumps({"model": "gemma3-270m", "messages": [{"role": "user", "content": "hi"}]}).encode(),
         404, "model_not_found"),
    ],
)
def test_bad_requests_get_openai_errors(server, body, status, code_or_param):
    r = httpx.post(f"{server.api_base}/chat/completions", content=body,
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status
    err = error_of(r)
    assert code_or_param in (err.get("code"), err.get("param"))
