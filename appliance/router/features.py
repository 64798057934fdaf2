"""Request text -> a fixed-length feature vector describing the TASK, for the tier classifier.

Why these features: whether a request needs frontier reasoning depends on what it asks (a
proof, a design under constraints, a diagnosis from intermittent symptoms) and how much the
asker had to say, not on how much code was pasted or how impressive the vocabulary is. So the
text is split into the ask (prose) and pasted material (fenced code, indented code, logs,
stack traces); cue groups and length are measured on the ask, and pasted material only
contributes its size and whether it carries an error.

Cost is bounded (the 5 ms p99 budget holds for 100k-character requests): texts longer than
MAX_CHARS keep their head and tail (the ask sits before or after the paste), the ask is cut to
MAX_ASK_CHARS the same way, and matching is str methods, set look-ups and anchored regexes.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from functools import lru_cache

from appliance.router.cues import ALGO_SYMBOLS, GROUPS, OPENERS, UNITS

MAX_CHARS = 12_000
HEAD_CHARS = 8_000
MAX_ASK_CHARS = 3_000
HEAD_LINES, TAIL_LINES = 200, 100

HARD_GROUPS = ("proof", "design", "symptom", "diagnose", "algo")

_CODE_START = re.compile(
    r"(?: {4}|\t)|\s{0,12}(?:at |File \"|Traceback|\$ |>>> |--> |\d+ \||[{}]\s*$|#include|import |"
    r"from \S+ import|def |class |func |fn |public |private |return |if \(|for \(|while \()"
)
_ERROR_MARKS = ("Traceback", "Error", "Exception", "error:", "error[", "error TS", "error CS", "warning:",
                "panic", "Segmentation fault", "core dumped", "FAILED", "fatal:")
_WIDE_PUNCT = "\u2014\u2013\u2026\u00ab\u00bb\u201c\u201d\u00bf\u00a1\u3002\uff0c\uff1f\uff01\u3001\uff1a"
_PUNCT = str.maketrans(
    {**{c: " " for c in string.punctuation + _WIDE_PUNCT if c != "'"}, "'": None, "\u2019": None}
)
_CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
_SENTENCE_SEPS = (". ", "? ", "! ", ": ", "\n", "\u3002", "\uff1f", "\uff01", "\uff1a")
_EXTENSION = re.compile(r"\.(?:py|tsx?|jsx?|go|rs|java|kt|c|cc|cpp|h|rb|cs|md|json|ya?ml|toml|sql)\b")
_SENTENCE_ENDS = (". ", "? ", "! ", ".\n", "?\n", "!\n", "\u3002", "\uff1f", "\uff01")

_PHRASES: dict[str, tuple[str, ...]] = {}
for _name, _lex in GROUPS.items():
    for _p in _lex.phrases:
        _PHRASES[_p] = (*_PHRASES.get(_p, ()), _name)
_PHRASE_FIRST = frozenset(p.split()[0] for p in _PHRASES)


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


def _is_code_line(line: str) -> bool:
    return bool(_CODE_START.match(line)) or line.rstrip().endswith((";", "{"))


def split(text: str) -> Parts:
    """Separate the ask from pasted code, logs and traces.

    Fenced blocks are code; of the remaining lines only the first and last few hundred are
    inspected (a line deep inside a huge paste is pasted material, not the ask).
    """
    text = clip(text)
    pieces = text.split("```")
    fenced = pieces[1::2]
    code_chars = sum(map(len, fenced)) + 6 * len(fenced)
    lines = "\n".join(pieces[0::2]).splitlines()
    if len(lines) > HEAD_LINES + TAIL_LINES:
        middle = lines[HEAD_LINES:-TAIL_LINES]
        code_chars += sum(map(len, middle)) + len(middle)
        lines = lines[:HEAD_LINES] + lines[-TAIL_LINES:]
    ask_lines: list[str] = []
    for line in lines:
        if _is_code_line(line):
            code_chars += len(line) + 1
        else:
            ask_lines.append(line)
    has_error = any(m in text for m in _ERROR_MARKS)
    return Parts("\n".join(ask_lines).strip(), code_chars, has_error)


def _bounded(ask: str) -> str:
    if len(ask) <= MAX_ASK_CHARS:
        return ask
    head = MAX_ASK_CHARS * 2 // 3
    return ask[:head] + "\n" + ask[-(MAX_ASK_CHARS - head):]


def tokens(text: str) -> list[str]:
    """Lower-cased words, punctuation removed, apostrophes dropped ("what's" -> "whats")."""
    return text.lower().translate(_PUNCT).split()


@lru_cache(maxsize=1 << 16)
def _token_groups(tok: str) -> tuple[str, ...]:
    return tuple(name for name, lex in GROUPS.items() if tok in lex.words or tok.startswith(lex.stems))


def cue_counts(toks: list[str], raw: str, has_cjk: bool) -> dict[str, int]:
    """How often each cue group occurs: words, stems, 2-4 token phrases, CJK substrings."""
    counts = dict.fromkeys(GROUPS, 0)
    for i, tok in enumerate(toks):
        for name in _token_groups(tok):
            counts[name] += 1
        if tok in _PHRASE_FIRST:
            for n in (2, 3, 4):
                for name in _PHRASES.get(" ".join(toks[i:i + n]), ()):
                    counts[name] += 1
    if has_cjk:
        for name, lex in GROUPS.items():
            counts[name] += sum(raw.count(c) for c in lex.cjk)
    counts["algo"] += sum(raw.count(s) for s in ALGO_SYMBOLS)
    return counts


def _numbers(toks: list[str]) -> tuple[int, int]:
    """(numbers, numbers with a unit): scale and budget figures such as '5 ms', '40k', '2 TB'."""
    numbers = quantities = 0
    for i, tok in enumerate(toks):
        if tok[0].isdigit():
            numbers += 1
            unit = tok.lstrip("0123456789")
            if unit in UNITS or (not unit and i + 1 < len(toks) and toks[i + 1] in UNITS):
                quantities += 1
    return numbers, quantities


def word_count(toks: list[str], raw: str, has_cjk: bool) -> float:
    """Words in the ask; CJK text counts about two characters a word."""
    if not has_cjk:
        return float(len(toks))
    return len(toks) + sum(len(t) - 1 for t in toks if not t.isascii()) / 2.0


def _final_question(ask: str, has_cjk: bool) -> dict[str, float]:
    """What the last sentence asks: a long preamble often ends in a trivial question (or a hard one)."""
    tail = ask[-400:].rstrip(" \n.?!:\u3002\uff1f\uff01\uff1a")
    cut = max((tail.rfind(sep) + len(sep) for sep in _SENTENCE_SEPS if sep in tail), default=0)
    last = tail[cut:] or tail
    toks = tokens(last)
    words = word_count(toks, last, has_cjk)
    easy = bool(OPENERS["easy_start"].match(last[:200]) or OPENERS["transform"].match(last[:200]))
    counts = cue_counts(toks, last, has_cjk)
    return {
        "last_easy": float(easy and words <= 20),
        "last_hard": float(any(counts[g] for g in HARD_GROUPS)),
        "last_words": math.log1p(words) / math.log(60.0),
    }


def extract(text: str) -> dict[str, float]:
    """Named features of one request text (the trained model fixes their order)."""
    parts = split(text)
    ask = _bounded(parts.ask)
    has_cjk = bool(ask) and max(ask) >= "\u3040" and bool(_CJK.search(ask))
    raw = ask.lower()
    toks = tokens(ask)
    words = word_count(toks, ask, has_cjk)
    numbers, quantities = _numbers(toks)
    f: dict[str, float] = {
        "ask_words": math.log1p(words) / math.log(300.0),
        "ask_tiny": float(words <= 6),
        "ask_short": float(6 < words <= 25),
        "ask_medium": float(25 < words <= 60),
        "ask_long": float(words > 60),
        "sentences": math.log1p(sum(ask.count(e) for e in _SENTENCE_ENDS)) / math.log(20.0),
        "questions": min(ask.count("?") + ask.count("\uff1f"), 5) / 5.0,
        "numbers": math.log1p(numbers) / math.log(30.0),
        "quantity": math.log1p(quantities) / math.log(10.0),
        "paths": float("/" in ask or bool(_EXTENSION.search(raw))),
        "code_size": math.log1p(parts.code_chars) / math.log(1e5),
        "has_code": float(parts.code_chars > 0),
        "has_error": float(parts.has_error),
    }
    counts = cue_counts(toks, raw, has_cjk)
    for name, n in counts.items():
        f[name] = math.log1p(n) / math.log(10.0)
    opening = ask[:200]
    for name, pattern in OPENERS.items():
        f[name] = float(bool(pattern.match(opening)))
    f.update(_final_question(ask, has_cjk))
    f["hard_cues"] = math.log1p(sum(counts[g] for g in HARD_GROUPS)) / math.log(20.0)
    f["hard_x_long"] = f["hard_cues"] * float(words > 40)
    f["easy_x_short"] = f["easy_start"] * float(words <= 25)
    f["error_x_short"] = f["has_error"] * float(words <= 25)
    f["transform_x_long"] = f["transform"] * float(words > 25)
    return f
