"""Where the appliance keeps its data: one directory, overridable, nothing elsewhere."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """`$APPLIANCE_HOME`, else `$XDG_DATA_HOME/appliance`, else `~/.local/share/appliance`."""
    if env := os.environ.get("APPLIANCE_HOME"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "appliance"


def models_dir() -> Path:
    return data_dir() / "models"
