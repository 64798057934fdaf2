"""A store of computed prompt prefixes beyond the slots: RAM LRU in front of a directory.

Coding agents open new sessions with the same ~7k-token system prompt and tool list.
The slots keep such a prefix only while they are not needed for something else; this
store keeps a sequence's KV state (llama_state_seq_get_data) when a slot is about to be
overwritten and when a long prompt has just been computed, and writes it to disk, keyed
by the model file and a hash of the tokens. A new request whose prompt starts with a
stored prefix restores it (llama_state_seq_set_data) and computes only the rest, also
after a restart.

File format: b"APKV2\\0", then uint32 n_tokens, uint64 state bytes, uint32 CRC-32 of the tokens
and the state (little-endian), then n_tokens int32 tokens, then the state bytes.

Crash safety: a file is written as `.tmp`, synced, then renamed, so a crash mid-write leaves a
`.tmp` (removed at start) and never a short `.kv`. A file damaged anyway (a disk fault, a
copy cut short, another build's format) is never restored into a context: a length that does
not match the header is caught when the index is read at start, other damage by the CRC when
the state is loaded; such a file is deleted and the prefix is simply computed (and stored)
again. CRC-32 and not a cryptographic hash: it finds damage, not tampering (the directory is
ours), and runs at ~4 GB/s. A full disk (ENOSPC, EDQUOT) turns the disk side off with one
warning; the RAM side and serving go on.
"""

from __future__ import annotations

import array
import errno
import hashlib
import logging
import os
import queue
import re
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from runtimes.llamacpp.slots import common_prefix

log = logging.getLogger("appliance.llamacpp")

MAGIC = b"APKV2\0"
_HEADER = struct.Struct("<IQI")  # n_tokens, state bytes, CRC-32 of tokens + state
_HEAD_SIZE = len(MAGIC) + _HEADER.size
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class SeqState(Protocol):
    def seq_state_size(self, seq: int) -> int: ...
    def seq_state(self, seq: int) -> bytes: ...


@dataclass(eq=False)
class Entry:
    key: str
    tokens: list[int]
    size: int  # state bytes
    data: bytes | None = None  # in RAM, or None (on disk only)
    on_disk: bool = False
    last_used: float = 0.0


@dataclass
class StoreStats:
    entries: int = 0
    ram_bytes: int = 0
    disk_bytes: int = 0
    saves: int = 0
    hits: int = 0
    tokens_restored: int = 0


def _is_prefix(a: list[int], b: list[int]) -> bool:
    return len(a) <= len(b) and b[: len(a)] == a


def _key(tokens: list[int]) -> str:
    return hashlib.sha256(array.array("i", tokens).tobytes()).hexdigest()[:32]


