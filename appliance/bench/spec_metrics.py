"""Speculative decoding counters of a target: drafted and accepted tokens for one request.

Why both sources: our server exposes Prometheus counters per model on `/metrics`
(`appliance_spec_drafted_tokens_total{model=...}`, `appliance_spec_accepted_tokens_total{...}`),
read before and after a request. llama-server's `/metrics` (with `--metrics`) has
`llamacpp:spec_decode_num_draft_tokens_total` and `..._accepted_tokens_total`, but it adds a
request's counts only when its slot is reset for the *next* request, so a before/after delta
lags by one request; its streamed answer's last chunk carries the request's own `timings`
(`draft_n`, `draft_n_accepted`, present once it drafted anything), which is exact. So: our
counters when the target has them, else llama-server's timings, else its lagging counters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx

from appliance.bench.targets import Target

APPLIANCE_DRAFTED = "appliance_spec_drafted_tokens_total"
APPLIANCE_ACCEPTED = "appliance_spec_accepted_tokens_total"
LLAMA_DRAFTED = "llamacpp:spec_decode_num_draft_tokens_total"
LLAMA_ACCEPTED = "llamacpp:spec_decode_num_accepted_tokens_total"

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class SpecCounters:
    """Drafted and accepted tokens (totals, or a request's share), and where they came from."""

    drafted: float
    accepted: float
    source: str  # "appliance", "llamacpp" (the /metrics families), or "timings"

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) for each sample line of a Prometheus text exposition."""
    out: list[tuple[str, dict[str, str], float]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(m.group(3) or "")}
        out.append((m.group(1), labels, value))
    return out


def _total(samples: list[tuple[str, dict[str, str], float]], name: str, model: str | None) -> float | None:
    """The series of `name` for `model`; when no series carries that model label, their sum."""
    series = [(labels, v) for n, labels, v in samples if n == name]
    if not series:
        return None
    mine = [v for labels, v in series if model is not None and labels.get("model") == model]
    return sum(mine) if mine else sum(v for _, v in series)


def counters_from(text: str, model: str | None) -> SpecCounters | None:
    """Our counters if the exposition has them, else llama-server's, else None."""
    samples = parse_prometheus(text)
    for drafted_name, accepted_name, source in (
        (APPLIANCE_DRAFTED, APPLIANCE_ACCEPTED, "appliance"),
        (LLAMA_DRAFTED, LLAMA_ACCEPTED, "llamacpp"),
    ):
        drafted = _total(samples, drafted_name, model)
        if drafted is not None:
            return SpecCounters(drafted, _total(samples, accepted_name, model) or 0.0, source)
    return None


async def read_counters(client: httpx.AsyncClient, target: Target, model: str | None) -> SpecCounters | None:
    """GET the target's /metrics; None when it has none (404, llama-server without --metrics)."""
    try:
        r = await client.get(target.root + "/metrics", headers=target.headers(), timeout=10.0)
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    return counters_from(r.text, model)


def from_timings(timings: dict[str, Any] | None) -> SpecCounters | None:
    """llama-server's per-request `timings` (no draft_n: nothing was drafted)."""
    if not timings:
        return None
    return SpecCounters(
        float(timings.get("draft_n") or 0), float(timings.get("draft_n_accepted") or 0), "timings"
    )


def request_counts(
    before: SpecCounters | None, after: SpecCounters | None, timings: dict[str, Any] | None
) -> SpecCounters | None:
    """One request's drafted/accepted tokens from the readings around it (module docstring)."""
    if before and after and before.source == after.source == "appliance":
        return SpecCounters(after.drafted - before.drafted, after.accepted - before.accepted, "appliance")
    exact = from_timings(timings)
    if exact is not None:
        return exact
    if before and after and before.source == after.source:
        return SpecCounters(after.drafted - before.drafted, after.accepted - before.accepted, after.source)
    return None
