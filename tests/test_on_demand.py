"""Models loaded when a request names them, unloaded when idle or for room (issue 14, part 2),
through `appliance serve` with real small models (Qwen2.5-Coder-0.5B as the planned main model;
SmolLM2-135M from the catalog and a second SmolLM2 imported under its own name on demand), the
openai SDK, and `appliance ps`/`unload`. Gemma 3 270M is installed too: a base model, which a
chat request cannot load. The policy's every rule is in tests/test_residency.py; this proves it
on real engines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.test_import_models import stop
from tests.test_opencode import free_port

MAIN, SMOL, OTHER, BASE = "qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct", "smol-b", "gemma-3-270m"


def start_server(tmp: Path, models: list[Path], settings: dict) -> tuple[subprocess.Popen, int, Path]:
    """A data dir whose store holds `models` (hard links, the store's layout) plus an import of
    SmolLM2 named OTHER, and `appliance serve` on it."""
    home = tmp / "home"
    for path in models:
        (home / "models" / path.parent.name).mkdir(parents=True)
        os.link(path, home / "models" / path.parent.name / path.name)
    smol = next(p for p in models if p.parent.name == SMOL)
    assert cli(home, "import", str(smol), "--name", OTHER).returncode == 0
    port = free_port()
    (home / "config.yaml").write_text(json.dumps({"port": port, "prefix_store": False, **settings}))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appliance.cli",
            "serve",
            "--model",
            MAIN,
            "--small-model",
            "none",
            "--no-pull",
            "--ctx",
            "4096",
            "--slots",
            "2",
        ],
        env={**os.environ, "APPLIANCE_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc, port, home
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    pytest.fail("appliance serve did not become healthy")


def loaded(port: int) -> dict[str, dict]:
    rows = httpx.get(f"http://127.0.0.1:{port}/api/ps", timeout=10).json()["models"]
    return {r["model"]: r for r in rows if r["state"] == "loaded"}


def ask(client: OpenAI, model: str, **extra) -> str:
    out = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say hi."}],
        max_tokens=8,
        temperature=0,
        extra_body=extra or None,
    )
    assert out.model == model
    return out.choices[0].message.content or ""


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "APPLIANCE_HOME": str(home)},
        timeout=60,
    )


@pytest.fixture
def store(qwen_path: Path, smollm_path: Path, gemma_path: Path) -> list[Path]:
    return [qwen_path, smollm_path, gemma_path]


@pytest.mark.slow
def test_on_demand_load_lru_keep_alive_idle_unload_ps_and_unload(store, tmp_path):
    proc, port, home = start_server(tmp_path, store, {"max_loaded_models": 2, "idle_unload_s": 4})
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
    try:
        assert set(loaded(port)) == {MAIN} and loaded(port)[MAIN]["pinned"]

        # Two requests for a model that is not loaded: both wait for its one load, both answered.
        replies: list[str] = []
        threads = [threading.Thread(target=lambda: replies.append(ask(client, SMOL))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert len(replies) == 2
        now = loaded(port)
        assert set(now) == {MAIN, SMOL} and now[SMOL]["unload_in_s"] is not None  # idle_unload_s applies

        # A third model with max_loaded_models 2: the least recently used idle one (SmolLM2) goes,
        # never the main model the server started with.
        ask(client, MAIN)
        ask(client, OTHER)
        assert set(loaded(port)) == {MAIN, OTHER}

        # keep_alive 0 (Ollama's form): unloaded as soon as the request is done.
        ask(client, SMOL, keep_alive=0)
        deadline = time.monotonic() + 10
        while SMOL in loaded(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert set(loaded(port)) == {MAIN}  # OTHER made room for it, then it left as asked

        # idle_unload_s: an on-demand model goes after 4 s idle; the main model stays.
        ask(client, OTHER)
        assert OTHER in loaded(port)
        time.sleep(6)
        assert set(loaded(port)) == {MAIN}

        # A bad keep_alive is a 400 in OpenAI's shape; a model that is not installed is a 404.
        bad = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            timeout=30,
            json={"model": SMOL, "keep_alive": "soon", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "keep_alive"
        base = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            timeout=60,
            json={"model": BASE, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert base.status_code == 404 and "base model" in base.json()["error"]["message"]
        assert set(loaded(port)) == {MAIN}  # nothing was unloaded for a model that can never chat
        missing = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            timeout=30,
            json={"model": "qwen3-30b-a3b", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert missing.status_code == 404 and "appliance pull" in missing.json()["error"]["message"]

        # `appliance ps` and `appliance unload`, the CLI a user types.
        ask(client, SMOL)
        rows = json.loads(cli(home, "ps", "--json").stdout)
        assert {r["model"] for r in rows} == {MAIN, SMOL}
        row = next(r for r in rows if r["model"] == SMOL)
        assert row["ram_bytes"] > 0 and row["context"] > 0 and row["slots_busy"] == 0
        assert SMOL in cli(home, "ps").stdout
        out = cli(home, "unload", SMOL)
        assert out.returncode == 0, out.stderr
        assert set(loaded(port)) == {MAIN}
        assert "loaded" in httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
    finally:
        stop(proc)


@pytest.mark.slow
def test_two_models_stream_while_a_third_loads(store, tmp_path):
    proc, port, _ = start_server(tmp_path, store, {"max_loaded_models": 3})
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
    try:
        ask(client, SMOL)  # loaded beforehand: MAIN and SMOL stream, OTHER loads
        stamps: dict[str, list[float]] = {MAIN: [], SMOL: []}

        def stream(model: str) -> None:
            chunks = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "Count to one hundred."}],
                max_tokens=160,
                temperature=0,
                stream=True,
                extra_body={"ignore_eos": True},
            )
            for _ in chunks:
                stamps[model].append(time.monotonic())

        threads = [threading.Thread(target=stream, args=(m,)) for m in stamps]
        for t in threads:
            t.start()
        while min(len(s) for s in stamps.values()) < 5:  # both streams are decoding
            time.sleep(0.05)
        began = time.monotonic()
        ask(client, OTHER)  # load + answer
        ended = time.monotonic()
        for t in threads:
            t.join(timeout=180)
        assert OTHER in loaded(port)
        for model, times in stamps.items():
            assert len(times) > 100, model  # the whole stream came
            during = [t for t in times if began <= t <= ended]
            assert during, f"{model} produced nothing while {OTHER} loaded ({ended - began:.1f} s)"
            assert times[-1] > ended, f"{model} finished before the load: the test proves nothing"
    finally:
        stop(proc)
