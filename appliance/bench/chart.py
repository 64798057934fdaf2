"""One PNG per run: each target a series, so the comparison is visible at a glance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

Panel = tuple[
    str, str, str, list[tuple[str, list[Any], list[float | None], list[float | None], list[float | None]]]
]


def _value(entry: dict[str, Any] | None, metric: str) -> tuple[float | None, float | None, float | None]:
    s = ((entry or {}).get("metrics") or {}).get(metric) or {}
    return s.get("median"), s.get("min"), s.get("max")


def _sweep_panel(summary, targets, workload, prefix, metric, title, xlabel, ylabel) -> Panel | None:
    series = []
    for t in targets:
        cases = summary.get(t, {}).get(workload, {})
        points = sorted(
            (int(case.split("=", 1)[1]), *_value(entry, metric))
            for case, entry in cases.items()
            if case.startswith(prefix)
        )
        if any(p[1] is not None for p in points):
            xs, med, lo, hi = zip(*points, strict=True)
            series.append((t, list(xs), list(med), list(lo), list(hi)))
    return (title, xlabel, ylabel, series) if series else None


def _trace_panels(summary, targets) -> list[Panel]:
    cases = sorted({c for t in targets for c in summary.get(t, {}).get("trace", {})})
    panels: list[Panel] = []
    for case in cases:
        series = []
        for t in targets:
            steps = summary.get(t, {}).get("trace", {}).get(case, {}).get("steps", {})
            if not steps:
                continue
            labels = list(steps)
            vals = [steps[label].get("ttft_s") or {} for label in labels]
            series.append(
                (
                    t,
                    labels,
                    [v.get("median") for v in vals],
                    [v.get("min") for v in vals],
                    [v.get("max") for v in vals],
                )
            )
        if series:
            panels.append((f"TTFT per request: {case.split('=', 1)[1]}", "request", "TTFT (s)", series))
    return panels


def _edit_panel(summary, targets) -> Panel | None:
    """Time per edit request, each target a series (the requests as categories)."""
    cases = [c for t in targets for c in summary.get(t, {}).get("edit", {})]
    cases = list(dict.fromkeys(cases))
    series = []
    for t in targets:
        entries = summary.get(t, {}).get("edit", {})
        if not entries:
            continue
        vals = [_value(entries.get(c), "total_s") for c in cases]
        names = [c.split("=", 1)[1] for c in cases]
        series.append((t, names, [v[0] for v in vals], [v[1] for v in vals], [v[2] for v in vals]))
    return ("Edit requests: time per request", "request", "total (s)", series) if series else None


def panels(results: dict[str, Any]) -> list[Panel]:
    summary = results["summary"]
    targets = list(results["targets"])
    out: list[Panel | None] = [
        _sweep_panel(
            summary,
            targets,
            "concurrency",
            "streams=",
            "aggregate_decode_tok_s",
            "Aggregate decode vs concurrency",
            "concurrent streams",
            "tok/s",
        ),
        _sweep_panel(
            summary,
            targets,
            "decode",
            "prompt=",
            "decode_tok_s",
            "Decode speed vs prompt size",
            "prompt tokens (target)",
            "tok/s",
        ),
        _sweep_panel(
            summary,
            targets,
            "prefill",
            "prompt=",
            "prefill_tok_s",
            "Prefill speed vs prompt size",
            "prompt tokens (target)",
            "tok/s",
        ),
    ]
    out.append(_edit_panel(summary, targets))
    return [p for p in out if p] + _trace_panels(summary, targets)


def write_chart(results: dict[str, Any], path: str | Path) -> Path | None:
    """Write the PNG; None when the run has nothing to plot (every target failed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ps = panels(results)
    if not ps:
        return None
    fig, axes = plt.subplots(len(ps), 1, figsize=(9, 3.6 * len(ps)), squeeze=False)
    for ax, (title, xlabel, ylabel, series) in zip(axes[:, 0], ps, strict=True):
        categorical = any(isinstance(x, str) for _, xs, *_ in series for x in xs)
        for name, xs, med, lo, hi in series:
            pos = list(range(len(xs))) if categorical else xs
            yerr = [
                [(m - a) if m is not None and a is not None else 0 for m, a in zip(med, lo, strict=True)],
                [(b - m) if m is not None and b is not None else 0 for m, b in zip(med, hi, strict=True)],
            ]
            y = [float("nan") if m is None else m for m in med]
            ax.errorbar(pos, y, yerr=yerr, marker="o", capsize=3, label=name)
            if categorical:
                ax.set_xticks(pos, xs, rotation=45, ha="right", fontsize=8)
        if not categorical:
            ticks = sorted({x for _, xs, *_ in series for x in xs})
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"appliance bench {results.get('created', '')}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
