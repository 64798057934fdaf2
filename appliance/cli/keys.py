"""`appliance keys add|list|revoke|budget`: named API keys for clients on other machines.

Registered on the top-level parser by `add_parser`. The key is printed once, by `add`, and
never again: the keys file holds only its hash (appliance/keys.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    """Register `keys` on the top-level CLI's subparsers."""
    k = sub.add_parser("keys", help="add, list or revoke the API keys `serve` accepts")
    k.add_argument("--file", type=Path, help="keys file (default: <data dir>/keys.json)")
    ks = k.add_subparsers(dest="keys_command", required=True)
    a = ks.add_parser("add", help="create a key and print it (once)")
    a.add_argument("name", help="who or what uses it (letters, digits, . _ -)")
    a.add_argument("--daily-budget", dest="daily_budget", type=_usd, metavar="USD",
                   help="this key's cloud spend per UTC day; over it, its requests stay local")
    ks.add_parser("list", help="names, ids, creation times and budgets (never the keys)")
    b = ks.add_parser("budget", help="set a key's daily cloud budget (USD), or 'none' to remove it")
    b.add_argument("name")
    b.add_argument("usd", type=_usd, metavar="USD|none")
    r = ks.add_parser("revoke", help="delete a key; a running server refuses it at once")
    r.add_argument("name")
    k.set_defaults(func=cmd_keys)


def _usd(text: str) -> float | None:
    from appliance.keys import KeyError_, check_budget

    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {text!r}") from None
    try:
        check_budget(value)
    except KeyError_ as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def cmd_keys(args: argparse.Namespace) -> int:
    from appliance.keys import KeyError_, KeyStore

    store = KeyStore(args.file)
    try:
        if args.keys_command == "add":
            key = store.add(args.name, args.daily_budget)
            print(key)
            print(f"key '{args.name}' created; it is shown only now. Clients send it as "
                  "'Authorization: Bearer <key>' (or 'x-api-key').", file=sys.stderr)
        elif args.keys_command == "budget":
            store.set_budget(args.name, args.usd)
            limit = "no daily cloud budget" if args.usd is None else f"a daily budget of ${args.usd:.2f}"
            print(f"key '{args.name}' now has {limit}", file=sys.stderr)
        elif args.keys_command == "revoke":
            store.revoke(args.name)
            print(f"key '{args.name}' revoked", file=sys.stderr)
        else:
            records = store.records()
            if not records:
                print(f"no keys in {store.path}", file=sys.stderr)
            for rec in records:
                budget = "-" if rec.daily_budget_usd is None else f"${rec.daily_budget_usd:.2f}/day"
                print(f"{rec.name}\t{rec.id}\t{rec.created}\t{budget}")
    except KeyError_ as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
