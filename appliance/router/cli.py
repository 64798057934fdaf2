"""`appliance route`: the router's request inspectors over JSON lines, for scripts and scoring.

Each stdin line is `{"prompt": ..., "system": ...}` (optionally `"messages": [...]` in the
OpenAI/Anthropic shape instead of `prompt`, and an `id` that is echoed). Each stdout line is
one decision `{"route", "tier", "reason", "score"}`: the tier classifier's verdict, unless the
privacy guard finds a secret or a configured pattern anywhere a cloud provider would see it
(prompt or system prompt), in which case the route is `local` and the reason says what kind
was found (never the text). A bad line gets an OpenAI-style `{"error": {...}}` line in its place,
so output lines stay aligned with input lines, and the exit status is 1.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from appliance.router.privacy import PrivacyGuard
from appliance.router.verdict import decide


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": None}}


def run(stdin: TextIO, stdout: TextIO, guard: PrivacyGuard, threshold: float | None = None) -> int:
    status = 0
    for line in stdin:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("each line must be a JSON object")
            out = decide(obj, guard, threshold)
        except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
            out, status = _error(str(e).split("\n")[0]), 1
        stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
        stdout.flush()
    return status


def main(patterns: dict[str, str], threshold: float | None) -> int:
    try:
        guard = PrivacyGuard(patterns)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return run(sys.stdin, sys.stdout, guard, threshold)
