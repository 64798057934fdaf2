"""The console's bench panel: the runs `appliance bench` left in its results folder.

Each run is a `bench-*.json` (results.py's schema) with the PNG chart.py drew beside it.
The tables use bench's own column choice (report.COLUMNS) and the summary the run stored,
so the page shows the numbers bench printed, not a re-analysis. Parsed files are cached
by modification time: a results file can be megabytes of raw samples.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from appliance.bench import results as results_mod
from appliance.bench.report import COLUMNS

RUN_NAME = re.compile(r"^bench-[A-Za-z0-9_.-]+$")  # what result_path writes, minus the suffix
MAX_RUNS = 20

_cache: dict[Path, tuple[float, dict[str, Any] | None]] = {}


def runs(folder: Path, limit: int = MAX_RUNS) -> list[dict[str, Any]]:
    """The newest `limit` runs: when, the command, targets, tables per workload, chart or not."""
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("bench-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    out = []
    for path in files[:limit]:
        data = _load(path)
        if data is None:
            continue
        out.append({
            "name": path.stem,
            "created": data.get("created"),
            "command": " ".join(str(c) for c in data.get("command") or []),
            "targets": list(data.get("targets") or {}),
            "tables": tables(data.get("summary") or {}),
            "chart": path.with_suffix(".png").is_file(),
        })
    return out


def chart_path(folder: Path, name: str) -> Path | None:
    """The PNG of run `name`, if that names a run in `folder` (never a path outside it)."""
    if not RUN_NAME.match(name):
        return None
    path = folder / f"{name}.png"
    return path if path.is_file() else None


def tables(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One table per workload: a row per target and case, the medians of bench's columns."""
    out = []
    workloads = sorted({w for per_target in summary.values() for w in per_target})
    for workload in workloads:
        columns = COLUMNS.get(workload) or []
        rows = []
        for target, per_target in summary.items():
            for case, entry in (per_target.get(workload) or {}).items():
                metrics = entry.get("metrics") or {}
                values = [_median(metrics.get(metric), scale) for metric, _, scale in columns]
                rows.append({"target": target, "case": case, "values": values,
                             "ok": entry.get("n_ok", 0), "errors": entry.get("n_error", 0)})
        out.append({"workload": workload, "columns": [header for _, header, _ in columns], "rows": rows})
    return out


def _median(summary: dict[str, Any] | None, scale: float) -> float | None:
    value = (summary or {}).get("median")
    return None if value is None else round(float(value) * scale, 4)


def _load(path: Path) -> dict[str, Any] | None:
    """The parsed run, or None for a file that is not one (a half-written or foreign JSON)."""
    mtime = path.stat().st_mtime
    cached = _cache.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    try:
        data: dict[str, Any] | None = results_mod.load(path)
    except (ValueError, OSError):
        data = None
    _cache[path] = (mtime, data)
    return data
