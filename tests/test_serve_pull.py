"""`appliance serve` getting the model it planned (issue 13): it pulls a missing model itself,
with progress on /health, resumes a pull a killed run left, and when the planned model cannot
be had it says so in red with the command that fixes it, then serves the best installed one.

The hub is a fake (tests/fakes/hf_hub.py): a real loopback HTTP server speaking the hub's API
to huggingface_hub, serving the real SmolLM2 GGUF, since the real hub cannot be reached here.
Every serve runs as a subprocess, as a user starts it, with its own data dir and HF cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fakes.hf_hub import FakeHub

from appliance.config import ServeConfig
from appliance.serve.choice import ServeError, decide, pinned_repo
from tests.test_import_models import chat, stop
from tests.test_opencode import free_port

REPO = "test-org/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture
def hub(smollm_path: Path):
    with FakeHub() as fake:
        fake.add_repo(REPO, {FILE: smollm_path, "SmolLM2-135M-Instruct.Q2_K.gguf": b"q2" * 5000})
        yield fake


def serve_env(tmp_path: Path, hub: FakeHub, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE")}
    return {
        **env, "APPLIANCE_HOME": str(tmp_path / "home"), "HF_ENDPOINT": hub.base_url,
        "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"), **extra,
    }


def start(env: dict[str, str], port: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "serve", "--small-model", "none", "--port", str(port),
         "--no-prefix-store", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def watch_health(proc: subprocess.Popen, port: int, timeout_s: float = 240) -> list[dict]:
    """Poll /health until 200 (or the process exits); every body seen, in order."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            seen.append(r.json())
            if r.status_code == 200:
                return seen
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return seen


@pytest.mark.slow
def test_serve_pulls_a_pinned_hub_repo_with_progress_on_health_then_serves_it(hub, smollm_path, tmp_path):
    size = smollm_path.stat().st_size
    key = f"{REPO}/{FILE}"
    env = serve_env(tmp_path, hub)
    port = free_port()

    # First run: the network drops half way. A pinned model is never swapped: serve exits, saying so.
    hub.cut(key, size // 2)
    proc = start(env, port, "--model", f"hf.co/{REPO}:Q4_1")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "run the pull again to resume" in out, out
    first = hub.served[key]
    assert 0 < first <= size // 2 + (8 << 20)

    # Second run: resumes (only the rest is sent), reports progress on /health, loads, answers.
    hub.heal()
    hub.rate = 30e6  # ~1.6 s for the rest: long enough to be seen downloading
    proc = start(env, port, "--model", f"hf.co/{REPO}:Q4_1")
    try:
        seen = watch_health(proc, port)
        assert seen and seen[-1]["status"] == "ok", (seen[-3:], proc.poll())
        downloading = [b for b in seen if b["status"] == "downloading"]
        assert downloading, seen[:5]
        assert {b["model"] for b in downloading} == {f"hf.co/{REPO}:Q4_1"}
        assert all(b["total_bytes"] == size and 0 < b["done_bytes"] <= size for b in downloading)
        assert downloading[0]["done_bytes"] >= first  # counted from what the first run left
        assert "error" in downloading[0]  # OpenAI-shaped, like the loading 503
        assert hub.served[key] == size  # first half + the rest: nothing sent twice
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()["data"]
        assert [m["id"] for m in models] == [REPO]
        assert chat(port, REPO).strip()
    finally:
        stop(proc)

    # Third run: installed now; nothing is downloaded, not even a listing.
    hub.reset_counts()
    proc = start(env, port, "--model", f"{REPO}:Q4_1")
    try:
        assert watch_health(proc, port)[-1]["status"] == "ok"
        assert sum(hub.served.values()) == 0 and hub.requests == []
    finally:
        stop(proc)


@pytest.mark.slow
def test_a_planned_model_that_cannot_be_had_is_said_in_red_then_the_installed_one_serves(
    hub, qwen_path, tmp_path
):
    """Offline with an empty HF cache: the plan's model cannot come. Serve says which, why and
    the command, then serves the best installed model (the 0.5B one, in this store)."""
    store = tmp_path / "home" / "models" / "qwen2.5-coder-0.5b-instruct"
    store.mkdir(parents=True)
    os.link(qwen_path, store / qwen_path.name)  # installed, the store's way
    env = serve_env(tmp_path, hub, HF_HUB_OFFLINE="1")
    port = free_port()
    proc = start(env, port, "--profile", "cpu-2core-24gb", "--ctx", "4096", "--slots", "1")
    try:
        seen = watch_health(proc, port)
        assert seen and seen[-1]["status"] == "ok", proc.poll()
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()["data"]
        assert [m["id"] for m in models] == ["qwen2.5-coder-0.5b-instruct"]
        assert chat(port, "qwen2.5-coder-0.5b-instruct").strip()
    finally:
        stop(proc)
    out = proc.stdout.read()
    assert "could not get the planned model" in out and "offline" in out.lower(), out
    assert "not the planned model" in out and "`appliance pull " in out
    assert sum(hub.served.values()) == 0  # offline means offline


def test_a_pinned_repo_with_no_pull_names_the_pull(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    cfg = ServeConfig(model=f"hf.co/{REPO}:Q4_1", pull=False)
    assert pinned_repo(cfg) is None  # not pulled first: --no-pull
    with pytest.raises(ServeError, match=f"appliance pull hf.co/{REPO}:Q4_1"):
        decide(cfg, _any_machine())
    assert pinned_repo(cfg.model_copy(update={"pull": True})) == f"hf.co/{REPO}:Q4_1"


def _any_machine():
    from appliance.profiles import load_profile

    return load_profile("cpu-2core-24gb")
