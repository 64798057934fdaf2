"""Crash safety (issue 15): after `kill -9` mid-write and a restart the usage log and the prefix
store are intact or repaired; a damaged prefix-store file is never restored; a full disk turns
the store's disk side off and serving goes on."""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from serve_process import MODEL, make_home, start_serve, usage_rows

from appliance.usage.log import UsageLog
from runtimes.llamacpp.prefix_store import PrefixStore


class FakeStateCtx:
    def __init__(self, states: dict[int, bytes]):
        self.states = states

    def seq_state_size(self, seq: int) -> int:
        return len(self.states[seq])

    def seq_state(self, seq: int) -> bytes:
        return self.states[seq]


def _stored(tmp_path: Path, state: bytes = b"state" * 100) -> tuple[Path, list[int]]:
    toks = list(range(300))
    store = PrefixStore(tmp_path, model_key="m", min_tokens=100)
    store.prompt_done(FakeStateCtx({0: state}), 0, toks)
    store.close()
    (path,) = store.dir.glob("*.kv")
    return path, toks


def test_a_truncated_prefix_file_is_skipped_and_deleted(tmp_path: Path, caplog) -> None:
    path, toks = _stored(tmp_path)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - 7)  # a copy cut short, a crash without the rename
    with caplog.at_level(logging.WARNING):
        again = PrefixStore(tmp_path, model_key="m", min_tokens=100)
    assert again.lookup(toks, better_than=0) is None and not path.exists()
    assert "does not match its header" in caplog.text
    again.close()


def test_a_corrupt_prefix_state_is_never_loaded(tmp_path: Path) -> None:
    """Same length, one byte flipped: the index cannot tell, the CRC at load does."""
    path, toks = _stored(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    again = PrefixStore(tmp_path, model_key="m", min_tokens=100)
    hit = again.lookup(toks, better_than=0)
    assert hit is not None
    assert again.load(hit[0]) is None  # the caller computes the prompt instead
    assert again.lookup(toks, better_than=0) is None and not path.exists()
    again.close()


def test_old_format_and_half_written_files_are_cleared(tmp_path: Path) -> None:
    path, toks = _stored(tmp_path)
    intact = path.read_bytes()
    path.write_bytes(b"APKV1\0" + intact[6:])  # the format before checksums
    half = path.with_name("f" * 32 + ".tmp")
    half.write_bytes(intact[:50])  # kill -9 between write and rename
    again = PrefixStore(tmp_path, model_key="m", min_tokens=100)
    assert again.stats().entries == 0 and not path.exists() and not half.exists()
    again.close()
    path.write_bytes(intact)  # and the intact file is used as before
    store = PrefixStore(tmp_path, model_key="m", min_tokens=100)
    hit = store.lookup(toks, better_than=0)
    assert hit is not None and store.load(hit[0]) == b"state" * 100
    store.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (tmpfs), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)  # busy: detach anyway


def test_a_full_disk_turns_the_prefix_store_disk_side_off(small_disk: Path, caplog) -> None:
    store = PrefixStore(small_disk, model_key="m", min_tokens=10)
    ctx = FakeStateCtx({0: b"a" * (400 << 10), 1: b"b" * (400 << 10), 2: b"c" * (400 << 10)})
    with caplog.at_level(logging.WARNING):
        for seq in range(3):
            assert store.offer(ctx, seq, [seq + 1000, *range(20)])
            store.flush()
    assert store.disk_off
    assert sum("disk under" in r.getMessage() for r in caplog.records) == 1  # said once
    assert list(store.dir.glob("*.tmp")) == []  # no half-written file keeps the disk full
    hit = store.lookup([1002, *range(20)], better_than=0)  # the unwritten one still serves from RAM
    assert hit is not None and store.load(hit[0]) == b"c" * (400 << 10)
    store.close()


