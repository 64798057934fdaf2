"""The edit workload: a coding agent asks for a small change and wants the whole file back.

Why this workload: an agent that rewrites a file it has in its context produces output that
is mostly a copy of its prompt, which is where n-gram speculative decoding pays (issue 16).
Each case is one request, written for the bench (`edits/cases.json`, sources in
`edits/files/`): a 100-300 line file, a small requested change, and the instruction to reply
with the whole updated file. Real generation lengths: no `ignore_eos`, `max_tokens` large
enough for the file, temperature 0. A sample keeps the answer's text and its hash, so a
report can check that two targets (speculation on and off) answered identically, and the
drafted/accepted tokens the target reports (`spec_metrics`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from appliance.bench import spec_metrics
from appliance.bench.client import chat
from appliance.bench.sample import Sample
from appliance.bench.settings import Settings, TargetState

EDITS_DIR = Path(__file__).parent / "edits"


@dataclass(frozen=True)
class EditCase:
    name: str
    path: str  # where the file lives in the agent's (imagined) repository
    language: str  # the code fence's tag
    request: str
    source: str  # the file's text
    system: str  # the agent's system prompt

    @property
    def lines(self) -> int:
        return len(self.source.splitlines())


def load_edits(select: list[str] | None = None, folder: Path = EDITS_DIR) -> list[EditCase]:
    """The cases in `folder/cases.json`, all or those named in `select` (in its order);
    a single number N in `select` means the first N."""
    data = json.loads((folder / "cases.json").read_text())
    cases = [
        EditCase(
            name=c["name"],
            path=c["path"],
            language=c["language"],
            request=c["request"],
            source=(folder / "files" / c["source"]).read_text(),
            system=data["system"],
        )
        for c in data["cases"]
    ]
    if not select:
        return cases
    if len(select) == 1 and select[0].isdigit():
        return cases[: int(select[0])]
    by_name = {c.name: c for c in cases}
    missing = [n for n in select if n not in by_name]
    if missing:
        raise ValueError(f"unknown edit case(s) {missing}; known: {', '.join(by_name)}")
    return [by_name[n] for n in select]


def messages(case: EditCase, tag: str | None = None) -> list[dict[str, str]]:
    """What the agent sends: its system prompt, then the file and the change in one user turn.
    `tag` (a new one per repetition, the same for every target) starts the user turn so no
    server finds the file already in its prefix cache from an earlier repetition."""
    user = (
        f"Here is `{case.path}`:\n\n```{case.language}\n{case.source.rstrip()}\n```\n\n"
        f"{case.request}\n\nReply with the whole updated file."
    )
    if tag:
        user = f"{tag}\n{user}"
    return [{"role": "system", "content": case.system}, {"role": "user", "content": user}]


def request_body(state: TargetState, settings: Settings, case: EditCase, tag: str | None) -> dict[str, Any]:
    """Never `ignore_eos`: the answer ends where the model ends it, as an agent's would."""
    body: dict[str, Any] = {
        "model": state.model,
        "messages": messages(case, tag),
        "max_tokens": settings.edit_max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if settings.temperature is not None:
        body["temperature"] = settings.temperature
    return body


def output_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _tag(settings: Settings, rep: int) -> str | None:
    return f"[edit session {settings.run_id}-r{rep}]" if settings.edit_cold else None


async def run_edit(
    client: httpx.AsyncClient, state: TargetState, settings: Settings, sample: Sample, case: EditCase
) -> None:
    """One edit request; fills the sample's metrics (time, tokens, output hash, drafts)."""
    metrics_on = state.info.get("metrics_endpoint", True)
    before = await spec_metrics.read_counters(client, state.target, state.model) if metrics_on else None
    body = request_body(state, settings, case, _tag(settings, sample.rep))
    res = await chat(client, state.target, body, settings.timeout_s, keep_text=True)
    after = await spec_metrics.read_counters(client, state.target, state.model) if metrics_on else None
    if metrics_on and before is None and after is None:
        state.info["metrics_endpoint"] = False  # no need to ask again every request
    spec = spec_metrics.request_counts(before, after, res.timings)
    text = res.text or ""
    sample.metrics = {
        **{k: v for k, v in res.metrics().items() if k not in ("ok", "error", "status")},
        "file_lines": case.lines,
        "output_sha256": output_hash(text),
        "output_chars": len(text),
        "truncated": res.finish_reason == "length",
        "spec_drafted": spec.drafted if spec else None,
        "spec_accepted": spec.accepted if spec else None,
        "spec_acceptance": spec.acceptance if spec else None,
        "spec_source": spec.source if spec else None,
    }
    raw = res.raw()
    raw.pop("token_times", None)  # thousands per answer; the ITL percentiles are in the metrics
    sample.raw = {"request": raw}
    if not res.ok:
        sample.status, sample.error = "error", res.error
