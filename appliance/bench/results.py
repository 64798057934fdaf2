"""The results file: settings, machine, targets, every raw sample, and their summary.

Raw samples are kept so a later reader can recompute anything; the summary (median, min,
max per metric over the repetitions) is what tables, charts and `compare` read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance.bench.sample import Sample
from appliance.bench.stats import summarize

SCHEMA = "appliance-bench/1"

# The figure each workload is judged by, and whether higher is better.
HEADLINE = {
    "decode": ("decode_tok_s", True),
    "prefill": ("prefill_tok_s", True),
    "concurrency": ("aggregate_decode_tok_s", True),
    "trace": ("total_s", False),
    "session": ("warm_over_cold", False),
    "restart": ("warm_over_cold", False),
    "edit": ("total_s", False),
}

HIGHER_IS_BETTER = {
    "decode_tok_s": True,
    "prefill_tok_s": True,
    "aggregate_tok_s": True,
    "aggregate_decode_tok_s": True,
    "per_stream_decode_tok_s": True,
    "per_stream_decode_min_tok_s": True,
    "streams_served": True,
    "all_served": True,
    "cached_tokens": True,
    "ttft_s": False,
    "ttft_max_s": False,
    "total_s": False,
    "ttft_sum_s": False,
    "itl_p50_s": False,
    "itl_p95_s": False,
    "wall_s": False,
    "cold_ttft_s": False,
    "warm_ttft_s": False,
    "warm_over_cold": False,
    "warm_cached_tokens": True,
    "spec_accepted": True,
    "spec_acceptance": True,
}


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, bool | int | float):
            out[k] = float(v)
    return out


def summarize_samples(samples: Iterable[Sample | dict[str, Any]]) -> dict[str, Any]:
    """summary[target][workload][case] = counts, errors, and median/min/max per metric."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for s in samples:
        d = s.to_json() if isinstance(s, Sample) else s
        if d["rep"] < 0:
            continue
        groups.setdefault((d["target"], d["workload"], d["case"]), []).append(d)
    out: dict[str, Any] = {}
    for (target, workload, case), group in groups.items():
        ok = [g for g in group if g["status"] == "ok"]
        values: dict[str, list[float]] = {}
        for g in ok:
            for k, v in _numeric(g["metrics"]).items():
                values.setdefault(k, []).append(v)
        entry: dict[str, Any] = {
            "n_ok": len(ok),
            "n_error": sum(1 for g in group if g["status"] == "error"),
            "n_skipped": sum(1 for g in group if g["status"] == "skipped"),
            "errors": sorted({g["error"] for g in group if g["error"]}),
            "metrics": {k: summarize(v) for k, v in values.items()},
        }
        if ok and "tokens_source" in ok[0]["metrics"]:
            entry["tokens_source"] = sorted({g["metrics"].get("tokens_source") for g in ok})
        if workload == "trace":
            entry["steps"] = _step_summary(ok)
        out.setdefault(target, {}).setdefault(workload, {})[case] = entry
    return out


def _step_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    steps: dict[str, dict[str, list[float | None]]] = {}
    for s in samples:
        for key, field in (
            ("ttft_s", "step_ttft_s"),
            ("total_s", "step_total_s"),
            ("cached_tokens", "step_cached_tokens"),
        ):
            for label, v in (s["metrics"].get(field) or {}).items():
                steps.setdefault(label, {}).setdefault(key, []).append(v)
    return {label: {k: summarize(v) for k, v in d.items()} for label, d in steps.items()}


def build(
    *,
    command: list[str],
    settings: dict[str, Any],
    machine: dict[str, Any],
    targets: dict[str, Any],
    samples: list[Sample],
    ceiling: dict[str, Any] | None = None,
    created: datetime | None = None,
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "created": (created or datetime.now(UTC)).isoformat(timespec="seconds"),
        "command": command,
        "settings": settings,
        "machine": machine,
        "ceiling": ceiling,
        "targets": targets,
        "summary": summarize_samples(samples),
        "samples": [s.to_json() for s in samples],
    }


def result_path(out_dir: str | Path, created: datetime, run_id: str) -> Path:
    return Path(out_dir) / f"bench-{created.strftime('%Y%m%dT%H%M%SZ')}-{run_id}.json"


def write(results: dict[str, Any], path: Path) -> Path:
    """Write atomically (a reader never sees half a file, even mid-run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    tmp.replace(path)
    return path


def load(path: str | Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not an appliance bench results file (schema {data.get('schema')!r})")
    return data
