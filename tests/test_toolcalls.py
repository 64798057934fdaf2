"""Tool-call and reasoning parsing of generated text, streamed.

The central property: however the text is cut into deltas (whole, char by char,
random splits), the parsed result is identical, and content / call names stream
out before the end instead of being held back.
"""

from __future__ import annotations

import itertools
import json
import random

import pytest

from quantization.catalog import load_catalog
from runtimes.base import Event
from runtimes.toolcalls import (
    CONTROL_MARKERS,
    FORMATS,
    ChatOutputParser,
    detect_tool_format,
    forced_call_prefill,
    get_tool_format,
    make_tool_parser,
)
from runtimes.toolcalls.common import mistral_call_id, openai_call_id, partial_marker_len
from runtimes.toolcalls.jsonscan import JsonScanner, JsonSyntaxError
from runtimes.toolcalls.plain import PlainParser

TOOLS = {"get_weather", "read", "edit", "bash", "f", "g"}


def chunkings(text: str, n_random: int = 25):
    yield [text]
    yield list(text)
    for size in (2, 3, 5, 7, 11):
        yield [text[i : i + size] for i in range(0, len(text), size)]
    for seed in range(n_random):
        rng = random.Random(seed)
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 12))))
        yield [text[a:b] for a, b in itertools.pairwise([0, *cuts, len(text)])]


def run(fmt: str, chunks: list[str], **kw) -> tuple[list[list[Event]], ChatOutputParser]:
    counter = itertools.count()
    p = ChatOutputParser(fmt, new_id=lambda: f"call_{next(counter)}", **kw)
    batches = [p.feed(c) for c in chunks]
    batches.append(p.finish())
    return batches, p


def summarize(batches: list[list[Event]]) -> dict:
    """What a client would assemble, checking the delta protocol on the way."""
    content, reasoning, calls = "", "", {}
    for ev in itertools.chain.from_iterable(batches):
        assert not ev.finish_reason and ev.usage is None
        content += ev.content
        reasoning += ev.reasoning
        for d in ev.tool_calls:
            if d.index not in calls:
                assert d.id and d.name, "a call's first delta carries its id and name"
                assert d.index == len(calls), "indices are 0, 1, 2... in order"
                calls[d.index] = {"id": d.id, "name": d.name, "arguments": d.arguments}
            else:
                assert d.id is None and d.name is None, "id and name come once"
                calls[d.index]["arguments"] += d.arguments
    return {"content": content, "reasoning": reasoning, "calls": [calls[i] for i in sorted(calls)]}


def parse(fmt: str, text: str, **kw) -> dict:
    """Parse `text` under every chunking; all must agree. Returns the common result."""
    results = []
    for chunks in chunkings(text):
        batches, p = run(fmt, chunks, **kw)
        r = summarize(batches)
        r["has_calls"] = p.has_calls
        results.append(r)
    for r in results[1:]:
        assert r == results[0]
    return results[0]


def calls(result: dict) -> list[tuple[str, dict]]:
    return [(c["name"], json.loads(c["arguments"])) for c in result["calls"]]


# -- Hermes / Qwen ------------------------------------------------------------------------


def test_hermes_single_call_after_content():
    call = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    text = f"Let me check.\n\n<tool_call>\n{call}\n</tool_call>"
    r = parse("hermes", text)
    assert r["content"] == "Let me check."
    assert r["calls"][0]["name"] == "get_weather"
    assert r["calls"][0]["arguments"] == '{"city":"Paris"}'
    assert r["calls"][0]["id"] == "call_0"
    assert r["has_calls"]


def test_hermes_several_calls():
    text = (
        '<tool_call>\n{"name": "read", "arguments": {"filePath": "/a.py"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "bash", "arguments": {"command": "ls -la", "timeout": 5}}\n</tool_call>'
    )
    r = parse("hermes", text)
    assert r["content"] == ""
    assert calls(r) == [("read", {"filePath": "/a.py"}), ("bash", {"command": "ls -la", "timeout": 5})]


