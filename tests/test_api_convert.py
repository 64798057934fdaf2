"""OpenAI bodies -> runtime requests: sampling mapping and byte-faithful messages/tools."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from appliance.api.errors import ApiError, from_validation_error
from appliance.api.openai.convert import chat_request, completion_request
from appliance.api.openai.schemas import ChatCompletionBody, CompletionBody
from tests.conftest import trace_files


def _chat(raw: dict):
    return chat_request(ChatCompletionBody.model_validate(raw), raw, "m", "req_1")


def _messages(*extra) -> list[dict]:
    return [{"role": "user", "content": "hi"}, *extra]


def test_sampling_fields_are_mapped() -> None:
    req = _chat(
        {
            "model": "x",
            "messages": _messages(),
            "max_tokens": 10,
            "max_completion_tokens": 20,
            "temperature": 0,
            "top_p": 0.5,
            "top_k": 7,
            "min_p": 0.1,
            "repetition_penalty": 1.1,
            "frequency_penalty": 0.2,
            "presence_penalty": -0.3,
            "seed": 42,
            "stop": "END",
            "logit_bias": {"15": -100, "7": 2.5},
            "ignore_eos": True,
        }
    )
    s = req.sampling
    assert s.max_tokens == 20  # max_completion_tokens wins
    assert (s.temperature, s.top_p, s.top_k, s.min_p) == (0.0, 0.5, 7, 0.1)
    assert (s.repeat_penalty, s.frequency_penalty, s.presence_penalty, s.seed) == (1.1, 0.2, -0.3, 42)
    assert s.stop == ["END"]
    assert s.logit_bias == {15: -100.0, 7: 2.5}
    assert s.json_schema is None and s.ignore_eos


def test_unset_fields_keep_runtime_defaults() -> None:
    req = _chat({"model": "x", "messages": _messages(), "top_k": -1, "stop": ["a", "b"]})
    assert req.sampling.temperature == 0.8 and req.sampling.max_tokens is None
    assert req.sampling.top_k == 0 and req.sampling.stop == ["a", "b"]


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, {}),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True},
            },
            {"type": "object"},
        ),
        ({"type": "json_object", "schema": {"type": "array"}}, {"type": "array"}),
    ],
)
def test_response_format(fmt: dict, expected) -> None:
    assert (
        _chat({"model": "x", "messages": _messages(), "response_format": fmt}).sampling.json_schema
        == expected
    )


def test_messages_normalised_but_otherwise_as_sent() -> None:
    raw = {
        "model": "x",
        "messages": [
            {"role": "developer", "content": "be brief", "cache_control": {"type": "ephemeral"}},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ],
        "chat_template_kwargs": {"enable_thinking": False},
    }
    req = _chat(raw)
    assert req.messages[0] == {"role": "system", "content": "be brief"}
    assert req.messages[1] == {"role": "user", "content": "a\nb"}
    assert req.messages[2]["tool_calls"][0]["function"]["arguments"] == '{"x": 1}'
    assert req.messages[3] == {"role": "tool", "tool_call_id": "c1", "content": "ok"}
    assert req.enable_thinking is False


def test_opencode_trace_passes_through_unchanged() -> None:
    """What OpenCode sends reaches the runtime byte for byte (tools with `$schema`, key order)."""
    files = trace_files("opencode-fixcalc")
    assert len(files) == 7  # the title request and six agent turns
    for path in files:
        raw = json.loads(path.read_text())
        req = _chat(raw)
        assert json.dumps(req.messages) == json.dumps(raw["messages"]), path.name
        assert json.dumps(req.tools) == json.dumps(raw.get("tools")), path.name
        assert req.tool_choice == raw.get("tool_choice")
        assert req.sampling.max_tokens == 32000


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"n": 9}, "n"),
        ({"n": 0}, "n"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"grammar": "root ::= \"a\"", "response_format": {"type": "json_object"}}, "grammar"),
        ({"json_schema": {"type": "object"}, "response_format": {"type": "json_object"}}, "json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format.json_schema.schema",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content[0].type",
        ),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ],
)
def test_semantic_errors_name_the_param(patch: dict, param: str) -> None:
    with pytest.raises(ApiError) as info:
        _chat({"model": "x", "messages": _messages(), **patch})
    assert info.value.status == 400 and info.value.param == param


@pytest.mark.parametrize(
    ("patch", "param", "code"),
    [
        ({"max_tokens": "100"}, "max_tokens", "invalid_type"),
        ({"temperature": "hot"}, "temperature", "invalid_type"),
        ({"stream": "yes"}, "stream", "invalid_type"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "invalid_value"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type"),
        (
            {"tools": [{"type": "function", "function": {"description": "no name"}}]},
            "tools[0].function.name",
            "missing_required_parameter",
        ),
        ({"temperature": 9}, "temperature", "invalid_value"),
        ({"messages": []}, "messages", "invalid_value"),
    ],
)
def test_type_errors_name_the_field(patch: dict, param: str, code: str) -> None:
    with pytest.raises(ValidationError) as info:
        ChatCompletionBody.model_validate({"model": "x", "messages": _messages(), **patch})
    err = from_validation_error(info.value)
    assert (err.status, err.param, err.code) == (400, param, code)
    assert param in err.message


def test_missing_model_is_allowed() -> None:
    """llama-server's clients often send no model: the API serves the main one (routing.py)."""
    assert ChatCompletionBody.model_validate({"messages": _messages()}).model is None
    assert ChatCompletionBody.model_validate({"model": None, "messages": _messages()}).model is None


def test_unknown_client_fields_are_ignored() -> None:
    req = _chat(
        {
            "model": "x",
            "messages": _messages(),
            "parallel_tool_calls": False,
            "user": "u",
            "metadata": {"a": 1},
            "store": False,
            "stream_options": {"include_usage": True},
        }
    )
    assert req.messages == _messages()


def test_completion_request() -> None:
    raw = {"model": "x", "prompt": ["def add("], "max_tokens": 5, "echo": True, "stop": ["\n"]}
    req = completion_request(CompletionBody.model_validate(raw), "m", "r")
    assert (req.prompt, req.echo, req.sampling.max_tokens, req.sampling.stop) == ("def add(", True, 5, ["\n"])
    with pytest.raises(ApiError):
        completion_request(CompletionBody.model_validate({**raw, "prompt": ["a", "b"]}), "m", "r")