def test_a_damaged_usage_log_is_moved_aside(tmp_path: Path, caplog) -> None:
    db = tmp_path / "usage.sqlite"
    db.write_bytes(b"this is not sqlite" * 300)
    with caplog.at_level(logging.WARNING):
        log = UsageLog(db, batch_s=0)
    log.record(started=time.time(), route="local", reason="r", requested_model="m", served_model="m",
               provider="local")
    log.flush()
    log.close()
    assert "damaged" in caplog.text
    assert [p.name.split("-")[0] for p in tmp_path.glob("usage.sqlite.corrupt-*")] == ["usage.sqlite.corrupt"]
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM requests").fetchone() == (1,)


def test_a_full_disk_drops_usage_rows_but_not_the_writer(small_disk: Path, caplog) -> None:
    log = UsageLog(small_disk / "usage.sqlite", batch_s=0)
    filler = small_disk / "filler"
    try:
        with filler.open("wb", buffering=0) as f:
            while True:
                f.write(b"x" * 4096)
    except OSError:  # the disk is full
        pass
    for _ in range(200):
        log.record(started=time.time(), route="local", reason="r" * 500, requested_model="m",
                   served_model="m", provider="local")
    with caplog.at_level(logging.WARNING):
        log.flush()  # returns: the writer thread survived the failed batch
    assert "not written" in caplog.text
    filler.unlink()
    log.record(started=time.time(), route="local", reason="after", requested_model="m",
               served_model="m", provider="local")
    log.flush()
    assert log._writer.is_alive()
    log.close()
    with closing(sqlite3.connect(small_disk / "usage.sqlite")) as db:
        assert ("after",) in db.execute("SELECT reason FROM requests").fetchall()


# -- a real `appliance serve`, killed --------------------------------------------------------
SYSTEM = "You are a careful assistant for a software project. " * 60  # > 256 tokens: stored


@pytest.mark.slow
def test_kill_9_mid_write_then_restart(tmp_path: Path, smollm_path: Path) -> None:
    """Requests are being recorded when the server is killed: every row committed before the
    kill is there after a restart, the database passes an integrity check, a prefix-store file
    truncated meanwhile is skipped, and the restarted server answers the same long prompt."""
    home = make_home(tmp_path, smollm_path)
    args = ("--ctx", "4096", "--slots", "2")
    served = start_serve(home, *args)
    db = home / "usage.sqlite"
    store = home / "prefix-cache" / MODEL
    stop = threading.Event()
    errors: list[str] = []

    def chat(base: str, i: int, system: str = SYSTEM) -> httpx.Response:
        body = {
            "model": MODEL, "max_tokens": 4,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": f"Say {i}."}],
        }
        return httpx.post(base + "/v1/chat/completions", json=body, timeout=60)

    def client(k: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                chat(served.base, i, system=f"Client {k}.")
            except httpx.HTTPError:  # the kill
                return
            except Exception as e:  # reported below
                errors.append(repr(e))
                return
            i += 1

    try:
        assert chat(served.base, 0).status_code == 200  # a long prompt: written to the store
        deadline = time.monotonic() + 60
        while not list(store.rglob("*.kv")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list(store.rglob("*.kv")), "the prefix store wrote nothing"
        threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        committed = 0
        deadline = time.monotonic() + 120
        while committed < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as ro:
                committed = ro.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
        assert committed >= 20, "requests were not being recorded"
        served.proc.send_signal(signal.SIGKILL)  # mid-stream of rows: some are still queued
        served.proc.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=60)
    finally:
        stop.set()
        served.stop()
    assert not errors, errors
    (kv,) = list(store.rglob("*.kv"))
    with kv.open("r+b") as f:
        f.truncate(kv.stat().st_size // 2)

    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert sum(r["requests"] for r in usage_rows(home)) >= committed

    again = start_serve(home, *args)
    try:
        r = chat(again.base, 1)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
        again.proc.send_signal(signal.SIGTERM)
        assert again.proc.wait(timeout=60) == 0
    finally:
        again.stop()
    out = again.output()
    assert "deleted 1 unusable file" in out, out
    assert sum(r["requests"] for r in usage_rows(home)) >= committed + 1
