"""An incremental JSON scanner: fed text as a model writes it, it knows at every
character whether the JSON is still valid, where each value starts and ends, and
keeps a compact copy (whitespace outside strings dropped).

Why not `json.loads` at the end: tool-call arguments must stream while they are
generated, a syntax error must be noticed as soon as it happens (so the text can
fall back to plain content), and the argument string we hand to clients must be
the model's own JSON, only compacted, with key order, number spelling and escapes
kept exactly as written.

Lenient where small models slip and the intent is unambiguous: raw control
characters inside strings are escaped (`\\n`), and Python's `True`/`False`/`None`
are read as `true`/`false`/`null`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

_WS = " \t\n\r"
_NUMBER_CHARS = frozenset("0123456789+-.eE")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?\Z")
_LITERALS = {"t": "true", "f": "false", "n": "null", "T": "true", "F": "false", "N": "null"}
_PY_LITERALS = {"T": "True", "F": "False", "N": "None"}
_CONTROL_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_HEX = frozenset("0123456789abcdefABCDEF")

# Scanner states.
_VALUE = "value"  # a value is expected
_FIRST_KEY = "first_key"  # just after "{": a key or "}"
_KEY = "key"  # after ",": a key
_COLON = "colon"
_AFTER = "after"  # after a value: "," or the closing bracket
_FIRST_ITEM = "first_item"  # just after "[": a value or "]"
_STRING = "string"
_ESCAPE = "escape"
_UNICODE = "unicode"
_NUMBER_ST = "number"
_LITERAL = "literal"

# on_start(depth, key, pos, first_char) / on_end(depth, key, pos): depth is the
# number of open containers around the value (0: the top-level value), key its key
# in the parent object (None in an array or at the top), pos an offset into `out`.
StartHook = Callable[[int, str | None, int, str], None]
EndHook = Callable[[int, str | None, int], None]


class JsonSyntaxError(ValueError):
    """The text cannot be (the start of) a JSON value; `pos`: the offending character in the fed text."""

    pos = 0


class JsonScanner:
    """Scans one JSON value; `feed` returns how many characters belonged to it."""

    def __init__(self, on_start: StartHook | None = None, on_end: EndHook | None = None):
        self.out: list[str] = []  # the compact copy, piece by piece
        self.out_len = 0
        self.done = False
        self.started = False
        self._on_start = on_start
        self._on_end = on_end
        self._stack: list[str] = []  # "{" or "["
        self._keys: list[str | None] = []  # the current key at each open level
        self._state = _VALUE
        self._in_key = False
        self._tok: list[str] = []  # raw text of the current key / number
        self._lit = ""  # remaining characters of a literal being read
        self._lit_out = ""
        self._hex = 0
        self._joined = ""
        self._joined_n = 0

    @property
    def depth(self) -> int:
        return len(self._stack)

    def text(self, start: int = 0, end: int | None = None) -> str:
        """The compact copy between two offsets of `out`."""
        if self._joined_n < len(self.out):
            self._joined += "".join(self.out[self._joined_n :])
            self._joined_n = len(self.out)
        return self._joined[start:end]

    def feed(self, text: str) -> int:
        """Consume characters of this value; stop after its last one. Raises JsonSyntaxError."""
        i = 0
        try:
            for i, ch in enumerate(text):
                if self.done:
                    return i
                if not self._step(ch):
                    # A number ends at the first character that is not part of it.
                    self._end_number()
                    if self.done:
                        return i
                    self._step(ch)
        except JsonSyntaxError as e:
            e.pos = i
            raise
        return len(text)

    def finish(self) -> None:
        """The input ended: a top-level number is complete; anything else open is an error."""
        if self._state == _NUMBER_ST and len(self._stack) == 0:
            self._end_number()
        if not self.done:
            raise JsonSyntaxError("JSON value is incomplete")

    # -- internals ---------------------------------------------------------------

    def _emit(self, s: str) -> None:
        self.out.append(s)
        self.out_len += len(s)

    def _key(self) -> str | None:
        return self._keys[-1] if self._keys else None

    def _begin(self, ch: str) -> None:
        self.started = True
        if self._on_start:
            self._on_start(len(self._stack), self._key(), self.out_len, ch)

    def _end(self) -> None:
        if self._on_end:
            self._on_end(len(self._stack), self._key(), self.out_len)
        if not self._stack:
            self.done = True
        self._state = _AFTER

    def _step(self, ch: str) -> bool:
        st = self._state
        if st == _STRING:
            if ch == '"':
                self._emit(ch)
                if self._in_key:
                    self._keys[-1] = _decode_key(self._tok)
                    self._in_key = False
                    self._state = _COLON
                else:
                    self._end()
            elif ch == "\\":
                self._emit(ch)
                self._tok_add(ch)
                self._state = _ESCAPE
            elif ch < " ":
                esc = _CONTROL_ESCAPES.get(ch, f"\\u{ord(ch):04x}")
                self._emit(esc)
                self._tok_add(esc)
            else:
                self._emit(ch)
                self._tok_add(ch)
            return True
        if st == _ESCAPE:
            if ch not in '"\\/bfnrtu':
                raise JsonSyntaxError(f"bad escape \\{ch}")
            self._emit(ch)
            self._tok_add(ch)
            self._hex = 4 if ch == "u" else 0
            self._state = _UNICODE if ch == "u" else _STRING
            return True
        if st == _UNICODE:
            if ch not in _HEX:
                raise JsonSyntaxError(f"bad \\u escape near {ch!r}")
            self._emit(ch)
            self._tok_add(ch)
            self._hex -= 1
            if self._hex == 0:
                self._state = _STRING
            return True
        if st == _NUMBER_ST:
            if ch in _NUMBER_CHARS:
                self._tok.append(ch)
                self._emit(ch)
                return True
            return False
        if st == _LITERAL:
            if ch != self._lit[0]:
                raise JsonSyntaxError(f"unexpected {ch!r} in a literal")
            self._lit = self._lit[1:]
            if not self._lit:
                self._emit(self._lit_out)
                self._end()
            return True
        if ch in _WS:
            return True
        if st in (_VALUE, _FIRST_ITEM):
            if st == _FIRST_ITEM and ch == "]":
                self._close("[", ch)
            else:
                self._value(ch)
            return True
        if st in (_FIRST_KEY, _KEY):
            if ch == '"':
                self._emit(ch)
                self._in_key = True
                self._tok = []
                self._state = _STRING
            elif st == _FIRST_KEY and ch == "}":
                self._close("{", ch)
            else:
                raise JsonSyntaxError(f"expected a key, got {ch!r}")
            return True
        if st == _COLON:
            if ch != ":":
                raise JsonSyntaxError(f"expected ':', got {ch!r}")
            self._emit(ch)
            self._state = _VALUE
            return True
        # _AFTER
        if not self._stack:
            raise JsonSyntaxError(f"unexpected {ch!r} after the value")  # pragma: no cover
        if ch == ",":
            self._emit(ch)
            self._state = _KEY if self._stack[-1] == "{" else _VALUE
            return True
        if ch in "}]":
            self._close("{" if ch == "}" else "[", ch)
            return True
        raise JsonSyntaxError(f"expected ',' or a closing bracket, got {ch!r}")

    def _tok_add(self, s: str) -> None:
        if self._in_key:
            self._tok.append(s)

    def _value(self, ch: str) -> None:
        if ch in "{[":
            self._begin(ch)
            self._emit(ch)
            self._stack.append(ch)
            self._keys.append(None)
            self._state = _FIRST_KEY if ch == "{" else _FIRST_ITEM
        elif ch == '"':
            self._begin(ch)
            self._emit(ch)
            self._state = _STRING
        elif ch == "-" or ch.isdigit():
            self._begin(ch)
            self._tok = [ch]
            self._emit(ch)
            self._state = _NUMBER_ST
        elif ch in _LITERALS:
            self._begin(ch)
            word = _PY_LITERALS.get(ch) or _LITERALS[ch]
            self._lit = word[1:]
            self._lit_out = _LITERALS[ch]
            self._state = _LITERAL
        else:
            raise JsonSyntaxError(f"expected a value, got {ch!r}")

    def _close(self, opener: str, ch: str) -> None:
        if not self._stack or self._stack[-1] != opener:
            raise JsonSyntaxError(f"unbalanced {ch!r}")
        self._emit(ch)
        self._stack.pop()
        self._keys.pop()
        self._end()

    def _end_number(self) -> None:
        if self._state != _NUMBER_ST:
            return
        if not _NUMBER.match("".join(self._tok)):
            raise JsonSyntaxError(f"bad number {''.join(self._tok)!r}")
        self._end()


def _decode_key(raw: list[str]) -> str:
    return json.loads('"' + "".join(raw) + '"')
