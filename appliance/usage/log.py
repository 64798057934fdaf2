"""The usage log: one SQLite row per request (local and cloud), and the daily budget.

A row says when, which route and why, which models, how many tokens, what it cost
(the provider's one `Price.cost`, cached prompt tokens at the cached price) and how
long it took; never any prompt or answer text, so the log can be kept and
shared for audits. Writes go through a background thread so recording never adds
a disk sync to a request; today's cloud spend is kept in memory for the budget
check and seeded from the database at start.

Crash safety: WAL with synchronous=NORMAL, so a row committed before a `kill -9` is there after
the restart (SQLite replays the WAL); only rows still waiting for their batch (`batch_s`) are
lost. A file that is not a readable database at all is moved aside (`usage.db.corrupt-<time>`)
and a new log started, so a damaged log never stops `serve`; a write that fails (a full disk)
drops that batch with a warning instead of killing the writer thread.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

from runtimes.base import Usage
from runtimes.upstream.config import Price

log = logging.getLogger("appliance.usage")

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,              -- unix time the request arrived
    day TEXT NOT NULL,             -- UTC date, for budgets and reports
    route TEXT NOT NULL,           -- local | cloud | refused
    reason TEXT NOT NULL,
    requested_model TEXT NOT NULL,
    served_model TEXT NOT NULL,
    provider TEXT NOT NULL,        -- 'local' or the cloud provider's name
    prompt_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL DEFAULT 0,  -- of prompt_tokens, read from a cache
    completion_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    latency_ms REAL NOT NULL,
    status TEXT NOT NULL,          -- ok | error | client_gone | refused | http status
    key_name TEXT NOT NULL DEFAULT '',  -- the API key's name (appliance keys), '' when none was used
    dialect TEXT NOT NULL DEFAULT ''   -- the API the client spoke: openai | anthropic ('' in older rows)
);
CREATE INDEX IF NOT EXISTS requests_day ON requests(day);
"""


@dataclass(frozen=True)
class UsageRecord:
    ts: float
    day: str
    route: str
    reason: str
    requested_model: str
    served_model: str
    provider: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: float
    status: str
    key_name: str = ""
    dialect: str = ""


def utc_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def connect(path: Path) -> sqlite3.Connection:
    """The log's database, its schema brought up to date; a damaged file is moved aside."""
    try:
        return _open(path)
    except sqlite3.DatabaseError as e:  # "file is not a database", "database disk image is malformed"
        if isinstance(e, sqlite3.OperationalError) or not path.exists():
            raise  # locked, read-only, no room: not damage, and moving the file would not help
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            src = path.with_name(path.name + suffix)
            if src.exists():
                src.replace(aside.with_name(aside.name + suffix))
        log.warning("usage log %s is damaged (%s): moved to %s, starting a new log", path, e, aside)
        return _open(path)


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
        if "cached_tokens" not in columns:  # a log written before cached tokens were recorded
            db.execute("ALTER TABLE requests ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0")
        if "key_name" not in columns:  # a log written before requests were attributed to keys
            db.execute("ALTER TABLE requests ADD COLUMN key_name TEXT NOT NULL DEFAULT ''")
        if "dialect" not in columns:  # a log written before the console's audit showed the dialect
            db.execute("ALTER TABLE requests ADD COLUMN dialect TEXT NOT NULL DEFAULT ''")
    except BaseException:
        db.close()
        raise
    return db


