"""`LlamaCppRuntime`: the Runtime interface on top of our llama.cpp engine.

The engine deals in tokens; this layer owns everything between an OpenAI-style
request and those tokens: the model's own chat template, BOS handling, the
tool-call / reasoning parser on the way back, and the finish reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

from runtimes.base import (
    ChatRequest,
    CompletionRequest,
    Event,
    InvalidRequest,
    Runtime,
    RuntimeStats,
    Sampling,
    TokenLogprob,
    Usage,
)
from runtimes.llamacpp.chat_template import ChatTemplate
from runtimes.llamacpp.engine import Engine, EngineConfig
from runtimes.llamacpp.policy import Arrival
from runtimes.toolcalls import CONTROL_MARKERS, ChatOutputParser, detect_tool_format, forced_call_prefill

log = logging.getLogger(__name__)

# Marker texts the parsers look for. Some are control tokens that the engine's
# detokenizer renders as "" (Mistral's [TOOL_CALLS], Llama's <|python_tag|>): when
# such a token is generated we put its text back so the parser sees it.
_MARKERS = CONTROL_MARKERS


TOKEN_MEMO_SIZE = 8  # prompts whose tokens are kept (one per in-flight agent turn is plenty)

class LlamaCppRuntime(Runtime):
    """One loaded GGUF model served by `Engine`; `id` is its catalog name."""

    def __init__(self, engine: Engine, *, model_id: str, tool_format: str | None = None):
        self.engine = engine
        self.id = model_id
        self.n_ctx = engine.n_ctx
        # The router's capacity check and chat() tokenize the same prompt: an agent's 30 KB
        # prompt costs tens of ms to tokenize, so the last few results are kept.
        self._tokens: OrderedDict[str, list[int]] = OrderedDict()
        source = engine.metadata.get("tokenizer.chat_template") or None
        self.template = ChatTemplate(
            source,
            bos_token=getattr(engine, "bos_text", ""),
            eos_token=getattr(engine, "eos_text", ""),
        )
        if tool_format in (None, "none"):
            tool_format = "hermes" if self.template.is_fallback else detect_tool_format(source)
        self.tool_format = tool_format
        self._markers = self._control_markers()
        self._fingerprint: str | None = None
        t = self.template
        log.info(
            "%s: chat template %s, tool calls %s, object arguments %s, thinking %s, polyfills %s",
            model_id, "fallback ChatML" if t.is_fallback else "from GGUF", tool_format, t.object_arguments,
            t.thinks, [k for k, on in (("short_ids", t.short_ids), ("merge_users", t.merge_users),
                                       ("no_system_role", not t.system_role)) if on] or "none",
        )

    @classmethod
    def load(cls, model_spec: Any, cfg: EngineConfig) -> LlamaCppRuntime:
        """Load the model (blocking: seconds to minutes); `model_spec` is a catalog ModelSpec or None."""
        engine = Engine(cfg)
        try:
            name = model_spec.name if model_spec is not None else Path(cfg.model_path).stem
            fmt = model_spec.tool_call_format if model_spec is not None else None
            return cls(engine, model_id=name, tool_format=fmt)
        except BaseException:
            engine.close()
            raise

    # -- Runtime interface ----------------------------------------------------------------

    async def chat(self, req: ChatRequest) -> AsyncIterator[Event]:
        with self.engine.arriving() as arrival:
            prompt, parser, prefill = self.prepare_chat(req)
            # Off the event loop: other streams keep flowing while a long prompt is tokenized.
            tokens = await asyncio.to_thread(self._tokenize_prompt, prompt)
            events = parser.feed(prefill) if prefill else []
            async for ev in self._stream(tokens, req.sampling, parser, events, arrival):
                yield ev

    async def complete(self, req: CompletionRequest) -> AsyncIterator[Event]:
        tokens = self.engine.tokenize(req.prompt, add_special=True, parse_special=True)
        events = [Event(content=req.prompt)] if req.echo and req.prompt else []
        async for ev in self._stream(tokens, req.sampling, None, events):
            yield ev

    def stats(self) -> RuntimeStats:
        return self.engine.stats()

    def system_fingerprint(self) -> str:
        """`fp_` + a short hash of the llama.cpp bindings' and our version and the model file
        (name and size: cheap, and a re-quantized or replaced file changes it)."""
        if self._fingerprint is None:
            path = Path(self.engine.model.path)
            parts = [_version("llama_cpp_python"), _version("appliance"), path.name, str(path.stat().st_size)]
            self._fingerprint = "fp_" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]
        return self._fingerprint

    def count_prompt_tokens(self, req: ChatRequest) -> int:
        """The exact prompt length in tokens, as `chat` would send it (the router's capacity check)."""
        prompt, _, _ = self.prepare_chat(req)
        return len(self._tokenize_prompt(prompt))

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.close)

    # -- the parts --------------------------------------------------------------------------

    def prepare_chat(self, req: ChatRequest) -> tuple[str, ChatOutputParser, str]:
        """Prompt text, the parser for the answer, and text the prompt already put in
        the answer's mouth (a forced tool call), which the parser reads first."""
        tools = req.tools or None
        mode, forced = tool_choice_mode(req.tool_choice)
        parse_tools = bool(tools) and mode != "none"
        prompt = self.template.render(
            req.messages, tools=tools, add_generation_prompt=True, enable_thinking=req.enable_thinking
        )
        thinks = self.template.thinks
        starts_inside = thinks and prompt.rstrip().endswith("<think>")
        prefill = forced_call_prefill(self.tool_format, mode, forced) if parse_tools else ""
        parser = ChatOutputParser(
            self.tool_format if parse_tools else "none",
            tools=tools,
            reasoning=thinks,
            starts_in_reasoning=starts_inside and not prefill,
        )
        return prompt + prefill, parser, prefill

    def _tokenize_prompt(self, prompt: str) -> list[int]:
        cached = self._tokens.get(prompt)
        if cached is None:
            # Templates that write {{ bos_token }} themselves must not get a second BOS.
            bos = self.template.bos_token
            has_bos = bool(bos) and prompt.startswith(bos)
            cached = self.engine.tokenize(prompt, add_special=not has_bos, parse_special=True)
            self._tokens[prompt] = cached
            while len(self._tokens) > TOKEN_MEMO_SIZE:
                self._tokens.popitem(last=False)
        return list(cached)

    async def _stream(
        self,
        tokens: list[int],
        sampling: Sampling,
        parser: ChatOutputParser | None,
        pending: list[Event],
        arrival: Arrival | None = None,
    ) -> AsyncIterator[Event]:
        finish: str | None = None
        usage: Usage | None = None
        n_out = 0
        # Logprobs ride on the next event out (text may be held back: stop strings, tool-call
        # markers); the prompt's counts ride on the very first one (Anthropic's message_start).
        logprobs: list[TokenLogprob] = []
        prompt: Usage | None = None
        first = True
        async with contextlib.aclosing(self.engine.generate(tokens, sampling, arrival)) as steps:
            # The first step is awaited before anything is yielded, so errors the engine
            # raises up front (context length, overload) reach the caller as exceptions.
            async for step in steps:
                n_out += len(step.token_ids)
                logprobs += step.logprobs
                prompt = prompt or step.prompt or step.usage
                text = self._restore_markers(step.text, step.token_ids) if parser else step.text
                if text:
                    pending.extend(parser.feed(text) if parser else [Event(content=text)])
                for ev in pending:
                    if first:
                        ev.prompt_usage, first = prompt, False
                    if logprobs:
                        ev.logprobs, logprobs = logprobs, []
                    yield ev
                pending = []
                if step.finish_reason is not None:
                    finish, usage = step.finish_reason, step.usage
                    break
        if parser is not None:
            for ev in parser.finish():
                if logprobs:
                    ev.logprobs, logprobs = logprobs, []
                yield ev
            if parser.has_calls and finish != "cancelled":
                finish = "tool_calls"
        yield Event(
            finish_reason=finish or "stop",  # type: ignore[arg-type]
            usage=usage or Usage(prompt_tokens=len(tokens), completion_tokens=n_out),
            logprobs=logprobs,
            prompt_usage=prompt if first else None,
        )

    def _control_markers(self) -> dict[int, str]:
        """Single-token markers the engine would detokenize to nothing."""
        out: dict[int, str] = {}
        for m in _MARKERS:
            try:
                ids = self.engine.tokenize(m, add_special=False, parse_special=True)
            except Exception:  # pragma: no cover - a tokenizer that rejects the text
                continue
            if len(ids) == 1 and self.engine.detokenize(ids) == "":
                out[ids[0]] = m
        return out

    def _restore_markers(self, text: str, token_ids: list[int]) -> str:
        if self._markers:
            for t in token_ids:
                if t in self._markers:
                    text += self._markers[t]
        return text


def _version(package: str) -> str:
    try:
        return pkg_metadata.version(package)
    except pkg_metadata.PackageNotFoundError:
        return "unknown"


def tool_choice_mode(tool_choice: Any) -> tuple[str, str | None]:
    """("none" | "auto" | "required", forced function name) from OpenAI's or Anthropic's shape."""
    if tool_choice is None:
        return "auto", None
    if isinstance(tool_choice, str):
        mode = {"none": "none", "required": "required", "any": "required"}.get(tool_choice, "auto")
        return mode, None
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else tool_choice.get("name")
        if isinstance(name, str) and name:
            return "required", name
        return tool_choice_mode(tool_choice.get("type"))
    raise InvalidRequest(f"unsupported tool_choice: {tool_choice!r}")