def test_arguments_are_compact_and_faithful():
    # Key order, number spelling, escapes as written; only whitespace outside strings goes.
    args = '{ "b": 1.50, "a": "caf\\u00e9 \\"q\\"",\n  "list": [1, 2e3, true, null], '
    args += '"nested": {"x": "  sp  "} }'
    text = f'<tool_call>\n{{"name": "f", "arguments": {args}}}\n</tool_call>'
    r = parse("hermes", text)
    assert r["calls"][0]["arguments"] == (
        '{"b":1.50,"a":"caf\\u00e9 \\"q\\"","list":[1,2e3,true,null],"nested":{"x":"  sp  "}}'
    )
    assert json.loads(r["calls"][0]["arguments"]) == json.loads(args)


def test_arguments_unicode_and_code_survive():
    edit = {"filePath": "/p/calc.py", "oldString": "def add(a, b):\n    return a - b", "newString": "ü → ✓"}
    call = json.dumps({"name": "edit", "arguments": edit}, ensure_ascii=False)
    text = f"<tool_call>\n{call}\n</tool_call>"
    assert calls(parse("hermes", text)) == [("edit", edit)]


def test_lenient_json_repairs():
    # Raw newlines inside strings are escaped; Python literals read as JSON ones.
    text = '<tool_call>{"name": "f", "arguments": {"code": "a\nb", "ok": True, "v": None}}</tool_call>'
    r = parse("hermes", text)
    assert r["calls"][0]["arguments"] == '{"code":"a\\nb","ok":true,"v":null}'


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ('"{\\"city\\": \\"Rome\\"}"', '{"city": "Rome"}'),  # arguments sent as a JSON string
        ("null", "{}"),
        ("{}", "{}"),
    ],
)
def test_argument_shapes(args, expected):
    r = parse("hermes", f'<tool_call>{{"name": "f", "arguments": {args}}}</tool_call>')
    assert r["calls"][0]["arguments"] == expected


def test_missing_arguments_and_name_after_arguments():
    r = parse("hermes", '<tool_call>{"name": "f"}</tool_call><tool_call>{"arguments": {"x": 1}, "name": "g"}')
    assert calls(r) == [("f", {}), ("g", {"x": 1})]


def test_missing_closing_tag_and_text_after():
    r = parse("hermes", '<tool_call>\n{"name": "f", "arguments": {}}\nDone, see above.')
    assert calls(r) == [("f", {})]
    assert r["content"] == "Done, see above."


def test_bare_json_call_is_accepted_when_it_names_a_tool():
    # Qwen2.5-Coder-0.5B answers like this, without the tags.
    r = parse("hermes", '{"name": "get_weather", "arguments": {"city": "Paris"}}', known_names=TOOLS)
    assert calls(r) == [("get_weather", {"city": "Paris"})]
    fenced = '```json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```'
    assert calls(parse("hermes", fenced, known_names=TOOLS)) == [("get_weather", {"city": "Oslo"})]


@pytest.mark.parametrize(
    "text",
    [
        '{"answer": 42, "name": "x"}',  # an ordinary JSON answer
        '{"name": "unknown_tool", "arguments": {}}',  # not one of the tools
        '```python\nprint("hi")\n```',
        'Use {"name": "f"} like this.',  # bare JSON only counts where a call can start
        "x <tool_call",  # a partial marker at the very end
    ],
)
def test_not_a_call_stays_content_verbatim(text):
    r = parse("hermes", text, known_names=TOOLS)
    assert r["content"] == text
    assert r["calls"] == [] and not r["has_calls"]


