"""The routing audit: the last requests from the usage log, newest first.

Read from the same SQLite rows `appliance usage` sums, over a read-only connection, so
the console's audit and the usage report can never disagree, and the audit survives a
restart. The log holds no prompt or answer text, so neither can this.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

AIR_GAP_TAG = "air-gapped"  # in a reason: the router wanted the cloud and the air gap said no


@dataclass(frozen=True)
class AuditRow:
    ts: float
    key: str  # the API key's name ('' when none was used)
    dialect: str  # openai | anthropic ('' in rows from before it was recorded)
    route: str  # local | cloud | refused
    reason: str
    requested_model: str
    served_model: str
    provider: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    latency_ms: float
    cost_usd: float
    status: str


def recent(db_path: Path, limit: int = 100, route: str | None = None) -> list[AuditRow]:
    """The newest `limit` rows, optionally only those of one route ("cloud": what left)."""
    db = _open(db_path)
    if db is None:
        return []
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
        key = "key_name" if "key_name" in columns else "''"
        dialect = "dialect" if "dialect" in columns else "''"
        cached = "cached_tokens" if "cached_tokens" in columns else "0"
        where, args = ("WHERE route = ?", [route]) if route else ("", [])
        rows = db.execute(
            f"""SELECT ts, {key}, {dialect}, route, reason, requested_model, served_model, provider,
                       prompt_tokens, {cached}, completion_tokens, latency_ms, cost_usd, status
                FROM requests {where} ORDER BY ts DESC, id DESC LIMIT ?""",
            [*args, max(1, min(limit, 1000))],
        ).fetchall()
    finally:
        db.close()
    return [AuditRow(*r) for r in rows]


def refused_cloud(db_path: Path) -> int:
    """Requests the router would have sent to the cloud but the air gap kept here (refused
    outright or answered locally): what an air-gapped appliance prevented from leaving."""
    db = _open(db_path)
    if db is None:
        return 0
    try:
        row = db.execute(
            "SELECT COUNT(*) FROM requests WHERE reason LIKE ?", (f"%{AIR_GAP_TAG}%",)
        ).fetchone()
    finally:
        db.close()
    return int(row[0])


def _open(db_path: Path) -> sqlite3.Connection | None:
    if not db_path.is_file():
        return None
    return sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
