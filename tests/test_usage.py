"""The usage log and `appliance usage`: what is recorded, what it cost, what it never holds.

Requests go through the real HTTP API (tests/routing_stack.py: a fake OpenAI provider
on loopback stands in for the cloud, which cannot be reached here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from routing_stack import CLOUD_MODEL, KEY, KEY_ENV, PRICE, cloud_section, open_stack

from appliance.usage import Price, UsageLog
from appliance.usage_report import summarize

MARKER = "QUOKKA-7731-MARKER"


def test_db_never_holds_prompt_or_answer_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    monkeypatch.setenv(KEY_ENV, KEY)
    with open_stack(local_text=f"local {MARKER} answer", cloud_text=f"cloud {MARKER} answer") as s:
        for model, extra in (("default", {}), (CLOUD_MODEL, {}), ("default", {"stream": True})):
            r = s.http.post("/v1/chat/completions", json={
                "model": model, **extra,
                "messages": [{"role": "system", "content": f"system {MARKER}"},
                             {"role": "user", "content": f"please help {MARKER}"}],
            })
            assert r.status_code == 200 and MARKER in r.text  # the text did pass through
        assert s.routing.usage is not None
        s.routing.usage.flush()
        rows = s.routing.usage._db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    assert rows == 3
    files = [p for p in tmp_path.iterdir() if p.name.startswith("usage.sqlite")]
    assert files and all(MARKER.encode() not in p.read_bytes() for p in files)
    assert all(b"please help" not in p.read_bytes() for p in files)


def test_usage_cli_reports_spend_and_the_all_cloud_cost(tmp_path: Path) -> None:
    home = tmp_path / "home"
    log = UsageLog(home / "usage.sqlite", {CLOUD_MODEL: Price(**PRICE)})
    now = time.time()
    common = {"started": now, "requested_model": "default", "latency_ms": 12.0}
    log.record(route="local", reason="tier:local(0.02)", served_model="local-model", provider="local",
               prompt_tokens=1_000_000, completion_tokens=100_000, **common)
    log.record(route="cloud", reason="tier:cloud(0.97)", served_model=CLOUD_MODEL, provider="fake-openai",
               prompt_tokens=200_000, completion_tokens=50_000, **common)
    log.record(route="refused", reason="air-gapped", served_model="", provider="", status="403", **common)
    log.close()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "router": {"reference_cloud_model": CLOUD_MODEL},
        "cloud": cloud_section("http://127.0.0.1:9/v1"),
    }))
    env = {**os.environ, "APPLIANCE_HOME": str(home)}
    run = subprocess.run([sys.executable, "-m", "appliance.cli", "usage", "--config", str(cfg), "--json"],
                         capture_output=True, text=True, env=env, check=True)
    rows = {r["route"]: r for r in json.loads(run.stdout)}
    cloud_cost = 0.2 * 2.5 + 0.05 * 10.0  # 200k in, 50k out at 2.5 / 10 USD per M
    assert rows["cloud"]["cost_usd"] == pytest.approx(cloud_cost)
    assert rows["local"]["cost_usd"] == 0
    assert rows["local"]["all_cloud_usd"] == pytest.approx(1.0 * 2.5 + 0.1 * 10.0)
    assert rows["refused"]["requests"] == 1
    text = subprocess.run([sys.executable, "-m", "appliance.cli", "usage", "--config", str(cfg)],
                          capture_output=True, text=True, env=env, check=True).stdout
    assert f"cloud spend: {cloud_cost:.4f} USD" in text
    assert f"all-cloud ({CLOUD_MODEL} for every request): {cloud_cost + 3.5:.4f} USD" in text


def test_summary_groups_by_day_and_model(tmp_path: Path) -> None:
    log = UsageLog(tmp_path / "u.sqlite", {"m": Price(1.0, 1.0)})
    yesterday = time.time() - 86400
    for started in (yesterday, time.time(), time.time()):
        log.record(started=started, route="cloud", reason="r", requested_model="x", served_model="m",
                   provider="p", prompt_tokens=10, completion_tokens=0)
    log.close()
    rows = summarize(tmp_path / "u.sqlite", None, days=7)
    assert [(r.requests, r.prompt_tokens) for r in rows] == [(1, 10), (2, 20)]
    assert rows[0].day < rows[1].day
