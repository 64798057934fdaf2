"""Start a server as a child process, wait until it is ready, stop it.

`appliance bench --model NAME` measures what a user would get from
`appliance serve --model NAME`, so it runs exactly that command as a child process
on a free loopback port. `--launch` (`launch.py`) starts other servers the same way,
each with its own command and environment variables.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from appliance.bench.targets import Target


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(model: str, port: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "appliance.cli", "serve", "--model", model, "--port", str(port), *extra]


class ServerStartError(RuntimeError):
    """The child server exited or never became healthy."""


class ManagedServer:
    """A child server process (by default `appliance serve --model MODEL`); its log goes to a
    temp file for error reports. `command` (listening on `port`), `env` (added to ours),
    `name`, `kind`, `served_model` and `options` describe another server (`launch.py`)."""

    def __init__(
        self,
        model: str,
        extra: list[str] | None = None,
        port: int | None = None,
        *,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        name: str | None = None,
        kind: str = "appliance",
        served_model: str | None = None,
        options: dict[str, str] | None = None,
    ):
        self.model = model
        self.port = port or free_port()
        self.command = command or serve_command(model, self.port, extra or [])
        self.env = dict(env or {})
        self.name = name or f"appliance:{model}"
        self.kind = kind
        self.served_model = served_model
        self.options = dict(options or {})
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="appliance-bench-serve-", suffix=".log")[1])

    @property
    def target(self) -> Target:
        options = {"command": " ".join(self.command), **self.options}
        if self.env:
            options["env"] = " ".join(f"{k}={v}" for k, v in sorted(self.env.items()))
        return Target(
            name=self.name,
            url=f"http://127.0.0.1:{self.port}/v1",
            model=self.served_model,
            kind=self.kind,
            options=options,
        )

    def start(self, timeout_s: float = 600.0) -> None:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=os.environ | self.env,
        )
        log.close()
        self.wait_healthy(timeout_s)

    def wait_healthy(self, timeout_s: float) -> None:
        """Poll /health until 200; /health answers 503 while the model loads."""
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.port}/health"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerStartError(f"server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise ServerStartError(f"server not healthy after {timeout_s:.0f} s: {self.log_tail()}")

    def log_tail(self, n: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:].strip()
        except OSError:
            return ""

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the child's process group, then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        except ProcessLookupError:
            pass

    def __enter__(self) -> ManagedServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
