"""`print_plan`: a plan as a person reads it: the machine, what was chosen and why, the runners-up,
what to download for better, and why the rest was ruled out."""

from __future__ import annotations

from collections.abc import Callable, Hashable

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from appliance.planner.types import Candidate, Plan, Rejection, Role, Suggestion
from appliance.units import gib, kilo

TOP = {"main": 6, "small": 4}
TOP_REJECTED = 8


def print_plan(plan: Plan, console: Console | None = None) -> None:
    console = console or Console()
    console.print(_header(plan))
    for role in ("main", "small"):
        console.print(_candidates_table(plan, role, console.width))
        console.print(_choice(plan, role))
    if plan.suggested:
        console.print(_suggested(plan), highlight=False)
    if plan.rejected:
        console.print(_rejected_table(plan))
    console.print("[bold]Notes[/bold]")
    for note in plan.notes:
        style = "bold red" if note.startswith("WARNING") else ""
        console.print(f"  - {escape(note)}", style=style, highlight=False)


def _header(plan: Plan) -> Panel:
    hw, b = plan.hardware, plan.budget
    lines = [
        f"[bold]{escape(hw.name)}[/bold] ({escape(hw.source)})",
        f"CPU  {escape(hw.cpu)}",
        f"RAM  {gib(hw.ram_total_bytes)} total, {gib(hw.ram_available_bytes)} available",
        *(f"GPU  {escape(g)}" for g in hw.gpus),
        f"Budget  {_budget_line(plan)}",
        *(f"  {escape(line)}" for line in b.derivation),
    ]
    return Panel("\n".join(lines), title="appliance plan", title_align="left")


def _budget_line(plan: Plan) -> str:
    b = plan.budget
    if b.backend == "cpu":
        return f"CPU only: {gib(b.ram_bytes)} of RAM for the model"
    gpu = f"{gib(b.gpu_bytes)} on {'Metal' if b.unified else b.backend.upper()}"
    if b.vllm_tp > 1:
        gpu += f" (vLLM: {gib(b.vllm_gpu_bytes)} over tensor parallel {b.vllm_tp})"
    return gpu + ("" if b.unified else f" + {gib(b.ram_bytes)} RAM")


NARROW = 110  # below this width the table drops the columns a glance can do without
DETAIL = {"slots", "KV", "free", "get"}
COLUMNS = [  # (header, right-aligned, never wrap)
    ("", False, True),
    ("model", False, False),
    ("quant", False, True),
    ("runtime", False, True),
    ("ctx", True, True),
    ("slots", True, True),
    ("KV", False, True),
    ("GPU", True, True),
    ("RAM", True, True),
    ("free", True, True),
    ("tok/s", True, True),
    ("get", False, True),
]


def _candidates_table(plan: Plan, role: Role, width: int) -> Table:
    chosen = plan.main if role == "main" else plan.small
    title = "Main model (the coding agent)" if role == "main" else "Small model (titles, summaries)"
    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    keep = [i for i, (h, _, _) in enumerate(COLUMNS) if width >= NARROW or h not in DETAIL]
    for i in keep:
        header, right, no_wrap = COLUMNS[i]
        table.add_column(header, justify="right" if right else "left", no_wrap=no_wrap)
    rows = best_per_model(plan.candidates[role], chosen)[: TOP[role]]
    for c in rows:
        cells = _row(c, c is chosen)
        table.add_row(*(cells[i] for i in keep), style="bold green" if c is chosen else None)
    table.caption = "GPU/RAM: GiB used; free: GiB of budget left; get: needs a download"
    if any(c.placement == "gpu+ram" and c.moe_layers for c in rows):
        table.caption += "; +RAM N/M: experts of N of M layers in RAM"
    if any(c.placement == "gpu+ram" and c.offloadable_layers for c in rows):
        table.caption += "; -ngl N/M: N of M layers on the GPU, the rest in RAM"
    if width < NARROW:
        table.caption = "GPU/RAM: GiB used (a wider terminal shows slots, KV type, headroom)"
    if not rows:
        table.caption = "nothing fits"
    table.caption_justify = "left"
    return table


def best_per_model(ranked: list[Candidate], chosen: Candidate | None) -> list[Candidate]:
    """The chosen candidate first, then each other model's best configuration, in rank order."""
    out = [chosen] if chosen is not None else []
    seen = {chosen.model} if chosen is not None else set()
    for c in ranked:
        if c.model not in seen:
            seen.add(c.model)
            out.append(c)
    return out


def _row(c: Candidate, chosen: bool) -> list[str]:
    m = c.memory
    free = m.headroom_gpu_bytes if c.placement != "cpu" else m.headroom_ram_bytes
    return [
        "->" if chosen else "",
        c.display_name,
        c.quant,
        _runtime(c),
        kilo(c.n_ctx),
        str(c.slots),
        c.kv_type,
        gib(m.gpu_bytes, unit=False) if m.gpu_bytes else "-",
        gib(m.cpu_bytes, unit=False) if m.cpu_bytes else "-",
        gib(free, unit=False),
        f"{c.tok_s:.0f}",
        "" if c.available else "yes",
    ]


