"""Request text -> a fixed-length feature vector describing the TASK, for the tier classifier.

Why these features: whether a request needs frontier reasoning depends on what it asks (a
proof, a design under constraints, a diagnosis from intermittent symptoms) and how much the
asker had to say, not on how much code was pasted or how impressive the vocabulary is. So the
text is split into the ask (prose) and pasted material (fenced code, indented code, logs,
stack traces); cue groups and length are measured on the ask, and pasted material only
contributes its size and whether it carries an error.

Cost is bounded: texts longer than MAX_CHARS keep their head and tail (the ask sits before or
after the paste), and every regex here is linear in its input.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from appliance.router.cues import GROUPS, OPENERS

MAX_CHARS = 12_000
HEAD_CHARS = 8_000
MAX_ASK_CHARS = 4_000  # cue matching budget: the ask's head and tail beyond this

_FENCE = re.compile(r"```.*?(?:```|\Z)", re.S)
_CODE_LINE = re.compile(
    r"^(?: {4}|\t)|^\s*(?:at |File \"|Traceback|\$ |>>> |--> |\d+ \||[{}]\s*$|#include|import |"
    r"from \S+ import|def |class |func |fn |public |private |return |if \(|for \(|while \()|[;{]\s*$"
)
_ERROR = re.compile(
    r"Traceback|\b\w*(?:Error|Exception)\b|\berror(?:\[\w+\])?:|\bwarning:|\bpanic(?:ked)?\b|"
    r"segmentation fault|core dumped|\bE\d{4}\b|\bTS\d{4}\b|\bCS\d{4}\b|\bat line \d+|:\d+:\d+:",
)
_WORD = re.compile(r"[A-Za-z\u00C0-\u024F\u0400-\u04FF\uAC00-\uD7AF]+(?:'[a-z]+)?")
_CJK = re.compile(r"[\u3040-\u30FF\u4E00-\u9FFF]")
_SENTENCE_END = re.compile(r"[.?!](?:\s|$)|[。？！]")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_SENTENCE_SPLIT = re.compile(r"(?<=[.?!:。？！：])\s+|\n+")
_HARD_GROUPS = ("proof", "design", "symptom", "diagnose", "algo")
_PATH = re.compile(
    r"\b[\w.-]+/[\w./-]+|\b\w+\.(?:py|ts|tsx|js|jsx|go|rs|java|kt|c|cc|cpp|h|rb|cs|md|json|ya?ml)\b"
)


@dataclass(frozen=True)
class Parts:
    ask: str  # the request's own prose
    code_chars: int  # size of pasted code/logs
    has_error: bool  # pasted material carries a compiler/runtime error


def clip(text: str) -> str:
    """Keep head and tail of a long text; drop a tail that starts inside a code fence."""
    if len(text) <= MAX_CHARS:
        return text
    head, tail = text[:HEAD_CHARS], text[-(MAX_CHARS - HEAD_CHARS):]
    if tail.count("```") % 2 == 1:  # the cut landed inside a fence: skip to its end
        tail = tail.split("```", 1)[1]
    if head.count("```") % 2 == 1:
        head += "\n```"
    return head + "\n" + tail


def split(text: str) -> Parts:
    """Separate the ask from pasted code, logs and traces."""
    text = clip(text)
    code_chars = 0
    pieces: list[str] = []
    last = 0
    for m in _FENCE.finditer(text):
        pieces.append(text[last:m.start()])
        code_chars += m.end() - m.start()
        last = m.end()
    pieces.append(text[last:])
    ask_lines: list[str] = []
    for line in "".join(pieces).splitlines():
        if _CODE_LINE.search(line):
            code_chars += len(line) + 1
        else:
            ask_lines.append(line)
    ask = "\n".join(ask_lines).strip()
    return Parts(ask=ask, code_chars=code_chars, has_error=bool(_ERROR.search(text)))


def _bounded(ask: str) -> str:
    if len(ask) <= MAX_ASK_CHARS:
        return ask
    half = MAX_ASK_CHARS // 2
    return ask[:half] + "\n" + ask[-half:]


def word_count(ask: str) -> float:
    """Words in the ask; CJK text counts about two characters a word."""
    return len(_WORD.findall(ask)) + len(_CJK.findall(ask)) / 2.0


def _final_question(ask: str) -> dict[str, float]:
    """What the last sentence asks: a long preamble often ends in a trivial question (or a hard one)."""
    sentences = [s for s in _SENTENCE_SPLIT.split(ask) if word_count(s) >= 2]
    last = sentences[-1] if sentences else ask
    words = word_count(last)
    easy = bool(OPENERS["easy_start"].search(last) or OPENERS["transform"].search(last))
    hard = any(GROUPS[g].search(last) for g in _HARD_GROUPS)
    return {
        "last_easy": float(easy and words <= 20),
        "last_hard": float(hard),
        "last_words": math.log1p(words) / math.log(60.0),
    }


def extract(text: str) -> dict[str, float]:
    """Named features of one request text (the classifier fixes their order)."""
    parts = split(text)
    ask = _bounded(parts.ask)
    words = word_count(ask)
    f: dict[str, float] = {
        "ask_words": math.log1p(words) / math.log(300.0),
        "ask_tiny": float(words <= 6),
        "ask_short": float(6 < words <= 25),
        "ask_medium": float(25 < words <= 60),
        "ask_long": float(words > 60),
        "sentences": math.log1p(len(_SENTENCE_END.findall(ask))) / math.log(20.0),
        "questions": min(ask.count("?") + ask.count("？"), 5) / 5.0,
        "numbers": math.log1p(len(_NUMBER.findall(ask))) / math.log(30.0),
        "paths": float(bool(_PATH.search(ask))),
        "code_size": math.log1p(parts.code_chars) / math.log(1e5),
        "has_code": float(parts.code_chars > 0),
        "has_error": float(parts.has_error),
    }
    hard = 0.0
    for name, pattern in GROUPS.items():
        n = len(pattern.findall(ask))
        f[name] = math.log1p(n) / math.log(10.0)
        if name in _HARD_GROUPS:
            hard += n
    for name, pattern in OPENERS.items():
        f[name] = float(bool(pattern.search(ask)))
    f.update(_final_question(ask))
    f["hard_cues"] = math.log1p(hard) / math.log(20.0)
    f["hard_x_long"] = f["hard_cues"] * float(words > 40)
    f["easy_x_short"] = f["easy_start"] * float(words <= 25)
    f["error_x_short"] = f["has_error"] * float(words <= 25)
    f["transform_x_long"] = f["transform"] * float(words > 25)
    return f