@pytest.mark.parametrize(
    "text",
    [
        "<tool_call>\nget_weather(city='Paris')\n</tool_call>",
        '<tool_call>\n{"arguments": {"a": 1}}\n</tool_call> ok',  # no name
        '<tool_call>\n{"name": 42, "arguments": {}}\n</tool_call>',
    ],
)
def test_malformed_call_becomes_content(text):
    r = parse("hermes", text)
    assert r["content"] == text
    assert r["calls"] == [] and not r["has_calls"]


def test_malformed_after_streaming_started_loses_nothing():
    text = 'Hi <tool_call>{"name": "f", "arguments": {"a": 1,, }}</tool_call>'
    r = parse("hermes", text)
    assert r["calls"][0]["name"] == "f"  # already streamed when the error showed
    assert not r["has_calls"]  # but it does not count as a call
    assert r["content"] == "Hi" + text[3:]  # the whole call text is in the content


def test_truncated_call_is_kept_as_content():
    text = '<tool_call>\n{"name": "f", "arguments": {"a": "unfinish'
    r = parse("hermes", text)
    assert r["content"] == text and not r["has_calls"]


def test_streaming_does_not_hold_back_more_than_a_marker():
    p = ChatOutputParser("hermes", known_names=TOOLS)
    got = summarize([p.feed("Hello there, <tool")])
    assert got["content"] == "Hello there,"  # the space is held with the possible marker
    got = summarize([p.feed("_call>\n"), p.feed('{"name": "read", "argu')])
    assert got["calls"][0]["name"] == "read"  # the name is out before the arguments
    ev = p.feed('ments": {"filePath": "/x')
    assert "".join(d.arguments for e in ev for d in e.tool_calls) == '{"filePath":"/x'
    ev = p.feed('.py"}}')
    assert "".join(d.arguments for e in ev for d in e.tool_calls) == '.py"}'


def test_arguments_stream_in_pieces():
    p = ChatOutputParser("hermes")
    p.feed('<tool_call>{"name": "edit", "arguments": {"newString": "')
    words = ["one ", "two ", "three"]
    pieces = ["".join(d.arguments for e in p.feed(w) for d in e.tool_calls) for w in words]
    assert pieces == ["one ", "two ", "three"]


def test_whitespace_between_calls_is_not_content_but_kept_without_calls():
    assert parse("hermes", "Answer.\n\n")["content"] == "Answer.\n\n"
    r = parse("hermes", '<tool_call>{"name": "f", "arguments": {}}</tool_call>\n\n')
    assert r["content"] == ""


def test_none_format_passes_everything_through():
    text = '<tool_call>{"name": "f", "arguments": {}}</tool_call>'
    r = parse("none", text)
    assert r["content"] == text and r["calls"] == []


# -- Mistral / Devstral ---------------------------------------------------------------------


def test_mistral_new_form_several_calls():
    text = 'Checking.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]read[ARGS]{"filePath": "/a"}'
    r = parse("mistral", text)
    assert r["content"] == "Checking."
    assert calls(r) == [("get_weather", {"city": "Paris"}), ("read", {"filePath": "/a"})]
    assert r["calls"][0]["arguments"] == '{"city":"Paris"}'


def test_mistral_call_id_form_keeps_the_models_id():
    r = parse("mistral", '[TOOL_CALLS]f[CALL_ID]a1b2c3d4e[ARGS]{"x": [1, 2]}')
    assert r["calls"] == [{"id": "a1b2c3d4e", "name": "f", "arguments": '{"x":[1,2]}'}]


def test_mistral_old_json_list_form():
    text = '[TOOL_CALLS] [{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {"b": "c"}}]'
    assert calls(parse("mistral", text)) == [("f", {"a": 1}), ("g", {"b": "c"})]
    assert calls(parse("mistral", '[TOOL_CALLS]{"name": "f", "arguments": {}}')) == [("f", {})]


@pytest.mark.parametrize("text", ["[TOOL_CALLS]no call here", "[TOOL_CALLS]f[ARGS]{oops}", "[TOOL_CALLS]"])
def test_mistral_malformed_is_content(text):
    r = parse("mistral", text)
    assert r["content"] == text and not r["has_calls"]


