"""API keys: named, stored only as hashes, in one 0600 file under the data directory.

A key is 32 random bytes (256 bits) from `secrets`, shown once when created. The file keeps
its SHA-256, not the key: a salted slow hash (bcrypt, scrypt) protects guessable passwords
by making each guess expensive, but nobody can enumerate a 256-bit random space, so one
fast hash is enough and lets every request check a key in microseconds. Each key also has
a short random `id` (not derived from the key) that `appliance keys list` can show.

The server re-reads the file when it changes (mtime and size), so `appliance keys revoke`
takes effect on a running server at its next request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from appliance.paths import data_dir

KEY_PREFIX = "apl-"
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class KeyError_(Exception):
    """A keys-file operation that cannot be done (duplicate or unknown name, bad file)."""


@dataclass(frozen=True)
class KeyRecord:
    name: str
    id: str  # short, random, not secret: what `keys list` shows
    sha256: str  # hex digest of the key; the key itself is never stored
    created: str  # ISO 8601, UTC
    daily_budget_usd: float | None = None  # this key's cloud spend per UTC day (None: no limit)


def default_keys_path() -> Path:
    return data_dir() / "keys.json"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """The keys file: add, list, revoke (CLI) and `identify` (the server, per request)."""

    def __init__(self, path: Path | None = None):
        self.path = path or default_keys_path()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._records: list[KeyRecord] = []

    # -- reading ---------------------------------------------------------------------------
    def records(self) -> list[KeyRecord]:
        """The current keys, re-read when the file changed since the last call."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._records = self._read()
                self._stamp = stamp
            return list(self._records)

    def identify(self, key: str) -> str | None:
        """The name of the key `key` is, or None. Every stored hash is compared in constant
        time, and all of them are, so timing says nothing about which one matched."""
        digest = hash_key(key).encode()
        found = None
        for rec in self.records():
            if hmac.compare_digest(digest, rec.sha256.encode()):
                found = rec.name
        return found

    def daily_budget(self, name: str) -> float | None:
        """The key's daily cloud budget (None: none, or no such key)."""
        return next((r.daily_budget_usd for r in self.records() if r.name == name), None)

    def _read(self) -> list[KeyRecord]:
        try:
            data = json.loads(self.path.read_text())
            return [KeyRecord(**item) for item in data.get("keys", [])]
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise KeyError_(f"{self.path}: unreadable keys file ({e.__class__.__name__})") from None

    # -- changing (the CLI) ----------------------------------------------------------------
    def add(self, name: str, daily_budget_usd: float | None = None) -> str:
        """Create key `name`; returns the key, which is not stored and cannot be shown again."""
        if not name or len(name) > 64 or not set(name) <= _NAME_OK:
            raise KeyError_("a key name is 1-64 letters, digits, '.', '_' or '-'")
        records = self.records()
        if any(r.name == name for r in records):
            raise KeyError_(f"a key named {name!r} exists; revoke it first")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        created = datetime.now(UTC).replace(microsecond=0).isoformat()
        check_budget(daily_budget_usd)
        rec = KeyRecord(name, secrets.token_hex(4), hash_key(key), created, daily_budget_usd)
        self._write([*records, rec])
        return key

    def set_budget(self, name: str, daily_budget_usd: float | None) -> None:
        """Change (or with None remove) a key's daily cloud budget; a running server sees it
        at its next request."""
        check_budget(daily_budget_usd)
        records = self.records()
        if not any(r.name == name for r in records):
            raise KeyError_(f"no key named {name!r}")
        self._write([replace(r, daily_budget_usd=daily_budget_usd) if r.name == name else r for r in records])

    def revoke(self, name: str) -> None:
        records = self.records()
        if not any(r.name == name for r in records):
            raise KeyError_(f"no key named {name!r}")
        self._write([r for r in records if r.name != name])

    def _write(self, records: list[KeyRecord]) -> None:
        """Atomically, and created 0600 from the start (never briefly world-readable)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"keys": [asdict(r) for r in records]}, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)  # whatever the umask did
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def check_budget(usd: float | None) -> None:
    """Raises KeyError_ unless `usd` is None or a finite amount of 0 or more."""
    if usd is not None and not (usd >= 0 and usd < float("inf")):
        raise KeyError_("a daily budget is a number of US dollars, 0 or more")
