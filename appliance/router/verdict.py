"""One routing verdict for a request object, without a server: what `appliance route` prints
and what `appliance.router.score` measures, so both judge exactly the same way.
"""

from __future__ import annotations

import json
from typing import Any

from appliance.router.privacy import PrivacyGuard
from appliance.router.tier import classify, latest_user_text


def _texts(obj: dict[str, Any]) -> tuple[str, str]:
    """(text the tier is judged on, everything a provider would receive)."""
    system = obj.get("system")
    system = system if isinstance(system, str) else ""
    messages = obj.get("messages")
    if isinstance(messages, list):
        judged = latest_user_text(messages)
        outbound = "\n".join(
            m["content"] if isinstance(m.get("content"), str) else json.dumps(m.get("content"))
            for m in messages if isinstance(m, dict)
        )
        return judged, system + "\n" + outbound
    prompt = obj.get("prompt")
    if not isinstance(prompt, str):
        raise ValueError("each line needs a string 'prompt' (or a 'messages' list)")
    return prompt, system + "\n" + prompt


def decide(obj: dict[str, Any], guard: PrivacyGuard, threshold: float | None = None) -> dict[str, Any]:
    """One routing decision for one request object."""
    judged, outbound = _texts(obj)
    verdict = classify(judged)
    tier = verdict.tier if threshold is None else ("cloud" if verdict.score >= threshold else "local")
    kinds = guard.kinds(outbound)
    out: dict[str, Any] = {"id": obj["id"]} if "id" in obj else {}
    if kinds:
        out.update(route="local", tier=tier, reason="privacy: " + ", ".join(kinds), score=verdict.score)
    else:
        out.update(route=tier, tier=tier, reason=f"tier {tier}: {verdict.reason}", score=verdict.score)
    return out
