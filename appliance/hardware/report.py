"""`print_hardware`: a detected machine or a profile, as a human reads it."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from appliance.hardware.llama_build import cpu_only_warning
from appliance.hardware.types import GPU, Hardware
from appliance.units import MiB, gib


def _processes(gpu: GPU) -> str:
    if not gpu.processes:
        return "-"
    return ", ".join(f"{p.name or p.pid} {p.used_bytes / MiB:.0f} MiB" for p in gpu.processes)


def _driver(gpu: GPU) -> str:
    if gpu.vendor == "apple":
        return "Metal"
    return " / ".join(x for x in (gpu.driver_version, gpu.cuda_version) if x) or "-"


def _gpu_table(hw: Hardware, wide: bool) -> Table:
    """All columns on a wide terminal; on a narrow one driver and processes go below."""
    table = Table(title="GPUs", title_justify="left", caption_justify="left")
    table.add_column("#", justify="right")
    table.add_column("GPU", no_wrap=True)
    for col in ("total", "free", "bandwidth"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("cc")
    if wide:
        table.add_column("driver / CUDA", no_wrap=True)
        table.add_column("processes holding VRAM")
    for g in hw.gpus:
        row = [
            str(g.index),
            g.name,
            gib(g.total_bytes),
            gib(g.free_bytes),
            f"{g.bandwidth_gbps:.0f} GB/s" if g.bandwidth_gbps else "?",
            g.compute_capability or "-",
        ]
        table.add_row(*row, *([_driver(g), _processes(g)] if wide else []))
    if any(g.unified for g in hw.gpus):
        table.caption = "unified memory: total = Metal GPU budget"
    return table


def _gpu_details(hw: Hardware) -> list[str]:
    drivers = dict.fromkeys(_driver(g) for g in hw.gpus)
    lines = [f"driver / CUDA: {', '.join(drivers)}"]
    lines += [f"GPU {g.index} VRAM held by: {_processes(g)}" for g in hw.gpus if g.processes]
    return lines


def _llama_line(hw: Hardware) -> Text:
    if hw.llama_gpu_offload is True:
        return Text("llama.cpp  GPU offload: yes", style="green")
    if hw.llama_gpu_offload is False:
        if hw.gpus:
            return Text("llama.cpp  CPU-only build: the GPU above goes UNUSED", style="bold red")
        return Text("llama.cpp  CPU build (no GPU here to offload to)")
    return Text("llama.cpp  not installed or not importable", style="yellow")


def print_hardware(hw: Hardware, console: Console | None = None) -> None:
    """Print the machine: CPU, RAM, GPU table, llama.cpp build, notes, and the
    CPU-only-build warning in red when a GPU would go unused."""
    console = console or Console()
    warning = cpu_only_warning(hw)
    panel = None
    if warning:
        panel = Panel(Text(warning, style="bold red"), title="WARNING: GPU UNUSED", border_style="bold red")
        console.print(panel)

    console.print(Text.assemble(("Machine    ", "bold"), f"{hw.name} ({hw.source}, {hw.os})"))
    c = hw.cpu
    flags = " ".join(c.flags) or "no SIMD extensions found"
    console.print(
        Text.assemble(
            ("CPU        ", "bold"),
            f"{c.model} · {c.arch} · {c.physical_cores} cores / {c.logical_cores} threads · {flags}",
        )
    )
    bw = f" · {hw.ram_bandwidth_gbps:.0f} GB/s" if hw.ram_bandwidth_gbps else ""
    console.print(
        Text.assemble(
            ("RAM        ", "bold"),
            f"{gib(hw.ram_total_bytes)} total, {gib(hw.ram_available_bytes)} available{bw}",
        )
    )
    if hw.gpus:
        wide = console.width >= 120
        console.print(_gpu_table(hw, wide))
        if not wide:
            for line in _gpu_details(hw):
                console.print("  " + line, markup=False, highlight=False)
    else:
        console.print(Text.assemble(("GPUs       ", "bold"), "none"))
    console.print(_llama_line(hw))

    notes = [n for n in hw.notes if not (warning and n.startswith("WARNING:"))]
    if notes:
        console.print(Text("Notes", style="bold"))
        for n in notes:
            console.print(f"  - {n}", markup=False, highlight=False)
    if panel is not None:
        console.print(panel)  # again at the end: it must not scroll out of sight
