"""Access control over real loopback HTTP: Host names (DNS rebinding), browser origins (CORS),
named API keys from `appliance keys`, the refusal to serve the network without keys, and TLS.

Clients are the real ones (openai and anthropic SDKs, httpx); keys are made and revoked with
the real `appliance keys` command. The slow test runs `appliance serve` itself with a real
small model over HTTPS.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from fakes.scripted_runtime import ScriptedRuntime
from live_server import LiveServer, running_server

from appliance.api import ModelRegistry, catalog_resolver, create_app
from appliance.api.app import local_only_router
from appliance.api.guard import AccessPolicy
from appliance.api.routing import Routing
from appliance.config import ServeConfig
from appliance.keys import KeyStore
from appliance.serve.access import AccessError, server_access, tls_options
from appliance.usage.log import UsageLog
from appliance.usage.report import summarize

MODEL = "qwen2.5-coder-0.5b-instruct"
USER = [{"role": "user", "content": "Say hello."}]
BODY = {"model": MODEL, "messages": USER}


def _registry() -> ModelRegistry:
    reg = ModelRegistry(catalog_resolver())
    reg.add(ScriptedRuntime(id=MODEL, n_ctx=32768), roles=["main"])
    return reg


@pytest.fixture
def plain() -> Iterator[LiveServer]:
    """Defaults: what `appliance serve` on 127.0.0.1 with no keys and no origins enforces."""
    with running_server(create_app(_registry())) as live:
        yield live


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "APPLIANCE_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


# -- Host: DNS rebinding ---------------------------------------------------------------------
def test_foreign_host_header_is_refused_in_each_dialect(plain: LiveServer) -> None:
    url = plain.base_url
    evil = httpx.post(url + "/v1/chat/completions", json=BODY, headers={"Host": "evil.example"})
    assert evil.status_code == 403
    assert evil.json()["error"]["code"] == "host_not_allowed"
    assert "access-control-allow-origin" not in evil.headers
    evil_an = httpx.post(
        url + "/v1/messages", json={**BODY, "max_tokens": 5}, headers={"Host": f"evil.example:{plain.port}"}
    )
    assert evil_an.status_code == 403
    assert evil_an.json()["type"] == "error" and evil_an.json()["error"]["type"] == "permission_error"
    assert httpx.get(url + "/health", headers={"Host": "evil.example"}).status_code == 403
    for host in (f"localhost:{plain.port}", f"127.0.0.1:{plain.port}", f"[::1]:{plain.port}", "LOCALHOST"):
        assert httpx.post(url + "/v1/chat/completions", json=BODY, headers={"Host": host}).status_code == 200


def test_configured_host_names_are_accepted() -> None:
    access = AccessPolicy(allowed_hosts=frozenset({"appliance.lan"}))
    with running_server(create_app(_registry(), access=access)) as live:
        ok = httpx.post(
            live.base_url + "/v1/chat/completions", json=BODY, headers={"Host": "appliance.lan:8642"}
        )
        assert ok.status_code == 200
        bad = httpx.post(live.base_url + "/v1/chat/completions", json=BODY, headers={"Host": "evil.example"})
        assert bad.status_code == 403


# -- Origin: CORS ----------------------------------------------------------------------------
def _preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(
        url + "/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
        },
    )


def test_cross_origin_requests_are_refused_by_default(plain: LiveServer) -> None:
    pre = _preflight(plain.base_url, "https://evil.example")
    assert pre.status_code == 403
    assert not any(h.startswith("access-control-") for h in pre.headers)
    post = httpx.post(
        plain.base_url + "/v1/chat/completions", json=BODY, headers={"Origin": "https://evil.example"}
    )
    assert post.status_code == 403 and post.json()["error"]["code"] == "origin_not_allowed"
    # SDKs and curl send no Origin; they are unaffected.
    client = openai.OpenAI(base_url=plain.api_base, api_key="unused", max_retries=0)
    assert client.chat.completions.create(model=MODEL, messages=USER).choices[0].message.content  # type: ignore[arg-type]


def test_configured_origin_gets_preflight_and_cors_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_ORIGINS", "http://localhost:5173, https://chat.example")
    access = server_access(
        ServeConfig(allow_origins=["http://localhost:3000"]), KeyStore(Path("/nonexistent"))
    )
    with running_server(create_app(_registry(), access=access)) as live:
        for origin in ("http://localhost:3000", "http://localhost:5173", "https://chat.example"):
            pre = _preflight(live.base_url, origin)
            assert pre.status_code == 204, pre.text
            assert pre.headers["access-control-allow-origin"] == origin
            assert "POST" in pre.headers["access-control-allow-methods"]
            allowed = {h.strip() for h in pre.headers["access-control-allow-headers"].split(",")}
            assert {
                "authorization",
                "content-type",
                "x-api-key",
                "anthropic-version",
                "x-stainless-os",
            } <= allowed
            assert pre.headers["vary"] == "Origin"
        post = httpx.post(
            live.base_url + "/v1/chat/completions", json=BODY, headers={"Origin": "https://chat.example"}
        )
        assert post.status_code == 200
        assert post.headers["access-control-allow-origin"] == "https://chat.example"
        assert _preflight(live.base_url, "https://evil.example").status_code == 403


# -- keys ------------------------------------------------------------------------------------
def test_key_budgets_from_the_cli(tmp_path: Path) -> None:
    assert _cli("keys", "add", "agent", "--daily-budget", "2.5", home=tmp_path).returncode == 0
    assert "$2.50/day" in _cli("keys", "list", home=tmp_path).stdout
    assert KeyStore(tmp_path / "keys.json").daily_budget("agent") == 2.5
    assert _cli("keys", "budget", "agent", "none", home=tmp_path).returncode == 0
    assert KeyStore(tmp_path / "keys.json").daily_budget("agent") is None
    bad = _cli("keys", "budget", "agent", "-1", home=tmp_path)
    assert bad.returncode == 2 and "0 or more" in bad.stderr
    assert _cli("keys", "budget", "nobody", "3", home=tmp_path).returncode == 2


def test_keys_from_the_cli_work_with_the_sdks_and_revoked_ones_do_not(tmp_path: Path) -> None:
    made = _cli("keys", "add", "laptop", home=tmp_path)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("apl-") and len(key) > 40
    other = _cli("keys", "add", "ci", home=tmp_path).stdout.strip()
    path = tmp_path / "keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key not in path.read_text() and key[4:] not in path.read_text() and other not in path.read_text()
    listed = _cli("keys", "list", home=tmp_path)
    assert "laptop" in listed.stdout and "ci" in listed.stdout and key[4:12] not in listed.stdout

    usage = UsageLog(tmp_path / "usage.sqlite", batch_s=0)
    registry = _registry()
    routing = Routing(local_only_router(registry), usage=usage)
    access = AccessPolicy(keys=KeyStore(path))
    with running_server(create_app(registry, access=access, routing=routing)) as live:
        oa = openai.OpenAI(base_url=live.api_base, api_key=key, max_retries=0, timeout=10)
        assert oa.chat.completions.create(model=MODEL, messages=USER).choices  # type: ignore[arg-type]
        an = anthropic.Anthropic(base_url=live.base_url, api_key=other, max_retries=0, timeout=10)
        assert an.messages.create(model=MODEL, max_tokens=5, messages=USER).content  # type: ignore[arg-type]
        wrong = openai.OpenAI(base_url=live.api_base, api_key="apl-not-a-key", max_retries=0, timeout=10)
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model=MODEL, messages=USER)  # type: ignore[arg-type]
        assert httpx.get(live.base_url + "/health").status_code == 200  # probes need no key

        assert _cli("keys", "revoke", "laptop", home=tmp_path).returncode == 0
        with pytest.raises(openai.AuthenticationError) as revoked:
            oa.chat.completions.create(model=MODEL, messages=USER)  # type: ignore[arg-type]
        assert revoked.value.status_code == 401
        assert an.messages.create(model=MODEL, max_tokens=5, messages=USER).content  # type: ignore[arg-type]
    usage.flush()
    usage.close()
    by_key = {r.key: r.requests for r in summarize(tmp_path / "usage.sqlite", None)}
    assert by_key == {"laptop": 1, "ci": 2}


def test_revoking_the_last_key_locks_a_network_server(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    key = store.add("only")
    access = AccessPolicy(keys=store, require_key=True)
    with running_server(create_app(_registry(), access=access)) as live:
        headers = {"Authorization": f"Bearer {key}"}
        assert (
            httpx.post(live.base_url + "/v1/chat/completions", json=BODY, headers=headers).status_code == 200
        )
        store.revoke("only")
        assert (
            httpx.post(live.base_url + "/v1/chat/completions", json=BODY, headers=headers).status_code == 401
        )
        assert httpx.post(live.base_url + "/v1/chat/completions", json=BODY).status_code == 401


# -- the bind rule ---------------------------------------------------------------------------
def test_network_bind_without_keys_refuses_to_start(tmp_path: Path) -> None:
    t0 = time.monotonic()
    run = _cli("serve", "--host", "0.0.0.0", "--port", "1", home=tmp_path)
    assert run.returncode == 2
    assert "--insecure-no-auth" in run.stderr and "appliance keys add" in run.stderr
    assert time.monotonic() - t0 < 60


def test_bind_rule() -> None:
    empty = KeyStore(Path("/nonexistent/keys.json"))
    assert server_access(ServeConfig(), empty).require_key is False  # loopback: zero-config
    with pytest.raises(AccessError, match="--insecure-no-auth"):
        server_access(ServeConfig(host="192.168.1.20"), empty)
    with pytest.raises(AccessError, match="--insecure-no-auth"):
        server_access(ServeConfig(host="::"), empty)
    assert server_access(ServeConfig(host="0.0.0.0", insecure_no_auth=True), empty).require_key is False
    policy = server_access(ServeConfig(host="192.168.1.20", allowed_hosts=["box.lan"]), _store_with_a_key())
    assert policy.require_key and policy.host_allowed("192.168.1.20:8642") and policy.host_allowed("box.lan")
    assert not policy.host_allowed("evil.example")
    # Behind a wildcard bind the key protects; Host names cannot be known (port mapping, aliases).
    assert server_access(ServeConfig(host="0.0.0.0"), _store_with_a_key()).host_allowed("myserver:8642")
    # Loopback with keys at start: keys stay required even if all are revoked later.
    assert server_access(ServeConfig(), _store_with_a_key()).require_key


def _store_with_a_key() -> KeyStore:
    import tempfile

    store = KeyStore(Path(tempfile.mkdtemp()) / "keys.json")
    store.add("k")
    return store


# -- TLS -------------------------------------------------------------------------------------
def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_tls_serves_https(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    options = tls_options(ServeConfig(tls_cert=str(cert), tls_key=str(key)))
    with running_server(create_app(_registry()), **options) as live:
        base = f"https://127.0.0.1:{live.port}"
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert))) as http:
            oa = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, http_client=http)
            assert oa.chat.completions.create(model=MODEL, messages=USER).choices  # type: ignore[arg-type]
        with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port gets nowhere
            httpx.get(live.base_url + "/health", timeout=5).raise_for_status()
    with pytest.raises(AccessError, match="go together"):
        tls_options(ServeConfig(tls_cert=str(cert)))


@pytest.mark.slow
def test_real_serve_over_https_with_a_named_key(tmp_path: Path, smollm_path: Path) -> None:
    """`appliance serve` itself: TLS, a key from `appliance keys add`, the openai SDK, a real
    model; then revoked; then the usage report attributes the request to the key."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(smollm_path.parents[1])
    cert, tls_key = _self_signed(tmp_path)
    key = _cli("keys", "add", "laptop", home=home).stdout.strip()
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
        "smollm2-135m-instruct",
        "--small-model",
        "none",
        "--ctx",
        "1024",
        "--slots",
        "1",
        "--no-prefix-store",
        "--port",
        str(port),
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(tls_key),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"https://127.0.0.1:{port}"
    try:
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=5) as http:
            deadline = time.monotonic() + 240
            while True:
                try:
                    if http.get(base + "/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "appliance serve did not become ready"
                time.sleep(0.5)
            oa = openai.OpenAI(
                base_url=base + "/v1", api_key=key, max_retries=0, http_client=http, timeout=120
            )
            out = oa.chat.completions.create(model="smollm2-135m-instruct", messages=USER, max_tokens=8)  # type: ignore[arg-type]
            assert out.choices[0].message.content
            assert _cli("keys", "revoke", "laptop", home=home).returncode == 0
            with pytest.raises(openai.AuthenticationError):
                oa.chat.completions.create(model="smollm2-135m-instruct", messages=USER, max_tokens=8)  # type: ignore[arg-type]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    report = json.loads(_cli("usage", "--json", home=home).stdout)
    assert [r["key"] for r in report if r["route"] == "local"] == ["laptop"]
