"""A real `appliance serve` child process over a real small model, for tests of what only a
process shows: signals (SIGTERM drain, kill -9), restarts over the same data directory, exit
codes and the usage log left on disk."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

MODEL = "smollm2-135m-instruct"


@dataclass
class Served:
    proc: subprocess.Popen[str]
    base: str
    home: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def output(self) -> str:
        return self.proc.stdout.read() if self.proc.stdout and self.proc.poll() is not None else ""


def make_home(tmp_path: Path, model_path: Path, config: dict | None = None) -> Path:
    """A data directory whose store is the shared test store (a symlink), and a config.yaml."""
    home = tmp_path / "home"
    if not home.exists():
        home.mkdir()
        (home / "models").symlink_to(model_path.parents[1])
    if config:
        (home / "config.yaml").write_text(yaml.safe_dump({"serve": config}))
    return home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(home: Path, *args: str, port: int | None = None, wait_s: float = 240) -> Served:
    """`appliance serve --model smollm2 ...` on a free loopback port; returns once /health is 200."""
    port = port or free_port()
    cmd = [
        sys.executable, "-m", "appliance.cli", "serve", "--model", MODEL, "--small-model", "none",
        "--no-pull", "--port", str(port), *args,
    ]
    env = {**os.environ, "APPLIANCE_HOME": str(home)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    served = Served(proc, f"http://127.0.0.1:{port}", home)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if httpx.get(served.base + "/health", timeout=2).status_code == 200:
                return served
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            served.stop()
            raise AssertionError(f"appliance serve did not start:\n{served.output()}")
        time.sleep(0.3)


def usage_rows(home: Path) -> list[dict]:
    """`appliance usage --json` over the data directory."""
    env = {**os.environ, "APPLIANCE_HOME": str(home)}
    out = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "usage", "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    return json.loads(out.stdout)
