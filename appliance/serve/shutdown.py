"""Stopping on SIGTERM as a supervisor expects: drain, then exit 0.

uvicorn already stops accepting on SIGTERM, lets running responses (streams included) finish
within `timeout_graceful_shutdown` and then runs the app's shutdown, which closes the runtimes
and flushes the usage log. But after all that it re-raises the signal it caught, so the
process dies *of* SIGTERM (status -15, "killed" to systemd and Docker) after a clean stop.
A handler installed before uvicorn's turns that re-raised signal into `SystemExit(0)`; the
same handler ends a `serve` still planning (before uvicorn took the signal over) cleanly.
"""

from __future__ import annotations

import signal
import threading


def exit_cleanly_on_sigterm() -> None:
    """SIGTERM outside uvicorn's own handling (before it starts, or re-raised after its
    graceful stop) exits with status 0 (main thread only: signals are delivered there)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_zero)


def _exit_zero(signum: int, frame: object) -> None:
    raise SystemExit(0)
