"""`keep_alive`: how long a model stays loaded after a request, as Ollama's API takes it.

Clients written for Ollama send it (a number of seconds, or a duration such as "10m", "1h30m",
"500ms"; 0 unloads the model once the request is done; a negative value keeps it loaded), and
Ollama's users script memory hand-back with it. The API parses it here so a bad value is a 400
in the request's own dialect, never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class BadKeepAlive(ValueError):
    pass


@dataclass(frozen=True)
class KeepAlive:
    seconds: float | None  # None: keep it loaded (until the room is needed)

    @property
    def now(self) -> bool:
        """Unload as soon as the model is idle."""
        return self.seconds is not None and self.seconds <= 0


def parse_keep_alive(value: object) -> KeepAlive | None:
    """None when the request did not say; else its KeepAlive. BadKeepAlive names the forms."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadKeepAlive("keep_alive must be a number of seconds or a duration like '5m'")
    if isinstance(value, int | float):
        return KeepAlive(None if value < 0 else float(value))
    if isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            return parse_keep_alive(float(text))
        if text.startswith("-") and _duration(text[1:]) is not None:
            return KeepAlive(None)
        if (seconds := _duration(text)) is not None:
            return KeepAlive(seconds)
    raise BadKeepAlive(
        f"keep_alive {value!r} is not a number of seconds or a duration like '30s', '5m', '1h30m' "
        "(0: unload after this request; negative: keep loaded)"
    )


def _duration(text: str) -> float | None:
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT[u] for n, u in parts)
