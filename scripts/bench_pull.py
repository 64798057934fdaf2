"""`appliance pull` from a loopback fake hub vs `curl` of the same file from the same server
(issue 13: pull >= 0.8x curl's throughput), and proof that verification reads a file once.

Usage: .venv/bin/python scripts/bench_pull.py [--reps N] [--rate-mbps R] [--file GGUF]

The server is tests/fakes/hf_hub.py in its own process (sendfile, so it is never the limit),
serving the file under the catalog repo of Qwen2.5-Coder-0.5B-Instruct Q4_K_M (default file:
that GGUF, 491 MB, from the store). Each repetition runs, in a rotated order, into fresh folders
on one filesystem:
  curl          `curl -s -o DEST URL`: the bytes only, no hash
  curl+sha256   the same, then `openssl dgst -sha256 DEST` (the sha256 Python's hashlib uses;
                coreutils' sha256sum is slower here): what a verified curl download costs
  pull          `pull("qwen2.5-coder-0.5b-instruct:Q4_K_M")` in this process: listing, HEAD,
                download with in-flight sha256, verification against the hub's LFS hash and the
                catalog's, the snapshot link, the manifest record (Python start-up excluded)
Throughput = file size / wall seconds; medians over the repetitions, ratios against curl's.
--rate-mbps paces the server (e.g. 110: a 1 Gbit/s link), to compare where the link is the limit.

Then the reads: bytes this process read from files during a fresh pull (expected: ~0, the hash
is taken in flight), and during a pull that resumes a download cut at half (expected: ~half the
file, the kept part hashed once). Measured as `/proc/self/io` rchar (socket reads do not count
there) minus what the in-process fake hub's sendfile read to serve it.

Before each case a scratch copy of the file is written and deleted (as scripts/bench_import.py
does: on this VM a write after an idle moment sometimes costs 0.5-1 s of extra kernel time).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from appliance.models.hub import pull  # noqa: E402
from appliance.models.store import fetch  # noqa: E402
from quantization.catalog import load_catalog  # noqa: E402

MODEL = "qwen2.5-coder-0.5b-instruct"
Cases = dict[str, Callable[[Path], None]]  # name -> run once into a fresh folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--rate-mbps", type=float, help="pace the fake hub to this many MB/s per download")
    ap.add_argument("--file", type=Path, help="GGUF to serve (default: the catalog model's, from the store)")
    args = ap.parse_args()
    model = load_catalog().get(MODEL)
    art = model.artifacts[0]
    src = args.file or fetch(model, art, log=lambda *_: None)
    _nice()
    work = Path(tempfile.mkdtemp(prefix="bench-pull-", dir=REPO.parent))
    server, base = _serve(src, art.repo, art.file, args.rate_mbps)
    try:
        url = f"{base}/{art.repo}/resolve/main/{art.file}"
        os.environ["HF_ENDPOINT"] = base
        run = _cases(url, f"{MODEL}:{art.quant}", work)
        times = _measure(run, args.reps, src, work)
        _report(times, src.stat().st_size, args)
        _reads(src, art, work)
    finally:
        server.kill()
        shutil.rmtree(work, ignore_errors=True)


def _serve(src: Path, repo: str, name: str, rate: float | None) -> tuple[subprocess.Popen, str]:
    linked = Path(tempfile.mkdtemp(prefix="bench-pull-src-")) / name
    linked.symlink_to(src.resolve())
    cmd = [sys.executable, str(REPO / "tests" / "fakes" / "hf_hub.py"), str(linked), "--repo", repo]
    if rate:
        cmd += ["--rate-mbps", str(rate)]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    return server, server.stdout.readline().strip()


def _cases(url: str, target: str, work: Path) -> Cases:
    def curl(dest: Path) -> None:
        subprocess.run(["curl", "-sf", "-o", str(dest / "file"), url], check=True)

    def curl_sha(dest: Path) -> None:
        curl(dest)
        subprocess.run(["openssl", "dgst", "-sha256", str(dest / "file")], check=True, capture_output=True)

    def pulled(dest: Path) -> None:
        os.environ.update(HF_HUB_CACHE=str(dest / "hub"), APPLIANCE_HOME=str(dest / "home"))
        pull(target, display="none", log=lambda _: None)

    return {"curl": curl, "curl+sha256": curl_sha, "pull": pulled}


def _measure(run: Cases, reps: int, src: Path, work: Path) -> dict[str, list[tuple[float, float]]]:
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in run}
    names = list(run)
    for name in names:  # warm-up: imports, page cache, connections; not counted
        _once(run[name], src, work)
    for rep in range(reps):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            times[name].append(_once(run[name], src, work))
    return times


def _once(case: Callable[[Path], None], src: Path, work: Path) -> tuple[float, float]:
    """(wall s, CPU s of this process and its children: the client's work, not the server's)."""
    scratch = work / "scratch"
    shutil.copyfile(src, scratch)
    scratch.unlink()
    dest = Path(tempfile.mkdtemp(dir=work))
    cpu0, t0 = _cpu(), time.perf_counter()
    case(dest)
    elapsed, cpu = time.perf_counter() - t0, _cpu() - cpu0
    shutil.rmtree(dest)
    return elapsed, cpu


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _report(results: dict[str, list[tuple[float, float]]], size: int, args: argparse.Namespace) -> None:
    load = os.getloadavg()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, load {load[0]:.1f}; "
          f"file {size} bytes; reps {args.reps}; server rate {args.rate_mbps or 'unpaced'} MB/s")
    base = statistics.median(t for t, _ in results["curl"])
    print("| case | median s | min-max s | MB/s | x curl throughput | client CPU s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, runs in results.items():
        ts = [t for t, _ in runs]
        med, cpu = statistics.median(ts), statistics.median(c for _, c in runs)
        spread = f"{min(ts):.3f}-{max(ts):.3f}"
        print(f"| {name} | {med:.3f} | {spread} | {size / med / 1e6:.0f} | {base / med:.2f} | {cpu:.2f} |")


def _reads(src: Path, art, work: Path) -> None:
    """Bytes read from files during a fresh pull and during a resumed one (in-process fake hub)."""
    from fakes.hf_hub import FakeHub

    with FakeHub() as hub:
        hub.add_repo(art.repo, {art.file: src})
        os.environ["HF_ENDPOINT"] = hub.base_url
        size = src.stat().st_size
        fresh = _rchar_during(lambda: pull(f"{MODEL}:{art.quant}", display="none", log=lambda _: None),
                              work / "fresh") - sum(hub.served.values())
        hub.cut(f"{art.repo}/{art.file}", size // 2)
        target = work / "resumed"
        try:
            _rchar_during(lambda: pull(f"{MODEL}:{art.quant}", display="none", log=lambda _: None), target)
        except Exception as e:  # the cut: expected
            print(f"(first try cut as planned: {type(e).__name__})")
        hub.heal()
        hub.reset_counts()
        resumed = _rchar_during(lambda: pull(f"{MODEL}:{art.quant}", display="none", log=lambda _: None),
                                target, keep=True)
        served = sum(hub.served.values())
        resumed -= served
    print(f"file reads during a fresh pull: {fresh} bytes of a {size}-byte file ({fresh / size:.3f}x)")
    print(f"file reads during the resumed pull: {resumed} bytes ({resumed / size:.3f}x); "
          f"bytes served to it: {served} ({served / size:.3f}x)")


def _rchar_during(fn: Callable[[], object], dest: Path, keep: bool = False) -> int:
    if not keep:
        shutil.rmtree(dest, ignore_errors=True)
    os.environ.update(HF_HUB_CACHE=str(dest / "hub"), APPLIANCE_HOME=str(dest / "home"))
    before = _rchar()
    try:
        fn()
    finally:
        after = _rchar()
    return after - before


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def _nice() -> None:
    """Run the measured processes ahead of the other work on a shared box (root only)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, -15)


if __name__ == "__main__":
    main()
