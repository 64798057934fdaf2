"""The edit workload (issue 16): its cases, the identical-output report, drafted/accepted
tokens from /metrics, and servers the bench launches itself with their own environment."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from fakes.timed_server import FakeConfig, TimedServer

from appliance.bench import chart, edit, edit_report, launch, spec_metrics
from appliance.bench.cli import main
from appliance.bench.results import load
from appliance.bench.settings import Settings, TargetState
from appliance.bench.targets import Target, TargetSpecError
from appliance.bench.workloads import cases

pytestmark = pytest.mark.timeout(90)

FAKES = Path(__file__).parent / "fakes"


# ---- cases -----------------------------------------------------------------------------------


def test_every_case_is_a_whole_file_with_a_small_change():
    all_cases = edit.load_edits()
    assert 8 <= len(all_cases) <= 12
    assert len({c.name for c in all_cases}) == len(all_cases)
    assert len({c.language for c in all_cases}) >= 4
    for c in all_cases:
        assert 100 <= c.lines <= 300, (c.name, c.lines)
        msgs = edit.messages(c)
        assert msgs[0] == {"role": "system", "content": c.system}
        user = msgs[1]["content"]
        assert c.source.rstrip() in user and c.request in user and c.path in user
        assert user.endswith("Reply with the whole updated file.")


def test_case_selection_and_generation():
    names = [c.name for c in edit.load_edits()]
    assert [c.name for c in edit.load_edits(["3"])] == names[:3]
    assert [c.name for c in edit.load_edits([names[4], names[1]])] == [names[4], names[1]]
    with pytest.raises(ValueError, match="unknown edit case"):
        edit.load_edits(["no-such-case"])
    got = cases(Settings(workloads=["edit"], edit_cases=["2"]), [])
    assert [(c.workload, c.key) for c in got] == [("edit", f"edit={n}") for n in names[:2]]
    assert isinstance(got[0].param, edit.EditCase)


def test_request_body_real_lengths_at_temperature_zero():
    c = edit.load_edits(["1"])[0]
    state = TargetState(target=Target("t", "http://x/v1"), model="m")
    body = edit.request_body(state, Settings(), c, "[edit session abc-r0]")
    assert "ignore_eos" not in body
    assert body["temperature"] == 0.0 and body["max_tokens"] == 4096 and body["model"] == "m"
    assert body["messages"][1]["content"].startswith("[edit session abc-r0]\nHere is")
    assert "[edit session" not in edit.messages(c)[1]["content"]


# ---- /metrics and timings ------------------------------------------------------------------

APPLIANCE_METRICS = """# HELP appliance_spec_drafted_tokens_total Draft tokens proposed
# TYPE appliance_spec_drafted_tokens_total counter
appliance_spec_drafted_tokens_total{model="qwen"} 120.0
appliance_spec_drafted_tokens_total{model="small"} 7.0
appliance_spec_accepted_tokens_total{model="qwen"} 90.0
appliance_spec_accepted_tokens_total{model="small"} 1.0
appliance_requests_total{model="qwen",status="200"} 3.0
"""

LLAMA_METRICS = """# HELP llamacpp:spec_decode_num_draft_tokens_total Speculative: draft tokens
# TYPE llamacpp:spec_decode_num_draft_tokens_total counter
llamacpp:spec_decode_num_draft_tokens_total 64
llamacpp:spec_decode_num_accepted_tokens_total 40
llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="0"} 20
"""


def test_counters_per_model_from_prometheus_text():
    c = spec_metrics.counters_from(APPLIANCE_METRICS, "qwen")
    assert (c.drafted, c.accepted, c.source) == (120.0, 90.0, "appliance")
    assert c.acceptance == pytest.approx(0.75)
    assert spec_metrics.counters_from(APPLIANCE_METRICS, "other").drafted == 127.0  # no such label: sum
    ls = spec_metrics.counters_from(LLAMA_METRICS, "qwen")
    assert (ls.drafted, ls.accepted, ls.source) == (64.0, 40.0, "llamacpp")
    assert spec_metrics.counters_from("# nothing\nother_total 1\n", "qwen") is None
    labels = spec_metrics.parse_prometheus('x{a="1,2",b="q\\"t"} 3 1700000000')
    assert labels == [("x", {"a": "1,2", "b": 'q"t'}, 3.0)]


def test_request_counts_prefers_exact_sources():
    before = spec_metrics.SpecCounters(100, 60, "appliance")
    after = spec_metrics.SpecCounters(150, 100, "appliance")
    got = spec_metrics.request_counts(before, after, None)
    assert (got.drafted, got.accepted, got.acceptance) == (50, 40, 0.8)
    # llama-server: the request's own timings beat its counters (they lag a request)
    lb, la = spec_metrics.SpecCounters(10, 5, "llamacpp"), spec_metrics.SpecCounters(30, 9, "llamacpp")
    got = spec_metrics.request_counts(lb, la, {"predicted_n": 80, "draft_n": 48, "draft_n_accepted": 30})
    assert (got.drafted, got.accepted, got.source) == (48, 30, "timings")
    got = spec_metrics.request_counts(lb, la, {"predicted_n": 80})  # drafted nothing
    assert (got.drafted, got.accepted, got.acceptance) == (0, 0, None)
    assert spec_metrics.request_counts(lb, la, None).drafted == 20
    assert spec_metrics.request_counts(None, None, None) is None


# ---- the report ----------------------------------------------------------------------------


def _sample(target, case, rep, total, sha, drafted=None, accepted=None, status="ok"):
    return {
        "target": target,
        "workload": "edit",
        "case": f"edit={case}",
        "rep": rep,
        "status": status,
        "error": None if status == "ok" else "boom",
        "metrics": {
            "total_s": total,
            "completion_tokens": 100,
            "output_sha256": sha,
            "truncated": False,
            "spec_drafted": drafted,
            "spec_accepted": accepted,
        },
        "raw": {},
    }


def _results(samples, targets, reference=None):
    return {
        "targets": targets,
        "settings": {"edit_reference": reference},
        "samples": samples,
    }


def test_report_totals_ratios_and_identical_outputs():
    samples = []
    for rep in (0, 1):
        samples += [_sample("base", "a", rep, 10.0, "A"), _sample("base", "b", rep, 20.0, "B")]
        samples += [_sample("fast", "a", rep, 4.0, "A", 50, 40), _sample("fast", "b", rep, 8.0, "B", 30, 20)]
        other = "B" if rep == 0 else "X"  # differs from the reference in one repetition
        samples += [_sample("diff", "a", rep, 5.0, "A"), _sample("diff", "b", rep, 10.0, other)]
    targets = {"base": {"options": {}}, "fast": {"options": {"ref": "base"}}, "diff": {"options": {}}}
    res = _results(samples, targets, reference="base")
    rows = {r["target"]: r for r in edit_report.target_rows(res, baseline="base")}
    assert rows["base"]["total_s"] == 30.0 and rows["base"]["reference"] is None
    fast = rows["fast"]
    assert fast["total_s"] == 12.0 and fast["ratio"] == pytest.approx(0.4)
    assert fast["rep_ratios"] == [pytest.approx(0.4), pytest.approx(0.4)]
    assert (fast["identical"], fast["compared"], fast["differs"]) == (2, 2, [])
    assert (fast["spec_drafted"], fast["spec_accepted"]) == (80, 60)
    assert fast["spec_acceptance"] == pytest.approx(0.75)
    diff = rows["diff"]  # no ref= of its own: the run's reference
    assert (diff["identical"], diff["compared"], diff["differs"]) == (1, 2, ["edit=b"])
    assert diff["spec_drafted"] is None and diff["spec_acceptance"] is None
    md = edit_report.markdown(res, baseline="base")
    assert "| fast | 12.0 [12.0–12.0] | 0.40× | 0.40, 0.40 |" in md
    assert "2/2 (base)" in md and "75%" in md
    assert "| b | 20.0 s | 8.00 s = | 10.0 s ≠ (1/2) |" in md


def test_report_counts_only_complete_repetitions():
    samples = [
        _sample("t", "a", 0, 1.0, "A"),
        _sample("t", "b", 0, 2.0, "B"),
        _sample("t", "a", 1, 1.0, "A"),
        _sample("t", "b", 1, 9.0, "B", status="error"),
    ]
    rows = edit_report.target_rows(_results(samples, {"t": {}}))
    assert rows[0]["reps"] == 1 and rows[0]["total_s"] == 3.0 and rows[0]["errors"] == 1
    assert edit_report.target_rows(_results([], {"t": {}})) == []


# ---- launched servers ------------------------------------------------------------------------


def test_launch_spec_and_commands():
    defaults = launch.Defaults(model="qwen", gguf="/m.gguf", llama_server="/bin/ls-server", threads=2)
    s = launch.parse_launch("ls-mod=llama-server,spec=ngram-mod,ctx=8192,slots=1,args=--foo 3,ref=ls")
    assert (s.name, s.kind, s.spec, s.ctx, s.slots, s.args, s.ref) == (
        "ls-mod", "llama-server", "ngram-mod", 8192, 1, ["--foo", "3"], "ls"
    )  # fmt: skip
    argv = launch.command(s, 18001, defaults)
    assert argv[:7] == ["/bin/ls-server", "-m", "/m.gguf", "--host", "127.0.0.1", "--port", "18001"]
    joined = " ".join(argv)
    for part in ("--metrics", "--alias qwen", "-t 2 -tb 2", "-c 8192", "-np 1", "--spec-type ngram-mod"):
        assert part in joined
    assert argv[-2:] == ["--foo", "3"]
    a = launch.parse_launch("on=appliance,spec=ngram,env.X=1")
    assert a.env == {"APPLIANCE_SPEC": "ngram", "X": "1"}
    argv = launch.command(a, 18002, defaults)
    assert argv[1:] == [
        "-m",
        "appliance.cli",
        "serve",
        "--model",
        "qwen",
        "--port",
        "18002",
        "--threads",
        "2",
    ]
    assert "--spec-type" not in argv
    for bad in ("x=vllm", "x", "x=appliance,nope", "x=appliance,color=red", "x=llama-server,ctx=big"):
        with pytest.raises(TargetSpecError):
            launch.parse_launch(bad)
    with pytest.raises(TargetSpecError, match="gguf"):
        launch.command(launch.parse_launch("x=llama-server"), 1, launch.Defaults())


# A stand-in for llama-server: takes its flags, serves the timed fake, and exposes our spec
# counters on /metrics when its environment says APPLIANCE_SPEC=ngram (10 drafted, 8 accepted
# a request): proves the per-target environment reaches the child and the deltas are read.
FAKE_LLAMA_SERVER = """
import argparse, os, sys
sys.path.insert(0, FAKES_DIR)
import uvicorn
from fastapi.responses import PlainTextResponse
from timed_server import FakeConfig, create_app

