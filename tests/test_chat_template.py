"""Chat templates: the real GGUF templates render as their models expect, errors are
clean InvalidRequests, and re-rendering an agent's history is byte-stable (the
prefix cache depends on it)."""

from __future__ import annotations

import copy
import itertools
import json
from datetime import datetime
from pathlib import Path

import pytest

from runtimes.base import InvalidRequest
from runtimes.llamacpp.chat_template import ChatTemplate, TemplateLoadError, prepare_messages
from tests.conftest import fixture_file

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city (°C).",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def gguf_template(path: Path) -> str:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        return llm.metadata["tokenizer.chat_template"]
    finally:
        llm.close()


@pytest.fixture(scope="module")
def qwen(qwen_path) -> ChatTemplate:
    return ChatTemplate(gguf_template(qwen_path), eos_token="<|im_end|>")


@pytest.fixture(scope="module")
def smollm(smollm_path) -> ChatTemplate:
    return ChatTemplate(gguf_template(smollm_path), eos_token="<|im_end|>")


def trace(name: str) -> dict:
    return json.loads(fixture_file("traces", "opencode-fixcalc", f"{name}.json").read_text())


# -- the real templates ---------------------------------------------------------------------


@pytest.mark.slow
def test_qwen_renders_tools_hermes_style(qwen):
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Weather in Paris?"}]
    out = qwen.render(msgs, tools=[WEATHER])
    assert out.startswith("<|im_start|>system\nYou are terse.\n\n# Tools\n")
    assert "<tools>\n" + json.dumps(WEATHER, ensure_ascii=False) + "\n</tools>" in out  # °C kept as is
    assert "<tool_call>\n{\"name\": <function-name>" in out
    assert out.endswith("<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n")
    assert qwen.supports_tools and qwen.object_arguments


@pytest.mark.slow
def test_qwen_without_tools_uses_its_default_system_prompt(qwen):
    out = qwen.render([{"role": "user", "content": "hi"}])
    assert out == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.slow
def test_qwen_tool_call_history_renders_arguments_as_an_object(qwen):
    msgs = trace("req07")["messages"]
    before = copy.deepcopy(msgs)
    out = qwen.render(msgs, tools=trace("req07")["tools"])
    assert msgs == before, "the caller's messages are not modified"
    assert '<tool_call>\n{"name": "glob", "arguments": {"pattern": "**/*.py"}}\n</tool_call>' in out
    assert "\\\"pattern" not in out  # not a JSON string inside JSON
    result = "<tool_response>\n/home/dev/calc-project/calc.py\n</tool_response>"
    assert f"<|im_start|>user\n{result}<|im_end|>" in out


@pytest.mark.slow
def test_agent_turns_extend_each_other_byte_for_byte(qwen):
    """Each OpenCode turn renders to the previous turn's prompt plus a tail."""
    turns = [trace(f"req0{i}") for i in range(2, 8)]
    prompts = [qwen.render(t["messages"], tools=t["tools"]) for t in turns]
    for prev, nxt in itertools.pairwise(prompts):
        assert nxt.startswith(prev)
        assert len(nxt) > len(prev)
    # Rendering is a pure function of the request.
    assert qwen.render(turns[-1]["messages"], tools=turns[-1]["tools"]) == prompts[-1]


@pytest.mark.slow
def test_second_turn_extends_first_turn_plus_reply(qwen):
    req02, req03 = trace("req02"), trace("req03")
    reply = req03["messages"][len(req02["messages"])]  # the assistant's tool call
    assert reply["role"] == "assistant"
    history = qwen.render([*req02["messages"], reply], tools=req02["tools"], add_generation_prompt=False)
    full = qwen.render(req03["messages"], tools=req03["tools"])
    assert full.startswith(history)
    assert full.startswith(qwen.render(req02["messages"], tools=req02["tools"]))
    assert full[len(history) :].startswith("<|im_start|>user\n<tool_response>\n")


@pytest.mark.slow
def test_smollm_template(smollm):
    out = smollm.render([{"role": "user", "content": "Hello"}])
    assert out == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    )
    assert not smollm.supports_tools
    title = trace("req01")["messages"]
    assert smollm.render(title).startswith("<|im_start|>system\nYou are a title generator.")


@pytest.mark.slow
def test_content_parts_become_text(qwen):
    parts = [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]
    out = qwen.render([{"role": "user", "content": parts}])
    assert "<|im_start|>user\nfirst\nsecond<|im_end|>" in out
    with pytest.raises(InvalidRequest, match="image_url"):
        qwen.render([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])


# -- the environment ------------------------------------------------------------------------


def test_fallback_chatml_when_the_gguf_has_none():
    t = ChatTemplate(None)
    assert t.is_fallback and t.object_arguments
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    expected = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    assert t.render(msgs) == expected
    with_tools = t.render(msgs, tools=[WEATHER])
    assert '"name": "get_weather"' in with_tools and "<tool_call>" in with_tools
    turns = [trace(f"req0{i}") for i in range(2, 8)]
    prompts = [t.render(x["messages"], tools=x["tools"]) for x in turns]
    assert all(b.startswith(a) for a, b in itertools.pairwise(prompts))
    call = '<tool_call>\n{"name": "glob", "arguments": {"pattern": "**/*.py"}}'
    assert f"<|im_start|>assistant\n{call}" in prompts[1]


