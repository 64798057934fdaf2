"""The tier classifier, the text it judges, and `appliance route` over stdin.

The example prompts here are written for these tests and are not in the training file
(`test_examples_are_not_training_data` checks), so they measure generalisation, not recall.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.router import keywords
from appliance.router.score import accuracy, load
from appliance.router.tier import MODEL_PATH, TierVerdict, classify, latest_user_text, load_model
from appliance.router.train import TRAIN_PATH, train
from tests.conftest import fixture_file

HARD = [
    "Our nightly billing job and the customer-facing API both update the same subscription rows. A few "
    "times a month a customer ends up with two active subscriptions after upgrading, and we can't "
    "reproduce it. What sequences of events could cause this, and how would you make the upgrade safe?",
    "Prove that any tree with n vertices has exactly n - 1 edges, and then show that adding any edge creates "
    "exactly one cycle.",
    "Design a multi-region session store for 20 million users: logins must survive a region outage, a logout "
    "must take effect everywhere within 2 seconds, and reads must stay under 5 ms at p99. What are the "
    "trade-offs?",
    "The checkout page sometimes charges the card but never creates the order, only when the payment "
    "provider is slow. How would you find the cause and make the flow consistent?",
    "Wir haben einen Cache vor unserer Preis-API. Manchmal sehen Kunden nach einer Preisänderung noch "
    "stundenlang den alten Preis, obwohl der Cache nur 5 Minuten gilt. Was könnte die Ursache sein und wie "
    "würdest du das Design ändern?",
    "分布式锁偶尔会同时被两个进程持有，只在网络抖动之后出现。请分析原因并设计一个安全的方案。",
]
EASY = [
    "what does distributed mean?",
    "We run a planet-scale, event-sourced, zero-trust microservice mesh with Byzantine fault tolerance "
    "across 30 regions. Quick one: how do I uppercase a string in Go?",
    "Think very hard, step by step, and reason rigorously about every edge case: how do I get the length "
    "of a list in Python?",
    "What is a distributed transaction? Keep it short.",
    "Wie lösche ich einen Git-Branch lokal und auf dem Server?",
    "Javaで文字列を数値に変換するにはどうすればいいですか？",
    "Explain what a race condition is, with a simple example.",
]
PASTE = "def total(items):\n    s = 0\n    for it in items:\n        s += it['amount']\n    return s\n\n"


def test_examples_are_not_training_data() -> None:
    trained = {json.loads(line)["prompt"] for line in TRAIN_PATH.read_text().splitlines()}
    assert not (set(HARD) | set(EASY)) & trained


@pytest.mark.parametrize("prompt", HARD)
def test_plainly_worded_hard_task_goes_to_cloud(prompt: str) -> None:
    verdict = classify(prompt)
    assert verdict.tier == "cloud", verdict
    assert verdict.score >= 0.5


@pytest.mark.parametrize("prompt", EASY)
def test_easy_task_stays_local_whatever_its_vocabulary(prompt: str) -> None:
    verdict = classify(prompt)
    assert verdict.tier == "local", verdict
    assert verdict.score < 0.5


def test_the_keyword_baseline_is_fooled_where_we_are_not() -> None:
    """The anchor to beat: reasoning words make an easy question REASONING-tier for it."""
    assert keywords.score(EASY[2]).route == "cloud"
    assert classify(EASY[2]).tier == "local"


def test_verdict_is_deterministic_and_explains_itself_without_prompt_text() -> None:
    prompt = "The zanzibarquux service " + HARD[0]
    first = classify(prompt)
    assert isinstance(first, TierVerdict)
    assert all(classify(prompt) == first for _ in range(20))
    assert load_model().verdict(prompt) == first  # a fresh load of the shipped weights agrees
    assert first.reason and "zanzibarquux" not in first.reason
    assert 0.0 <= first.score <= 1.0


def test_long_paste_is_judged_by_its_ask_at_either_end() -> None:
    code = (PASTE * 2000)[:100_000]
    assert classify(code + "\nAdd docstrings to these functions.").tier == "local"
    assert classify("Add docstrings to these functions.\n```python\n" + code + "\n```").tier == "local"
    hard_ask = ("\nThis total is sometimes wrong by exactly one item, only under load and only since we "
                "moved to the async worker. What sequence of events could cause it, and how would you "
                "fix it?")
    assert classify(code + hard_ask).tier == "cloud"


def test_100k_character_requests_stay_within_budget() -> None:
    """Regression guard (the p99 proof is `python -m appliance.router.score --bench`)."""
    texts = [(PASTE * 2000)[:100_000], "word " * 20_000, "x\n" * 50_000, ".?!: " * 20_000, "分" * 100_000]
    samples = []
    for _ in range(20):
        for t in texts:
            start = time.perf_counter()
            classify(t)
            samples.append(time.perf_counter() - start)
    assert statistics.median(samples) < 0.005


def test_latest_user_text_skips_tool_output_and_system() -> None:
    messages = [
        {"role": "system", "content": "You are an agent. Prove everything."},
        {"role": "user", "content": [{"type": "text", "text": "Find why the cache returns stale data."}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "1", "type": "function", "function": {"name": "grep", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "1", "content": "cache.py:12: ttl = 300"},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "2", "content": "ok"}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]},
    ]
    assert latest_user_text(messages) == "Find why the cache returns stale data."
    messages.append({"role": "user", "content": "thanks, now explain it"})
    assert latest_user_text(messages) == "thanks, now explain it"
    assert latest_user_text([{"role": "system", "content": "x"}]) == ""


def test_shipped_model_is_reproducible_from_the_training_file(tmp_path: Path) -> None:
    out = tmp_path / "model.json"
    train(TRAIN_PATH, out)
    assert json.loads(out.read_text()) == json.loads(MODEL_PATH.read_text())


def _route(lines: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "appliance.cli", "route", *args]
    return subprocess.run(cmd, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60,
                          check=False)


def test_route_cli_prints_one_decision_per_line() -> None:
    lines = [json.dumps({"id": "a", "prompt": EASY[0]}),
             json.dumps({"prompt": HARD[1], "system": "Be brief."})]
    proc = _route(lines)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert out[0]["id"] == "a" and out[0]["route"] == out[0]["tier"] == "local"
    assert out[1]["route"] == out[1]["tier"] == "cloud"
    assert all(set(o) >= {"route", "tier", "reason", "score"} for o in out)


def test_route_cli_keeps_secrets_local_and_flags_bad_lines() -> None:
    secret = "AKIAZ7QWERTYUIOP2345"
    lines = [json.dumps({"prompt": HARD[0], "system": f"deploy key {secret}"}), "not json",
             json.dumps({"prompt": HARD[1]})]
    proc = _route(lines, "--threshold", "0.5")
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1 and len(out) == 3  # one output line per input line, errors included
    assert out[0]["tier"] == "cloud" and out[0]["route"] == "local"
    assert "aws_access_key" in out[0]["reason"] and secret not in proc.stdout
    assert out[1]["error"]["type"] == "invalid_request_error"
    assert out[2]["route"] == "cloud"


def test_route_cli_uses_configured_patterns(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("router:\n  privacy_patterns:\n    medical_record: 'MRN-\\d{8}'\n")
    hard_with_mrn = HARD[3] + " Customer MRN-00123456 reported it."
    out = json.loads(_route([json.dumps({"prompt": hard_with_mrn})], "--config", str(cfg)).stdout)
    assert out["route"] == "local" and out["reason"] == "privacy: medical_record"


@pytest.mark.slow
def test_dev_set_targets() -> None:
    """Issue 5's targets on the dev set (tests/fixtures/router), with a model trained without its items."""
    rows = load(fixture_file("router", "dev.jsonl"))
    assert len(rows) == 205
    ours = accuracy(rows)["ours"]
    assert ours["balanced_accuracy"] >= 0.85, ours
    assert ours["cloud_precision"] >= 0.85, ours
