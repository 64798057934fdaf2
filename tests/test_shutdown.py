"""SIGTERM with streams in flight: `appliance serve` (a real small model) stops accepting, lets
the running streams finish, flushes the usage log and exits 0, as supervisors expect."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

MODEL = "smollm2-135m-instruct"


@pytest.mark.slow
def test_sigterm_drains_streams_and_exits_zero(tmp_path: Path, smollm_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(smollm_path.parents[1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "APPLIANCE_HOME": str(home)}
    cmd = [
        sys.executable,
        "-m",
        "appliance.cli",
        "serve",
        "--model",
        MODEL,
        "--small-model",
        "none",
        "--ctx",
        "2048",
        "--slots",
        "4",
        "--no-prefix-store",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "appliance serve did not start"
            time.sleep(0.3)

        results: dict[int, tuple[str, str | None]] = {}
        first_tokens = threading.Barrier(5, timeout=120)

        def stream(i: int) -> None:
            client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
            text, finish, waited = [], None, False
            try:
                chunks = client.chat.completions.create(
                    model=MODEL,
                    stream=True,
                    max_tokens=48,
                    messages=[{"role": "user", "content": f"Count from {i} to 100."}],
                )
                for chunk in chunks:
                    if chunk.choices:
                        text.append(chunk.choices[0].delta.content or "")
                        finish = chunk.choices[0].finish_reason or finish
                    if not waited:
                        waited = True
                        first_tokens.wait()
                results[i] = ("".join(text), finish)
            except openai.APIError as e:  # a clean error is acceptable; a cut connection is not
                results[i] = ("error", str(e))

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        first_tokens.wait()  # all four streams are running
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=120)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, proc.stdout.read() if proc.stdout else ""
    assert len(results) == 4
    for text, finish in results.values():
        assert text != "error", finish
        assert finish in ("stop", "length") and text
    # The usage log was flushed on the way out: one row per stream.
    env = {**os.environ, "APPLIANCE_HOME": str(home)}
    usage = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "usage", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sum(r["requests"] for r in json.loads(usage.stdout)) == 4
