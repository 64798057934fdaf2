"""The bench's arithmetic, checked against a fake server whose timing is known exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes.timed_server import FakeConfig, TimedServer

from appliance.bench import runner
from appliance.bench.results import summarize_samples
from appliance.bench.settings import Settings
from appliance.bench.stats import percentile, summarize
from appliance.bench.targets import TargetSpecError, parse_target
from appliance.bench.traces import load_folder, prepare

# Timing tolerances leave room for a loaded 2-core machine (other jobs share it).
pytestmark = pytest.mark.timeout(60)


def median(summary: dict, target: str, workload: str, case: str, metric: str) -> float:
    return summary[target][workload][case]["metrics"][metric]["median"]


def run(targets, **kw):
    settings = Settings(**({"repeat": 1} | kw))
    states, samples = runner.run([parse_target(t) for t in targets], settings)
    return {s.target.name: s for s in states}, samples, summarize_samples(samples)


@pytest.fixture(scope="module")
def fake():
    with TimedServer(FakeConfig(ttft_s=0.08, token_s=0.01)) as server:
        yield server


# ---- pure helpers --------------------------------------------------------------------------


def test_parse_target():
    t = parse_target("llama=127.0.0.1:8080,model=qwen,key=MY_KEY,slots=2")
    assert (t.name, t.url, t.model, t.key_env, t.options) == (
        "llama",
        "http://127.0.0.1:8080/v1",
        "qwen",
        "MY_KEY",
        {"slots": "2"},
    )
    assert t.root == "http://127.0.0.1:8080"
    assert parse_target("x=http://h/v1/").url == "http://h/v1"
    with pytest.raises(TargetSpecError):
        parse_target("no-url")


def test_stats():
    assert percentile([0.01] * 9 + [0.05], 50) == pytest.approx(0.01)
    assert percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert summarize([3, None, 1, 2]) == {"median": 2, "min": 1, "max": 3, "n": 3}
    assert summarize([])["median"] is None


def test_prepare_overrides_only_model_and_max_tokens():
    body = {
        "model": "m",
        "max_tokens": 32000,
        "tools": [{"x": 1}],
        "tool_choice": "auto",
        "messages": [{"role": "system", "content": "sys"}],
        "stream": True,
    }
    out = prepare(body, "qwen", 32, "[tag]")
    assert out["model"] == "qwen" and out["max_tokens"] == 32
    assert out["tools"] == body["tools"] and out["tool_choice"] == "auto" and out["stream"] is True
    assert out["messages"][0]["content"] == "[tag]\nsys"
    assert body["messages"][0]["content"] == "sys"  # the loaded trace is not modified
    assert prepare(body, "qwen", None, None)["max_tokens"] == 32000
    assert prepare(body, "qwen", 32, None, {"temperature": 0.0})["temperature"] == 0.0


# ---- measured figures ----------------------------------------------------------------------


def test_decode_rate_ttft_and_prompt_size(fake):
    _, samples, summary = run(
        [f"fake={fake.url}"], workloads=["decode"], prompt_sizes=[128, 1024], max_tokens=40, repeat=2
    )
    for case in ("prompt=128", "prompt=1024"):
        assert median(summary, "fake", "decode", case, "decode_tok_s") == pytest.approx(100, rel=0.1)
        assert median(summary, "fake", "decode", case, "ttft_s") == pytest.approx(0.08, abs=0.05)
        assert median(summary, "fake", "decode", case, "itl_p50_s") == pytest.approx(0.01, abs=0.003)
        assert median(summary, "fake", "decode", case, "completion_tokens") == 40
    # Prompt size is calibrated from the server's own usage.
    assert median(summary, "fake", "decode", "prompt=1024", "prompt_tokens") == pytest.approx(1024, rel=0.05)
    assert median(summary, "fake", "decode", "prompt=128", "prompt_tokens") == pytest.approx(128, rel=0.1)
    prefill = median(summary, "fake", "decode", "prompt=1024", "prefill_tok_s")
    assert prefill == pytest.approx(1024 / 0.08, rel=0.35)
    assert summary["fake"]["decode"]["prompt=128"]["tokens_source"] == ["usage"]
    assert len([s for s in samples if s.ok]) == 4


def test_tokens_counted_by_chunks_without_usage():
    with TimedServer(FakeConfig(ttft_s=0.02, token_s=0.01, report_usage=False)) as server:
        states, _, summary = run(
            [f"nousage={server.url}"], workloads=["decode"], prompt_sizes=[128], max_tokens=20
        )
    entry = summary["nousage"]["decode"]["prompt=128"]
    assert entry["tokens_source"] == ["chunks"]
    assert entry["metrics"]["completion_tokens"]["median"] == 20
    assert entry["metrics"]["decode_tok_s"]["median"] == pytest.approx(100, rel=0.1)
    assert any("estimates" in w for w in states["nousage"].warnings)


def test_prompt_size_calibrated_without_streamed_usage():
    """A server that reports usage only without streaming: sizes still come from its own count."""
    with TimedServer(FakeConfig(ttft_s=0.02, token_s=0.005, stream_usage=False)) as server:
        states, _, summary = run(
            [f"s={server.url}"], workloads=["decode"], prompt_sizes=[1024], max_tokens=10
        )
    assert states["s"].calibration.measured
    entry = summary["s"]["decode"]["prompt=1024"]
    assert entry["tokens_source"] == ["chunks"]
    assert entry["metrics"]["prompt_tokens"]["median"] == pytest.approx(1024, rel=0.05)
    assert entry["metrics"]["prefill_tok_s"]["median"] > 0


def test_concurrency_aggregates_streams(fake):
    _, _, summary = run([f"fake={fake.url}"], workloads=["concurrency"], concurrency=[1, 4], max_tokens=30)
    one = summary["fake"]["concurrency"]["streams=1"]["metrics"]
    four = summary["fake"]["concurrency"]["streams=4"]["metrics"]
    assert one["aggregate_decode_tok_s"]["median"] == pytest.approx(100, rel=0.1)
    assert four["aggregate_decode_tok_s"]["median"] == pytest.approx(400, rel=0.12)
    assert four["per_stream_decode_tok_s"]["median"] == pytest.approx(100, rel=0.1)
    assert four["streams_served"]["median"] == 4 and four["all_served"]["min"] == 1
    # Whole-request throughput includes the TTFT: 4*30 tokens in 0.08 + 29*0.01 s.
    assert four["aggregate_tok_s"]["median"] == pytest.approx(120 / 0.37, rel=0.15)


def test_trace_replay_reads_cached_tokens(tmp_path: Path, fake):
    system = {"role": "system", "content": "long stable system prompt " * 50}
    history = [system, {"role": "user", "content": "fix the bug"}]
    bodies = []
    for i in range(3):
        bodies.append(
            {
                "model": "agent-model",
                "max_tokens": 32000,
                "stream": True,
                "tool_choice": "auto",
                "stream_options": {"include_usage": True},
                "messages": list(history),
            }
        )
        history = [*history, {"role": "assistant", "content": f"step {i} done"}]
    for i, b in enumerate(bodies):
        (tmp_path / f"req{i + 1:02d}.json").write_text(json.dumps(b))
    n_before = len(fake.bodies)
    _, _samples, summary = run(
        [f"fake={fake.url}"],
        workloads=["trace"],
        traces=[str(tmp_path)],
        trace_max_tokens=5,
        trace_cold=False,
    )
    sent = fake.bodies[n_before + 3 :]  # after the warm-up's three requests
    assert [b["model"] for b in sent] == ["fake-model"] * 3
    assert [b["max_tokens"] for b in sent] == [5] * 3
    # Equal work on every server: greedy, and answers run to max_tokens where ignore_eos is taken.
    assert all(b["temperature"] == 0.0 and b["ignore_eos"] is True for b in sent)
    assert all(
        b["tool_choice"] == "auto" and b["messages"] == o["messages"]
        for b, o in zip(sent, bodies, strict=True)
    )
    entry = summary["fake"]["trace"][f"trace={tmp_path.name}"]
    steps = entry["steps"]
    assert list(steps) == ["req01", "req02", "req03"]
    assert steps["req01"]["cached_tokens"]["median"] == 0
    assert steps["req02"]["cached_tokens"]["median"] > 200  # the whole previous prompt
    assert steps["req03"]["cached_tokens"]["median"] > steps["req02"]["cached_tokens"]["median"]
    assert entry["metrics"]["total_s"]["median"] == pytest.approx(3 * (0.08 + 0.04), abs=0.15)
    assert steps["req02"]["ttft_s"]["median"] == pytest.approx(0.08, abs=0.05)


def test_trace_order_file_sends_together(tmp_path: Path):
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.json").write_text(json.dumps(body))
    (tmp_path / "order.txt").write_text("a.json b.json\nc.json\n")
    trace = load_folder(tmp_path)
    assert [[label for label, _ in step] for step in trace.steps] == [["a", "b"], ["c"]]


def test_synthetic_trace_runs_cold_per_repetition(fake):
    _, _samples, summary = run([f"fake={fake.url}"], workloads=["trace"], trace_max_tokens=4, repeat=2)
    entry = summary["fake"]["trace"]["trace=synthetic-agent"]
    assert entry["n_ok"] == 2
    assert {"turn1", "title", "summary", "turn6"} <= set(entry["steps"])
    # A new session tag per repetition: the first turn of each repetition finds nothing cached.
    assert entry["metrics"]["prompt_tokens"]["median"] > 10_000


def test_session_warm_start_against_cold():
    """TTFT grows with uncached prompt tokens; a new session is warm only if the prefix survived."""
    cfg = FakeConfig(ttft_s=0.01, token_s=0.002, prefill_token_s=0.0001)
    with TimedServer(cfg) as server:
        common = {"workloads": ["session"], "trace_max_tokens": 4}
        _, _, kept = run([f"s={server.url}"], session_fillers=0, **common)
        _, _, evicted = run([f"s={server.url}"], session_fillers=1, **common)
    kept_m = kept["s"]["session"]["trace=synthetic-agent"]["metrics"]
    evicted_m = evicted["s"]["session"]["trace=synthetic-agent"]["metrics"]
    assert kept_m["cold_ttft_s"]["median"] > 0.2  # ~3k uncached tokens at 0.1 ms each
    assert kept_m["warm_over_cold"]["median"] < 0.5
    assert kept_m["warm_cached_tokens"]["median"] > 1000
    assert evicted_m["warm_over_cold"]["median"] > 0.8


def test_restart_runs_the_targets_command_between_cold_and_new_session(tmp_path):
    """`restart` runs the target's restart=CMD, waits for it to list models, then measures."""
    marker = tmp_path / "restarted"
    cfg = FakeConfig(ttft_s=0.01, token_s=0.002, prefill_token_s=0.0001)
    with TimedServer(cfg) as server:
        common = {"workloads": ["restart"], "trace_max_tokens": 4, "session_fillers": 0}
        _, samples, summary = run(
            [f"s={server.url},restart=touch {marker}", f"plain={server.url}"], **common
        )
    assert marker.exists()
    m = summary["s"]["restart"]["trace=synthetic-agent"]["metrics"]
    assert m["restart_s"]["median"] is not None and m["warm_ttft_s"]["median"] > 0
    plain = [x for x in samples if x.target == "plain"]
    assert [x.status for x in plain] == ["skipped"]


