"""Progress of one pull, over all its files: a rich bar (bytes, speed, ETA) on a terminal, a
plain line every few seconds or every 10% otherwise (logs, CI, `serve`'s console), and a
callback `(done_bytes, total_bytes)` for whoever reports it elsewhere (`serve`'s /health).

huggingface_hub's downloader reports bytes through a tqdm-like class it instantiates per file
(`tqdm_class=`); `PullProgress.tqdm_class()` hands it one that feeds this object instead.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from appliance.units import MiB

OnProgress = Callable[[int, int], None]  # (done_bytes, total_bytes) of the whole model
Display = Literal["auto", "bar", "lines", "none"]
LINE_EVERY_S = 5.0
LINE_STEPS = 10  # and a line at every 10% of the bytes


class PullProgress:
    """Counts bytes for one pull. `done` starts at what is already on disk (complete files and
    partial downloads being resumed), so percentages are of the whole model."""

    def __init__(
        self,
        label: str,
        total: int,
        done: int = 0,
        *,
        display: Display = "auto",
        log: Callable[[str], None] = print,
        on_progress: OnProgress | None = None,
    ):
        self.label, self.total, self.done = label, total, done
        self.log, self.on_progress = log, on_progress
        self.display = ("bar" if sys.stderr.isatty() else "lines") if display == "auto" else display
        self._lock = threading.Lock()
        self._start = self._last_t = time.monotonic()
        self._start_done = done
        self._next_at = _next_step(done, total)
        self._rich: Any = None
        self._task: Any = None

    def __enter__(self) -> PullProgress:
        if self.display == "bar":
            self._start_bar()
        self._report()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()
        if exc[0] is None and self.display != "none":
            self.log(self.summary())

    def advance(self, n: int) -> None:
        """`n` more bytes arrived (negative when a download had to start a file over)."""
        with self._lock:
            self.done += n
        if self._rich is not None:
            self._rich.update(self._task, completed=self.done)
        elif self.display == "lines":
            self._maybe_line()
        self._report()

    def summary(self) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        moved = self.done - self._start_done
        return (
            f"{self.label}: {moved / MiB:.1f} MiB downloaded in {elapsed:.1f} s "
            f"({moved / MiB / elapsed:.1f} MiB/s); {self.done / MiB:.1f} of {self.total / MiB:.1f} MiB here"
        )

    def tqdm_class(self) -> type:
        """A class huggingface_hub can use as `tqdm_class`: it shows nothing itself and counts here."""
        return type("_PullBar", (_Bar,), {"sink": self})

    # -- output -----------------------------------------------------------------------
    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._rich = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(), console=Console(stderr=True),
        )
        self._task = self._rich.add_task(self.label, total=self.total, completed=self.done)
        self._rich.start()

    def _maybe_line(self) -> None:
        now = time.monotonic()
        if now - self._last_t < LINE_EVERY_S and self.done < self._next_at:
            return
        self._last_t = now
        self._next_at = _next_step(self.done, self.total)
        fraction = self.done / self.total if self.total else 1.0
        elapsed = max(now - self._start, 1e-9)
        rate = (self.done - self._start_done) / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        self.log(
            f"{self.label}: {fraction:4.0%} {self.done / MiB:.1f}/{self.total / MiB:.1f} MiB, "
            f"{rate / MiB:.1f} MiB/s, ETA {_eta(eta)}"
        )

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)


class _Bar:
    """The tqdm stand-in huggingface_hub's `http_get` drives: it calls the constructor with
    tqdm's keyword arguments, enters it, and calls `update(n)` per chunk."""

    sink: PullProgress

    def __init__(self, *args: object, **kwargs: object):
        pass

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int | float = 1) -> None:
        self.sink.advance(int(n))

    def close(self) -> None:
        pass


def _next_step(done: int, total: int) -> int:
    """The byte count of the next 10% step above `done` (integers: no rounding surprises)."""
    if not total:
        return 0
    k = done * LINE_STEPS // total + 1
    return -(-k * total // LINE_STEPS)


def _eta(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
