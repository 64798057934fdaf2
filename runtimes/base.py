"""The one interface between the API and anything that turns a request into tokens.

The API validates a client's request (OpenAI or Anthropic dialect) into a
dialect-neutral `ChatRequest` / `CompletionRequest`; a runtime (our llama.cpp
engine, a vLLM child, a cloud upstream) answers with a stream of `Event`s; the API
turns those back into the client's dialect. Runtimes never see HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

FinishReason = Literal["stop", "length", "tool_calls", "cancelled", "error"]


@dataclass
class Sampling:
    """Per-request sampling options; none of them needs a model reload."""

    max_tokens: int | None = None  # None: up to what fits in the context
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logit_bias: dict[int, float] = field(default_factory=dict)
    # Structured output: a JSON schema (dict) or {} for any JSON object; None: free text.
    json_schema: dict[str, Any] | None = None
    # Never sample an end-of-generation token: every answer runs to max_tokens, as benchmarks
    # need to compare servers on equal work (llama-server's and vLLM's `ignore_eos`).
    ignore_eos: bool = False
    # A GBNF grammar the answer must follow (llama-server's `grammar`); only our engine takes it.
    grammar: str | None = None
    # Log-probabilities of each answer token, with this many alternatives (0-20); None: off.
    logprobs: int | None = None

    @property
    def greedy(self) -> bool:
        """Temperature 0: the most likely token each step, so one answer per prompt."""
        return self.temperature <= 0.0


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]  # OpenAI message dicts, already validated
    sampling: Sampling
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    # Qwen3 and similar: whether to let the model think (chat template flag).
    enable_thinking: bool | None = None
    request_id: str = ""
    n: int = 1  # answers wanted; the API serves n > 1 as n requests (appliance/api/choices.py)


@dataclass
class CompletionRequest:
    model: str
    prompt: str
    sampling: Sampling
    echo: bool = False
    request_id: str = ""


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from the prefix cache


@dataclass
class ToolCallDelta:
    """A piece of one tool call; `index` groups pieces, `id`/`name` come once, first."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class TopLogprob:
    """One candidate token: its text, log-probability and UTF-8 bytes (OpenAI's shape)."""

    token: str
    logprob: float
    bytes: list[int]


@dataclass
class TokenLogprob(TopLogprob):
    """A generated token's log-probability and the most likely alternatives at its position."""

    top_logprobs: list[TopLogprob] = field(default_factory=list)


@dataclass
class Event:
    """One step of a response stream. Fields left empty mean nothing new of that kind."""

    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    usage: Usage | None = None  # set on the final event
    # Tokens generated since the previous event, when the request asked for logprobs.
    logprobs: list[TokenLogprob] = field(default_factory=list)
    # The prompt's counts (prompt_tokens, cached_tokens), on the first event where the runtime
    # knows them up front: Anthropic's message_start reports them before any text.
    prompt_usage: Usage | None = None
    choice: int = 0  # which of the request's `n` answers this event belongs to


class RuntimeError_(Exception):
    """Base of the errors a runtime reports; the API maps each to its HTTP status."""

    status = 500
    code = "runtime_error"
    type = "server_error"


class ContextLengthExceeded(RuntimeError_):
    status = 400
    code = "context_length_exceeded"
    type = "invalid_request_error"

    def __init__(self, prompt_tokens: int, n_ctx: int, message: str | None = None):
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx
        super().__init__(
            message
            or f"This model's context is {n_ctx} tokens; your prompt has {prompt_tokens} tokens "
            f"(at least one token must be left for the answer). Shorten the prompt; it was not truncated."
        )


class Overloaded(RuntimeError_):
    status = 429
    code = "rate_limit_exceeded"
    type = "rate_limit_error"

    def __init__(self, retry_after_s: float, message: str = "all slots are busy and the queue is full"):
        self.retry_after_s = retry_after_s
        super().__init__(message)


class QueueTimeout(Overloaded):
    """A request waited longer than the engine's queue timeout without getting a slot: a
    clean 503 (with Retry-After) instead of a client that waits on forever."""

    status = 503
    code = "queue_timeout"
    type = "server_error"


class InvalidRequest(RuntimeError_):
    status = 400
    code = "invalid_request"
    type = "invalid_request_error"


class UpstreamError(RuntimeError_):
    """A server we forward to (cloud provider, vLLM child) failed or could not be reached.

    `upstream_status` is its HTTP status (None: no answer at all); `retryable` says whether
    trying again (same or another provider) may help, which is what the cloud pool branches on.
    """

    status = 502
    code = "upstream_error"
    type = "server_error"

    def __init__(self, message: str, *, upstream_status: int | None = None, retryable: bool = True):
        self.upstream_status = upstream_status
        self.retryable = retryable
        super().__init__(message)


class CloudUnavailable(RuntimeError_):
    """Every configured provider for a cloud model failed before its first token."""

    status = 503
    code = "cloud_unavailable"
    type = "server_error"

    def __init__(self, message: str, reason: str = "unavailable"):
        self.reason = reason  # short tag for the x-appliance-reason header: all-failed, cooling-down, ...
        super().__init__(message)


@dataclass
class RuntimeStats:
    """What /metrics and /health report about a runtime."""

    slots_total: int = 0
    slots_busy: int = 0
    queue_depth: int = 0
    loaded: bool = False
    # Speculative decoding, counters since load: draft tokens verified, and those accepted.
    spec_drafted_tokens: int = 0
    spec_accepted_tokens: int = 0


class Runtime(Protocol):
    """A loaded model, ready to answer. `id` is the catalog name it is served under.

    Implementations subclass it explicitly, so they inherit the defaults of its optional
    methods instead of callers probing for them.
    """

    id: str
    n_ctx: int

    def chat(self, req: ChatRequest) -> AsyncIterator[Event]: ...

    def complete(self, req: CompletionRequest) -> AsyncIterator[Event]: ...

    def stats(self) -> RuntimeStats: ...

    async def close(self) -> None: ...

    def count_prompt_tokens(self, req: ChatRequest) -> int | None:
        """The exact prompt length in tokens, as `chat` would send it; None where this process
        holds no tokenizer for the model (a vLLM child, a cloud model): callers then estimate."""
        return None

    def system_fingerprint(self) -> str | None:
        """OpenAI's `system_fingerprint`: changes when the build or the weights change, so a
        client can tell why answers to the same request differ. None where we cannot know."""
        return None
