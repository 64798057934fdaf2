"""`appliance connect opencode`: write a working opencode.json for the running appliance.

Reads the served models from the appliance itself, so the file names exactly what
is loaded (context limits included), and merges into an existing opencode.json
instead of replacing the user's other providers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx

from appliance.config import DEFAULT_PORT

PROVIDER = "appliance"


def opencode_config(base_url: str, models: list[dict]) -> dict:
    """The provider block OpenCode needs: openai-compatible, our base URL, our models."""
    entries = {}
    for m in models:
        limit = {"context": m["context_length"], "output": 8192} if m.get("context_length") else None
        entries[m["id"]] = {"name": f"{m['id']} (local)", **({"limit": limit} if limit else {})}
    roles = {r: m["id"] for m in models for r in m.get("roles", [])}
    main = roles.get("main") or models[0]["id"]
    cfg = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            PROVIDER: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "appliance (local)",
                "options": {"baseURL": base_url},
                "models": entries,
            }
        },
        "model": f"{PROVIDER}/{main}",
    }
    if small := roles.get("small"):
        cfg["small_model"] = f"{PROVIDER}/{small}"
    return cfg


def merge(existing: dict, ours: dict) -> dict:
    merged = dict(existing)
    merged.setdefault("$schema", ours["$schema"])
    merged["provider"] = {**existing.get("provider", {}), **ours["provider"]}
    for key in ("model", "small_model"):
        if key in ours:
            merged[key] = ours[key]
    return merged


def connect_opencode(url: str | None, folder: Path) -> int:
    base = (url or f"http://127.0.0.1:{DEFAULT_PORT}/v1").rstrip("/")
    try:
        resp = httpx.get(f"{base}/models", timeout=5)
        resp.raise_for_status()
        models = resp.json()["data"]
    except (httpx.HTTPError, KeyError, ValueError) as e:
        hint = "start it with `appliance serve`"
        print(f"error: no appliance answering at {base} ({e}); {hint}", file=sys.stderr)
        return 1
    if not models:
        print("error: the appliance has no model loaded yet; try again when /health is ok", file=sys.stderr)
        return 1
    path = folder / "opencode.json"
    existing = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps(merge(existing, opencode_config(base, models)), indent=2) + "\n")
    print(f"wrote {path}: OpenCode now uses {PROVIDER}/{models[0]['id']} at {base}")
    return 0
