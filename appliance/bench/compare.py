"""Ratios between targets, per workload: the form acceptance criteria are written in.

`compare A.json B.json` pairs same-named targets across two runs (or the only target of
each); `compare A.json --baseline NAME` divides every other target of one run by NAME.
Ratios are of medians, other / baseline; whether that is better depends on the metric.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from appliance.bench.report import fmt
from appliance.bench.results import HIGHER_IS_BETTER

COMPARED: dict[str, list[str]] = {
    "decode": ["decode_tok_s", "prefill_tok_s", "ttft_s", "itl_p50_s", "itl_p95_s"],
    "prefill": ["prefill_tok_s", "ttft_s"],
    "concurrency": [
        "aggregate_decode_tok_s",
        "aggregate_tok_s",
        "per_stream_decode_tok_s",
        "ttft_s",
        "streams_served",
    ],
    "trace": ["total_s", "ttft_sum_s", "cached_tokens"],
    "session": ["warm_ttft_s", "cold_ttft_s", "warm_over_cold"],
    "restart": ["warm_ttft_s", "cold_ttft_s", "warm_over_cold"],
    "edit": ["total_s", "ttft_s", "decode_tok_s", "completion_tokens"],
}


def _median(summary: dict[str, Any], target: str, workload: str, case: str, metric: str) -> float | None:
    entry = summary.get(target, {}).get(workload, {}).get(case) or {}
    return ((entry.get("metrics") or {}).get(metric) or {}).get("median")


def ratios(
    base: dict[str, Any], base_target: str, other: dict[str, Any], other_target: str
) -> list[dict[str, Any]]:
    """One row per (workload, case, metric) both sides measured."""
    rows = []
    for workload, metrics in COMPARED.items():
        cases = [
            c
            for c in base.get(base_target, {}).get(workload, {})
            if c in other.get(other_target, {}).get(workload, {})
        ]
        for case in cases:
            for metric in metrics:
                a = _median(base, base_target, workload, case, metric)
                b = _median(other, other_target, workload, case, metric)
                if a is None or b is None:
                    continue
                ratio = b / a if a else None
                better = None
                if ratio is not None and ratio != 1.0:
                    better = (ratio > 1.0) == HIGHER_IS_BETTER.get(metric, True)
                rows.append(
                    {
                        "workload": workload,
                        "case": case,
                        "metric": metric,
                        "baseline": base_target,
                        "target": other_target,
                        "baseline_value": a,
                        "value": b,
                        "ratio": ratio,
                        "better": better,
                    }
                )
    return rows


def pairs_across(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, str]]:
    names_a, names_b = list(a["targets"]), list(b["targets"])
    common = [n for n in names_a if n in names_b]
    if common:
        return [(n, n) for n in common]
    if len(names_a) == 1 and len(names_b) == 1:
        return [(names_a[0], names_b[0])]
    raise ValueError(f"no targets to pair: {names_a} vs {names_b} (name them alike)")


def compare_runs(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for ta, tb in pairs_across(a, b):
        rows += ratios(a["summary"], ta, b["summary"], tb)
    return rows


def compare_within(results: dict[str, Any], baseline: str | None = None) -> list[dict[str, Any]]:
    names = list(results["targets"])
    if not names:
        return []
    baseline = baseline or names[0]
    if baseline not in names:
        raise ValueError(f"baseline {baseline!r} not in this run's targets {names}")
    rows = []
    for other in names:
        if other != baseline:
            rows += ratios(results["summary"], baseline, results["summary"], other)
    return rows


def table(rows: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title)
    for col in ("workload", "case", "metric", "target / baseline", "baseline", "target", "ratio"):
        t.add_column(col, justify="right" if col in ("baseline", "target", "ratio") else "left")
    for r in rows:
        mark = {True: "[green]", False: "[red]", None: ""}[r["better"]]
        ratio = f"{mark}{r['ratio']:.2f}×" if r["ratio"] is not None else "-"
        t.add_row(
            r["workload"],
            r["case"],
            r["metric"],
            f"{r['target']} / {r['baseline']}",
            fmt(r["baseline_value"]),
            fmt(r["value"]),
            ratio,
        )
    return t


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| workload | case | metric | target / baseline | baseline | target | ratio |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else "-"
        lines.append(
            f"| {r['workload']} | {r['case']} | {r['metric']} | {r['target']} / {r['baseline']} "
            f"| {fmt(r['baseline_value'])} | {fmt(r['value'])} | {ratio} |"
        )
    return "\n".join(lines)


def markdown_summary(results: dict[str, Any]) -> str:
    """Headline medians [min–max] per workload case, one column per target."""
    from appliance.bench.results import HEADLINE

    targets = [t for t in results["targets"] if t in results["summary"]]
    rows: list[tuple[str, str]] = []
    for t in targets:
        for workload, cases in results["summary"][t].items():
            rows += [(workload, c) for c in cases if (workload, c) not in rows]
    lines = [
        "| workload | case | metric | " + " | ".join(targets) + " |",
        "|---|---|---|" + "---:|" * len(targets),
    ]
    for workload, case in rows:
        extra = ["streams_served"] if workload == "concurrency" else []
        for metric in [HEADLINE[workload][0], *extra]:
            cells = []
            for t in targets:
                entry = results["summary"][t].get(workload, {}).get(case)
                s = ((entry or {}).get("metrics") or {}).get(metric) or {}
                if s.get("median") is None:
                    cells.append("error" if entry and entry["n_error"] else "-")
                elif s["n"] > 1:
                    cells.append(f"{fmt(s['median'])} [{fmt(s['min'])}–{fmt(s['max'])}]")
                else:
                    cells.append(fmt(s["median"]))
            lines.append(f"| {workload} | {case} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_rows(console: Console, rows: list[dict[str, Any]], title: str) -> None:
    if not rows:
        console.print("nothing in common to compare")
        return
    console.print(table(rows, title))
