"""One measurement: a workload case run once against one target."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sample:
    target: str
    workload: str
    case: str  # "prompt=1024", "streams=4", "trace=opencode-fixcalc"
    rep: int  # -1 for warm-up
    status: str = "ok"  # "ok", "error" or "skipped"
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)
