"""Policy pins: rules that keep a project, an API key or a model alias local, always.

Rules come from the config (`router.pin_local`) and an optional policy file that a
security team can own separately. The client's key is compared by its sha256, so
the policy never holds a usable key.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from appliance.router.settings import PinRule, RouterSettings

# Agents (OpenCode, Claude Code) state their working directory in the system prompt.
_WORKDIR = re.compile(r"^\s*(?:Working directory|Primary working directory|cwd):\s*(\S[^\n]*?)\s*$", re.M)


class PolicyError(Exception):
    """The policy file is missing or malformed (serve refuses to start without its pins)."""


@dataclass(frozen=True)
class Subject:
    """What a pin rule can match on, for one request."""

    project: str | None
    api_key: str | None
    model: str


def load_rules(settings: RouterSettings) -> list[PinRule]:
    rules = list(settings.pin_local)
    if settings.policy_file:
        path = Path(settings.policy_file).expanduser()
        try:
            data: Any = yaml.safe_load(path.read_text()) or []
        except (OSError, yaml.YAMLError) as e:
            raise PolicyError(f"policy file {path}: {e}") from e
        if isinstance(data, dict):
            data = data.get("pin_local", [])
        try:
            rules += TypeAdapter(list[PinRule]).validate_python(data)
        except ValidationError as e:
            raise PolicyError(f"policy file {path}: {e}") from e
    return rules


def project_of(header: str | None, messages: list[dict[str, Any]]) -> str | None:
    """The client's project path: the explicit header, else the agent's stated working dir."""
    if header:
        return header.strip()
    for msg in messages:
        if msg.get("role") != "system" or not isinstance(msg.get("content"), str):
            continue
        m = _WORKDIR.search(msg["content"])
        if m:
            return m.group(1)
    return None


def _under(path: str, prefix: str) -> bool:
    p, root = PurePosixPath(path), PurePosixPath(prefix.rstrip("/") or "/")
    return p == root or root in p.parents


def _matches(rule: PinRule, subject: Subject) -> bool:
    if rule.project is not None and not (subject.project and _under(subject.project, rule.project)):
        return False
    if rule.api_key_sha256 is not None:
        if not subject.api_key:
            return False
        if hashlib.sha256(subject.api_key.encode()).hexdigest() != rule.api_key_sha256:
            return False
    if rule.model is not None and rule.model.lower() != subject.model.strip().lower():
        return False
    return any(v is not None for v in (rule.project, rule.api_key_sha256, rule.model))


def pinned(rules: list[PinRule], subject: Subject) -> PinRule | None:
    """The first rule that pins this request local, if any."""
    return next((r for r in rules if _matches(r, subject)), None)
