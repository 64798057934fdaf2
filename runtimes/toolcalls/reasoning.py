"""Thinking text (Qwen3, DeepSeek-R1 style `<think>...</think>`) split from the answer
as it streams, so clients get it as `reasoning_content` instead of in the answer."""

from __future__ import annotations

from collections.abc import Callable

from runtimes.toolcalls.common import partial_marker_len

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
THINK_MARKERS = (THINK_OPEN, THINK_CLOSE)  # control tokens in some tokenizers, like a format's markers
_WS = " \t\r\n"


class ReasoningSplitter:
    """A think block counts only at the very start of the answer; `inside=True` when
    the prompt itself opened it (templates that end the generation prompt with
    `<think>\\n`), so the model starts thinking at once and only writes `</think>`.

    Whitespace around the thinking is dropped; text after `</think>` is the answer.
    """

    def __init__(
        self,
        on_reasoning: Callable[[str], None],
        on_content: Callable[[str], None],
        *,
        start: str = THINK_OPEN,
        end: str = THINK_CLOSE,
        inside: bool = False,
    ):
        self._on_reasoning = on_reasoning
        self._on_content = on_content
        self._start, self._end = start, end
        self._state = "think" if inside else "start"
        self._buf = ""
        self._reasoned = False

    def push(self, text: str) -> None:
        self._buf += text
        self._run(final=False)

    def end(self) -> None:
        self._run(final=True)

    def _run(self, final: bool) -> None:
        while True:
            st = self._state
            if st == "start":
                rest = self._buf.lstrip(_WS)
                if rest.startswith(self._start):
                    self._buf = rest[len(self._start) :]
                    self._state = "think"
                elif self._start.startswith(rest) and not final:
                    return
                else:
                    self._state = "answer"
            elif st == "think":
                i = self._buf.find(self._end)
                if i >= 0:
                    self._reason(self._buf[:i].rstrip(_WS))
                    self._buf = self._buf[i + len(self._end) :]
                    self._state = "gap"
                    continue
                if final:
                    self._reason(self._buf.rstrip(_WS))
                    self._buf = ""
                    return
                keep = partial_marker_len(self._buf, self._end)
                body = self._buf[: len(self._buf) - keep].rstrip(_WS)
                self._reason(body)
                self._buf = self._buf[len(body) :]
                return
            elif st == "gap":  # between </think> and the answer
                self._buf = self._buf.lstrip(_WS)
                if not self._buf:
                    return
                self._state = "answer"
            else:
                if self._buf:
                    self._on_content(self._buf)
                self._buf = ""
                return

    def _reason(self, text: str) -> None:
        if not self._reasoned:
            text = text.lstrip(_WS)
        if text:
            self._reasoned = True
            self._on_reasoning(text)
