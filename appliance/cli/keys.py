"""`appliance keys add|list|revoke`: named API keys for clients on other machines.

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
    ks.add_parser("list", help="names, ids and creation times (never the keys)")
    r = ks.add_parser("revoke", help="delete a key; a running server refuses it at once")
    r.add_argument("name")
    k.set_defaults(func=cmd_keys)


def cmd_keys(args: argparse.Namespace) -> int:
    from appliance.keys import KeyError_, KeyStore

    store = KeyStore(args.file)
    try:
        if args.keys_command == "add":
            key = store.add(args.name)
            print(key)
            print(f"key '{args.name}' created; it is shown only now. Clients send it as "
                  "'Authorization: Bearer <key>' (or 'x-api-key').", file=sys.stderr)
        elif args.keys_command == "revoke":
            store.revoke(args.name)
            print(f"key '{args.name}' revoked", file=sys.stderr)
        else:
            records = store.records()
            if not records:
                print(f"no keys in {store.path}", file=sys.stderr)
            for rec in records:
                print(f"{rec.name}\t{rec.id}\t{rec.created}")
    except KeyError_ as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
