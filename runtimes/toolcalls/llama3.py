"""Llama 3.1+ JSON tool calls: the answer *is* `{"name": ..., "parameters": {...}}`
(several separated by `;` or newlines), possibly after `<|python_tag|>`."""

from __future__ import annotations

import json

from runtimes.toolcalls.base import ToolFormat, ToolParser
from runtimes.toolcalls.common import CallReader

TAG = "<|python_tag|>"
_WS = " \t\r\n"


class Llama3JsonParser(ToolParser):
    """A call is recognised only at the start of the answer or after `<|python_tag|>`.

    Bare JSON at the start could be an ordinary answer, so there it must look like
    a call from its first key on and name one of the tools (when they are known).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._state = "start"

    def _run(self, final: bool) -> None:
        while True:
            st = self._state
            if st == "content":
                if not self._content_until(TAG, final):
                    return
                self._open_block(TAG, strict=False)
            elif st in ("start", "after"):
                rest = self._buf.lstrip(_WS + (";" if st == "after" else ""))
                lead = self._buf[: len(self._buf) - len(rest)]
                if rest.startswith(TAG):
                    self._buf = rest[len(TAG) :]
                    self._open_block(lead + TAG, strict=False)
                elif rest.startswith("{"):
                    self._buf = rest
                    self._open_block(lead, strict=True)
                elif not rest or TAG.startswith(rest):
                    if final:
                        if st == "start":
                            self.sink.content(self._buf)
                        self._buf = ""
                    return
                else:
                    self._buf = rest if st == "after" else self._buf
                    self._state = "content"
            else:  # call
                status = self._feed_block(final)
                if status == "more":
                    return
                self._state = "after" if status == "done" else "content"

    def _open_block(self, raw: str, strict: bool) -> None:
        reader = CallReader(self.sink, known_names=self.known_names if strict else None, strict_keys=strict)
        self._begin_block(raw, reader)
        self._state = "call"


class Llama3JsonFormat(ToolFormat):
    """Templates that write `<|python_tag|>`, or Llama 3 headers with tool `parameters`."""

    name = "llama3_json"
    markers = (TAG,)
    parser = Llama3JsonParser
    vllm_parser = "llama3_json"

    def detect(self, template: str) -> bool:
        return TAG in template or ("<|start_header_id|>" in template and "parameters" in template)

    def open_call(self, name: str | None) -> str:
        return f'{{"name": {json.dumps(name)}, "parameters": ' if name else '{"name": "'
