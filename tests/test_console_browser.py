"""The console in a real browser: Debian's Chromium driven by Playwright, against `appliance
serve` with a real small model, and a request sent with the openai SDK.

What a person at the workstation depends on: the page shows the loaded model; a chat request
appears in the audit with its route and reason and the token counter rises, without a reload;
with keys on, nothing shows until a key is entered; the console logs no errors, and the page
talks to no host but the appliance (it must work air-gapped).

Chromium comes from `make tools` (apt), Playwright from the test extras. A missing browser
fails the test: it is part of CI, never silently skipped. Set CONSOLE_SCREENSHOT=PATH to keep
the screenshot (README.md's docs/console.png is made that way).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

MODEL = "qwen2.5-coder-0.5b-instruct"
KEY_ENV = "CONSOLE_TEST_KEY"
KEY = "console-test-key-0123456789"
WAIT_MS = 20_000


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: `make tools` installs it (apt-get install chromium)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(models_dir: Path, home: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`appliance serve` as a user starts it, in a data directory of its own that shares the
    model store; yields its base URL once /health says ready."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    (home / "models").symlink_to(models_dir, target_is_directory=True)
    proc = subprocess.Popen(
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
            *extra,
        ],
        env={**os.environ, "APPLIANCE_HOME": str(home), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("appliance serve did not become healthy")
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class Watched:
    """What the page did: console errors, uncaught exceptions, every request's URL and headers."""

    errors: list[str] = field(default_factory=list)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def attach(self, page) -> None:
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url}"))
        page.on("request", lambda r: self.requests.append((r.url, r.headers)))

    def foreign(self, base: str) -> list[str]:
        """Requests to anything but the appliance (blob: URLs of its own origin are its data)."""
        own = (base + "/", f"blob:{base}/")
        return [url for url, _ in self.requests if not url.startswith(own)]


@contextmanager
def browser_page() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium())
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.set_default_timeout(WAIT_MS)
            yield page
        finally:
            browser.close()


def write_bench_run(folder: Path) -> str:
    """A results file and its chart as `appliance bench` writes them (its own build, write and
    write_chart), so the bench panel has a run to show; returns the run's name."""
    from appliance.bench import results
    from appliance.bench.chart import write_chart
    from appliance.bench.sample import Sample

    samples = [
        Sample(
            "appliance", "decode", f"prompt={n}", rep, metrics={"decode_tok_s": 40.0 - n / 256, "ttft_s": 0.2}
        )
        for n in (128, 1024)
        for rep in (0, 1)
    ]
    run = results.build(
        command=["appliance", "bench", "--workload", "decode"],
        settings={},
        machine={},
        targets={"appliance": {}},
        samples=samples,
    )
    path = results.write(run, folder / "bench-20261205T120000Z-console.json")
    assert write_chart(run, path.with_suffix(".png")) is not None
    return path.stem


def tokens_shown(page) -> int:
    return int(page.locator("#tokens-total").inner_text().replace(",", ""))


@pytest.mark.slow
def test_console_shows_the_model_and_a_request_live(qwen_path: Path, tmp_path: Path) -> None:
    from openai import OpenAI
    from playwright.sync_api import expect

    run = write_bench_run(tmp_path / "home" / "bench")
    with serving(qwen_path.parent.parent, tmp_path / "home") as base, browser_page() as page:
        seen = Watched()
        seen.attach(page)
        page.goto(base + "/")
        expect(page.locator(f'#models tbody tr[data-model="{MODEL}"]')).to_be_visible()
        expect(page.locator("#status")).to_have_text("running")
        expect(page.locator("#machine")).to_contain_text("RAM")
        expect(page.locator("#plan-reasons")).to_contain_text(MODEL)
        bench = page.locator("#bench .run")
        expect(bench.locator("table")).to_contain_text("decode tok/s")
        expect(bench.locator("table")).to_contain_text("prompt=1024")
        chart = bench.locator("img")
        expect(chart).to_have_attribute("alt", f"bench chart {run}")
        page.wait_for_function("document.querySelector('#bench img').naturalWidth > 0")  # the PNG drew
        page.evaluate("window.__sameDocument = true")  # gone if the page reloads
        before = tokens_shown(page)

        client = OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16, temperature=0
        )
        route, reason = raw.headers["x-appliance-route"], raw.headers["x-appliance-reason"]
        assert route == "local" and reason

        row = page.locator("#audit tbody tr").first
        expect(row.locator("td.route")).to_have_text(route)
        expect(row.locator("td.reason")).to_have_text(reason)
        expect(row).to_contain_text(MODEL)
        expect(row).to_contain_text("openai")
        page.wait_for_function(
            f"Number(document.getElementById('tokens-total').textContent.replace(/,/g, '')) > {before}"
        )
        assert tokens_shown(page) >= before + raw.parse().usage.total_tokens
        assert page.evaluate("window.__sameDocument") is True

        page.locator("#cloud-only").check()  # nothing went to the cloud: the filtered list is empty
        expect(page.locator("#audit tbody tr")).to_have_count(0)
        page.locator("#cloud-only").uncheck()
        expect(page.locator("#audit tbody tr")).to_have_count(1)

        shot = Path(os.environ.get("CONSOLE_SCREENSHOT") or tmp_path / "console.png")
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        assert seen.errors == []
        assert seen.foreign(base) == []


@pytest.mark.slow
def test_console_with_keys_on_refuses_without_a_key_and_works_with_one(
    qwen_path: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    with (
        serving(
            qwen_path.parent.parent, tmp_path / "home", "--api-key-env", KEY_ENV, env={KEY_ENV: KEY}
        ) as base,
        browser_page() as page,
    ):
        assert httpx.get(f"{base}/console/api/overview").status_code == 401
        seen = Watched()
        seen.attach(page)
        page.goto(base + "/")
        expect(page.locator("#key-panel")).to_be_visible()
        expect(page.locator("#console")).to_be_hidden()
        expect(page.locator("#models tbody tr")).to_have_count(0)
        assert not [url for url, _ in seen.requests if "/console/api/" in url and not url.endswith("/access")]

        page.fill("#key-input", "not-the-key")
        page.click("#key-form button")
        expect(page.locator("#key-error")).to_have_text("That key was refused.")
        expect(page.locator("#console")).to_be_hidden()
        assert seen.errors  # the browser logs the refused key's 401 (and the watcher sees it) ...
        seen.errors.clear()  # ... expected, and the only error allowed

        page.fill("#key-input", KEY)
        page.click("#key-form button")
        expect(page.locator(f'#models tbody tr[data-model="{MODEL}"]')).to_be_visible()
        expect(page.locator("#key-panel")).to_be_hidden()
        assert page.evaluate(f"sessionStorage.getItem('appliance.console.key') === '{KEY}'")
        sent = [h.get("authorization") for url, h in seen.requests if "/console/api/overview" in url]
        assert sent and sent[-1] == f"Bearer {KEY}"

        page.reload()  # the key stays with the tab
        expect(page.locator(f'#models tbody tr[data-model="{MODEL}"]')).to_be_visible()
        assert seen.errors == []
        assert seen.foreign(base) == []
