"""What is benchmarked: an OpenAI-compatible endpoint, named so results can be compared.

`--target NAME=URL[,model=ID][,key=ENV]` names any server (ours, llama-server,
llama_cpp.server, vLLM, a cloud API); the key is read from an environment variable so
it never lands in the results file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


class TargetSpecError(ValueError):
    """A `--target` argument that cannot be understood."""


@dataclass
class Target:
    name: str
    url: str  # base URL ending in /v1 (added when missing)
    model: str | None = None  # None: the first model the server lists
    key_env: str | None = None
    kind: str = "external"  # "external" or "appliance" (started by the bench)
    options: dict[str, str] = field(default_factory=dict)

    @property
    def api_key(self) -> str | None:
        return os.environ.get(self.key_env) if self.key_env else None

    @property
    def root(self) -> str:
        """The server root (for /health, /props), without the /v1 suffix."""
        return self.url[: -len("/v1")] if self.url.endswith("/v1") else self.url

    def headers(self) -> dict[str, str]:
        key = self.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def describe(self) -> dict:
        """What goes in the results file (never the key itself)."""
        return {
            "name": self.name,
            "url": self.url,
            "model": self.model,
            "key_env": self.key_env,
            "kind": self.kind,
            "options": dict(self.options),
        }


def normalize_url(url: str) -> str:
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    return url if url.endswith("/v1") else url + "/v1"


def parse_target(spec: str) -> Target:
    """Parse `NAME=URL[,model=ID][,key=ENV][,other=VALUE]`."""
    name, sep, rest = spec.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise TargetSpecError(f"expected NAME=URL[,model=ID][,key=ENV], got {spec!r}")
    url, *opts = rest.split(",")
    target = Target(name=name.strip(), url=normalize_url(url.strip()))
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep:
            raise TargetSpecError(f"option {opt!r} in {spec!r} is not KEY=VALUE")
        key, value = key.strip(), value.strip()
        if key == "model":
            target.model = value
        elif key == "key":
            target.key_env = value
        else:
            target.options[key] = value
    return target


def check_unique(targets: list[Target]) -> None:
    seen: set[str] = set()
    for t in targets:
        if t.name in seen:
            raise TargetSpecError(f"target name {t.name!r} used twice")
        seen.add(t.name)
