"""Air-gapped mode, proved: no cloud client exists, cloud-bound requests are refused, and
the serving process touches nothing but loopback.

The end-to-end proof runs `appliance serve --air-gapped` with a real model inside a
network namespace that has only loopback (`ip netns`), with a cloud provider configured
that points at a fake OpenAI provider on that loopback (a stand-in: real providers
cannot be reached here). See tests/airgap_driver.py for what runs inside.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from appliance.api import ModelRegistry, create_app
from appliance.config import ServeConfig
from appliance.models.store import ModelNotAvailable, artifact_path, fetch
from appliance.serve.routing import build_routing
from quantization.catalog import load_catalog

REPO = Path(__file__).resolve().parents[1]
CLOUD = {
    "providers": [{
        "name": "fake", "kind": "openai", "base_url": "http://127.0.0.1:9/v1",
        "api_key_env": "AIRGAP_UNIT_KEY", "models": {"gpt-frontier": "gpt-4o"},
    }]
}


def test_air_gapped_serve_builds_no_cloud_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    monkeypatch.setenv("AIRGAP_UNIT_KEY", "sk-unit")
    registry = ModelRegistry()
    gapped = build_routing(ServeConfig(cloud=CLOUD, router={"air_gapped": True}), registry)
    app = create_app(registry, routing=gapped)
    assert app.state.cloud is None and gapped.cloud is None
    # ...while the router still knows the configured names, to refuse them by name.
    assert gapped.router.cloud.knows("gpt-frontier") and not gapped.router.cloud.enabled
    connected = build_routing(ServeConfig(cloud=CLOUD), registry)
    assert create_app(registry, routing=connected).state.cloud is not None


def _netns_or_skip() -> str:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (`ip`) is not installed: `make tools` installs it")
    name = f"appliance-airgap-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {made.stderr.strip()}")
    subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
    return name


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_air_gapped_serve_in_a_loopback_only_namespace(qwen_path: Path) -> None:
    ns = _netns_or_skip()
    try:
        run = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, str(REPO / "tests" / "airgap_driver.py"),
             str(qwen_path.parent.parent)],
            capture_output=True, text=True, timeout=540, cwd=REPO,
        )
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["interfaces"] == ["lo"]  # the namespace really has nothing else
    answers = result["answers"]
    for case in ("cloud_model", "header_cloud", "tier_cloud"):
        a = answers[case]
        assert a["status"] == 403 and a["error_code"] == "cloud_not_allowed", (case, a)
        assert "air-gapped" in a["reason"], (case, a)
    for case in ("local", "fits_local"):
        assert answers[case]["status"] == 200 and answers[case]["route"] == "local", (case, answers[case])
    # Too long for the local context, and the cloud is off limits: refused, saying both.
    too_long = answers["too_long"]
    assert (too_long["status"], too_long["error_code"]) == (400, "context_length_exceeded")
    assert too_long["reason"] == "capacity:context,air-gapped"
    assert result["fake_requests"] == []  # the provider never heard from us
    assert result["socket_samples"] > 0  # we did watch the process's sockets
    assert result["non_loopback"] == []


def test_air_gapped_fetch_refuses_the_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not installed, no mirror: a clear refusal, without running pip at all."""
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # would fail loudly if pip ran
    model = load_catalog().get("smollm2-135m-instruct")
    with pytest.raises(ModelNotAvailable, match="air-gapped"):
        fetch(model, model.artifacts[0], air_gapped=True)
    cli = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "fetch", "smollm2-135m-instruct", "--air-gapped"],
        capture_output=True, text=True, env={**os.environ, "APPLIANCE_HOME": str(tmp_path)},
    )
    assert cli.returncode == 2 and "air-gapped" in cli.stderr and "--from" in cli.stderr


def test_air_gapped_fetch_imports_a_local_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smollm_path: Path
) -> None:
    """From local media: verified by size and checksum; a damaged copy is refused."""
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path / "home"))
    model = load_catalog().get("smollm2-135m-instruct")
    art = model.artifacts[0]
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(smollm_path.read_bytes()[: art.size_bytes - 1])
    with pytest.raises(ModelNotAvailable, match="size mismatch"):
        fetch(model, art, air_gapped=True, source=damaged)
    assert not artifact_path(model, art).exists()
    got = fetch(model, art, air_gapped=True, source=smollm_path)
    assert got == artifact_path(model, art) and got.stat().st_size == art.size_bytes


def _wheel(dest: Path, package: str, version: str, member: str, payload: Path) -> Path:
    """A minimal valid wheel carrying `payload` as `member`, like the model wheels on PyPI."""
    import zipfile

    dist = f"{package.replace('-', '_')}-{version}"
    path = dest / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.write(payload, member)
        meta = f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n"
        zf.writestr(f"{dist}.dist-info/METADATA", meta)
        zf.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                    "Tag: py3-none-any\n")
        zf.writestr(f"{dist}.dist-info/RECORD", "")
    return path


@pytest.mark.slow
def test_air_gapped_fetch_uses_only_the_configured_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smollm_path: Path
) -> None:
    """An internal mirror (a PEP 503 index served on loopback) is the one place pip may go;
    the environment's own index settings are ignored."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    model = load_catalog().get("smollm2-135m-instruct")
    art = model.artifacts[0]
    piece = art.pypi[0]
    root = tmp_path / "mirror"
    project = root / "simple" / piece.package
    project.mkdir(parents=True)
    whl = _wheel(project, piece.package, piece.version, piece.member, smollm_path)
    (project / "index.html").write_text(f'<html><body><a href="{whl.name}">{whl.name}</a></body></html>')
    seen: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, fmt: str, *args: object) -> None:
            seen.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # not the mirror: must be ignored
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "http://127.0.0.1:9/extra")
    try:
        mirror = f"http://127.0.0.1:{server.server_address[1]}/simple"
        got = fetch(model, art, air_gapped=True, mirror=mirror)
    finally:
        server.shutdown()
    assert got.stat().st_size == art.size_bytes
    assert any(p.endswith(".whl") for p in seen)