# ---- bad targets ---------------------------------------------------------------------------


def test_refused_target_reported_others_survive(fake):
    states, _samples, summary = run(
        ["dead=http://127.0.0.1:9", f"fake={fake.url}"],
        workloads=["decode"],
        prompt_sizes=[128],
        max_tokens=10,
    )
    assert "ConnectError" in states["dead"].error
    assert summary["dead"]["decode"]["prompt=128"]["n_ok"] == 0
    assert summary["fake"]["decode"]["prompt=128"]["n_ok"] == 1


def test_wrong_model_reported(fake):
    states, _, summary = run(
        [f"bad=http://127.0.0.1:{fake.port},model=nope", f"fake={fake.url}"],
        workloads=["decode"],
        prompt_sizes=[128],
        max_tokens=10,
    )
    assert "404" in states["bad"].error and "nope" in states["bad"].error
    assert any("not listed" in w for w in states["bad"].warnings)
    assert summary["fake"]["decode"]["prompt=128"]["n_ok"] == 1


def test_http_error_mid_run():
    flaky_cfg = FakeConfig(ttft_s=0.01, token_s=0.005, fail_after_requests=4)
    with TimedServer(flaky_cfg) as flaky, TimedServer(FakeConfig(ttft_s=0.01, token_s=0.005)) as good:
        kw = {"workloads": ["decode"], "prompt_sizes": [128, 256], "max_tokens": 20}
        _, _, summary = run([f"flaky={flaky.url}", f"good={good.url}"], **kw)
    # flaky: 3 warm-up requests, then the first case, then HTTP 500.
    assert summary["flaky"]["decode"]["prompt=128"]["n_ok"] == 1
    assert "HTTP 500" in summary["flaky"]["decode"]["prompt=256"]["errors"][0]
    assert summary["good"]["decode"]["prompt=256"]["n_ok"] == 1


