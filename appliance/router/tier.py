"""The tier classifier: does this request need frontier (cloud) reasoning, or will local do?

A logistic regression over task-structure features (`features.extract`), trained by
`python -m appliance.router.train` on the labelled prompts in `data/train.jsonl` and shipped
as `data/tier_model.json`. Why a linear model over handcrafted features: it is deterministic,
runs in plain Python (numpy only for training), explains itself (the reason names the
strongest evidence) and takes about a millisecond even for 100k-character requests, since
features read a bounded head and tail of the text. The model is loaded once, lazily, under a
lock; verdicts are pure functions of the text.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from appliance.router.features import extract

MODEL_PATH = Path(__file__).with_name("data") / "tier_model.json"

# Features are reported in groups of evidence; each group has a phrase per direction.
_GROUP_OF: dict[str, str] = {
    "ask_words": "length", "ask_tiny": "length", "ask_short": "length", "ask_medium": "length",
    "ask_long": "length", "sentences": "length", "last_words": "length",
    "code_size": "code", "has_code": "code", "has_error": "code", "error_x_short": "code",
    "hard_cues": "hard", "hard_x_long": "hard", "last_hard": "hard",
    "easy_start": "easy", "easy_x_short": "easy", "last_easy": "easy",
    "transform": "transform", "transform_x_long": "transform",
    "numbers": "quantity", "quantity": "quantity",
}
_EVIDENCE: dict[str, tuple[str, str]] = {  # group -> (pushes to cloud, pushes to local)
    "proof": ("asks for a proof or derivation", "no proof asked"),
    "design": ("asks for a design or plan under trade-offs", "no design asked"),
    "symptom": ("diagnosis from intermittent symptoms", "no intermittent symptoms"),
    "constraint": ("several hard constraints", "few constraints"),
    "algo": ("algorithmic bounds or complexity", "no algorithmic bounds"),
    "diagnose": ("asks for a review or root cause", "no review or root cause asked"),
    "hard": ("several reasoning-tier cues", "no reasoning-tier cues"),
    "code": ("pasted code", "pasted code or error with a short ask"),
    "easy": ("request form", "definition, explanation or routine request"),
    "transform": ("rewrite request", "summarise, translate or reformat"),
    "quantity": ("quantitative constraints", "no quantitative constraints"),
    "questions": ("several questions", "a single question"),
    "paths": ("names files across a codebase", "names a file to edit"),
    "brevity": ("brief answer wanted", "asks for a brief answer"),
    "chatter": ("conversation", "conversational message"),
    "agent_edit": ("edit request", "routine edit"),
}


def _length_phrase(feats: dict[str, float]) -> str:
    if feats.get("ask_tiny"):
        return "very short message"
    if feats.get("ask_short"):
        return "short ask"
    return "long, detailed ask" if feats.get("ask_long") else "medium-length ask"


@dataclass(frozen=True)
class TierVerdict:
    tier: Literal["local", "cloud"]
    score: float  # probability-like, 0..1, of "cloud"
    reason: str  # short human reason, never containing prompt text


class _Model:
    """Trained weights; `score` is the logistic probability of cloud."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.names: list[str] = data["features"]
        self.mean: list[float] = data["mean"]
        self.scale: list[float] = data["scale"]
        self.weights: list[float] = data["weights"]
        self.bias: float = data["bias"]
        self.threshold: float = data["threshold"]

    def contributions(self, feats: dict[str, float]) -> list[float]:
        return [
            w * (feats.get(n, 0.0) - m) / s
            for n, m, s, w in zip(self.names, self.mean, self.scale, self.weights, strict=True)
        ]

    def verdict(self, text: str) -> TierVerdict:
        feats = extract(text)
        contrib = self.contributions(feats)
        z = self.bias + sum(contrib)
        score = 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))
        tier: Literal["local", "cloud"] = "cloud" if score >= self.threshold else "local"
        return TierVerdict(tier, round(score, 4), self._reason(tier, feats, contrib))

    def _reason(self, tier: str, feats: dict[str, float], contrib: list[float]) -> str:
        """The two evidence groups that pushed hardest toward the verdict."""
        groups: dict[str, float] = {}
        for name, c in zip(self.names, contrib, strict=True):
            group = _GROUP_OF.get(name, name)
            groups[group] = groups.get(group, 0.0) + c
        sign = 1.0 if tier == "cloud" else -1.0
        phrases: list[str] = []
        for group, c in sorted(groups.items(), key=lambda gc: (-sign * gc[1], gc[0]))[:2]:
            if sign * c <= 0.05:
                break
            if group == "length":
                phrases.append(_length_phrase(feats))
            else:
                pos, neg = _EVIDENCE.get(group, (group, group))
                phrases.append(pos if tier == "cloud" else neg)
        return "; ".join(phrases) or ("reasoning-tier task" if tier == "cloud" else "routine task")


_lock = threading.Lock()
_model: _Model | None = None


def load_model(path: Path = MODEL_PATH) -> _Model:
    return _Model(json.loads(path.read_text()))


def _get_model() -> _Model:
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                _model = load_model()
    return _model


def classify(text: str) -> TierVerdict:
    """Deterministic tier verdict for the request's latest user text."""
    return _get_model().verdict(text or "")


# --- which text to judge -------------------------------------------------------------------

_TOOL_PART_TYPES = {"tool_result", "tool_use", "function_call", "function_call_output", "tool_call", "image",
                    "image_url", "input_image", "input_audio", "file"}


def _field(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _real_text(content: Any) -> str:
    """The typed text of one message's content; tool output and non-text parts are dropped."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts: list[str] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
            continue
        kind = _field(part, "type")
        if kind in _TOOL_PART_TYPES:
            continue
        text = _field(part, "text")
        if kind in (None, "text", "input_text") and isinstance(text, str):
            texts.append(text)
    return "\n".join(t for t in texts if t)


def latest_user_text(messages: list[dict[str, Any]]) -> str:
    """The latest user turn that carries real text (not tool output, not the system prompt).

    OpenAI and Anthropic shapes: content may be a string or a list of parts; a user turn that
    only returns tool results (Anthropic `tool_result` blocks) is skipped, as are `tool` and
    `function` role messages.
    """
    for msg in reversed(messages or []):
        if _field(msg, "role") != "user":
            continue
        text = _real_text(_field(msg, "content")).strip()
        if text:
            return text
    return ""
