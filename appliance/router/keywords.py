"""The baseline to beat: a weighted keyword-list complexity scorer in the style of LiteLLM's.

Written from the published description of LiteLLM's complexity router (not its code): the
latest user message is scored on weighted dimensions (code presence, reasoning markers,
technical terms, token count, multi-step patterns, question complexity) minus a simple-
indicator dampener; the score maps to SIMPLE / MEDIUM / COMPLEX / REASONING by fixed
boundaries, and two or more reasoning markers force REASONING. Only REASONING counts as the
cloud tier here (that is the tier meant for frontier models). Kept for `score` to compare
against; the product uses `tier.classify`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CODE = ("```", "def ", "function", "class ", "import ", "return ", "const ", "var ", "=>", "{", "}",
         "error", "exception", "traceback", "debug", "compile", "bug", "stack trace", "segfault")
_REASONING = ("step by step", "think", "reason", "prove", "proof", "derive", "analyze", "analyse",
              "explain why", "carefully", "rigorous", "first principles", "trade-off", "tradeoff",
              "compare", "evaluate", "edge case", "deduce", "logically", "mathematically")
_TECHNICAL = ("architecture", "distributed", "microservice", "kubernetes", "database", "scalab",
              "concurren", "latency", "throughput", "consensus", "replication", "algorithm", "protocol",
              "encryption", "security", "kafka", "cache", "deadlock", "race condition", "memory",
              "thread", "async", "infrastructure", "cluster", "shard", "byzantine", "quantum")
_SIMPLE = ("hi", "hello", "hey", "thanks", "thank you", "what is", "what's", "define", "who is",
           "when is", "how do i", "translate", "summarize", "yes", "no", "ok")
_MULTISTEP = re.compile(r"\b(?:first|then|next|finally|step \d|after that)\b|^\s*\d+[.)]\s", re.I | re.M)

WEIGHTS = {"code": 0.30, "reasoning": 0.25, "technical": 0.25, "tokens": 0.10, "multistep": 0.03,
           "questions": 0.02, "simple": -0.05}
BOUNDARIES = (("SIMPLE", 0.15), ("MEDIUM", 0.35), ("COMPLEX", 0.60))  # below each: that tier


@dataclass(frozen=True)
class KeywordVerdict:
    tier: str  # SIMPLE | MEDIUM | COMPLEX | REASONING
    score: float

    @property
    def route(self) -> str:
        return "cloud" if self.tier == "REASONING" else "local"


def _hits(text: str, words: tuple[str, ...]) -> int:
    return sum(1 for w in words if w in text)


def score(text: str) -> KeywordVerdict:
    low = text.lower()
    reasoning = _hits(low, _REASONING)
    dims = {
        "code": min(_hits(low, _CODE) / 3.0, 1.0),
        "reasoning": min(reasoning / 2.0, 1.0),
        "technical": min(_hits(low, _TECHNICAL) / 3.0, 1.0),
        "tokens": min(len(low) / 4.0 / 500.0, 1.0),
        "multistep": min(len(_MULTISTEP.findall(low)) / 2.0, 1.0),
        "questions": min(low.count("?") / 3.0, 1.0),
        "simple": 1.0 if _hits(low[:40], _SIMPLE) else 0.0,
    }
    total = max(0.0, min(1.0, sum(WEIGHTS[k] * v for k, v in dims.items())))
    if reasoning >= 2:
        return KeywordVerdict("REASONING", total)
    for tier, bound in BOUNDARIES:
        if total < bound:
            return KeywordVerdict(tier, total)
    return KeywordVerdict("REASONING", total)
