"""`appliance usage`: spend by day and model, and what an all-cloud setup would have cost.

"All cloud" prices every locally served token at a reference cloud model's price
(`router.reference_cloud_model`), so the table shows what the appliance saved. Both
use the one `Price.cost`: prompt tokens read from a cache at the cached price.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from runtimes.base import Usage
from runtimes.upstream.config import Price


@dataclass
class UsageRow:
    day: str
    route: str
    model: str
    requests: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    cost_usd: float
    all_cloud_usd: float | None  # None: no reference price to value local tokens
    key: str = ""  # the API key's name ('' when none was used)


def summarize(db_path: Path, reference: Price | None, days: int = 30) -> list[UsageRow]:
    if not db_path.is_file():
        return []
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
        # A log no serve has opened since cached tokens were recorded has no such column.
        cached = "SUM(cached_tokens)" if "cached_tokens" in columns else "0"
        key = "key_name" if "key_name" in columns else "''"
        rows = db.execute(
            f"""SELECT day, route, served_model, COUNT(*), SUM(prompt_tokens), {cached},
                      SUM(completion_tokens), SUM(cost_usd), {key}
               FROM requests WHERE day >= date('now', ?)
               GROUP BY day, route, served_model, {key} ORDER BY day, route, served_model, {key}""",
            (f"-{max(0, days - 1)} days",),
        ).fetchall()
    finally:
        db.close()
    out = []
    for day, route, model, n, pin, pcached, pout, cost, key_name in rows:
        usage = Usage(prompt_tokens=pin, completion_tokens=pout, cached_tokens=pcached)
        local_value = reference.cost(usage) if reference else None
        cloud = local_value if route == "local" else cost
        out.append(UsageRow(day, route, model, n, pin, pcached, pout, cost, cloud, key_name))
    return out


def totals(rows: list[UsageRow]) -> tuple[float, float | None]:
    """Cloud spend over `rows`, and the all-cloud cost (None when some row has no reference
    price): the two bottom lines of `appliance usage` and of the console's spend panel."""
    spent = sum(r.cost_usd for r in rows)
    if any(r.all_cloud_usd is None for r in rows):
        return spent, None
    return spent, sum(r.all_cloud_usd or 0.0 for r in rows)


def print_usage(rows: list[UsageRow], reference_name: str | None, as_json: bool) -> None:
    if as_json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return
    console = Console()
    if not rows:
        console.print("no requests recorded yet")
        return
    table = Table(title="Usage by day and model", box=None, header_style="bold")
    keyed = any(r.key for r in rows)  # the key column only once some request used a named key
    key_col = ("key",) if keyed else ()
    columns = ("day", "route", "model", *key_col, "requests", "prompt tok", "cached tok", "output tok",
               "cost USD", "all-cloud USD")
    for col in columns:
        table.add_column(col, justify="left" if col in ("day", "route", "model", "key") else "right")
    for r in rows:
        cloud = "-" if r.all_cloud_usd is None else f"{r.all_cloud_usd:.4f}"
        key = (r.key or "-",) if keyed else ()
        table.add_row(r.day, r.route, r.model, *key, str(r.requests), str(r.prompt_tokens),
                      str(r.cached_tokens), str(r.completion_tokens), f"{r.cost_usd:.4f}", cloud)
    console.print(table)
    spent, would = totals(rows)
    console.print(f"cloud spend: [bold]{spent:.4f} USD[/]")
    if reference_name and would is not None:
        console.print(f"all-cloud ({reference_name} for every request): [bold]{would:.4f} USD[/]")
    else:
        console.print("all-cloud: set router.reference_cloud_model (a configured cloud model) to compare")