def test_mistral_ids_fit_its_templates():
    p = ChatOutputParser("mistral")
    ev = p.feed('[TOOL_CALLS]f[ARGS]{"a": 1}') + p.finish()
    call_id = next(d.id for e in ev for d in e.tool_calls if d.id)
    assert len(call_id) == 9 and call_id.isalnum()


# -- Llama 3.x JSON -------------------------------------------------------------------------


def test_llama3_bare_json_and_python_tag():
    r = parse("llama3_json", '{"name": "get_weather", "parameters": {"city": "Paris"}}', known_names=TOOLS)
    assert calls(r) == [("get_weather", {"city": "Paris"})]
    r = parse("llama3_json", '<|python_tag|>{"name": "f", "parameters": {"q": 1}}', known_names=TOOLS)
    assert calls(r) == [("f", {"q": 1})]


def test_llama3_several_calls_and_type_key():
    text = '{"type": "function", "name": "f", "parameters": {}}; {"name": "g", "parameters": {"x": 1}}'
    assert calls(parse("llama3_json", text, known_names=TOOLS)) == [("f", {}), ("g", {"x": 1})]


@pytest.mark.parametrize(
    "text",
    ['{"result": "not a call"}', "The answer is 4.", '{"name": "nope", "parameters": {}}', "  \n"],
)
def test_llama3_non_calls_are_content(text):
    r = parse("llama3_json", text, known_names=TOOLS)
    assert r["content"] == text and not r["has_calls"]


# -- reasoning ------------------------------------------------------------------------------


def test_think_block_goes_to_reasoning():
    r = parse("hermes", "<think>\nThe user wants weather.\n</think>\n\nIt is sunny.", reasoning=True)
    assert r["reasoning"] == "The user wants weather."
    assert r["content"] == "It is sunny."


def test_think_then_tool_call():
    call = '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'
    text = f"<think>\nI need the tool.\n</think>\n\n{call}"
    r = parse("hermes", text, reasoning=True)
    assert r["reasoning"] == "I need the tool." and r["content"] == ""
    assert calls(r) == [("f", {"a": 1})]


def test_tool_call_inside_thinking_is_only_reasoning():
    text = '<think>maybe <tool_call>{"name": "f"}</tool_call>?</think>No.'
    r = parse("hermes", text, reasoning=True)
    assert r["reasoning"] == 'maybe <tool_call>{"name": "f"}</tool_call>?'
    assert r["content"] == "No." and r["calls"] == []


def test_prompt_opened_thinking():
    r = parse("none", "step one\nstep two</think>\n\nAnswer", starts_in_reasoning=True)
    assert r == {"content": "Answer", "reasoning": "step one\nstep two", "calls": [], "has_calls": False}


def test_no_think_block_is_plain_content():
    r = parse("none", "  <thinking> is a word", reasoning=True)
    assert r["content"] == "  <thinking> is a word" and r["reasoning"] == ""


def test_unfinished_thinking_is_reasoning():
    assert parse("none", "<think>still going", reasoning=True)["reasoning"] == "still going"


# -- pieces ---------------------------------------------------------------------------------


def test_ids():
    assert openai_call_id().startswith("call_") and openai_call_id() != openai_call_id()
    assert len(mistral_call_id()) == 9


def test_partial_marker_len():
    assert partial_marker_len("abc <tool", "<tool_call>") == 5
    assert partial_marker_len("abc", "<tool_call>") == 0
    assert partial_marker_len("<tool_call", "<tool_call>") == 10


def test_json_scanner_reports_where_the_value_ends():
    s = JsonScanner()
    assert s.feed('{"a": [1, {"b": null}]} trailing') == len('{"a": [1, {"b": null}]}')
    assert s.done and s.text() == '{"a":[1,{"b":null}]}'
    n = JsonScanner()
    assert n.feed("-12.5e3") == 7 and not n.done
    n.finish()
    assert n.done and n.text() == "-12.5e3"


