"""Run settings and per-target state shared by the workloads."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from appliance.bench.targets import Target

WORKLOADS = ("decode", "prefill", "concurrency", "trace", "session", "restart", "edit")


@dataclass
class Settings:
    workloads: list[str] = field(default_factory=lambda: ["decode", "concurrency", "trace"])
    prompt_sizes: list[int] = field(default_factory=lambda: [128, 1024, 4096, 8192])
    max_tokens: int = 128
    concurrency: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    concurrency_prompt: int = 128
    traces: list[str] = field(default_factory=lambda: ["synthetic"])
    trace_max_tokens: int | None = 32  # None: keep what the agent asked for
    trace_cold: bool = True  # tag each repetition as a new session
    session_fillers: int = 4  # requests between the cold and the warm session (evict the slots)
    edit_cases: list[str] | None = None  # edit workload: case names, or ["N"] for the first N; None: all
    edit_max_tokens: int = 4096  # room for the whole file; the model ends the answer itself
    edit_cold: bool = True  # tag each repetition so no prompt is found cached from the last one
    edit_reference: str | None = None  # the target whose outputs others are checked against
    repeat: int = 3
    warmup: bool = True
    timeout_s: float = 600.0
    ignore_eos: bool = True
    temperature: float | None = 0.0
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))

    def describe(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Calibration:
    """Prompt tokens = slope * words + overhead, fitted from the server's own usage."""

    slope: float = 1.35  # tokens per word when the server reports no usage
    overhead: float = 0.0
    measured: bool = False

    def words_for(self, tokens: int) -> int:
        return max(1, round((tokens - self.overhead) / self.slope))

    def tokens_for(self, words: int) -> int:
        return round(self.slope * words + self.overhead)


@dataclass
class TargetState:
    """What the bench learned about one target: its model, context, quirks, failures."""

    target: Target
    model: str | None = None
    error: str | None = None  # set: the target is out of the run (reported, others go on)
    warnings: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    calibration: Calibration = field(default_factory=Calibration)
    ignore_eos: bool = True
    n_ctx: int | None = None

    @property
    def alive(self) -> bool:
        return self.error is None
