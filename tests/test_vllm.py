"""Real vLLM behind the appliance, end to end (slow: 8 min 16 s on the 2-core CPU box, venv cached).

vLLM's CPU build is installed into its own cached venv (runtimes/vllm/venv.py, reused on
later runs), SmolLM2-135M-Instruct is converted from its GGUF with `appliance convert`, and
`appliance serve --runtime vllm` starts it as a supervised child. The openai SDK then talks to
our API: models, a whole chat, a stream. Then the vLLM server is SIGKILLed mid-stream: the
stream must end with a clean error (not a hang), the supervisor must restart vLLM, and a
request after the restart must work. Nothing here is faked.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from runtimes.vllm.supervisor import free_port
from runtimes.vllm.venv import ensure_venv

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="vLLM's CPU build is Linux-only"),
]

MODEL = "smollm2-135m-instruct"
START_TIMEOUT_S = 900  # install (first run), load and compile on 2 cores
READY = re.compile(r"ready on port (\d+) \(pid (\d+)\)")


def _appliance(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "appliance.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, **kw)


@pytest.fixture(scope="module")
def vllm_python() -> Path:
    return ensure_venv()


@pytest.fixture(scope="module")
def converted(vllm_python: Path, tmp_path_factory: pytest.TempPathFactory, smollm_path: Path) -> Path:
    out = tmp_path_factory.mktemp("smollm2") / "hf"
    done = _appliance("convert", MODEL, "--out", str(out), "--python", str(vllm_python), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert Path(done.stdout.strip().splitlines()[-1]) == out
    return out


class Served:
    def __init__(self, proc: subprocess.Popen, port: int, home: Path):
        self.proc, self.port, self.home = proc, port, home
        self.base = f"http://127.0.0.1:{port}"
        self.client = openai.OpenAI(base_url=self.base + "/v1", api_key="x", timeout=120, max_retries=0)

    @property
    def log(self) -> str:
        path = self.home / "logs" / f"vllm-{MODEL}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def children(self) -> list[tuple[int, int]]:
        """(port, pid) of every vLLM start so far, from the supervisor's lines in the log."""
        return [(int(p), int(pid)) for p, pid in READY.findall(self.log)]

    def wait_healthy(self, starts: int, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"appliance serve exited:\n{self.log[-3000:]}"
            if len(self.children()) >= starts:
                try:
                    if httpx.get(self.base + "/health", timeout=5).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(2)
        raise AssertionError(f"not healthy after {timeout_s} s:\n{self.log[-3000:]}")


@pytest.fixture(scope="module")
def served(converted: Path, vllm_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("home")
    port = free_port()
    cmd = [
        sys.executable, "-m", "appliance.cli", "serve",
        "--runtime", "vllm", "--model", MODEL, "--model-dir", str(converted),
        "--ctx", "2048", "--small-model", "none", "--port", str(port), "--no-prefix-store", "--air-gapped",
        "--vllm-command", f"{vllm_python} -m vllm.entrypoints.openai.api_server",
    ]  # fmt: skip
    env = {**os.environ, "APPLIANCE_HOME": str(home)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    s = Served(proc, port, home)
    try:
        s.wait_healthy(starts=1)
        yield s
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        for _, pid in s.children():  # no vLLM left behind
            _wait_gone(pid, 30)


def _wait_gone(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    raise AssertionError(f"vLLM process {pid} is still running")


def _chat(s: Served, text: str, **kw):
    return s.client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}], temperature=0, **kw
    )


def test_chat_and_stream_through_our_api(served: Served):
    models = served.client.models.list().data
    assert [m.id for m in models] == [MODEL]
    reply = _chat(served, "What is the capital of France? Answer in one word.", max_tokens=16)
    assert "paris" in reply.choices[0].message.content.lower()
    assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 10
    usage = {"include_usage": True}
    chunks = list(_chat(served, "Say hello.", max_tokens=24, stream=True, stream_options=usage))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    # vLLM served it: our API's route header names the model, and its own /health is up.
    raw = httpx.post(
        served.base + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=120,
    )
    assert raw.status_code == 200 and raw.headers["x-appliance-model"] == MODEL
    (vllm_port, _), *_ = served.children()
    assert httpx.get(f"http://127.0.0.1:{vllm_port}/health", timeout=5).status_code == 200


def test_killed_mid_stream_clean_error_restart_and_recovery(served: Served):
    (_, first_pid), *_ = served.children()
    stream = _chat(served, "Count from 1 to 300, separated by commas.", max_tokens=600, stream=True)
    got: list[str] = []
    started = time.monotonic()
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
            if len(got) == 5:
                os.kill(first_pid, signal.SIGKILL)
    assert time.monotonic() - started < 60, "the stream hung after vLLM died"
    assert len(got) >= 5
    assert "vLLM engine stopped during this request" in str(err.value)
    # While it restarts, requests are refused cleanly with a hint when to retry.
    refused = httpx.post(
        served.base + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert refused.status_code == 503 and "retry-after" in refused.headers
    served.wait_healthy(starts=2)
    (_, second_pid) = served.children()[1]
    assert second_pid != first_pid
    assert "killed by signal 9" in served.log and "restart 1" in served.log
    reply = _chat(served, "What is the capital of France? Answer in one word.", max_tokens=16)
    assert "paris" in reply.choices[0].message.content.lower()
