"""Terminal output: a live table with a progress bar while running, detailed tables after."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from appliance.bench.results import HEADLINE, summarize_samples
from appliance.bench.sample import Sample
from appliance.bench.settings import TargetState

# (metric, header, scale) per workload for the detailed tables.
COLUMNS: dict[str, list[tuple[str, str, float]]] = {
    "decode": [
        ("ttft_s", "TTFT s", 1),
        ("prefill_tok_s", "prefill tok/s", 1),
        ("decode_tok_s", "decode tok/s", 1),
        ("itl_p50_s", "ITL p50 ms", 1000),
        ("itl_p95_s", "ITL p95 ms", 1000),
        ("prompt_tokens", "prompt tok", 1),
        ("completion_tokens", "out tok", 1),
    ],
    "prefill": [
        ("ttft_s", "TTFT s", 1),
        ("prefill_tok_s", "prefill tok/s", 1),
        ("prompt_tokens", "prompt tok", 1),
    ],
    "concurrency": [
        ("aggregate_decode_tok_s", "agg decode tok/s", 1),
        ("aggregate_tok_s", "agg tok/s", 1),
        ("per_stream_decode_tok_s", "per-stream tok/s", 1),
        ("ttft_s", "TTFT s", 1),
        ("ttft_max_s", "TTFT max s", 1),
        ("streams_served", "served", 1),
    ],
    "trace": [
        ("total_s", "total s", 1),
        ("ttft_sum_s", "TTFT sum s", 1),
        ("prompt_tokens", "prompt tok", 1),
        ("cached_tokens", "cached tok", 1),
        ("completion_tokens", "out tok", 1),
    ],
    "session": [
        ("cold_ttft_s", "cold TTFT s", 1),
        ("warm_ttft_s", "new-session TTFT s", 1),
        ("warm_over_cold", "new / cold", 1),
        ("warm_cached_tokens", "cached tok", 1),
        ("prompt_tokens", "prompt tok", 1),
    ],
}
COLUMNS["restart"] = [*COLUMNS["session"], ("restart_s", "restart s", 1)]
COLUMNS["edit"] = [
    ("total_s", "total s", 1),
    ("ttft_s", "TTFT s", 1),
    ("decode_tok_s", "decode tok/s", 1),
    ("completion_tokens", "out tok", 1),
    ("spec_drafted", "drafted", 1),
    ("spec_accepted", "accepted", 1),
    ("spec_acceptance", "accept rate", 1),
]


def fmt(x: float | None, scale: float = 1.0) -> str:
    if x is None:
        return "-"
    v = x * scale
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell(summary: dict[str, Any] | None, scale: float = 1.0, spread: bool = True) -> str:
    """`median [min-max]` (the spread only when there is more than one sample)."""
    if not summary or summary.get("median") is None:
        return "-"
    text = fmt(summary["median"], scale)
    if spread and summary.get("n", 0) > 1:
        text += f" [dim][{fmt(summary['min'], scale)}–{fmt(summary['max'], scale)}][/dim]"
    return text


def _entry_cell(entry: dict[str, Any] | None, metric: str, scale: float = 1.0, spread: bool = True) -> str:
    if entry is None:
        return "…"
    if not entry["n_ok"]:
        if entry["n_skipped"] and not entry["n_error"]:
            return "[yellow]skipped[/yellow]"
        return "[red]error[/red]"
    return cell(entry["metrics"].get(metric), scale, spread)


def headline_table(summary: dict[str, Any], targets: list[str], rows: list[tuple[str, str]]) -> Table:
    """One row per workload case, one column per target: the figure the workload is judged by."""
    table = Table(title="appliance bench (median \\[min–max])", expand=False)
    table.add_column("workload")
    table.add_column("case")
    table.add_column("metric")
    for t in targets:
        table.add_column(t, justify="right")
    for workload, case in rows:
        metric, higher = HEADLINE[workload]
        arrow = "↑" if higher else "↓"
        cells = [_entry_cell(summary.get(t, {}).get(workload, {}).get(case), metric) for t in targets]
        table.add_row(workload, case, f"{metric} {arrow}", *cells)
    return table


def detail_tables(summary: dict[str, Any], targets: list[str]) -> list[Table]:
    tables: list[Table] = []
    for workload, cols in COLUMNS.items():
        rows = [
            (case, t, entry) for t in targets for case, entry in summary.get(t, {}).get(workload, {}).items()
        ]
        if not rows:
            continue
        rows.sort(key=lambda r: (_case_order(r[0]), targets.index(r[1])))
        table = Table(title=f"{workload} (median \\[min–max])")
        table.add_column("case")
        table.add_column("target")
        for _, header, _ in cols:
            table.add_column(header, justify="right")
        for case, t, entry in rows:
            table.add_row(case, t, *(_entry_cell(entry, m, s) for m, _, s in cols))
        tables.append(table)
        if workload == "trace":
            tables += _step_tables(summary, targets)
    return tables


def _case_order(case: str) -> tuple[str, float]:
    name, _, value = case.partition("=")
    try:
        return name, float(value)
    except ValueError:
        return case, 0.0


def _step_tables(summary: dict[str, Any], targets: list[str]) -> list[Table]:
    traces = sorted({c for t in targets for c in summary.get(t, {}).get("trace", {})})
    out = []
    for case in traces:
        labels: list[str] = []
        for t in targets:
            for label in summary.get(t, {}).get("trace", {}).get(case, {}).get("steps", {}):
                if label not in labels:
                    labels.append(label)
        table = Table(title=f"{case}: TTFT s per request (cached tokens)")
        table.add_column("request")
        for t in targets:
            table.add_column(t, justify="right")
        for label in labels:
            row = []
            for t in targets:
                step = summary.get(t, {}).get("trace", {}).get(case, {}).get("steps", {}).get(label, {})
                ttft = cell(step.get("ttft_s"), spread=False)
                cached = (step.get("cached_tokens") or {}).get("median")
                row.append(ttft + (f" ({cached:.0f})" if cached is not None else ""))
            table.add_row(label, *row)
        out.append(table)
    return out


def target_lines(states: list[TargetState]) -> list[str]:
    lines = []
    for s in states:
        if s.error:
            lines.append(f"[red]{s.target.name}[/red] ({s.target.url}): {s.error}")
        for w in s.warnings:
            lines.append(f"[yellow]{s.target.name}[/yellow]: {w}")
    return lines


def sample_line(sample: Sample, task) -> str:
    metric = HEADLINE[sample.workload][0]
    value = sample.metrics.get(metric)
    text = f"{metric}={fmt(value)}" if sample.ok else f"{sample.status}: {(sample.error or '')[:120]}"
    done = f"[{task.completed:.0f}/{task.total:.0f}]"
    return f"{done} rep {sample.rep} {sample.workload} {sample.case} {sample.target}: {text}"


class LiveReport:
    """Reporter for the runner: progress bar plus a headline table refreshed per sample."""

    def __init__(self, console: Console | None = None, targets: list[str] | None = None):
        self.console = console or Console()
        self.targets = list(targets or [])
        self.samples: list[Sample] = []
        self.rows: list[tuple[str, str]] = []
        self.states: dict[str, TargetState] = {}
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
        )
        self.task = self.progress.add_task("measuring", total=0)
        self.live: Live | None = None

    def _render(self) -> Group:
        table = headline_table(summarize_samples(self.samples), self.targets, self.rows)
        notes = target_lines(list(self.states.values()))
        return Group(self.progress, table, *notes)

    def begin(self, total_steps: int) -> None:
        total = (self.progress.tasks[0].total or 0) + total_steps
        self.progress.update(self.task, total=total)
        if self.live is None and self.console.is_terminal:
            self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=True)
            self.live.start()

    def target(self, state: TargetState) -> None:
        self.states[state.target.name] = state
        if state.target.name not in self.targets:
            self.targets.append(state.target.name)
        self._refresh()

    def sample(self, sample: Sample) -> None:
        self.samples.append(sample)
        if (sample.workload, sample.case) not in self.rows:
            self.rows.append((sample.workload, sample.case))
        self.progress.advance(self.task)
        if self.live is None:  # not a terminal (a log file): one line per sample
            self.console.print(sample_line(sample, self.progress.tasks[0]), highlight=False)
        self._refresh()

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self._render())

    def end(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def print_results(console: Console, results: dict[str, Any], states: list[TargetState]) -> None:
    summary = results["summary"]
    targets = list(results["targets"])
    rows: list[tuple[str, str]] = []
    for s in results["samples"]:
        if s["rep"] >= 0 and (s["workload"], s["case"]) not in rows:
            rows.append((s["workload"], s["case"]))
    console.print(headline_table(summary, targets, rows))
    for table in detail_tables(summary, targets):
        console.print(table)
    if results.get("ceiling"):
        c = results["ceiling"]
        console.print(
            f"physical ceiling: {c['bandwidth_gbps']:.0f} GB/s / {c['model_bytes'] / 1e6:.0f} MB "
            f"= {c['decode_tok_s']:.0f} tok/s decode (one stream)"
        )
    for line in target_lines(states):
        console.print(line)
