"""The end of a graceful shutdown: answers still running are ended with a clean error.

On SIGTERM uvicorn lets responses run for `shutdown_grace_s` and then cancels their tasks,
which cuts the connection mid-stream: a client cannot tell that from a network failure.
Shortly before that, serve calls `end_all()`: every generation waiting for its runtime's next
event gets `ServerStopping` instead, which each dialect already turns into its own error event
(OpenAI `data: {"error": ...}` then `[DONE]`, Anthropic `event: error`, overloaded_error) or,
before the first byte, into a 503. The runtime's iterator is cancelled at its await, exactly
as when a client hangs up, so its slot is freed and the usage row is still written.

Process-wide on purpose: SIGTERM stops the whole process, whatever app a generation serves.
"""

from __future__ import annotations

import weakref

import anyio

from runtimes.base import RuntimeError_


class ServerStopping(RuntimeError_):
    """The server is shutting down and the grace period for running answers is over."""

    status = 503
    code = "server_shutting_down"
    type = "server_error"

    def __init__(self, message: str = "The server is shutting down; this answer was cut short. Retry."):
        super().__init__(message)


class _Draining:
    """Cancel scopes of the waits in progress, and whether the end has come."""

    def __init__(self) -> None:
        self.stopped = False
        self._waits: weakref.WeakSet[anyio.CancelScope] = weakref.WeakSet()

    def wait_scope(self) -> anyio.CancelScope:
        """A scope for one wait on a runtime; `end_all` cancels it (raise `ServerStopping` after)."""
        if self.stopped:
            raise ServerStopping()
        scope = anyio.CancelScope()
        self._waits.add(scope)
        return scope

    def end_all(self) -> int:
        """End every wait in progress and any later one; returns how many were cut."""
        self.stopped = True
        waits = list(self._waits)
        for scope in waits:
            scope.cancel()
        return len(waits)

    def reset(self) -> None:
        """For tests that run several apps in one process."""
        self.stopped = False


DRAINING = _Draining()


def end_all() -> int:
    return DRAINING.end_all()