class UsageLog:
    """Append-only request log with today's cloud spend at hand."""

    def __init__(self, path: Path, prices: Mapping[str, Price] | None = None, batch_s: float = 0.25):
        self.path = path
        self.batch_s = batch_s
        self.prices = dict(prices or {})
        self._db = connect(path)
        self._lock = threading.Lock()
        self._spend_day = utc_day(time.time())
        self._spend = self._spent_on(self._spend_day)
        self._key_spend = self._spent_by_key(self._spend_day)  # key name -> today's cloud cost
        self._queue: queue.Queue[UsageRecord | None] = queue.Queue()
        self._flushing = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="usage-log", daemon=True)
        self._writer.start()

    # -- recording ------------------------------------------------------------------------
    def cost(self, model: str, usage: Usage) -> float:
        """What `model` charges for `usage` at its configured price (0 when it has none)."""
        price = self.prices.get(model)
        return price.cost(usage) if price else 0.0

    def record(
        self,
        *,
        started: float,
        route: str,
        reason: str,
        requested_model: str,
        served_model: str,
        provider: str,
        prompt_tokens: int = 0,
        cached_tokens: int = 0,
        completion_tokens: int = 0,
        latency_ms: float = 0.0,
        status: str = "ok",
        cost_usd: float | None = None,
        key_name: str = "",
        dialect: str = "",
    ) -> UsageRecord:
        """Queue one row; cloud rows are priced (by the caller, who knows the provider's
        price, else by model name) and counted against today's spend at once."""
        cost = 0.0
        if route == "cloud":
            usage = Usage(prompt_tokens, completion_tokens, cached_tokens=cached_tokens)
            cost = self.cost(served_model, usage) if cost_usd is None else cost_usd
        rec = UsageRecord(
            started, utc_day(started), route, reason, requested_model, served_model, provider,
            prompt_tokens, cached_tokens, completion_tokens, cost, latency_ms, status, key_name, dialect,
        )
        if cost:
            with self._lock:
                self._roll_day()
                self._spend += cost
                if key_name:
                    self._key_spend[key_name] = self._key_spend.get(key_name, 0.0) + cost
        self._queue.put(rec)
        return rec

    def spent_today(self) -> float:
        with self._lock:
            self._roll_day()
            return self._spend

    def budget_ok(self, daily_budget_usd: float | None) -> bool:
        return daily_budget_usd is None or self.spent_today() < daily_budget_usd

    def key_spent_today(self, key_name: str) -> float:
        with self._lock:
            self._roll_day()
            return self._key_spend.get(key_name, 0.0)

    def key_budget_ok(self, key_name: str, daily_budget_usd: float | None) -> bool:
        return daily_budget_usd is None or self.key_spent_today(key_name) < daily_budget_usd

    def flush(self) -> None:
        """Wait until every queued row is written."""
        self._flushing.set()
        try:
            self._queue.join()
        finally:
            self._flushing.clear()

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join(timeout=5)
        self._db.close()

    # -- internals ------------------------------------------------------------------------
    def _roll_day(self) -> None:
        today = utc_day(time.time())
        if today != self._spend_day:
            self._spend_day, self._spend = today, 0.0
            self._key_spend = {}

    def _spent_by_key(self, day: str) -> dict[str, float]:
        rows = self._db.execute(
            "SELECT key_name, SUM(cost_usd) FROM requests"
            " WHERE day = ? AND route = 'cloud' AND key_name != '' GROUP BY key_name", (day,)
        ).fetchall()
        return {name: float(cost) for name, cost in rows}

    def _spent_on(self, day: str) -> float:
        row = self._db.execute(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM requests WHERE day = ? AND route = 'cloud'", (day,)
        ).fetchone()
        return float(row[0])

    def _write_loop(self) -> None:
        columns = ", ".join(f.name for f in fields(UsageRecord))
        marks = ", ".join("?" for _ in fields(UsageRecord))
        sql = f"INSERT INTO requests ({columns}) VALUES ({marks})"
        while True:
            batch = [self._queue.get()]
            if batch[0] is not None and not self._flushing.is_set():
                time.sleep(self.batch_s)  # let a burst gather: one transaction, not one per request
            while not self._queue.empty() and len(batch) < 1024:
                batch.append(self._queue.get_nowait())
            rows = [astuple(r) for r in batch if r is not None]
            try:
                if rows:
                    with self._db:
                        self._db.executemany(sql, rows)
            except sqlite3.Error as e:  # a full disk, a damaged file: keep serving, say so
                log.warning("usage log: %d row(s) not written: %s", len(rows), e)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if None in batch:
                return
