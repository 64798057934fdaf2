"""The console's JSON endpoints over real HTTP: what the page at / reads.

The routed stack is the one `appliance serve` assembles (tests/routing_stack.py: config ->
build_routing, the fake OpenAI provider on loopback, the scripted local runtime). Spend is
checked against the `appliance usage` command itself, run as a user runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from fakes.scripted_runtime import ScriptedRuntime, text_events
from live_server import running_server
from routing_stack import CLOUD_MODEL, KEY, KEY_ENV, Stack, cloud_section, open_stack

from appliance.api import ModelRegistry, create_app
from appliance.api.console import ModelFacts, ServeFacts
from appliance.api.live import LiveWindow
from appliance.api.registry import Download
from appliance.bench import results as bench_results
from appliance.bench.chart import write_chart
from appliance.bench.sample import Sample
from appliance.config import ServeConfig
from appliance.serve.routing import build_routing
from runtimes.base import Usage

EASY = "hi! what does the word 'distributed' mean?"
HARD = (
    "Prove that there is no continuous function f from the reals to the reals that takes every "
    "value exactly twice. I need a complete proof, not a reference to a theorem."
)
ENDPOINTS = ("overview", "live", "audit", "spend", "bench")


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    monkeypatch.setenv(KEY_ENV, KEY)
    with open_stack() as s:
        yield s


def chat(stack: Stack, text: str, **kwargs) -> None:
    stack.client.chat.completions.create(
        model=kwargs.pop("model", "default"), messages=[{"role": "user", "content": text}], **kwargs
    )


def get(stack: Stack, name: str, **params) -> dict:
    stack.routing.usage.flush()  # rows are written in batches; the page polls, a test waits
    r = stack.http.get(f"/console/api/{name}", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    return r.json()


def test_audit_lists_each_request_with_route_reason_key_and_dialect_and_never_text(stack: Stack) -> None:
    chat(stack, EASY)
    chat(stack, HARD)
    r = stack.http.post(
        "/v1/messages",
        json={"model": "default", "max_tokens": 16, "messages": [{"role": "user", "content": EASY}]},
    )
    assert r.status_code == 200, r.text
    rows = get(stack, "audit")["rows"]
    assert [(row["route"], row["dialect"]) for row in rows] == [
        ("local", "anthropic"),
        ("cloud", "openai"),
        ("local", "openai"),
    ]  # newest first
    assert rows[1]["reason"].startswith("tier:cloud(") and rows[1]["served_model"] == CLOUD_MODEL
    assert rows[2]["reason"].startswith("tier:local(") and rows[2]["served_model"] == "local-model"
    assert rows[1]["cost_usd"] > 0 and rows[2]["cost_usd"] == 0
    assert all(row["completion_tokens"] > 0 and row["latency_ms"] > 0 for row in rows)
    cloud_only = get(stack, "audit", route="cloud")["rows"]
    assert [row["route"] for row in cloud_only] == ["cloud"]
    for name in ENDPOINTS:  # no endpoint ever carries prompt or answer text
        body = stack.http.get(f"/console/api/{name}").text
        assert "distributed" not in body and "continuous function" not in body
        assert "answered locally" not in body and "answered by the cloud" not in body


def test_spend_is_what_appliance_usage_reports(stack: Stack, tmp_path: Path) -> None:
    chat(stack, EASY)
    chat(stack, HARD)
    chat(stack, EASY, model=CLOUD_MODEL)
    spend = get(stack, "spend")
    # The same config the stack was built from, so the CLI prices the same way.
    config = {
        "cloud": cloud_section(stack.provider.api_base),
        "router": {"reference_cloud_model": CLOUD_MODEL},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    cli = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "usage", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert spend["rows"] == json.loads(cli.stdout)
    cloud = [r for r in spend["rows"] if r["route"] == "cloud"]
    assert cloud and spend["spent_usd"] == pytest.approx(sum(r["cost_usd"] for r in cloud))
    assert spend["spent_usd"] > 0
    assert spend["spent_today_usd"] == pytest.approx(spend["spent_usd"])
    assert spend["reference_model"] == CLOUD_MODEL
    assert spend["all_cloud_usd"] == pytest.approx(sum(r["all_cloud_usd"] for r in spend["rows"]))
    assert spend["all_cloud_usd"] > spend["spent_usd"]


def test_live_counts_tokens_and_draws_decode_speed(stack: Stack) -> None:
    before = get(stack, "live")
    assert before["totals"]["requests"] == 0 and before["in_flight"] == 0
    assert before["slots_total"] == 2 and before["queued"] == 0
    chat(stack, EASY)
    after = get(stack, "live")
    assert after["totals"]["requests"] == 1 and after["totals"]["local_requests"] == 1
    assert after["totals"]["completion_tokens"] > 0 and after["totals"]["prompt_tokens"] > 0
    assert sum(p["decode_tok_s"] for p in after["series"]) > 0
    assert after["ttft_s"]["samples"] == 1 and after["ttft_s"]["p50"] is not None
    assert len(after["series"]) == after["window_s"] // after["step_s"]


def test_air_gapped_console_says_so_and_counts_refused_cloud_routes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    monkeypatch.setenv(KEY_ENV, KEY)
    registry = ModelRegistry()
    registry.add(ScriptedRuntime(id="local-model", script=text_events("kept here")), roles=["main"])
    cfg = ServeConfig(cloud=cloud_section("http://127.0.0.1:9/v1"), router={"air_gapped": True})
    routing = build_routing(cfg, registry)
    app = create_app(registry, routing=routing, close_runtimes_on_shutdown=True)
    with running_server(app) as live, httpx.Client(base_url=live.base_url, timeout=30) as http:
        body = {"model": CLOUD_MODEL, "messages": [{"role": "user", "content": EASY}]}
        assert http.post("/v1/chat/completions", json=body).status_code == 403
        routing.usage.flush()
        audit = http.get("/console/api/audit").json()
        overview = http.get("/console/api/overview").json()
    assert audit["air_gapped"] and overview["routing"]["air_gapped"]
    assert not overview["routing"]["cloud_enabled"]
    assert audit["refused_cloud"] == 1
    assert audit["rows"][0]["route"] == "refused" and "air-gapped" in audit["rows"][0]["reason"]


def test_keys_on_page_loads_but_data_needs_the_key() -> None:
    registry = ModelRegistry()
    registry.add(ScriptedRuntime(id="local-model"), roles=["main"])
    with (
        running_server(create_app(registry, api_key="console-key")) as live,
        httpx.Client(base_url=live.base_url, timeout=30) as http,
    ):
        page = http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        for asset in ("/console/console.js", "/console/console.css", "/console/icon.svg"):
            assert http.get(asset).status_code == 200, asset
        assert http.get("/console/api/access").json() == {"keys_required": True}
        for name in ENDPOINTS:
            assert http.get(f"/console/api/{name}").status_code == 401, name
            assert (
                http.get(f"/console/api/{name}", headers={"Authorization": "Bearer wrong"}).status_code == 401
            )
        ok = http.get("/console/api/overview", headers={"Authorization": "Bearer console-key"})
        assert ok.status_code == 200
        assert [m["id"] for m in ok.json()["models"]] == ["local-model"]
        # Nothing a client sends picks the file a page path serves.
        assert http.get("/console/console.js?name=index.html").text == http.get("/console/console.js").text


def test_overview_shows_the_machine_and_each_models_plan_and_download() -> None:
    registry = ModelRegistry()
    registry.add(ScriptedRuntime(id="local-model", n_ctx=8192), roles=["main"])
    plan = ModelFacts(
        role="main",
        quant="Q4_K_M",
        runtime="llama.cpp",
        placement="cpu",
        n_ctx=8192,
        slots=2,
        kv_type="f16",
        gpu_bytes=0,
        ram_bytes=1_300_000_000,
        reason="highest quality that fits",
    )
    machine = {"name": "box", "source": "detected", "os": "linux", "gpus": []}
    facts = ServeFacts(machine=machine, plans=lambda: {"local-model": plan})
    with (
        running_server(create_app(registry, facts=facts)) as live,
        httpx.Client(base_url=live.base_url, timeout=30) as http,
    ):
        registry.download = Download("other-model", 5, 10)
        o = http.get("/console/api/overview").json()
    assert o["machine"] == machine and o["ready"]
    assert o["download"] == {"model": "other-model", "done_bytes": 5, "total_bytes": 10}
    (m,) = o["models"]
    assert (m["id"], m["roles"], m["n_ctx"], m["slots_total"], m["slots_busy"]) == (
        "local-model",
        ["main"],
        8192,
        2,
        0,
    )
    assert m["plan"]["quant"] == "Q4_K_M" and m["plan"]["reason"] == "highest quality that fits"


def test_bench_panel_lists_runs_with_bench_tables_and_chart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    samples = [
        Sample("appliance", "decode", f"prompt={n}", rep, metrics={"decode_tok_s": 30.0 + rep, "ttft_s": 0.1})
        for n in (256, 1024)
        for rep in (0, 1, 2)
    ]
    res = bench_results.build(
        command=["appliance", "bench", "decode"],
        settings={},
        machine={},
        targets={"appliance": {}},
        samples=samples,
    )
    path = bench_results.write(res, tmp_path / "bench" / "bench-20261205T120000Z-abc.json")
    assert write_chart(res, path.with_suffix(".png")) is not None
    registry = ModelRegistry()
    registry.add(ScriptedRuntime(id="local-model"), roles=["main"])
    with (
        running_server(create_app(registry)) as live,
        httpx.Client(base_url=live.base_url, timeout=30) as http,
    ):
        (run,) = http.get("/console/api/bench").json()["runs"]
        png = http.get(f"/console/api/bench/{run['name']}.png")
        assert http.get("/console/api/bench/..%2F..%2Fusage.png").status_code == 404
    assert run["command"] == "appliance bench decode" and run["chart"]
    (table,) = run["tables"]
    assert table["workload"] == "decode" and "decode tok/s" in table["columns"]
    col = table["columns"].index("decode tok/s")
    assert {r["case"]: r["values"][col] for r in table["rows"]} == {"prompt=256": 31.0, "prompt=1024": 31.0}
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")


def test_live_window_spreads_prefill_over_ttft_and_decode_over_the_rest() -> None:
    now = [1000.0]
    w = LiveWindow(window_s=60, clock=lambda: now[0])
    # 10 s request: first token after 2 s; 400 prompt tokens (100 cached), 80 generated.
    w.record("local", Usage(prompt_tokens=400, completion_tokens=80, cached_tokens=100), 10.0, 2.0)
    w.record("cloud", Usage(prompt_tokens=50, completion_tokens=5), 1.0, 0.5)  # counted, not drawn
    snap = w.snapshot(step_s=1)
    by_t = {p["t"]: p for p in snap["series"]}
    assert by_t[990]["prefill_tok_s"] == 150 and by_t[991]["prefill_tok_s"] == 150
    assert by_t[992]["decode_tok_s"] == 10 and by_t[999]["decode_tok_s"] == 10
    assert sum(p["decode_tok_s"] for p in snap["series"]) == pytest.approx(80)
    assert snap["cache_hit_rate"] == 0.25 and snap["ttft_s"]["p50"] == 2.0
    assert snap["totals"]["requests"] == 2 and snap["totals"]["cloud_requests"] == 1
    now[0] += 120  # out of the window
    assert all(p["decode_tok_s"] == 0 for p in w.snapshot(step_s=1)["series"])
