"""Runs inside a loopback-only network namespace for tests/test_airgap.py (not a test itself).

It starts a fake OpenAI provider on the namespace's loopback (a real HTTP server:
real providers cannot exist here), writes a config naming it as a cloud provider,
runs `appliance serve --air-gapped` with a real small model, sends requests that
would go to the cloud plus one local request, samples the serve process's sockets
from /proc while they run, and prints what it saw as one JSON object.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fakes.openai_provider import FakeOpenAI

HARD = (
    "Prove that there is no continuous function f from the reals to the reals that takes every "
    "value exactly twice. I need a complete proof, not a reference to a theorem."
)
EASY = "hi! what does the word 'distributed' mean?"


def log_question(lines: int) -> str:
    """About 6 tokens a line with Qwen2.5's tokenizer: 250 lines fit a 2048 context, 500 do not."""
    return "What is the most common word in this log?\n```\n" + "ok ok ok ok ok\n" * lines + "```"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hex_addr(text: str) -> str:
    """`0100007F:1F90` (or the 32-hex-digit IPv6 form) -> an IP address string."""
    host = text.split(":")[0]
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
    return str(ipaddress.IPv6Address(b"".join(words)))


def process_sockets(pid: int) -> list[dict[str, str]]:
    """Every inet socket the process holds: protocol, local and remote address."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for proto in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6"):
        table = Path(f"/proc/{pid}/net/{proto}")
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            cols = line.split()
            if cols[9] in inodes:
                out.append({"proto": proto, "local": _hex_addr(cols[1]), "remote": _hex_addr(cols[2])})
    return out


def is_loopback_or_unbound(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    return ip.is_loopback or ip.is_unspecified or (
        isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback
    )


def main() -> int:
    seen_paths: list[str] = []
    fake = FakeOpenAI(api_key="sk-airgap-test-key")

    @fake.app.middleware("http")
    async def count(request, call_next):  # every request of any path, before any routing
        seen_paths.append(request.url.path)
        return await call_next(request)

    result: dict = {}
    with fake, tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        (home / "models").symlink_to(Path(sys.argv[1]))
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(json.dumps({
            "serve": {"prefix_store": False},
            "router": {"queue_wait_bound_s": 30},
            "cloud": {"providers": [{
                "name": "fake-openai", "kind": "openai", "base_url": fake.api_base,
                "api_key_env": "AIRGAP_FAKE_KEY", "models": {"gpt-frontier": "gpt-4o"},
            }]},
        }))
        port = free_port()
        env = {**os.environ, "APPLIANCE_HOME": str(home), "AIRGAP_FAKE_KEY": "sk-airgap-test-key"}
        cmd = [sys.executable, "-m", "appliance.cli", "serve", "--air-gapped", "--config", str(cfg),
               "--model", "qwen2.5-coder-0.5b-instruct", "--small-model", "none", "--port", str(port),
               "--ctx", "2048", "--slots", "1"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        samples: list[dict[str, str]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    samples.extend(process_sockets(proc.pid))
                except (FileNotFoundError, ProcessLookupError):
                    return
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 240
            while True:
                try:
                    if httpx.get(base + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    result["serve_output"] = proc.stdout.read() if proc.poll() is not None else "timeout"
                    raise SystemExit(json.dumps(result))
                time.sleep(0.5)
            def ask(model: str, text: str) -> dict:
                return {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": text}]}

            cases = {
                "cloud_model": (ask("gpt-frontier", EASY), {}),
                "header_cloud": (ask("default", EASY), {"x-appliance-route": "cloud"}),
                "tier_cloud": (ask("default", HARD), {}),
                "local": (ask("default", EASY), {}),
                "fits_local": (ask("default", log_question(250)), {}),
                "too_long": (ask("default", log_question(500)), {}),
            }
            answers = {}
            for name, (body, headers) in cases.items():
                r = httpx.post(base + "/v1/chat/completions", json=body, headers=headers, timeout=120)
                answers[name] = {
                    "status": r.status_code,
                    "route": r.headers.get("x-appliance-route"),
                    "reason": r.headers.get("x-appliance-reason"),
                    "error_code": (r.json().get("error") or {}).get("code") if r.status_code >= 400 else None,
                }
            result["answers"] = answers
        finally:
            stop.set()
            sampler.join(timeout=2)
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        result["fake_requests"] = seen_paths
        result["socket_samples"] = len(samples)
        result["non_loopback"] = [
            s for s in samples if not all(is_loopback_or_unbound(s[k]) for k in ("local", "remote"))
        ]
        result["interfaces"] = sorted(os.listdir("/sys/class/net"))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