@pytest.mark.parametrize("bad", ['{"a" 1}', "[1,,2]", '{"a": 01}', '"\\x"', "{'a': 1}", "[1}", "tru "])
def test_json_scanner_rejects(bad):
    with pytest.raises(JsonSyntaxError):
        s = JsonScanner()
        s.feed(bad)
        s.finish()


# -- Qwen3-Coder XML ------------------------------------------------------------------------

EDIT_TOOL = {
    "type": "function",
    "function": {
        "name": "edit",
        "parameters": {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "line": {"type": "integer"},
                "opts": {"type": "object"},
                "dry": {"type": ["boolean", "null"]},
            },
        },
    },
}


def test_qwen3_coder_xml_call_with_typed_values():
    code = 'def f(x):\n    return "<b>" + x  # \\ and "quotes"\n'
    text = (
        "I'll edit it.\n<tool_call>\n<function=edit>\n<parameter=path>\n/src/app.py\n</parameter>\n"
        f"<parameter=line>\n12\n</parameter>\n<parameter=opts>\n{{\"a\": [1, 2]}}\n</parameter>\n"
        f"<parameter=dry>\nTrue\n</parameter>\n<parameter=code>\n{code}\n</parameter>\n</function>\n</tool_call>"
    )
    r = parse("qwen3_coder", text, tools=[EDIT_TOOL])
    assert r["content"] == "I'll edit it."
    assert r["calls"][0]["name"] == "edit" and r["has_calls"]
    args = json.loads(r["calls"][0]["arguments"])
    assert args == {"path": "/src/app.py", "line": 12, "opts": {"a": [1, 2]}, "dry": True, "code": code}


def test_qwen3_coder_several_calls_no_params_and_missing_end_tags():
    text = (
        "<tool_call>\n<function=f>\n</function>\n</tool_call>\n"
        "<function=edit>\n<parameter=path>\na.py\n<parameter=line>\nnot a number\n</function>"
    )
    r = parse("qwen3_coder", text, tools=[EDIT_TOOL])
    assert calls(r) == [("f", {}), ("edit", {"path": "a.py", "line": "not a number"})]


def test_qwen3_coder_string_value_streams():
    p = ChatOutputParser("qwen3_coder", tools=[EDIT_TOOL])
    p.feed("<tool_call>\n<function=edit>\n<parameter=path>\n")
    words = ["src/", "main", ".py\n"]
    pieces = ["".join(d.arguments for e in p.feed(w) for d in e.tool_calls) for w in words]
    assert pieces == ["src/", "main", ".py"]


@pytest.mark.parametrize(
    "text",
    ["<tool_call>\nget_weather(city='x')\n</tool_call>", "<tool_call>\n<function=\nbad>", "a <function=f> b"],
)
def test_qwen3_coder_malformed_is_content(text):
    r = parse("qwen3_coder", text, tools=[EDIT_TOOL])
    assert r["content"] == text and not r["has_calls"]


# -- formats: detection, forced calls, the registry ----------------------------------------


@pytest.mark.parametrize(
    ("template", "fmt"),
    [
        # Qwen3-Coder writes <tool_call> too: it must be recognised before hermes.
        ("{{- '<tool_call>\\n<function=' + tc.name + '>' }}{{- '<parameter=' + k + '>' }}", "qwen3_coder"),
        ("<|im_start|>{{- '<tool_call>\\n' }}{{- tc | tojson }}", "hermes"),
        ("{{ '<tool_call>' }}", "hermes"),
        ("{{- '[AVAILABLE_TOOLS]' }}{{- '[TOOL_CALLS]' + tc.name + '[ARGS]' }}", "mistral"),
        ("[TOOL_CALLS]", "mistral"),
        ("<|python_tag|>", "llama3_json"),
        ("<|start_header_id|>ipython<|end_header_id|>{{ '\"parameters\": ' }}", "llama3_json"),
        ("<|start_header_id|>user<|end_header_id|>{{ m.content }}", "none"),  # Llama 3.0: no tools
        ("<|im_start|>", "none"),
        ("<start_of_turn>model\n", "none"),  # Gemma: no format we parse
        ("", "none"),
        (None, "none"),
    ],
)
def test_detect_tool_format(template, fmt):
    assert detect_tool_format(template) == fmt


