"""`appliance bench` end to end against fake servers: results file, chart, compare, managed server."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from fakes.timed_server import FakeConfig, TimedServer

from appliance.bench import compare, serve
from appliance.bench.chart import write_chart
from appliance.bench.cli import main
from appliance.bench.results import load

pytestmark = pytest.mark.timeout(90)

FAKE = Path(__file__).parent / "fakes" / "timed_server.py"


def _one(folder: Path, ext: str) -> Path:
    files = sorted(folder.glob(f"*.{ext}"))
    assert len(files) == 1, files
    return files[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    fast = FakeConfig(ttft_s=0.03, token_s=0.005)  # 200 tok/s
    slow = FakeConfig(ttft_s=0.06, token_s=0.01)  # 100 tok/s
    with TimedServer(fast) as a, TimedServer(slow) as b:
        rc = main(
            [
                "--target", f"fast={a.url}",
                "--target", f"slow={b.url}",
                "--target", "dead=http://127.0.0.1:9",
                "--workload", "decode,concurrency,trace",
                "--prompt-sizes", "128",
                "--max-tokens", "20",
                "--concurrency", "1,2",
                "--trace-max-tokens", "4",
                "--repeat", "2",
                "--out", str(out),
                "--quiet",
            ]
        )  # fmt: skip
    assert rc == 0
    return out


def test_results_file(run_dir: Path):
    res = load(_one(run_dir, "json"))
    assert list(res["targets"]) == ["fast", "slow", "dead"]
    assert "ConnectError" in res["targets"]["dead"]["error"]
    assert res["machine"]["hostname"] and res["settings"]["repeat"] == 2
    fast = res["summary"]["fast"]["decode"]["prompt=128"]["metrics"]["decode_tok_s"]
    assert fast["median"] == pytest.approx(200, rel=0.15)
    assert res["summary"]["slow"]["decode"]["prompt=128"]["metrics"]["decode_tok_s"]["n"] == 2
    # Interleaved: for each repetition and case, fast then slow then dead.
    order = [(x["rep"], x["case"], x["target"]) for x in res["samples"]]
    assert order[:3] == [(0, "prompt=128", "fast"), (0, "prompt=128", "slow"), (0, "prompt=128", "dead")]
    raw = next(x for x in res["samples"] if x["target"] == "fast" and x["workload"] == "decode")
    assert len(raw["raw"]["request"]["token_times"]) == 20


def test_chart_written(run_dir: Path):
    png = _one(run_dir, "png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_compare_within_run(run_dir: Path, capsys):
    res = load(_one(run_dir, "json"))
    rows = compare.compare_within(res, baseline="slow")
    decode = next(r for r in rows if r["metric"] == "decode_tok_s" and r["target"] == "fast")
    assert decode["ratio"] == pytest.approx(2.0, rel=0.15) and decode["better"] is True
    trace = next(r for r in rows if r["metric"] == "total_s" and r["target"] == "fast")
    assert trace["ratio"] < 1 and trace["better"] is True
    assert main(["compare", str(_one(run_dir, "json")), "--baseline", "slow", "--markdown"]) == 0
    assert "| decode | prompt=128 | decode_tok_s | fast / slow |" in capsys.readouterr().out


def test_compare_two_files(run_dir: Path, tmp_path: Path, capsys):
    res = load(_one(run_dir, "json"))
    faster = json.loads(json.dumps(res))
    m = faster["summary"]["fast"]["decode"]["prompt=128"]["metrics"]["decode_tok_s"]
    m["median"] *= 1.5
    b = tmp_path / "b.json"
    b.write_text(json.dumps(faster))
    rows = compare.compare_runs(res, faster)
    r = next(r for r in rows if r["target"] == "fast" and r["metric"] == "decode_tok_s")
    assert r["ratio"] == pytest.approx(1.5)
    assert main(["compare", str(_one(run_dir, "json")), str(b)]) == 0
    assert "1.50×" in capsys.readouterr().out


def test_chart_with_nothing_to_plot(tmp_path: Path):
    assert write_chart({"summary": {}, "targets": {"x": {}}}, tmp_path / "x.png") is None


def test_bad_arguments():
    assert main(["--target", "nourl"]) == 2
    assert main([]) == 2
    assert main(["compare"]) == 2


@pytest.fixture
def quick_machine(monkeypatch):
    """Skip real hardware detection (seconds) where the test is about something else."""
    from appliance.bench import machine

    monkeypatch.setattr(machine, "describe_machine", lambda: {"hostname": "test", "source": "test"})


def test_managed_server_started_measured_stopped(tmp_path: Path, monkeypatch, quick_machine):
    """--model starts a child server (here the fake, in place of `appliance serve`), then stops it."""
    started: list[serve.ManagedServer] = []

    def fake_command(model: str, port: int, extra: list[str]) -> list[str]:
        return [sys.executable, str(FAKE), "--port", str(port), "--model", model, *extra]

    monkeypatch.setattr(serve, "serve_command", fake_command)
    original_start = serve.ManagedServer.start

    def start(self, timeout_s: float = 600.0) -> None:
        started.append(self)
        original_start(self, timeout_s)

    monkeypatch.setattr(serve.ManagedServer, "start", start)
    rc = main(
        ["--model", "tiny", "--serve-arg=--token-ms=10", "--workload", "decode", "--prompt-sizes", "128",
         "--max-tokens", "20", "--repeat", "1", "--out", str(tmp_path), "--quiet", "--no-chart"]
    )  # fmt: skip
    assert rc == 0
    res = load(_one(tmp_path, "json"))
    assert res["targets"]["appliance:tiny"]["kind"] == "appliance"
    decode = res["summary"]["appliance:tiny"]["decode"]["prompt=128"]["metrics"]["decode_tok_s"]["median"]
    assert decode == pytest.approx(100, rel=0.15)
    assert started and started[0].proc.poll() is not None  # stopped


def test_managed_server_that_dies_is_reported(tmp_path: Path, monkeypatch, quick_machine):
    monkeypatch.setattr(serve, "serve_command", lambda m, p, e: [sys.executable, "-c", "raise SystemExit(3)"])
    rc = main(["--model", "tiny", "--workload", "decode", "--repeat", "1", "--out", str(tmp_path), "--quiet"])
    assert rc == 1
    res = load(_one(tmp_path, "json"))
    assert "exited with 3" in res["targets"]["appliance:tiny"]["error"]