def test_template_errors_are_invalid_requests():
    check = "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}"
    t = ChatTemplate(check + "ok")
    assert t.render([{"role": "user", "content": "x"}]) == "ok"
    with pytest.raises(InvalidRequest, match="first must be user"):
        t.render([{"role": "assistant", "content": "x"}])
    with pytest.raises(InvalidRequest):
        ChatTemplate("{{ messages[0].content + 1 }}").render([{"role": "user", "content": "x"}])
    with pytest.raises(TemplateLoadError):
        ChatTemplate("{% for %}")


def test_sandbox_blocks_escapes_and_mutation():
    evil = ChatTemplate("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(InvalidRequest):
        evil.render([{"role": "user", "content": "x"}])
    mutating = ChatTemplate("{{ messages.append(1) }}")
    with pytest.raises(InvalidRequest):
        mutating.render([{"role": "user", "content": "x"}])


def test_hf_compatible_helpers():
    src = (
        "{{ bos_token }}{{ {'k': 'é<>'} | tojson }}|{{ [1] | tojson(indent=2) }}|"
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}{% endfor %}|"
        "{% generation %}gen{% endgeneration %}|{{ strftime_now('%Y') }}|{{ eos_token }}"
        "{% if enable_thinking is defined and not enable_thinking %}|nothink{% endif %}"
    )
    t = ChatTemplate(src, bos_token="<s>", eos_token="</s>")
    msgs = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    year = str(datetime.now().year)
    assert t.render(msgs) == f'<s>{{"k": "é<>"}}|[\n  1\n]|a|gen|{year}|</s>'
    assert t.render(msgs, enable_thinking=False).endswith("|nothink")
    assert t.render(msgs, enable_thinking=None) == t.render(msgs)  # None: not passed at all


def test_template_taking_string_arguments_gets_the_string_as_sent():
    src = "{% for m in messages %}{% for c in m.tool_calls or [] %}{{ c.function.arguments }}{% endfor %}"
    src += "{% endfor %}"
    t = ChatTemplate(src)
    assert not t.object_arguments
    args = '{"b":1, "a" : "x"}'
    call = {"id": "1", "type": "function", "function": {"name": "f", "arguments": args}}
    msgs = [{"role": "assistant", "content": None, "tool_calls": [call]}]
    assert t.render(msgs) == args


def test_prepare_messages_copies_and_normalizes():
    msgs = [
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "d", "type": "function", "function": {"name": "f", "arguments": "not json"}}]},
    ]
    before = copy.deepcopy(msgs)
    out = prepare_messages(msgs, object_arguments=True)
    assert msgs == before
    assert out[0]["content"] == "" and out[0]["tool_calls"][0]["function"]["arguments"] == {"x": 1}
    assert out[1]["tool_calls"][0]["function"]["arguments"] == "not json"
    same = prepare_messages(msgs, object_arguments=False)
    assert same[0]["tool_calls"][0]["function"]["arguments"] == '{"x": 1}'


# -- polyfills for what clients send and strict templates refuse ------------------------------

STRICT = """\
{%- for m in messages %}
{%- if m.role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}
{%- if loop.index0 > 0 and m.role == 'user' and messages[loop.index0 - 1].role == 'user' %}
{{- raise_exception('Conversation roles must alternate') }}{% endif %}
{%- for c in m.tool_calls or [] %}
{%- if c.id | length != 9 %}{{ raise_exception('Tool call IDs should have length 9!') }}
{%- endif %}[CALL {{ c.id }}]{% endfor %}
{%- if m.role == 'tool' %}[RESULT {{ m.tool_call_id }}]{% endif %}
{%- if m.content %}[{{ m.role }}: {{ m.content }}]{% endif %}
{%- endfor %}"""


def test_polyfills_for_strict_templates():
    t = ChatTemplate(STRICT)
    assert t.short_ids and t.merge_users and not t.system_role
    msgs = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "A"},
        {"role": "user", "content": "B"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "R"},
    ]
    out = t.render(msgs)
    short = out.split("[CALL ")[1][:9]
    assert short.isalnum() and len(short) == 9
    assert out == f"[user: S\n\nA\n\nB][CALL {short}][RESULT {short}][tool: R]"
    assert t.render(msgs) == out  # the same short id every time


def test_no_polyfill_where_the_template_copes():
    t = ChatTemplate("{% for m in messages %}[{{ m.role }}: {{ m.content }}]{% endfor %}")
    assert not t.short_ids and not t.merge_users and t.system_role
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "A"}]
    msgs.append({"role": "user", "content": "B"})
    assert t.render(msgs) == "[system: S][user: A][user: B]"


def test_tojson_writes_lazy_sequences_as_lists():
    t = ChatTemplate("{{ messages | map(attribute='role') | tojson }}")
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert t.render(msgs) == '["user", "assistant"]'