p = argparse.ArgumentParser()
p.add_argument("--port", type=int)
p.add_argument("--alias", default="fake-model")
a, _ = p.parse_known_args()
app = create_app(FakeConfig(ttft_s=0.01, token_s=0.002, models=[a.alias]))
if os.environ.get("APPLIANCE_SPEC") == "ngram":
    @app.get("/metrics")
    async def metrics():
        n = app.state.fake["requests"]
        label = '{model="' + a.alias + '"}'
        return PlainTextResponse(
            f"appliance_spec_drafted_tokens_total{label} {10 * n}\\n"
            f"appliance_spec_accepted_tokens_total{label} {8 * n}\\n"
        )
uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="error")
"""


def test_edit_run_with_launched_servers_end_to_end(tmp_path: Path, monkeypatch, capsys):
    from appliance.bench import machine

    monkeypatch.setattr(machine, "describe_machine", lambda: {"hostname": "test", "source": "test"})
    binary = tmp_path / "fake-llama-server"
    binary.write_text(f"#!{sys.executable}\n" + FAKE_LLAMA_SERVER.replace("FAKES_DIR", repr(str(FAKES))))
    binary.chmod(0o755)
    with TimedServer(FakeConfig(ttft_s=0.01, token_s=0.002)) as external:
        rc = main(
            [
                "--target", f"external={external.url}",
                "--launch", "plain=llama-server",
                "--launch", "spec=llama-server,env.APPLIANCE_SPEC=ngram,ref=plain",
                "--launch-model", "fake-model", "--gguf", str(tmp_path / "m.gguf"),
                "--llama-server", str(binary), "--threads", "1",
                "--workload", "edit", "--edits", "2", "--edit-max-tokens", "6",
                "--repeat", "2", "--out", str(tmp_path), "--quiet", "--no-chart",
                "--baseline", "plain", "--reference", "external",
            ]
        )  # fmt: skip
        bodies = external.bodies
    assert rc == 0
    res = load(next(tmp_path.glob("bench-*.json")))
    assert list(res["targets"]) == ["external", "plain", "spec"]
    assert res["targets"]["spec"]["options"]["env"] == "APPLIANCE_SPEC=ngram"
    assert "--spec-type" not in res["targets"]["plain"]["options"]["command"]
    edits = [b for b in bodies if "Reply with the whole updated file." in json.dumps(b)]
    assert len(edits) == 4 and all("ignore_eos" not in b and b["max_tokens"] == 6 for b in edits)
    samples = [s for s in res["samples"] if s["workload"] == "edit"]
    assert len(samples) == 12 and all(s["status"] == "ok" for s in samples)
    spec = [s["metrics"] for s in samples if s["target"] == "spec"]
    assert all(
        (m["spec_drafted"], m["spec_accepted"], m["spec_source"]) == (10, 8, "appliance") for m in spec
    )
    assert all(s["metrics"]["spec_drafted"] is None for s in samples if s["target"] != "spec")
    titles = [p[0] for p in chart.panels(res)]
    assert titles == ["Edit requests: time per request"]
    rows = {r["target"]: r for r in edit_report.target_rows(res, "plain", "external")}
    assert rows["spec"]["reference"] == "plain" and rows["spec"]["identical"] == 2
    assert rows["plain"]["reference"] == "external" and rows["plain"]["compared"] == 2
    assert rows["spec"]["spec_acceptance"] == pytest.approx(0.8)
    assert "edit workload" in capsys.readouterr().out
    assert (
        main(["compare", str(next(tmp_path.glob("bench-*.json"))), "--baseline", "plain", "--markdown"]) == 0
    )
    md = capsys.readouterr().out
    assert "| spec | " in md and "2/2 (plain)" in md and "80%" in md