def test_stream_cut_is_an_error():
    with TimedServer(FakeConfig(ttft_s=0.01, token_s=0.005)) as server:
        settings = Settings(workloads=["decode"], prompt_sizes=[128], max_tokens=20, repeat=1)
        ok_states, ok_samples = runner.run([parse_target(f"cut={server.url}")], settings)
        server.cfg.cut_after_tokens = 5  # from now on every stream is dropped after 5 tokens
        cut_states, _ = runner.run([parse_target(f"cut={server.url}")], settings)
    assert ok_samples[0].ok and ok_states[0].alive
    assert cut_states[0].error and "warm-up" in cut_states[0].error


def test_context_limit_skips_sizes():
    cfg = FakeConfig(ttft_s=0.01, token_s=0.005, n_ctx=700)
    with TimedServer(cfg) as server:
        _, _, summary = run([f"small={server.url}"], workloads=["prefill"], prompt_sizes=[128, 1024])
        cfg.advertise_ctx = True
        states, _, summary2 = run([f"small={server.url}"], workloads=["prefill"], prompt_sizes=[128, 1024])
    assert summary["small"]["prefill"]["prompt=128"]["n_ok"] == 1
    assert summary["small"]["prefill"]["prompt=1024"]["n_skipped"] == 1  # refused by the server
    assert states["small"].n_ctx == 700
    assert "exceed the context" in summary2["small"]["prefill"]["prompt=1024"]["errors"][0]  # never sent


def test_ignore_eos_dropped_when_rejected():
    with TimedServer(FakeConfig(ttft_s=0.01, token_s=0.005, reject_ignore_eos=True)) as server:
        states, _, summary = run(
            [f"strict={server.url}"], workloads=["decode"], prompt_sizes=[128], max_tokens=10
        )
    assert states["strict"].ignore_eos is False
    assert summary["strict"]["decode"]["prompt=128"]["n_ok"] == 1
