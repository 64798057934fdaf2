"""The real client: OpenCode 1.18.33 (`opencode run`) against `appliance serve` on loopback.

`make test` installs OpenCode and its plugin package beforehand (`make tools`), so the
run itself needs nothing but our server. The small model may not fix the bug; what we
prove is that a real agent session completes against us with no error from the server.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from appliance.cli.connect import connect_opencode

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
OPENCODE = ROOT / ".tools" / "opencode" / "node_modules" / ".bin" / "opencode"
OPENCODE_CONFIG = ROOT / ".tools" / "opencode-config"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def appliance_server(qwen_path: Path, tmp_path_factory):
    """`appliance serve` as a user starts it: the planner's choice among installed models,
    in a data directory of its own that shares the model store (no second download)."""
    port = free_port()
    home = tmp_path_factory.mktemp("appliance-home")
    (home / "models").symlink_to(qwen_path.parent.parent, target_is_directory=True)
    env = {**os.environ, "APPLIANCE_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "serve", "--port", str(port), "--small-model", "none",
         "--ctx", "16384", "--slots", "2", "--no-pull"],  # no hub download in a test: what is installed
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(1)
    else:
        proc.kill()
        pytest.fail("appliance serve did not become healthy")
    yield base
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def error_responses(base: str) -> list[str]:
    """Requests the server answered with an error. 499 is not one: it counts a client that
    hung up (OpenCode drops its title request when the session ends first)."""
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    error = r'appliance_requests_total\{route="/v1/[^"]*",status="(5\d\d|4(?!99)\d\d)"\} [1-9]'
    return [line for line in metrics.splitlines() if re.match(error, line)]


def test_opencode_run_completes(appliance_server, tmp_path):
    if not OPENCODE.exists():
        if os.environ.get("CI"):
            pytest.fail("OpenCode is not installed: `make tools` should have installed it")
        pytest.skip("OpenCode not installed (run `make tools`)")
    project = tmp_path / "project"
    project.mkdir()
    (project / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    assert connect_opencode(f"{appliance_server}/v1", project) == 0
    config = tmp_path / "config"
    shutil.copytree(OPENCODE_CONFIG, config, symlinks=True)
    env = {
        "PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(config),
        "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_STATE_HOME": str(tmp_path / "state"), "OPENCODE_DISABLE_AUTOUPDATE": "1",
    }
    run = subprocess.run(
        [str(OPENCODE), "run", "Fix the bug in calc.py: add must return the sum of a and b."],
        cwd=project, env=env, capture_output=True, text=True, timeout=900,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "APICallError" not in output and "APIError" not in output, output[-4000:]
    served = httpx.get(f"{appliance_server}/metrics", timeout=10).text
    assert re.search(r'appliance_requests_total\{route="/v1/chat/completions",status="200"\} [1-9]', served)
    assert error_responses(appliance_server) == []
