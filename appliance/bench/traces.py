"""Agent traces: request bodies an agent really sent, replayed in order.

A folder holds one JSON body per request, sent in file-name order. An optional
`order.txt` lists the files instead, one step per line; names on the same line are sent
at the same time (an agent's title request goes out beside its first turn). Only `model`
and `max_tokens` are overridden; everything else is sent as the agent sent it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.bench import synthetic

Step = list[tuple[str, dict[str, Any]]]  # requests sent together: (label, body)


@dataclass
class Trace:
    name: str
    steps: list[Step]
    source: str  # folder path or "built-in"

    @property
    def n_requests(self) -> int:
        return sum(len(s) for s in self.steps)

    @property
    def labels(self) -> list[str]:
        return [label for step in self.steps for label, _ in step]


def load_folder(folder: str | Path) -> Trace:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"trace folder not found: {folder}")
    order = folder / "order.txt"
    if order.is_file():
        groups = [line.split() for line in order.read_text().splitlines() if line.strip()]
    else:
        groups = [[p.name] for p in sorted(folder.glob("*.json"))]
    if not groups:
        raise ValueError(f"no *.json request bodies in {folder}")
    steps = [[(Path(n).stem, json.loads((folder / n).read_text())) for n in group] for group in groups]
    return Trace(name=folder.name, steps=steps, source=str(folder))


def builtin(max_tokens: int = 32) -> Trace:
    return Trace(
        name="synthetic-agent", steps=synthetic.agent_trace(max_tokens=max_tokens), source="built-in"
    )


def load(spec: str, max_tokens: int = 32) -> Trace:
    """`synthetic` for the built-in trace, else a folder of request bodies."""
    return builtin(max_tokens) if spec == "synthetic" else load_folder(spec)


def _tag_first_message(messages: list[dict[str, Any]], tag: str) -> None:
    if not messages:
        return
    first = messages[0]
    content = first.get("content")
    if isinstance(content, str):
        first["content"] = f"{tag}\n{content}"
    elif isinstance(content, list):
        first["content"] = [{"type": "text", "text": tag}, *content]


def prepare(
    body: dict[str, Any],
    model: str,
    max_tokens: int | None,
    session_tag: str | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The body to send: model (and max_tokens, and `extra` fields) overridden, the rest untouched.

    `session_tag`, when given, is prepended to the first message so that each
    repetition is a new, cold session to every server's prompt cache (otherwise the
    second repetition would find the first one's prefix still cached).
    """
    out = copy.deepcopy(body)
    out["model"] = model
    if max_tokens is not None:
        key = "max_completion_tokens" if "max_completion_tokens" in out else "max_tokens"
        out[key] = max_tokens
    if session_tag:
        _tag_first_message(out.get("messages") or [], session_tag)
    out.update(extra or {})
    return out