def _runtime(c: Candidate | Suggestion) -> str:
    if c.runtime == "vllm":
        tp = getattr(c, "tensor_parallel", 1)
        return "vLLM" + (f" TP{tp}" if tp > 1 else "")
    if c.placement == "gpu+ram" and isinstance(c, Candidate) and c.offloadable_layers:
        return f"llama.cpp -ngl {c.n_gpu_layers}/{c.offloadable_layers}"  # layers on the GPU / all
    if c.placement == "gpu+ram" and isinstance(c, Candidate):
        return f"llama.cpp+RAM {c.n_cpu_moe}/{c.moe_layers}"  # expert layers in RAM / all
    return {"gpu": "llama.cpp", "gpu+ram": "llama.cpp+RAM", "cpu": "llama.cpp CPU"}[c.placement]


def _choice(plan: Plan, role: Role) -> str:
    c = plan.main if role == "main" else plan.small
    if c is None:
        missing = (
            "nothing obtainable fits" if role == "main" else "none beside main: side tasks use main's slots"
        )
        return f"[bold]{role}:[/bold] {missing}\n"
    text = f"[bold]{role}:[/bold] {escape(c.reason)}"
    text += f"\n  memory: {_breakdown(c)}"
    text += f"\n  speed: {c.tok_s_basis}"
    if c.prefill_tok_s:
        text += f"; prefill ~{c.prefill_tok_s:.0f} tok/s"
    for w in c.warnings:
        text += f"\n  [yellow]! {escape(w)}[/yellow]"
    better = next((s for s in plan.suggested if s.role == role), None)
    if better is not None:
        text += (
            f"\n  [cyan]with a download: {better.model} {better.quant} on {_runtime(better)}, "
            f"{kilo(better.n_ctx)} context, ~{better.tok_s:.0f} tok/s (see below)[/cyan]"
        )
    return text + "\n"


def _breakdown(c: Candidate) -> str:
    m = c.memory
    weights = f"weights {gib(m.weights_bytes)}"
    if m.weights_cpu_bytes and c.placement != "cpu":
        split = f": experts of {c.n_cpu_moe} of {c.moe_layers} layers" if c.n_cpu_moe else ""
        if c.offloadable_layers:
            split = f": {c.n_gpu_layers} of {c.offloadable_layers} layers on the GPU"
        weights += f" ({gib(m.weights_gpu_bytes)} GPU, {gib(m.weights_cpu_bytes)} RAM{split})"
    kv = f"KV {gib(m.kv_bytes)}"
    if m.kv_cpu_bytes:
        kv += f" ({gib(m.kv_bytes - m.kv_cpu_bytes)} GPU, {gib(m.kv_cpu_bytes)} RAM)"
    parts = [weights, kv, f"compute {gib(m.compute_bytes)}"]
    parts += [f"runtime {gib(m.overhead_bytes)}", f"margin {gib(m.margin_bytes)}"]
    free = m.headroom_gpu_bytes if c.placement != "cpu" else m.headroom_ram_bytes
    return " + ".join(parts) + f"; {gib(free)} of the budget left"


def _suggested(plan: Plan) -> str:
    """One entry per suggestion, the download in full: it is what the user acts on."""
    lines = ["[bold]Better with a download[/bold]"]
    for s in plan.suggested:
        what = f"{s.model} {s.quant} on {_runtime(s)}, {kilo(s.n_ctx)} context, ~{s.tok_s:.0f} tok/s"
        lines.append(f"  {s.role}: {what}: {s.reason}")
        lines.append(f"    get it from {s.download}")
    return "\n".join(lines) + "\n"


def _rejected_table(plan: Plan) -> Table:
    shown = top_rejections(plan)
    title = f"Ruled out (top {len(shown)} of {len(plan.rejected)}; --json lists all)"
    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD)
    for col in ("role", "model", "quant", "runtime", "why"):
        table.add_column(col)
    for r in shown:
        table.add_row(r.role, r.model, r.quant or "(all)", r.runtime or "-", r.reason)
    return table


def top_rejections(plan: Plan, limit: int = TOP_REJECTED) -> list[Rejection]:
    """Why not the chosen model in another form (runtime limits, then the smallest artifact that
    does not fit per runtime), why not each better model that fits in no form (its smallest
    artifact), then models ruled out as a whole."""
    main = plan.main
    fitting = {c.model for c in plan.candidates["main"]}
    mains = [r for r in plan.rejected if r.role == "main"]
    own = [r for r in mains if main and r.model == main.model]
    runtime_limits = [r for r in own if r.kind == "runtime"]
    own_memory = _smallest_per(
        [r for r in own if r.kind == "memory"], lambda r: (r.runtime, "RAM" in (r.quant or ""))
    )
    better = [r for r in mains if r.kind == "memory" and r.model not in fitting]
    better = [r for r in better if main is None or r.quality > main.quality]
    ranked = sorted(_smallest_per(better, lambda r: r.model), key=lambda r: -r.quality)
    whole = sorted((r for r in mains if r.kind == "role"), key=lambda r: -r.quality)
    return [*runtime_limits, *own_memory, *ranked, *whole][:limit]


def _smallest_per(rejections: list[Rejection], key: Callable[[Rejection], Hashable]) -> list[Rejection]:
    """The smallest artifact's rejection per `key`: the one that came closest to fitting."""
    best: dict[Hashable, Rejection] = {}
    for r in rejections:
        k = key(r)
        if k not in best or r.weights_bytes < best[k].weights_bytes:
            best[k] = r
    return list(best.values())
