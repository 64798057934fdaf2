"""Make README.md's screenshot of the console (docs/console.png) from real traffic.

Starts `appliance serve` with the installed Qwen2.5-Coder-0.5B in a throwaway data directory
(sharing this machine's model store), runs a short real `appliance bench` against it so the
bench panel has a run and its chart, sends a few chat requests with the openai SDK, then opens
the console in Debian's Chromium (Playwright) and screenshots the whole page.

    .venv/bin/python scripts/console_screenshot.py [--out docs/console.png]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

MODEL = "qwen2.5-coder-0.5b-instruct"
PROMPTS = ("Say hello.", "Write a Python one-liner that reverses a string.", "What is 17 * 23?")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, proc: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("appliance serve exited before it was ready")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("appliance serve did not become healthy")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/console.png"))
    args = parser.parse_args()
    from openai import OpenAI
    from playwright.sync_api import expect, sync_playwright

    from appliance.paths import models_dir

    store = models_dir()
    with tempfile.TemporaryDirectory(prefix="console-shot-") as tmp:
        home = Path(tmp)
        (home / "models").symlink_to(store, target_is_directory=True)
        env = {**os.environ, "APPLIANCE_HOME": str(home)}
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        serve = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "appliance.cli",
                "serve",
                "--port",
                str(port),
                "--model",
                MODEL,
                "--small-model",
                "none",
                "--ctx",
                "4096",
                "--slots",
                "2",
                "--no-pull",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_healthy(base, serve)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "appliance.cli",
                    "bench",
                    "--target",
                    f"appliance={base},model={MODEL}",
                    "--workload",
                    "decode,concurrency",
                    "--prompt-sizes",
                    "128,512",
                    "--max-tokens",
                    "32",
                    "--concurrency",
                    "1,2",
                    "--repeat",
                    "2",
                    "--quiet",
                    "--out",
                    str(home / "bench"),
                ],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            client = OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
            for prompt in PROMPTS:
                client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=48, temperature=0
                )
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium")
                page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
                page.goto(base + "/")
                expect(page.locator(f'#models tbody tr[data-model="{MODEL}"]')).to_be_visible(timeout=20_000)
                page.wait_for_function(
                    "document.querySelector('#bench img')?.naturalWidth > 0", timeout=20_000
                )
                page.wait_for_function(
                    "document.querySelectorAll('#spend tbody tr').length > 0", timeout=20_000
                )
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out), full_page=True)
                browser.close()
        finally:
            serve.send_signal(signal.SIGINT)
            serve.wait(timeout=30)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
