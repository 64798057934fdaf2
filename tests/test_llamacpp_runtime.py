"""LlamaCppRuntime: the Runtime interface over our engine.

The slow tests run the real Qwen2.5-Coder-0.5B through the real engine: a clear
tool-use prompt comes back as an OpenAI tool call with parseable arguments, a
plain chat as content. The fast ones drive the runtime's own logic (BOS handling,
control-token markers, finish reasons, forced calls, closing) with a scripted
stand-in for the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from runtimes.base import (
    ChatRequest,
    CompletionRequest,
    ContextLengthExceeded,
    Event,
    InvalidRequest,
    Sampling,
    Usage,
)
from runtimes.llamacpp.runtime import LlamaCppRuntime, tool_choice_mode
from runtimes.toolcalls import forced_call_prefill

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name"}},
            "required": ["city"],
        },
    },
}


def collect(runtime_call) -> list[Event]:
    async def go():
        return [ev async for ev in runtime_call]

    return asyncio.run(go())


def assemble(events: list[Event]) -> dict:
    content = "".join(e.content for e in events)
    reasoning = "".join(e.reasoning for e in events)
    calls: dict[int, dict] = {}
    for e in events:
        for d in e.tool_calls:
            c = calls.setdefault(d.index, {"id": d.id, "name": d.name, "arguments": ""})
            c["arguments"] += d.arguments
    final = events[-1]
    assert all(e.finish_reason is None for e in events[:-1])
    return {"content": content, "reasoning": reasoning, "calls": list(calls.values()),
            "finish": final.finish_reason, "usage": final.usage}


# -- a scripted engine: the runtime's logic without a model ---------------------------------


@dataclass
class _Step:
    text: str
    token_ids: list[int]
    finish_reason: str | None = None
    usage: Usage | None = None
    logprobs: list = field(default_factory=list)
    prompt: Usage | None = None


@dataclass
class FakeEngine:
    """Tokens are characters (ord), except a few "special" tokens with ids >= 1000."""

    template: str
    script: list[str] = field(default_factory=list)
    special: dict[str, int] = field(default_factory=dict)
    hidden: set[int] = field(default_factory=set)  # special ids that detokenize to ""
    bos_text: str = "<s>"
    eos_text: str = "</s>"
    n_ctx: int = 4096
    n_slots: int = 1
    prompts: list[tuple[str, bool]] = field(default_factory=list)
    closed_streams: int = 0

    @property
    def metadata(self) -> dict[str, str]:
        return {"tokenizer.chat_template": self.template} if self.template else {}

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        self.prompts.append((text, add_special))
        if text in self.special:
            return [self.special[text]]
        return ([1] if add_special else []) + [ord(c) for c in text]

    def detokenize(self, tokens: list[int]) -> str:
        inverse = {v: k for k, v in self.special.items()}
        return "".join("" if t in self.hidden else inverse.get(t, chr(t) if t > 1 else "") for t in tokens)

    def arriving(self):
        return contextlib.nullcontext()

    async def generate(self, prompt: list[int], sampling: Sampling, arrival=None) -> AsyncIterator[_Step]:
        if len(prompt) > self.n_ctx:
            raise ContextLengthExceeded(len(prompt), self.n_ctx)
        try:
            for piece in self.script:
                tok = self.special.get(piece)
                if tok is not None:
                    yield _Step("" if tok in self.hidden else piece, [tok])
                else:
                    yield _Step(piece, [ord(c) for c in piece])
            yield _Step("", [2], "stop", Usage(prompt_tokens=len(prompt), completion_tokens=len(self.script)))
        finally:
            self.closed_streams += 1

    def stats(self):
        from runtimes.base import RuntimeStats

        return RuntimeStats(slots_total=1, loaded=True)

    def close(self) -> None:
        pass


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if tools %}<tool_call>{% endif %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def fake_runtime(script: list[str], template: str = CHATML, fmt: str | None = "hermes", **kw):
    return LlamaCppRuntime(FakeEngine(template, script, **kw), model_id="fake", tool_format=fmt)


def chat(rt: LlamaCppRuntime, content: str = "hi", **kw) -> dict:
    msgs = [{"role": "user", "content": content}]
    req = ChatRequest(model="fake", messages=msgs, sampling=Sampling(), **kw)
    return assemble(collect(rt.chat(req)))


def test_tool_call_sets_finish_reason_and_passes_usage():
    rt = fake_runtime(["Sure.", "<tool_call>", '\n{"name": "get_weather", ', '"arguments": {"city": "Oslo"}}',
                       "\n</tool_call>"])
    r = chat(rt, tools=[WEATHER], tool_choice="auto")
    assert r["content"] == "Sure."
    got = [(c["name"], json.loads(c["arguments"])) for c in r["calls"]]
    assert got == [("get_weather", {"city": "Oslo"})]
    assert r["calls"][0]["id"].startswith("call_")
    assert r["finish"] == "tool_calls"
    assert r["usage"].completion_tokens == 5


def test_tool_choice_none_parses_nothing():
    text = '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>'
    r = chat(fake_runtime([text]), tools=[WEATHER], tool_choice="none")
    assert r["content"] == text and r["calls"] == [] and r["finish"] == "stop"


def test_forced_function_is_prefilled_and_parsed():
    rt = fake_runtime(['{"city": "Rome"}}', "\n</tool_call>"])
    req = ChatRequest(model="fake", messages=[{"role": "user", "content": "x"}], sampling=Sampling(),
                      tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    prompt, _, prefill = rt.prepare_chat(req)
    assert prompt.endswith('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": ')
    r = assemble(collect(rt.chat(req)))
    assert r["calls"] == [{"id": r["calls"][0]["id"], "name": "get_weather", "arguments": '{"city":"Rome"}'}]
    assert r["finish"] == "tool_calls" and prefill


def test_tool_choice_shapes():
    assert tool_choice_mode(None) == ("auto", None)
    assert tool_choice_mode("none") == ("none", None)
    assert tool_choice_mode("required") == ("required", None)
    assert tool_choice_mode({"type": "any"}) == ("required", None)  # Anthropic
    assert tool_choice_mode({"type": "tool", "name": "f"}) == ("required", "f")
    assert tool_choice_mode({"type": "function", "function": {"name": "f"}}) == ("required", "f")
    assert forced_call_prefill("mistral", "required", "f") == "[TOOL_CALLS]f[ARGS]"
    assert forced_call_prefill("none", "required", "f") == ""
    with pytest.raises(InvalidRequest):
        tool_choice_mode(42)


def test_hidden_control_tokens_reach_the_parser():
    # Mistral's [TOOL_CALLS] is a control token: the engine renders it as "".
    tmpl = "{{ bos_token }}{% for m in messages %}[INST]{{ m.content }}[/INST]{% endfor %}[TOOL_CALLS]"
    rt = fake_runtime(["[TOOL_CALLS]", "get_weather", "[ARGS]", '{"city": "Lima"}'], template=tmpl,
                      fmt="mistral", special={"[TOOL_CALLS]": 1001, "[ARGS]": 1002}, hidden={1001, 1002})
    r = chat(rt, tools=[WEATHER])
    assert [(c["name"], c["arguments"]) for c in r["calls"]] == [("get_weather", '{"city":"Lima"}')]
    assert len(r["calls"][0]["id"]) == 9


def test_bos_is_not_doubled():
    tmpl = "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"
    with_bos = fake_runtime(["ok"], template=tmpl)
    chat(with_bos)
    assert with_bos.engine.prompts[-1] == ("<s>hi", False)
    without = fake_runtime(["ok"])
    chat(without)
    assert without.engine.prompts[-1][1] is True


def test_thinking_template_splits_reasoning():
    tmpl = CHATML + "{% if enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    rt = fake_runtime(["<think>", "\nhmm\n", "</think>", "\n\nHello"], template=tmpl)
    r = chat(rt)
    assert r["reasoning"] == "hmm" and r["content"] == "Hello"


def test_prompt_that_opens_thinking():
    # Templates like DeepSeek-R1's / QwQ's end the generation prompt with "<think>\n".
    rt = fake_runtime(["first, ", "plan</think>", "\n\nAnswer"], template=CHATML + "<think>\n")
    r = chat(rt)
    assert r["reasoning"] == "first, plan" and r["content"] == "Answer"


def test_template_error_is_raised_before_any_event():
    rt = fake_runtime(["x"], template="{{ raise_exception('no system role') }}")
    with pytest.raises(InvalidRequest, match="no system role"):
        chat(rt)


def test_context_length_error_comes_before_any_event():
    rt = fake_runtime(["x"], n_ctx=10)
    with pytest.raises(ContextLengthExceeded):
        chat(rt, content="a long message that does not fit")


def test_closing_the_stream_early_stops_the_generation():
    rt = fake_runtime(["a", "b", "c", "d"], fmt="none")

    async def go():
        req = ChatRequest(model="fake", messages=[{"role": "user", "content": "x"}], sampling=Sampling())
        stream = rt.chat(req)
        first = await anext(stream)
        await stream.aclose()  # the client went away
        return first

    assert asyncio.run(go()).content == "a"
    assert rt.engine.closed_streams == 1


def test_completion_is_raw_text_with_optional_echo():
    rt = fake_runtime([" world", "<tool_call>"], fmt="hermes")
    req = CompletionRequest(model="fake", prompt="Hello", sampling=Sampling(), echo=True)
    evs = collect(rt.complete(req))
    r = assemble(evs)
    assert r["content"] == "Hello world<tool_call>" and r["finish"] == "stop"
    assert rt.engine.prompts[-1] == ("Hello", True)


def test_fallback_template_when_the_gguf_has_none():
    rt = fake_runtime(['<tool_call>{"name": "get_weather", "arguments": {"city": "Bern"}}</tool_call>'],
                      template="", fmt=None)
    assert rt.template.is_fallback and rt.tool_format == "hermes"
    assert chat(rt, tools=[WEATHER])["finish"] == "tool_calls"


# -- the real model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_rt(qwen_path):
    from quantization.catalog import load_catalog
    from runtimes.llamacpp.engine import EngineConfig

    spec = load_catalog().get("qwen2.5-coder-0.5b-instruct")
    rt = LlamaCppRuntime.load(spec, EngineConfig(model_path=qwen_path, n_ctx=4096, n_slots=2))
    yield rt
    asyncio.run(rt.close())


def real_chat(rt, messages, **kw) -> dict:
    sampling = Sampling(temperature=0.0, max_tokens=kw.pop("max_tokens", 64))
    return assemble(collect(rt.chat(ChatRequest(model=rt.id, messages=messages, sampling=sampling, **kw))))


@pytest.mark.slow
def test_qwen_tool_call_through_the_runtime(qwen_rt):
    assert qwen_rt.id == "qwen2.5-coder-0.5b-instruct" and qwen_rt.tool_format == "hermes"
    msgs = [
        {"role": "system", "content": "You are a helpful assistant. Use the tools when they help."},
        {"role": "user", "content": "What is the weather like in Paris right now? Use the get_weather tool."},
    ]
    r = real_chat(qwen_rt, msgs, tools=[WEATHER], tool_choice="auto")
    assert r["finish"] == "tool_calls", r
    assert len(r["calls"]) >= 1
    call = r["calls"][0]
    assert call["name"] == "get_weather" and call["id"].startswith("call_")
    args = json.loads(call["arguments"])
    assert args["city"].lower().startswith("paris")
    assert r["usage"].prompt_tokens > 100 and r["usage"].completion_tokens > 0


@pytest.mark.slow
def test_qwen_plain_chat_is_content(qwen_rt):
    r = real_chat(qwen_rt, [{"role": "user", "content": "Say hello in French, in one short sentence."}])
    assert r["finish"] in ("stop", "length") and r["calls"] == []
    assert r["content"].strip() and "bonjour" in r["content"].lower()


@pytest.mark.slow
def test_qwen_forced_tool_choice(qwen_rt):
    msgs = [{"role": "user", "content": "I am going to Berlin tomorrow."}]
    forced = {"type": "function", "function": {"name": "get_weather"}}
    r = real_chat(qwen_rt, msgs, tools=[WEATHER], tool_choice=forced)
    assert r["finish"] == "tool_calls" and r["calls"][0]["name"] == "get_weather"
    assert isinstance(json.loads(r["calls"][0]["arguments"]), dict)


@pytest.mark.slow
def test_chats_sent_together_start_decoding_in_the_same_step(qwen_rt):
    """The runtime announces each chat before rendering and tokenizing it, so the idle
    engine prefills both prompts in one batch (llama-server's behaviour for concurrent
    prompts) and both first tokens come from that step."""
    counters = qwen_rt.engine._sched.counters

    async def both():
        reqs = [
            ChatRequest(model=qwen_rt.id, messages=[{"role": "user", "content": f"Name a colour ({i})."}],
                        sampling=Sampling(temperature=0.0, max_tokens=1))
            for i in range(2)
        ]

        async def one(r):
            return [ev async for ev in qwen_rt.chat(r)]

        return await asyncio.gather(*(one(r) for r in reqs))

    before = counters.decode_steps
    results = asyncio.run(both())
    assert [assemble(evs)["usage"].completion_tokens for evs in results] == [1, 1]
    assert counters.decode_steps - before == 1


@pytest.mark.slow
def test_qwen_completion_and_stats(qwen_rt):
    evs = collect(qwen_rt.complete(CompletionRequest(
        model=qwen_rt.id, prompt="def fibonacci(n):", sampling=Sampling(temperature=0.0, max_tokens=12))))
    r = assemble(evs)
    assert r["content"] and r["finish"] == "length" and r["usage"].completion_tokens == 12
    st = qwen_rt.stats()
    assert st.slots_total == 2 and st.loaded and qwen_rt.n_ctx == 4096
