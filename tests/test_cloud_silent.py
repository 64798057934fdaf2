"""A cloud provider that accepts the connection and never sends a byte: the client gets the
local model's answer within the provider's `first_byte_timeout_s` (plus a margin), not after
its read timeout times its retries, and `x-appliance-reason` says why."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from fakes.scripted_runtime import ScriptedRuntime, text_events
from fakes.silent_server import SilentServer
from live_server import running_server

from appliance.api import ModelRegistry, create_app
from appliance.config import ServeConfig
from appliance.serve.routing import build_routing

KEY_ENV = "SILENT_TEST_KEY"
CLOUD_MODEL = "gpt-frontier"
FIRST_BYTE_S = 1.0


def _provider(name: str, base_url: str) -> dict:
    return {
        "name": name, "kind": "openai", "base_url": base_url + "/v1", "api_key_env": KEY_ENV,
        "max_retries": 2, "timeout_s": 120, "first_byte_timeout_s": FIRST_BYTE_S,
        "models": {CLOUD_MODEL: {"upstream": "gpt-4o"}},
    }


@pytest.mark.parametrize("stream", [False, True])
def test_a_silent_provider_falls_back_to_local_within_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    monkeypatch.setenv(KEY_ENV, "sk-test")
    local = ScriptedRuntime(id="local-model", n_ctx=4096, script=text_events("answered locally"))
    registry = ModelRegistry()
    registry.add(local, roles=["main"])
    with SilentServer() as silent:
        cloud = {"backoff_base_s": 0.001, "providers": [_provider("hangs", silent.base_url)]}
        routing = build_routing(ServeConfig(cloud=cloud), registry)
        app = create_app(registry, routing=routing, close_runtimes_on_shutdown=True)
        with running_server(app) as live:
            body = {
                "model": CLOUD_MODEL, "stream": stream,
                "messages": [{"role": "user", "content": "hello"}],
            }
            started = time.monotonic()
            r = httpx.post(live.api_base + "/chat/completions", json=body, timeout=30)
            waited = time.monotonic() - started
        assert silent.accepted == 1  # given up on, not retried: it would most likely hang again
    assert r.status_code == 200, r.text
    assert r.headers["x-appliance-route"] == "local"
    assert r.headers["x-appliance-reason"] == "cloud-failed:timeout,fallback"
    assert _text(r, stream) == "answered locally"
    assert FIRST_BYTE_S <= waited < FIRST_BYTE_S + 2.0, waited


def test_one_silent_provider_then_the_next_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two silent providers: each gets its own first-byte wait, then local; the reason still
    says timeout."""
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    monkeypatch.setenv(KEY_ENV, "sk-test")
    local = ScriptedRuntime(id="local-model", n_ctx=4096, script=text_events("answered locally"))
    registry = ModelRegistry()
    registry.add(local, roles=["main"])
    with SilentServer() as a, SilentServer() as b:
        cloud = {"providers": [_provider("a", a.base_url), _provider("b", b.base_url)]}
        routing = build_routing(ServeConfig(cloud=cloud), registry)
        app = create_app(registry, routing=routing, close_runtimes_on_shutdown=True)
        with running_server(app) as live:
            started = time.monotonic()
            r = httpx.post(
                live.api_base + "/chat/completions", timeout=30,
                json={"model": CLOUD_MODEL, "messages": [{"role": "user", "content": "hello"}]},
            )
            waited = time.monotonic() - started
        assert (a.accepted, b.accepted) == (1, 1)
    assert r.status_code == 200 and r.headers["x-appliance-reason"] == "cloud-failed:timeout,fallback"
    assert 2 * FIRST_BYTE_S <= waited < 2 * FIRST_BYTE_S + 2.0, waited


def _text(r: httpx.Response, stream: bool) -> str:
    if not stream:
        return r.json()["choices"][0]["message"]["content"]
    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
