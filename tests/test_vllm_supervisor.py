"""The vLLM supervisor and VllmRuntime against a real child process on loopback.

The child is `fakes/vllm_child.py`, a stand-in for vLLM's OpenAI server (vLLM itself takes
minutes to start: tests/test_vllm.py runs the real one). Everything else is real: processes,
signals, process groups, /health over HTTP, our API app serving the runtime, and the openai
SDK as the client.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from live_server import running_server

from appliance.api import ModelRegistry, create_app
from runtimes.vllm.flags import VllmLaunch
from runtimes.vllm.runtime import VllmRuntime
from runtimes.vllm.supervisor import State, Supervisor, SupervisorConfig, SupervisorError

CHILD = Path(__file__).parent / "fakes" / "vllm_child.py"
MODEL = "fake-model"


def _launch(port: int) -> VllmLaunch:
    return VllmLaunch(["--host", "127.0.0.1", "--port", str(port), "--served-model-name", MODEL])


def _supervisor(tmp_path: Path, **overrides) -> Supervisor:
    settings = dict(start_timeout_s=30, backoff_s=0.2, poll_s=0.1, health_timeout_s=0.5, stop_timeout_s=3)
    settings.update(overrides)
    log_path = tmp_path / "logs" / "vllm.log"
    command = [sys.executable, str(CHILD)]
    cfg = SupervisorConfig(command=command, launch=_launch, log_path=log_path, **settings)
    return Supervisor(cfg)


def _wait(cond: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie no one reaped yet is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Supervisor, openai.OpenAI, str]]:
    """A supervised fake vLLM behind our real API app; yields (supervisor, client, api base)."""
    pid_file = tmp_path / "engine.pid"
    sup = _supervisor(tmp_path, env={"FAKE_VLLM_GRANDCHILD": str(pid_file)})
    sup.start(wait=True)
    registry = ModelRegistry()
    registry.add(VllmRuntime(MODEL, 4096, sup, slots=4), roles=["main"])
    with running_server(create_app(registry, close_runtimes_on_shutdown=True)) as live:
        client = openai.OpenAI(base_url=live.api_base, api_key="x", timeout=20, max_retries=0)
        yield sup, client, live.api_base
    sup.stop()


def test_killed_mid_stream_gives_a_clean_error_then_restarts_and_serves(served, tmp_path):
    sup, client, base = served
    first_pid, engine_pid = sup.pid, int((tmp_path / "engine.pid").read_text())
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=200
    )
    got = []
    started = time.monotonic()
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
            if len(got) == 5:
                os.kill(first_pid, signal.SIGKILL)
    assert time.monotonic() - started < 10, "the stream hung after the child died"
    assert len(got) >= 5
    assert "vLLM engine stopped during this request" in str(err.value)
    # The supervisor restarts it on a new port, and the engine process it left behind is gone.
    _wait(lambda: sup.state == State.READY and sup.generation == 2)
    assert sup.pid != first_pid
    _wait(lambda: not _alive(engine_pid), 5)
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "again"}])
    assert reply.choices[0].message.content.startswith("w0 w1")
    assert httpx.get(base.removesuffix("/v1") + "/health").status_code == 200
    log = sup.cfg.log_path.read_text()
    assert "killed by signal 9" in log and "restart 1" in log


def test_requests_while_restarting_get_503_with_retry_after(tmp_path):
    sup = _supervisor(tmp_path, backoff_s=3.0)
    sup.start(wait=True)
    registry = ModelRegistry()
    registry.add(VllmRuntime(MODEL, 4096, sup), roles=["main"])
    try:
        with running_server(create_app(registry)) as live:
            os.kill(sup.pid, signal.SIGKILL)
            _wait(lambda: sup.state == State.RESTARTING)
            body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
            r = httpx.post(live.api_base + "/chat/completions", json=body, timeout=10)
            assert r.status_code == 503
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["code"] == "engine_unavailable"
            assert "restarting" in r.json()["error"]["message"]
            assert httpx.get(live.base_url + "/health").status_code == 503
            _wait(lambda: sup.state == State.READY)
            body["stream"] = False
            assert httpx.post(live.api_base + "/chat/completions", json=body, timeout=10).status_code == 200
    finally:
        sup.stop()


def test_a_start_that_fails_is_reported_at_once_with_the_log(tmp_path):
    sup = _supervisor(tmp_path, env={"FAKE_VLLM_EXIT": "3"})
    with pytest.raises(SupervisorError, match="exit code 3") as err:
        sup.start(wait=True)
    assert str(sup.cfg.log_path) in str(err.value)
    assert sup.state == State.FAILED and sup.generation == 1  # no retries of a broken configuration
    assert "failing on purpose" in sup.cfg.log_path.read_text()


def test_gives_up_after_bounded_restarts(tmp_path):
    sup = _supervisor(tmp_path, env={"FAKE_VLLM_DIE_AFTER_S": "1.0"}, max_restarts=2, backoff_s=0.1)
    sup.start(wait=True)
    _wait(lambda: sup.state == State.FAILED, 60)
    assert sup.generation == 3  # the first start and two restarts
    assert "died 2 times in a row" in (sup.error or "")
    runtime = VllmRuntime(MODEL, 4096, sup)
    with running_server(create_app(_registry(runtime))) as live:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(live.api_base + "/chat/completions", json=body, timeout=10)
    assert r.status_code == 503 and "not restarted" in r.json()["error"]["message"]
    sup.stop()


def test_a_hung_child_is_killed_and_restarted(tmp_path):
    sup = _supervisor(tmp_path, hung_after=2)
    sup.start(wait=True)
    first = sup.pid
    try:
        os.kill(first, signal.SIGSTOP)  # alive, but answers nothing
        _wait(lambda: sup.generation == 2 and sup.state == State.READY, 30)
        assert not _alive(first)
        assert "killing the hung child" in sup.cfg.log_path.read_text()
    finally:
        sup.stop()


def test_stop_ends_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "engine.pid"
    sup = _supervisor(tmp_path, env={"FAKE_VLLM_GRANDCHILD": str(pid_file)})
    sup.start(wait=True)
    child, engine = sup.pid, int(pid_file.read_text())
    assert _alive(child) and _alive(engine)
    sup.stop()
    assert sup.state == State.STOPPED
    _wait(lambda: not _alive(child) and not _alive(engine), 5)


def _registry(runtime: VllmRuntime) -> ModelRegistry:
    registry = ModelRegistry()
    registry.add(runtime, roles=["main"])
    return registry
