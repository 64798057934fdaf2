"""The edit workload's report: the whole workload's time per target, its ratio to a baseline,
whether each answer is identical to a reference target's, and speculative decoding's counts.

Why its own report: the edit workload is judged as a whole (issue 16: "total time", one
repetition = every request once), while the generic summary is per case. A repetition's total
counts only when every request of it succeeded. Outputs are compared per request and per
repetition (the prompts of one repetition are the same for every target), against the
target's `ref=` option or else the run's reference (`--reference`).
"""

from __future__ import annotations

import statistics
from typing import Any

from rich.table import Table

from appliance.bench.report import fmt

Samples = dict[tuple[str, int], dict[str, Any]]  # (case, rep) -> sample


def edit_samples(results: dict[str, Any]) -> dict[str, Samples]:
    """target -> its measured edit samples (warm-ups excluded)."""
    out: dict[str, Samples] = {}
    for s in results.get("samples") or []:
        if s["workload"] == "edit" and s["rep"] >= 0:
            out.setdefault(s["target"], {})[(s["case"], s["rep"])] = s
    return out


def case_names(results: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for s in results.get("samples") or []:
        if s["workload"] == "edit" and s["case"] not in names:
            names.append(s["case"])
    return names


def _ok(s: dict[str, Any] | None) -> bool:
    return bool(s) and s["status"] == "ok"


def rep_sums(samples: Samples, cases: list[str], metric: str) -> dict[int, float]:
    """Per repetition, the sum of `metric` over every request; only complete repetitions."""
    out: dict[int, float] = {}
    for rep in sorted({r for _, r in samples}):
        group = [samples.get((c, rep)) for c in cases]
        if all(_ok(s) and s["metrics"].get(metric) is not None for s in group):
            out[rep] = sum(s["metrics"][metric] for s in group if s)
    return out


def reference_of(results: dict[str, Any], target: str, default: str | None) -> str | None:
    """The target this one's outputs are checked against (None for the reference itself)."""
    options = (results["targets"].get(target) or {}).get("options") or {}
    ref = options.get("ref") or default
    return ref if ref and ref != target and ref in results["targets"] else None


def identity(mine: Samples, theirs: Samples, cases: list[str]) -> dict[str, tuple[int, int]]:
    """case -> (repetitions with the same output, repetitions both answered)."""
    out: dict[str, tuple[int, int]] = {}
    for case in cases:
        same = compared = 0
        for (c, rep), s in mine.items():
            other = theirs.get((c, rep))
            if c != case or not _ok(s) or not _ok(other):
                continue
            compared += 1
            same += s["metrics"].get("output_sha256") == other["metrics"].get("output_sha256")
        out[case] = (same, compared)
    return out


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def target_rows(
    results: dict[str, Any], baseline: str | None = None, reference: str | None = None
) -> list[dict[str, Any]]:
    """One row per target that ran the edit workload (see the module docstring)."""
    by_target = edit_samples(results)
    cases = case_names(results)
    targets = [t for t in results["targets"] if t in by_target]
    if not targets:
        return []
    baseline = baseline if baseline in by_target else targets[0]
    reference = reference or (results.get("settings") or {}).get("edit_reference")
    base_totals = rep_sums(by_target[baseline], cases, "total_s")
    rows = []
    for t in targets:
        samples = by_target[t]
        totals = rep_sums(samples, cases, "total_s")
        ratios = [totals[r] / base_totals[r] for r in totals if base_totals.get(r)]
        ref = reference_of(results, t, reference)
        same = identity(samples, by_target.get(ref, {}), cases) if ref else {}
        drafted = rep_sums(samples, cases, "spec_drafted")
        accepted = rep_sums(samples, cases, "spec_accepted")
        sum_d, sum_a = sum(drafted.values()), sum(accepted.get(r, 0.0) for r in drafted)
        rows.append(
            {
                "target": t,
                "reps": len(totals),
                "total_s": _median(list(totals.values())),
                "total_min_s": min(totals.values(), default=None),
                "total_max_s": max(totals.values(), default=None),
                "ratio": _ratio(_median(list(totals.values())), _median(list(base_totals.values()))),
                "rep_ratios": ratios,
                "baseline": baseline,
                "completion_tokens": _median(list(rep_sums(samples, cases, "completion_tokens").values())),
                "truncated": sum(1 for s in samples.values() if _ok(s) and s["metrics"].get("truncated")),
                "errors": sum(1 for s in samples.values() if s["status"] == "error"),
                "reference": ref,
                "identical": sum(1 for s, n in same.values() if n and s == n),
                "compared": sum(1 for _, n in same.values() if n),
                "differs": [c for c, (s, n) in same.items() if n and s < n],
                "spec_drafted": _median(list(drafted.values())),
                "spec_accepted": _median(list(accepted.values())),
                "spec_acceptance": sum_a / sum_d if sum_d else None,
            }
        )
    return rows


HEADER = [
    "target",
    "total s",
    "/ baseline",
    "per repetition",
    "out tok",
    "truncated",
    "identical to ref",
    "drafted",
    "accepted",
    "accept rate",
]


def _cells(r: dict[str, Any]) -> list[str]:
    total = fmt(r["total_s"])
    if r["reps"] > 1:
        total += f" [{fmt(r['total_min_s'])}–{fmt(r['total_max_s'])}]"
    ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}×"
    same = "-"
    if r["reference"]:
        same = f"{r['identical']}/{r['compared']} ({r['reference']})"
    rate = "-" if r["spec_acceptance"] is None else f"{r['spec_acceptance']:.0%}"
    return [
        r["target"] + (f" ({r['errors']} errors)" if r["errors"] else ""),
        total,
        ratio if r["target"] != r["baseline"] else "baseline",
        ", ".join(f"{x:.2f}" for x in r["rep_ratios"]) if r["target"] != r["baseline"] else "",
        fmt(r["completion_tokens"]),
        str(r["truncated"]),
        same,
        fmt(r["spec_drafted"]),
        fmt(r["spec_accepted"]),
        rate,
    ]


