"""The usage log and `appliance usage`: what is recorded, what it cost, what it never holds.

Requests go through the real HTTP API (tests/routing_stack.py: a fake OpenAI provider
on loopback stands in for the cloud, which cannot be reached here).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fakes.provider_base import Reply
from routing_stack import CLOUD_MODEL, KEY, KEY_ENV, PRICE, cloud_section, open_stack

from appliance.usage.log import UsageLog
from appliance.usage.report import summarize
from runtimes.upstream.config import Price

MARKER = "QUOKKA-7731-MARKER"
CACHED_PRICE = {**PRICE, "cached_input": 0.25}  # a tenth of input, as Anthropic bills cache reads


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
    log = UsageLog(tmp_path / "u.sqlite", {"m": Price(input=1.0, output=1.0)})
    yesterday = time.time() - 86400
    for started in (yesterday, time.time(), time.time()):
        log.record(started=started, route="cloud", reason="r", requested_model="x", served_model="m",
                   provider="p", prompt_tokens=10, completion_tokens=0)
    log.close()
    rows = summarize(tmp_path / "u.sqlite", None, days=7)
    assert [(r.requests, r.prompt_tokens) for r in rows] == [(1, 10), (2, 20)]
    assert rows[0].day < rows[1].day


def usage_cli(cfg: Path, home: Path) -> dict[str, dict]:
    """`appliance usage --json`, by route."""
    env = {**os.environ, "APPLIANCE_HOME": str(home)}
    run = subprocess.run([sys.executable, "-m", "appliance.cli", "usage", "--config", str(cfg), "--json"],
                         capture_output=True, text=True, env=env, check=True)
    return {r["route"]: r for r in json.loads(run.stdout)}


def test_cloud_request_bills_cached_prompt_tokens_at_the_cached_price(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider reports cached prompt tokens; the usage row costs them at `cached_input`."""
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    monkeypatch.setenv(KEY_ENV, KEY)
    with open_stack(price=CACHED_PRICE) as s:
        s.provider.reply = Reply(text="from the cloud", cached_tokens=8)
        r = s.http.post("/v1/chat/completions", json={
            "model": CLOUD_MODEL, "messages": [{"role": "user", "content": "a long and well cached prompt"}],
        })
        assert r.status_code == 200 and r.headers["x-appliance-route"] == "cloud"
        usage = r.json()["usage"]
        assert s.routing.usage is not None
        s.routing.usage.flush()
    prompt, cached, out = usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"], \
        usage["completion_tokens"]
    assert 0 < cached == 8 < prompt
    [row] = summarize(tmp_path / "usage.sqlite", None)
    billed = ((prompt - cached) * 2.5 + cached * 0.25 + out * 10.0) / 1e6
    assert (row.route, row.prompt_tokens, row.cached_tokens) == ("cloud", prompt, cached)
    assert row.cost_usd == pytest.approx(billed)
    assert row.cost_usd < (prompt * 2.5 + out * 10.0) / 1e6


def test_usage_cli_bills_cached_tokens_at_the_cached_price(tmp_path: Path) -> None:
    """Rows priced by the log (no provider price at hand) and the all-cloud value of local
    tokens both take cached prompt tokens at the configured `cached_input` price."""
    home = tmp_path / "home"
    log = UsageLog(home / "usage.sqlite", {CLOUD_MODEL: Price(**CACHED_PRICE)})
    common = {"started": time.time(), "requested_model": "default", "latency_ms": 12.0}
    log.record(route="cloud", reason="tier:cloud(0.97)", served_model=CLOUD_MODEL, provider="fake-openai",
               prompt_tokens=1_000_000, cached_tokens=800_000, completion_tokens=100_000, **common)
    log.record(route="local", reason="tier:local(0.02)", served_model="local-model", provider="local",
               prompt_tokens=1_000_000, cached_tokens=600_000, completion_tokens=100_000, **common)
    log.close()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "router": {"reference_cloud_model": CLOUD_MODEL},
        "cloud": cloud_section("http://127.0.0.1:9/v1", CACHED_PRICE),
    }))
    rows = usage_cli(cfg, home)
    # 200k fresh + 800k cached in, 100k out at 2.5 / 0.25 / 10 USD per M (3.5 if cached were ignored)
    assert rows["cloud"]["cost_usd"] == pytest.approx(0.2 * 2.5 + 0.8 * 0.25 + 0.1 * 10.0)
    assert rows["cloud"]["cached_tokens"] == 800_000
    assert rows["local"]["cost_usd"] == 0
    assert rows["local"]["all_cloud_usd"] == pytest.approx(0.4 * 2.5 + 0.6 * 0.25 + 0.1 * 10.0)


def test_a_log_from_before_cached_tokens_still_reads_and_records(tmp_path: Path) -> None:
    """An existing usage.sqlite without the cached_tokens column: the report reads it as 0
    cached, and opening it for writing adds the column."""
    path = tmp_path / "usage.sqlite"
    old = sqlite3.connect(path)
    old.execute("""CREATE TABLE requests (
        id INTEGER PRIMARY KEY, ts REAL NOT NULL, day TEXT NOT NULL, route TEXT NOT NULL,
        reason TEXT NOT NULL, requested_model TEXT NOT NULL, served_model TEXT NOT NULL,
        provider TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL, latency_ms REAL NOT NULL, status TEXT NOT NULL)""")
    row = (time.time(), "cloud", "r", "x", "m", "p", 10, 5, 0.5, 1.0, "ok")
    old.execute("INSERT INTO requests VALUES (NULL, ?, date('now'), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
    old.commit()
    old.close()
    [row] = summarize(path, Price(input=1.0, output=1.0))
    assert (row.prompt_tokens, row.cached_tokens, row.cost_usd) == (10, 0, 0.5)
    log = UsageLog(path, {"m": Price(**CACHED_PRICE)})
    log.record(started=time.time(), route="cloud", reason="r", requested_model="x", served_model="m",
               provider="p", prompt_tokens=10, cached_tokens=4, completion_tokens=0)
    log.close()
    [row] = summarize(path, None)
    assert (row.requests, row.prompt_tokens, row.cached_tokens) == (2, 20, 4)
