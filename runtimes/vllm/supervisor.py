"""Keeps one vLLM OpenAI server alive as a child process on loopback.

vLLM runs in its own environment (it pins torch, transformers and fastapi), so we drive it as
a child over HTTP rather than importing it. The supervisor starts it, waits for `/health`,
watches it (exit or a hung `/health`), restarts it with exponential backoff when it dies, and
gives up after a bounded number of attempts with a clear state instead of looping forever.
It runs in its own thread so that neither the event loop nor the loader thread waits on it.

The child gets its own process group: vLLM forks engine and worker processes, and a dead API
server must not leave an orphaned engine holding the GPU's memory or the port.
"""

from __future__ import annotations

import contextlib
import enum
import http.client
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from runtimes.vllm.flags import VllmLaunch


class State(enum.StrEnum):
    STARTING = "starting"  # first start, not healthy yet
    READY = "ready"
    RESTARTING = "restarting"  # the child died; waiting out the backoff or starting again
    FAILED = "failed"  # gave up: see `error` and the log
    STOPPED = "stopped"


class SupervisorError(Exception):
    """The child could not be started (or kept running); the message points at the log."""


@dataclass
class SupervisorConfig:
    command: list[str]  # the launch command, e.g. [python, -m, vllm.entrypoints.openai.api_server]
    launch: Callable[[int], VllmLaunch]  # port -> flags and environment for one start
    log_path: Path
    start_timeout_s: float = 900.0  # vLLM on a CPU loads and compiles for minutes
    max_restarts: int = 5  # consecutive restarts before giving up
    backoff_s: float = 2.0  # first delay; doubles per consecutive failure
    backoff_max_s: float = 60.0
    stable_s: float = 300.0  # up this long: the restart budget is whole again
    poll_s: float = 1.0  # how often the child is checked
    health_timeout_s: float = 10.0
    hung_after: int = 3  # consecutive failed /health checks of a live child: it is hung, kill it
    stop_timeout_s: float = 20.0  # SIGTERM, then SIGKILL
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Supervisor:
    """One supervised vLLM server. `generation` counts starts, so a forwarder can tell whether
    the child it was talking to is still the current one."""

    def __init__(self, cfg: SupervisorConfig):
        self.cfg = cfg
        self.state = State.STOPPED
        self.generation = 0
        self.restarts = 0  # consecutive, reset when the child stays up for `stable_s`
        self.error: str | None = None
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._settled = threading.Event()  # first start done: ready or failed
        self._thread: threading.Thread | None = None
        self._next_start_at = 0.0

    # -- what others read -------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.cfg.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def child_alive(self, generation: int) -> bool:
        """Whether the child of `generation` is still the running one (exit is seen at once)."""
        proc = self._proc
        return generation == self.generation and proc is not None and proc.poll() is None

    def retry_after_s(self) -> float:
        """A client's best wait: the rest of the backoff plus a start (minutes on a CPU)."""
        if self.state == State.FAILED:
            return 60.0
        return max(1.0, self._next_start_at - time.monotonic()) + 10.0

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, wait: bool = True) -> None:
        """Start the child; with `wait`, block until it is healthy (SupervisorError if it never is)."""
        if self._thread is not None:
            raise SupervisorError("already started")
        self.state = State.STARTING
        self._thread = threading.Thread(target=self._run, name="vllm-supervisor", daemon=True)
        self._thread.start()
        if wait:
            self._settled.wait()
            if self.state != State.READY:
                raise SupervisorError(self.error or "vLLM did not start")

    def stop(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL, whole process group) and the watcher."""
        self._stop.set()
        proc = self._proc
        if proc is not None:
            _stop_group(proc, self.cfg.stop_timeout_s)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.cfg.stop_timeout_s + 5)
        self.state = State.STOPPED

    # -- the watcher thread -------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                up_since = self._start_once()
                if up_since is None and self.generation == 1:
                    # A first start that never became healthy is a configuration problem
                    # (bad flags, no model, no memory): retrying would only hide it.
                    _stop_group(self._proc, self.cfg.stop_timeout_s)
                    self._give_up()
                    return
                if up_since is not None:
                    self._watch()
                if self._stop.is_set():
                    return
                _stop_group(self._proc, self.cfg.stop_timeout_s)  # the orphans of a dead server
                if up_since is not None and time.monotonic() - up_since >= self.cfg.stable_s:
                    self.restarts = 0
                self.restarts += 1
                if self.restarts > self.cfg.max_restarts:
                    self.error = (
                        f"vLLM died {self.restarts - 1} times in a row and was not restarted again; "
                        f"see {self.cfg.log_path}"
                    )
                    self._give_up()
                    return
                delay = min(self.cfg.backoff_max_s, self.cfg.backoff_s * 2 ** (self.restarts - 1))
                self.state = State.RESTARTING
                self._next_start_at = time.monotonic() + delay
                self._log(f"child exited ({self._exit_text()}); restart {self.restarts} in {delay:.0f} s")
                self._stop.wait(delay)
        finally:
            self._settled.set()

    def _give_up(self) -> None:
        self.state = State.FAILED
        self.error = self.error or f"vLLM did not become healthy; see {self.cfg.log_path}"
        self._log(f"giving up: {self.error}")

    def _start_once(self) -> float | None:
        """Spawn a child and wait for /health; its monotonic ready time, or None."""
        self.port = free_port(self.cfg.host)
        launch = self.cfg.launch(self.port)
        cmd = [*self.cfg.command, *launch.args]
        self.generation += 1
        self._log(f"start {self.generation}: {shlex.join(cmd)}")
        self.cfg.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.cfg.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.cfg.env, **launch.env},
                start_new_session=True,  # its own process group, and no terminal signals
            )
        if self._wait_healthy():
            self.state = State.READY
            self._settled.set()
            self._log(f"ready on port {self.port} (pid {self._proc.pid})")
            return time.monotonic()
        if not self._stop.is_set() and self.error is None and self.generation == 1:
            self.error = f"vLLM exited before /health answered ({self._exit_text()}); see {self.cfg.log_path}"
        return None

    def _wait_healthy(self) -> bool:
        deadline = time.monotonic() + self.cfg.start_timeout_s
        while time.monotonic() < deadline and not self._stop.is_set():
            if self._proc is None or self._proc.poll() is not None:
                return False
            if self._healthy():
                return True
            self._stop.wait(self.cfg.poll_s)
        if not self._stop.is_set():
            self.error = f"vLLM not healthy after {self.cfg.start_timeout_s:.0f} s; see {self.cfg.log_path}"
        return False

    def _watch(self) -> None:
        """Return when the child exits, hangs (killed here), or we are stopping."""
        failures = 0
        while not self._stop.wait(self.cfg.poll_s):
            if self._proc is None or self._proc.poll() is not None:
                return
            failures = 0 if self._healthy() else failures + 1
            if failures >= self.cfg.hung_after:
                self._log(f"/health failed {failures} times in a row: killing the hung child")
                _stop_group(self._proc, 0)
                return

    def _healthy(self) -> bool:
        """GET /health on the child, with the stdlib's plain HTTP client.

        Not httpx: each `httpx.get` builds a client and an SSL context (loading the CA bundle),
        26 ms of CPU per poll against 0.6 ms for this (measured on a 2-core EPYC), taken every
        second from the process whose event loop streams the child's tokens.
        """
        conn = http.client.HTTPConnection(self.cfg.host, self.port, timeout=self.cfg.health_timeout_s)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _exit_text(self) -> str:
        code = self._proc.poll() if self._proc is not None else None
        if code is None:
            return "still running"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def _log(self, line: str) -> None:
        """Our own lines in the child's log file, so one file tells the whole story."""
        self.cfg.log_path.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        with self.cfg.log_path.open("a") as f:
            f.write(f"[appliance supervisor {stamp}] {line}\n")


def _stop_group(proc: subprocess.Popen | None, timeout_s: float) -> None:
    """SIGTERM the child's process group, SIGKILL what is left after `timeout_s`, reap the child."""
    if proc is None:
        return
    pgid = proc.pid  # start_new_session: the child leads its own group
    _signal_group(pgid, signal.SIGTERM if timeout_s > 0 else signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout_s if timeout_s > 0 else 5)
    # Engine and worker processes may outlive the server (or ignore SIGTERM): kill the group.
    deadline = time.monotonic() + timeout_s
    while _group_exists(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    _signal_group(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False