# Exactly what the runtime wrote before each format owned its prefill (its forced_call_prefill switch).
PREFILLS = [
    ("hermes", None, '<tool_call>\n{"name": "'),
    ("hermes", "get_weather", '<tool_call>\n{"name": "get_weather", "arguments": '),
    ("hermes", 'a"b', '<tool_call>\n{"name": "a\\"b", "arguments": '),
    ("qwen3_coder", None, "<tool_call>\n<function="),
    ("qwen3_coder", "get_weather", "<tool_call>\n<function=get_weather>\n"),
    ("mistral", None, "[TOOL_CALLS]"),
    ("mistral", "get_weather", "[TOOL_CALLS]get_weather[ARGS]"),
    ("llama3_json", None, '{"name": "'),
    ("llama3_json", "get_weather", '{"name": "get_weather", "parameters": '),
    ("none", None, ""),
    ("none", "get_weather", ""),
    ("gemma", "get_weather", ""),
]


@pytest.mark.parametrize(("fmt", "name", "prefill"), PREFILLS)
def test_forced_prefill_per_format(fmt, name, prefill):
    assert forced_call_prefill(fmt, "required", name) == prefill
    assert get_tool_format(fmt).forced_prefill("required", name) == prefill
    assert forced_call_prefill(fmt, "auto", name) == forced_call_prefill(fmt, "none", name) == ""


# After a named prefill the model writes only the arguments; the format's parser reads the whole.
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
FORCED_RESTS = {
    "hermes": '{"city": "Rome"}}\n</tool_call>',
    "qwen3_coder": "<parameter=city>\nRome\n</parameter>\n</function>\n</tool_call>",
    "mistral": '{"city": "Rome"}',
    "llama3_json": '{"city": "Rome"}}',
}


@pytest.mark.parametrize("fmt", sorted(FORCED_RESTS))
def test_forced_prefill_is_read_back_as_the_call(fmt):
    text = forced_call_prefill(fmt, "required", "get_weather") + FORCED_RESTS[fmt]
    r = parse(fmt, text, tools=[WEATHER_TOOL])
    assert calls(r) == [("get_weather", {"city": "Rome"})] and r["content"] == ""


def test_registry_is_the_one_list_of_formats():
    names = [f.name for f in FORMATS]
    assert names == ["qwen3_coder", "hermes", "mistral", "llama3_json", "none"]  # detection order
    for f in FORMATS:
        assert get_tool_format(f.name) is f
        assert type(make_tool_parser(f.name)) is f.parser
        assert type(ChatOutputParser(f.name).tools) is f.parser
    assert get_tool_format(None).name == get_tool_format("gemma").name == "none"


def test_every_catalog_format_resolves():
    known = {f.name for f in FORMATS}
    used = {m.tool_call_format for m in load_catalog()}
    assert known - {"none"} <= used, "every parser serves some catalog model"
    for name in used - known:  # named in the catalog, not parsed by us (gemma): plain text
        assert get_tool_format(name).parser is PlainParser
        assert isinstance(make_tool_parser(name), PlainParser)


def test_control_markers_cover_every_format_and_thinking():
    # The runtime's own list before the formats owned their markers: same texts, same order.
    tool_markers = ("<tool_call>", "</tool_call>", "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "<|python_tag|>")
    assert (*tool_markers, "<think>", "</think>") == CONTROL_MARKERS
    assert all(m in CONTROL_MARKERS for f in FORMATS for m in f.markers)
