"""Deterministic prompts: varied text of a chosen size, and a built-in agent trace.

Text is generated from a fixed word list with a seeded RNG, so every run and every
target sees the same prompts, yet no two sentences repeat (a server cannot shortcut
them, and a tokenizer sees ordinary prose). A per-repetition nonce at the very start
keeps a server's prompt cache from turning a later repetition into a cache hit.
"""

from __future__ import annotations

import json
import random
from typing import Any

_WORD_TEXT = (
    "the a of and to in is was for on with as by at from that this it be are which or an "
    "have has had not but were their they one all there been more can will would about into "
    "when time only some could them other than then now its over also after where most any "
    "river mountain engine lantern harbor garden market signal window village forest letter "
    "clock bridge winter summer captain teacher doctor farmer sailor painter miller weaver "
    "quiet bright ancient narrow heavy gentle sudden careful distant golden hollow restless "
    "walked carried opened watched followed answered remembered gathered promised returned "
    "slowly quickly softly rarely nearly always never often together beneath across toward "
    "stone copper silver paper thread candle wheel ladder basket kettle anchor compass ledger "
    "north south east west morning evening midnight season harvest voyage journey festival "
    "because although while until unless whether since before during without against among"
)
WORDS = _WORD_TEXT.split()


def sentence(rng: random.Random) -> str:
    n = rng.randint(8, 18)
    words = [rng.choice(WORDS) for _ in range(n)]
    words[0] = words[0].capitalize()
    return " ".join(words) + rng.choice(".....!?")


def text_words(n_words: int, seed: int | str = 0) -> str:
    """About `n_words` words of varied prose, the same for the same seed."""
    rng = random.Random(f"bench-text-{seed}")
    out: list[str] = []
    count = 0
    while count < n_words:
        s = sentence(rng)
        out.append(s)
        count += s.count(" ") + 1
    return " ".join(out)


KEEP_TALKING = (
    "Using the notes above, write a very long and detailed story about the village, its river "
    "and its people. Describe every season, every character and every place at length. Keep "
    "writing; do not summarize and do not stop early."
)


def story_messages(n_words: int, nonce: str, seed: int | str = 0) -> list[dict[str, str]]:
    """Chat messages whose user turn carries `n_words` words and asks for a long answer."""
    notes = text_words(n_words, seed)
    return [
        {"role": "system", "content": "You are a tireless storyteller who writes long stories."},
        {"role": "user", "content": f"[{nonce}]\nNotes: {notes}\n\n{KEEP_TALKING}"},
    ]


# ---- the built-in agent trace -------------------------------------------------------------

TOOL_NAMES = ["glob", "read", "grep", "edit", "write", "bash", "list", "webfetch", "todowrite", "task"]


def _tool(name: str, rng: random.Random) -> dict[str, Any]:
    props = {
        f"{name}_{p}": {"type": "string", "description": text_words(18, f"{name}-{p}")}
        for p in ("path", "pattern", "option")[: rng.randint(1, 3)]
    }
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": text_words(70, f"tool-{name}"),
            "parameters": {"type": "object", "properties": props, "required": [next(iter(props))]},
        },
    }


def agent_tools() -> list[dict[str, Any]]:
    rng = random.Random("bench-tools")
    return [_tool(n, rng) for n in TOOL_NAMES]


def agent_system_prompt(n_words: int = 1500) -> str:
    return "You are a coding agent working in the user's repository.\n\n" + text_words(n_words, "system")


TITLE_SYSTEM = "Generate a short title (at most 8 words) for the conversation. Answer with the title only."


def _title_request(task: str, max_tokens: int) -> dict[str, Any]:
    return {
        "messages": [{"role": "system", "content": TITLE_SYSTEM}, {"role": "user", "content": task}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def agent_trace(turns: int = 6, max_tokens: int = 32) -> list[list[tuple[str, dict[str, Any]]]]:
    """Steps of (label, body): like an agent session, each step sent at once.

    The first step pairs the first agent turn with a title side request (agents send both
    at the same time); each later turn resends the whole history plus one tool call and its
    result, so the prefix is stable and only the tail grows; a summary side request comes
    half-way, as agents send to compact or describe the session.
    """
    system = agent_system_prompt()
    tools = agent_tools()
    task = "Fix the failing test in calc.py: " + text_words(40, "task")
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        {"role": "user", "content": task},
    ]
    steps: list[list[tuple[str, dict[str, Any]]]] = []
    for turn in range(turns):
        body = {
            "messages": [dict(m) for m in messages],
            "tools": tools,
            "tool_choice": "auto",
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        step = [(f"turn{turn + 1}", body)]
        if turn == 0:
            step.append(("title", _title_request(task, max_tokens)))
        steps.append(step)
        if turn == turns // 2:
            steps.append([("summary", _title_request(text_words(200, f"summary-{turn}"), max_tokens))])
        name = TOOL_NAMES[turn % len(TOOL_NAMES)]
        call_id = f"call_{turn + 1}"
        args = json.dumps({f"{name}_path": f"src/module_{turn}.py"})
        messages.append(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
                ],
            }
        )
        messages.append(
            {"role": "tool", "tool_call_id": call_id, "content": text_words(220, f"result-{turn}")}
        )
    return steps