def request_grid(results: dict[str, Any], reference: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Per request: each target's median time, `=` when its answers equal its reference's in
    every repetition, `≠` when any differs."""
    by_target = edit_samples(results)
    cases = case_names(results)
    reference = reference or (results.get("settings") or {}).get("edit_reference")
    targets = [t for t in results["targets"] if t in by_target]
    rows = []
    for case in cases:
        row = [case.partition("=")[2]]
        for t in targets:
            mine = {k: s for k, s in by_target[t].items() if k[0] == case}
            times = [s["metrics"]["total_s"] for s in mine.values() if _ok(s)]
            if not times:
                row.append("error")
                continue
            cell = f"{fmt(_median(times))} s"
            ref = reference_of(results, t, reference)
            if ref:
                same, n = identity(mine, by_target.get(ref, {}), [case])[case]
                cell += "" if not n else (" =" if same == n else f" ≠ ({n - same}/{n})")
            row.append(cell)
        rows.append(row)
    return ["request", *targets], rows


def markdown(results: dict[str, Any], baseline: str | None = None, reference: str | None = None) -> str:
    rows = target_rows(results, baseline, reference)
    if not rows:
        return ""
    lines = ["| " + " | ".join(HEADER) + " |", "|---|" + "---:|" * (len(HEADER) - 1)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    header, grid = request_grid(results, reference)
    lines += ["", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in grid]
    return "\n".join(lines)


def tables(results: dict[str, Any], baseline: str | None = None, reference: str | None = None) -> list[Table]:
    rows = target_rows(results, baseline, reference)
    if not rows:
        return []
    summary = Table(title="edit workload: total time per repetition (median \\[min–max])")
    for i, h in enumerate(HEADER):
        summary.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        summary.add_row(*_cells(r))
    header, grid = request_grid(results, reference)
    per_request = Table(title="edit workload per request: median time, = / ≠ the reference's output")
    for i, h in enumerate(header):
        per_request.add_column(h, justify="left" if i == 0 else "right")
    for row in grid:
        per_request.add_row(*row)
    return [summary, per_request]