class PrefixStore:
    """Bounded RAM + disk LRU of sequence states; the scheduler thread calls every method
    except the writer thread's own, and `flush`."""

    def __init__(
        self,
        root: Path,
        *,
        model_key: str,
        ram_bytes: int = 1 << 30,
        disk_bytes: int = 8 << 30,
        min_tokens: int = 256,
    ):
        self.dir = Path(root) / re.sub(r"[^A-Za-z0-9._-]+", "_", model_key)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ram_limit = ram_bytes
        self.disk_limit = disk_bytes
        self.disk_off = False  # set when the disk filled up: RAM only from then on
        self.min_tokens = max(1, min_tokens)
        self._entries: dict[str, Entry] = {}
        self._stats = StoreStats()
        self._lock = threading.Lock()  # guards _entries against the writer thread
        self._writes: queue.Queue[Entry | None] = queue.Queue()
        self._load_index()
        self._writer = threading.Thread(target=self._write_loop, name="prefix-store-writer", daemon=True)
        self._writer.start()

    # -- saving -----------------------------------------------------------------------------
    def offer(self, ctx: SeqState, seq: int, tokens: list[int], *, exact: bool = False) -> bool:
        """A slot is about to lose these cached tokens: keep them if they are worth it.

        exact: also when a stored entry covers all but a few of them (a parked conversation
        comes back with its last answer, which would otherwise be recomputed).
        Returns whether the store now holds them (False: too short, or too big for RAM)."""
        return self._maybe_save(ctx, seq, tokens, min_new=1 if exact else self.min_tokens)

    def prompt_done(self, ctx: SeqState, seq: int, tokens: list[int]) -> None:
        """A prompt has just been computed: a stable point to save a long prefix."""
        self._maybe_save(ctx, seq, tokens, min_new=self.min_tokens)

    def _maybe_save(self, ctx: SeqState, seq: int, tokens: list[int], min_new: int) -> bool:
        n = len(tokens)
        if n < self.min_tokens:
            return False
        _, covered = self._best(tokens)
        if n - covered < min_new:
            return True  # a stored entry already holds (nearly) all of it
        if ctx.seq_state_size(seq) > self.ram_limit:
            return False  # would not fit in RAM anyway: do not pay for the copy
        data = ctx.seq_state(seq)
        if not data:
            return False
        entry = Entry(_key(tokens), list(tokens), len(data), data, last_used=time.time())
        with self._lock:
            # Entries that are prefixes of this one are superseded by it.
            for old in [e for e in self._entries.values() if _is_prefix(e.tokens, tokens)]:
                self._drop(old)
            self._entries[entry.key] = entry
            self._stats.saves += 1
            self._trim_ram()
        self._writes.put(entry)
        return True

    # -- restoring --------------------------------------------------------------------------
    def lookup(self, prompt: list[int], better_than: int) -> tuple[Entry, int] | None:
        """The entry sharing the longest prefix with `prompt`, if longer than `better_than`."""
        entry, n = self._best(prompt)
        if entry is None or n <= better_than:
            return None
        return entry, n

    def load(self, entry: Entry) -> bytes | None:
        data = entry.data
        if data is None and entry.on_disk:
            try:
                data = _read_checked(self._path(entry.key), entry.tokens)
            except (OSError, ValueError) as e:  # ValueError: damaged; never restored
                log.warning("prefix store: dropping %s: %s", entry.key, e)
                with self._lock:
                    self._drop(entry)
                return None
        entry.last_used = time.time()
        return data

    def hit(self, n_tokens: int) -> None:
        self._stats.hits += 1
        self._stats.tokens_restored += n_tokens

    def forget(self, entry: Entry) -> None:
        """An entry that failed to restore (e.g. saved by an incompatible build)."""
        with self._lock:
            self._drop(entry)

    def stats(self) -> StoreStats:
        with self._lock:
            s = self._stats
            s.entries = len(self._entries)
            s.ram_bytes = sum(e.size for e in self._entries.values() if e.data is not None)
            s.disk_bytes = sum(e.size for e in self._entries.values() if e.on_disk)
            return StoreStats(**vars(s))

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every pending write is on disk."""
        deadline = time.time() + timeout
        while self._writes.unfinished_tasks and time.time() < deadline:
            time.sleep(0.01)

    # -- internals --------------------------------------------------------------------------
    def _best(self, tokens: list[int]) -> tuple[Entry | None, int]:
        best, best_n = None, 0
        with self._lock:
            entries = list(self._entries.values())
        for e in entries:
            n = common_prefix(e.tokens, tokens)
            if n > best_n:
                best, best_n = e, n
        return best, best_n

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.kv"

    def _drop(self, entry: Entry) -> None:
        self._entries.pop(entry.key, None)
        entry.data = None
        if entry.on_disk:
            entry.on_disk = False
            self._path(entry.key).unlink(missing_ok=True)

    def _trim_ram(self) -> None:
        in_ram = sorted((e for e in self._entries.values() if e.data is not None), key=lambda e: e.last_used)
        total = sum(e.size for e in in_ram)
        for e in in_ram:
            if total <= self.ram_limit:
                break
            total -= e.size
            if e.on_disk:
                e.data = None
            else:
                self._drop(e)  # not yet written: nothing would be left of it

    def _trim_disk(self) -> None:
        on_disk = sorted((e for e in self._entries.values() if e.on_disk), key=lambda e: e.last_used)
        total = sum(e.size for e in on_disk)
        for e in on_disk:
            if total <= self.disk_limit:
                break
            total -= e.size
            if e.data is None:
                self._drop(e)
            else:
                e.on_disk = False
                self._path(e.key).unlink(missing_ok=True)

    def _write_loop(self) -> None:
        while True:
            entry = self._writes.get()
            try:
                if entry is None:
                    return
                data = entry.data
                if data is None or entry.key not in self._entries or self.disk_off:
                    continue
                path = self._path(entry.key)
                _write_synced(path, entry.tokens, data)
                with self._lock:
                    if entry.key in self._entries:
                        entry.on_disk = True
                        self._trim_disk()
                        self._trim_ram()
                    else:
                        path.unlink(missing_ok=True)
            except OSError as e:
                if e.errno in _DISK_FULL:
                    self._disk_full(e)
                else:
                    log.warning("prefix store: cannot write %s: %s", getattr(entry, "key", "?"), e)
            finally:
                self._writes.task_done()

    def _load_index(self) -> None:
        """Read the token headers of the states a previous run left on disk."""
        bad: list[str] = []
        for path in self.dir.glob("*.kv"):
            try:
                tokens, size = _read_index(path)
                self._entries[path.stem] = Entry(path.stem, tokens, size, None, True, path.stat().st_mtime)
            except ValueError as e:  # damaged, cut short, or an older format: computed again
                bad.append(f"{path.name}: {e}")
                path.unlink(missing_ok=True)
            except OSError:
                continue
        if bad:
            first = bad[0]
            log.warning("prefix store: deleted %d unusable file(s) in %s, e.g. %s", len(bad), self.dir, first)
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink(missing_ok=True)

    def _disk_full(self, e: OSError) -> None:
        """The disk under the store is full: stop writing (RAM entries stay), say so once."""
        with self._lock:
            if self.disk_off:
                return
            self.disk_off = True  # pending writes are skipped; their RAM copies still serve
        log.warning(
            "prefix store: the disk under %s is full (%s); storing prefixes in RAM only from now on",
            self.dir, e.strerror,
        )

    def close(self) -> None:
        self.flush()
        self._writes.put(None)
        self._writer.join(timeout=10)


# -- file format ----------------------------------------------------------------------------
def _write_synced(path: Path, tokens: list[int], data: bytes) -> None:
    """Header, tokens, state into `.tmp`, fsync, rename: a crash never leaves a short `.kv`.
    A failed write removes its `.tmp` (a full disk must not stay full of halves)."""
    toks = array.array("i", tokens).tobytes()
    crc = zlib.crc32(data, zlib.crc32(toks))
    tmp = path.with_suffix(".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC + _HEADER.pack(len(tokens), len(data), crc))
            f.write(toks)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_index(path: Path) -> tuple[list[int], int]:
    """A file's tokens and state size, checking all but the CRC (which needs the whole state):
    magic, token count, the file's length against the header, the name against the tokens."""
    with open(path, "rb") as f:
        head = f.read(_HEAD_SIZE)
        if len(head) < _HEAD_SIZE or not head.startswith(MAGIC):
            raise ValueError("not a prefix-store file of this version")
        n, size, _ = _HEADER.unpack_from(head, len(MAGIC))
        toks = array.array("i")
        toks.frombytes(f.read(4 * n))
    if len(toks) != n or size <= 0:
        raise ValueError("truncated tokens")
    if path.stat().st_size != _HEAD_SIZE + 4 * n + size:
        raise ValueError(f"length {path.stat().st_size} does not match its header")
    tokens = toks.tolist()
    if _key(tokens) != path.stem:
        raise ValueError("tokens do not match the file name")
    return tokens, size


def _read_checked(path: Path, tokens: list[int]) -> bytes:
    """The state bytes, after checking length and CRC against the header (ValueError if not)."""
    with open(path, "rb") as f:
        head = f.read(_HEAD_SIZE)
        if len(head) < _HEAD_SIZE or not head.startswith(MAGIC):
            raise ValueError("bad header")
        n, size, crc = _HEADER.unpack_from(head, len(MAGIC))
        toks = f.read(4 * n)
        data = f.read()
    if n != len(tokens) or len(data) != size:
        raise ValueError(f"{len(data)} state bytes, the header says {size}")
    if toks != array.array("i", tokens).tobytes() or zlib.crc32(data, zlib.crc32(toks)) != crc:
        raise ValueError("checksum mismatch")
    return data
