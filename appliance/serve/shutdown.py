"""Stopping on SIGTERM as a supervisor expects: drain, then exit 0.

uvicorn already stops accepting on SIGTERM, lets running responses (streams included) finish
within `timeout_graceful_shutdown` and then runs the app's shutdown, which closes the runtimes
and flushes the usage log. But after all that it re-raises the signal it caught, so the
process dies *of* SIGTERM (status -15, "killed" to systemd and Docker) after a clean stop.
A handler installed before uvicorn's turns that re-raised signal into `SystemExit(0)`; the
same handler ends a `serve` still planning (before uvicorn took the signal over) cleanly.

Streams still running when the grace period ends would be cancelled by uvicorn, a cut
connection to their clients; `draining_server` ends them first with a clean error event.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading

import uvicorn

from appliance.api.draining import end_all

log = logging.getLogger("appliance.serve")


def exit_cleanly_on_sigterm() -> None:
    """SIGTERM outside uvicorn's own handling (before it starts, or re-raised after its
    graceful stop) exits with status 0 (main thread only: signals are delivered there)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_zero)


def _exit_zero(signum: int, frame: object) -> None:
    raise SystemExit(0)


def cut_margin_s(grace_s: float) -> float:
    """How long before uvicorn's cancel the running answers are ended: time enough for each
    to send its error event and close, at most a second, a quarter of a short grace."""
    return min(1.0, grace_s / 4)


def draining_server(config: uvicorn.Config) -> uvicorn.Server:
    """A uvicorn server whose graceful shutdown ends running answers with a clean error event
    in their dialect (`appliance.api.draining`) just before the grace period ends, instead of
    letting uvicorn cut their connections."""
    return _DrainingServer(config)


class _DrainingServer(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        grace = self.config.timeout_graceful_shutdown
        cut = None
        if grace is not None:
            delay = max(0.0, grace - cut_margin_s(grace))
            cut = asyncio.get_running_loop().call_later(delay, _end_running)
        try:
            await super().shutdown(sockets)
        finally:
            if cut is not None:
                cut.cancel()


def _end_running() -> None:
    n = end_all()
    if n:
        log.warning("shutdown: grace period over, %d running answer(s) ended with an error event", n)
