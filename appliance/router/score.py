"""Score the tier classifier on a labelled JSON-lines file, against the keyword baseline, and time it.

    python -m appliance.router.score [--data tests/fixtures/router/dev.jsonl] [--bench] [--json]

Accuracy: balanced accuracy, cloud precision/recall and the confusion matrix, for ours (through
the same `decide` that `appliance route` uses, so the privacy guard is in the loop) and for the
LiteLLM-style keyword scorer. Latency (`--bench`): p50/p99 of `classify` per prompt over the
file's prompts and over synthetic 100k-character requests (pasted code with the ask before or
after it, one long prose line, CJK text, many short lines), and of the privacy scan on them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.router import keywords
from appliance.router.metrics import binary_report
from appliance.router.privacy import PrivacyGuard
from appliance.router.tier import classify
from appliance.router.verdict import decide

# The labelled dev set lives with the tests (a source checkout); pass --data for another file.
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "router" / "dev.jsonl"


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def accuracy(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    guard = PrivacyGuard()
    truth = [r["label"] == "cloud" for r in rows]
    ours = [decide(r, guard)["route"] == "cloud" for r in rows]
    kw = [keywords.score(r["prompt"]).route == "cloud" for r in rows]
    kw_wide = [keywords.score(r["prompt"]).tier in ("COMPLEX", "REASONING") for r in rows]
    return {
        "ours": binary_report(truth, ours),
        "keyword baseline (REASONING -> cloud)": binary_report(truth, kw),
        "keyword baseline (COMPLEX+REASONING -> cloud)": binary_report(truth, kw_wide),
    }


def synthetic_100k() -> dict[str, str]:
    """Long requests of the shapes that stress the feature extractor."""
    code = ("def handler(event, context):\n    total = sum(x['amount'] for x in event['items'])\n"
            "    return total\n")
    ask = "Why does this sometimes return the wrong total under load? Find the root cause."
    prose = "We moved the service to a new cluster last week and the latency went up a little. "
    return {
        "code, ask after": (code * 2000)[: 100_000 - len(ask) - 10] + "\n" + ask,
        "fenced code, ask before": ask + "\n```python\n" + (code * 2000)[:99_800] + "\n```",
        "one prose line": (prose * 1500)[:100_000],
        "CJK text": ("我们的服务在高峰期偶尔出现超时，请分析原因。" * 5000)[:100_000],
        "many short lines": ("x = 1\n" * 20_000)[:100_000],
    }


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50_ms": statistics.median(ordered) * 1e3, "p99_ms": p99 * 1e3, "max_ms": ordered[-1] * 1e3,
            "n": len(ordered)}


def _time(fn: Callable[[str], object], texts: list[str], repeat: int) -> dict[str, float]:
    for t in texts[:5]:
        fn(t)  # warm-up: model load, caches
    samples: list[float] = []
    for _ in range(repeat):
        for t in texts:
            start = time.perf_counter()
            fn(t)
            samples.append(time.perf_counter() - start)
    return _percentiles(samples)


def latency(rows: list[dict[str, Any]], repeat: int = 20) -> dict[str, dict[str, float]]:
    guard = PrivacyGuard()
    prompts = [r["prompt"] for r in rows]
    long = list(synthetic_100k().values())
    return {
        "classify, data prompts": _time(classify, prompts, repeat),
        "classify, 100k-char requests": _time(classify, long, repeat * 10),
        "keyword baseline, data prompts": _time(keywords.score, prompts, repeat),
        "privacy scan, data prompts": _time(guard.scan, prompts, repeat),
        "privacy scan, 100k-char requests": _time(guard.scan, long, repeat),
    }


def _print(acc: dict[str, dict[str, float]], lat: dict[str, dict[str, float]] | None) -> None:
    print(f"{'':48} {'bal.acc':>8} {'cloud P':>8} {'cloud R':>8} {'local R':>8}   tp  fp  fn  tn")
    for name, r in acc.items():
        print(f"{name:48} {r['balanced_accuracy']:8.3f} {r['cloud_precision']:8.3f} {r['cloud_recall']:8.3f} "
              f"{r['local_recall']:8.3f} {r['tp']:4} {r['fp']:3} {r['fn']:3} {r['tn']:3}")
    if lat:
        print(f"\n{'latency':48} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'calls':>7}")
        for name, r in lat.items():
            print(f"{name:48} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['max_ms']:8.3f} {r['n']:7}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m appliance.router.score", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled JSON lines (prompt, label)")
    ap.add_argument("--bench", action="store_true", help="also measure latency")
    ap.add_argument("--repeat", type=int, default=20, help="passes over the prompts when timing")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = load(args.data)
    acc = accuracy(rows)
    lat = latency(rows, args.repeat) if args.bench else None
    if args.json:
        report = {"data": str(args.data), "rows": len(rows), "accuracy": acc, "latency": lat}
        print(json.dumps(report, indent=1))
    else:
        print(f"{args.data} ({len(rows)} prompts)\n")
        _print(acc, lat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
