"""System RAM: total and available, honouring a container's memory limit.

Inside Docker psutil reports the host's RAM; planning against that would overcommit
the container, so a cgroup limit below the host total wins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (v2) means no limit


def _stat(path: Path, key: str) -> int | None:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return None


def cgroup_limit(root: Path = CGROUP_ROOT) -> tuple[int, int | None] | None:
    """(memory limit, anonymous memory in use) of this cgroup, or None when unlimited/unknown."""
    limit = _read_int(root / "memory.max")  # cgroup v2
    if limit is not None:
        return limit, _stat(root / "memory.stat", "anon")
    limit = _read_int(root / "memory" / "memory.limit_in_bytes")  # cgroup v1
    if limit is not None:
        return limit, _stat(root / "memory" / "memory.stat", "total_rss")
    return None


def read_ram(vm: Any = None, cgroup_root: Path = CGROUP_ROOT) -> tuple[int, int, list[str]]:
    """(total, available, notes). `vm` is a psutil.virtual_memory() result by default."""
    if vm is None:
        import psutil

        vm = psutil.virtual_memory()
    total, available = int(vm.total), int(vm.available)
    notes: list[str] = []
    cg = cgroup_limit(cgroup_root)
    if cg is not None and cg[0] < total:
        limit, anon = cg
        total = limit
        available = min(available, max(0, limit - (anon or 0)))
        notes.append(f"RAM: limited by the container's cgroup to {limit / 1024**3:.1f} GiB")
    return total, available, notes
