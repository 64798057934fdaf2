"""Requests written for llama-server and OpenAI, against our own API (issue 18).

The requests are the kinds llama.cpp's server test suite and evaluation tools send: paths
without /v1, no model name or one we never heard of, top-level `grammar` / `json_schema`,
`logprobs`, `n` > 1, and Anthropic's streamed usage. The real Qwen2.5-Coder-0.5B answers
through our engine; clients are the openai and anthropic SDKs and raw httpx.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from live_server import running_server
from openai import OpenAI

from appliance.api import ModelRegistry, catalog_resolver, create_app
from quantization.catalog import load_catalog
from runtimes.llamacpp.engine import EngineConfig
from runtimes.llamacpp.runtime import LlamaCppRuntime

pytestmark = pytest.mark.slow
MODEL = "qwen2.5-coder-0.5b-instruct"
COUNT = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]


@pytest.fixture(scope="module")
def runtime(qwen_path: Path):
    cfg = EngineConfig(
        model_path=qwen_path, n_ctx=8192, n_slots=4, n_threads=2, n_threads_batch=2, max_queue=16
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
    return OpenAI(base_url=server.api_base, api_key="unused", timeout=300, max_retries=0)


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(server.base_url + path, json=body, timeout=300)


def sse_data(text: str) -> list[dict]:
    frames = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    return [json.loads(f) for f in frames[:-1]]


# -- paths and model names ---------------------------------------------------------------------
def test_paths_without_v1(server) -> None:
    chat = post(server, "/chat/completions", {"model": MODEL, "messages": COUNT, "max_tokens": 4})
    assert chat.status_code == 200 and chat.json()["object"] == "chat.completion"
    text = post(server, "/completions", {"model": MODEL, "prompt": "1, 2, 3,", "max_tokens": 4})
    assert text.status_code == 200 and text.json()["object"] == "text_completion"
    models = httpx.get(server.base_url + "/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [MODEL]
    assert httpx.get(server.base_url + f"/models/{MODEL}", timeout=10).json()["id"] == MODEL


@pytest.mark.parametrize(
    ("model", "tag"), [(None, "model:missing"), ("gpt-3.5-turbo", "model:unknown"), ("test", "model:unknown")]
)
def test_missing_or_unknown_model_is_served_by_the_main_model(server, model, tag) -> None:
    body = {"messages": COUNT, "max_tokens": 4} | ({"model": model} if model else {})
    r = post(server, "/v1/chat/completions", body)
    assert r.status_code == 200 and r.json()["model"] == MODEL
    assert r.headers["x-appliance-model"] == MODEL and r.headers["x-appliance-reason"].endswith("," + tag)
    null = post(server, "/v1/chat/completions", {"model": None, "messages": COUNT, "max_tokens": 4})
    assert null.status_code == 200 and "model:missing" in null.headers["x-appliance-reason"]
    legacy = post(
        server, "/completions", {"prompt": "1, 2,", "max_tokens": 4} | ({"model": model} if model else {})
    )
    assert legacy.status_code == 200 and legacy.headers["x-appliance-reason"] == "completions-local," + tag


def test_a_catalog_model_that_is_not_loaded_is_still_404(client) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gemma3-270m", messages=COUNT, max_tokens=4)
    assert info.value.code == "model_not_found"


def test_system_fingerprint(client) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=COUNT, max_tokens=4, temperature=0)
    assert whole.system_fingerprint and whole.system_fingerprint.startswith("fp_")
    chunks = list(client.chat.completions.create(model=MODEL, messages=COUNT, max_tokens=4, stream=True))
    assert {c.system_fingerprint for c in chunks} == {whole.system_fingerprint}


# -- Anthropic's streamed usage ----------------------------------------------------------------
def test_anthropic_message_start_carries_the_prompt_count(server) -> None:
    client = anthropic.Anthropic(base_url=server.base_url, api_key="unused", max_retries=0, timeout=300)
    messages = [{"role": "user", "content": f"Say hi. ({uuid.uuid4().hex})"}]
    counted = client.messages.count_tokens(model=MODEL, messages=messages).input_tokens
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=8, messages=messages) as stream:
        events = list(stream)
        final = stream.get_final_message()
    start = events[0]
    assert start.type == "message_start"
    usage = start.message.usage
    assert usage.input_tokens > 0 and usage.input_tokens + (usage.cache_read_input_tokens or 0) == counted
    assert final.usage.input_tokens == usage.input_tokens  # message_delta agrees with message_start
    assert final.model == MODEL  # an unknown (cloud-style) name with no cloud: the main model


# -- grammar and json_schema -------------------------------------------------------------------
def test_top_level_grammar_constrains_the_answer(client) -> None:
    resp = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Is the sky green? Answer."}],
        max_tokens=8,
        temperature=0,
        extra_body={"grammar": 'root ::= "yes" | "no"'},
    )
    assert resp.choices[0].message.content in ("yes", "no")


def test_top_level_json_schema_constrains_the_answer(server) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    r = post(
        server,
        "/v1/chat/completions",
        {
            "model": MODEL,
            "max_tokens": 30,
            "temperature": 0,
            "json_schema": schema,
            "messages": [{"role": "user", "content": "Pick a number. Reply in JSON."}],
        },
    )
    assert r.status_code == 200, r.text
    assert isinstance(json.loads(r.json()["choices"][0]["message"]["content"])["n"], int)


def test_bad_grammar_requests_are_400s(server) -> None:
    bad = post(server, "/v1/chat/completions", {"model": MODEL, "messages": COUNT, "grammar": "root ::= ("})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    both = post(
        server,
        "/v1/chat/completions",
        {
            "model": MODEL,
            "messages": COUNT,
            "grammar": 'root ::= "a"',
            "response_format": {"type": "json_object"},
        },
    )
    assert both.status_code == 400 and both.json()["error"]["param"] == "grammar"


# -- logprobs ----------------------------------------------------------------------------------
def _logprobs(client, **kw):
    return client.chat.completions.create(
        model=MODEL, messages=COUNT, max_tokens=12, temperature=0, logprobs=True, top_logprobs=3, **kw
    )


def test_logprobs_of_greedy_tokens(client) -> None:
    resp = _logprobs(client)
    choice = resp.choices[0]
    content = choice.logprobs.content
    assert choice.finish_reason == "length" and len(content) == resp.usage.completion_tokens == 12
    assert b"".join(bytes(t.bytes) for t in content).decode() == choice.message.content
    for t in content:
        assert len(t.top_logprobs) == 3 and t.logprob <= 0
        assert t.logprob == pytest.approx(max(a.logprob for a in t.top_logprobs), abs=1e-5)  # greedy
        assert t.token == t.top_logprobs[0].token
        assert sum(math.exp(a.logprob) for a in t.top_logprobs) <= 1 + 1e-5
        assert [a.logprob for a in t.top_logprobs] == sorted(
            (a.logprob for a in t.top_logprobs), reverse=True
        )


def test_streamed_logprobs_equal_whole_ones(client) -> None:
    whole = _logprobs(client).choices[0].logprobs.content
    streamed = [
        t
        for c in _logprobs(client, stream=True)
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.content
    ]
    assert [t.token for t in streamed] == [t.token for t in whole]
    assert [t.logprob for t in streamed] == pytest.approx([t.logprob for t in whole], abs=1e-3)


def test_logprobs_without_alternatives_and_errors(client, server) -> None:
    resp = client.chat.completions.create(model=MODEL, messages=COUNT, max_tokens=3, logprobs=True)
    assert [t.top_logprobs for t in resp.choices[0].logprobs.content] == [[], [], []]
    assert (
        client.chat.completions.create(model=MODEL, messages=COUNT, max_tokens=3).choices[0].logprobs is None
    )
    err = post(
        server,
        "/v1/chat/completions",
        {"model": MODEL, "messages": COUNT, "top_logprobs": 21, "logprobs": True},
    )
    assert err.status_code == 400 and err.json()["error"]["param"] == "top_logprobs"


# -- n > 1 -------------------------------------------------------------------------------------
def test_n_greedy_choices_are_one_answer(client) -> None:
    # At temperature 0 the n answers are the same answer by definition: computed once, sent n times.
    tag = uuid.uuid4().hex
    messages = [{"role": "user", "content": f"Request {tag}. Count from 1 to 20, separated by commas."}]
    resp = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=6, temperature=0, n=3, logprobs=True
    )
    assert [c.index for c in resp.choices] == [0, 1, 2]
    assert len({c.message.content for c in resp.choices}) == 1 and resp.choices[0].message.content
    assert len({tuple(t.token for t in c.logprobs.content) for c in resp.choices}) == 1
    one = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, temperature=0)
    assert resp.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt counted once
    assert resp.usage.completion_tokens == 3 * len(resp.choices[0].logprobs.content)


def test_n_sampled_choices_share_the_prompt(client, runtime) -> None:
    tag = uuid.uuid4().hex
    messages = [
        {"role": "user", "content": f"Request {tag}. " + "Write a short poem about the sea. " * 20}
    ]
    before = runtime.stats().prompt_tokens_cached
    resp = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=8, temperature=1.0, seed=3, n=3, logprobs=True
    )
    cached = runtime.stats().prompt_tokens_cached - before
    assert [c.index for c in resp.choices] == [0, 1, 2]
    # Choices 1 and 2 start once choice 0's prompt is in the KV cache and copy it (a fresh
    # prompt: without that sharing each would reuse only the chat template's opening tokens).
    assert cached >= 2 * (resp.usage.prompt_tokens - 1)
    assert resp.usage.completion_tokens == sum(len(c.logprobs.content) for c in resp.choices)
    # Their own seeds (3, 4, 5): sampled at temperature 1, eight tokens each, they differ.
    assert len({c.message.content for c in resp.choices}) > 1


def test_n_choices_streamed(client) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=COUNT, max_tokens=8, temperature=0, n=2)
    texts, finishes = {0: "", 1: ""}, {}
    stream = client.chat.completions.create(
        model=MODEL,
        messages=COUNT,
        max_tokens=8,
        temperature=0,
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = None
    for chunk in stream:
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            if c.finish_reason:
                finishes[c.index] = c.finish_reason
        usage = chunk.usage or usage
    assert texts == {0: whole.choices[0].message.content, 1: whole.choices[1].message.content}
    assert finishes == {0: "length", 1: "length"}
    assert usage.completion_tokens == 16 and usage.prompt_tokens == whole.usage.prompt_tokens


def test_n_above_the_cap(client) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=COUNT, n=9)
    assert info.value.param == "n"
