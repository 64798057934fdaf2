"""`appliance import FILE.gguf`: any GGUF becomes a servable model.

The header gives the model's shape (quantization.gguf_spec), the chat template its tool-call
format (runtimes.toolcalls), and the manifest records both, so the planner, the estimator and
`serve --model NAME` treat the file like a catalog model. The file goes into the store at
`<models>/<name>/<file>`, the path the store looks up: hard-linked when the source is on the
same filesystem, else copied and hashed in one read. `serve --model PATH.gguf` registers a
file by reference instead (a link, no copy, no hash), so serving a big file starts at once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from appliance.models.files import copy_hashing, hard_link, sha256_file
from appliance.models.manifest import Installed, InstalledFile
from appliance.models.store import manifest
from appliance.paths import models_dir
from quantization.catalog import ModelSpec, load_catalog
from quantization.gguf_header import GgufHeader, NotGguf, read_header
from quantization.gguf_spec import spec_from_header
from runtimes.toolcalls import detect_tool_format

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")  # no ":" (MODEL:QUANT) and no "/" (OWNER/REPO)
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")
IMPORT_SOURCE = "import:"


class ImportFailed(Exception):
    """The file cannot be imported; the message says why and what to do."""


@dataclass(frozen=True)
class Placement:
    """How the files were put into the store."""

    copy: bool = False  # copy even when a hard link is possible
    reference: bool = False  # link (hard, else symbolic) and skip the hash: `serve PATH`


def default_name(path: Path) -> str:
    """The file name without `.gguf` (and without a shard suffix), lowercased, safe as a model id."""
    stem = _SHARD.sub("", path.name).removesuffix(".gguf").lower()
    return re.sub(r"[^a-z0-9._-]+", "-", stem).strip("-._") or "imported"


def import_gguf(
    source: Path,
    name: str | None = None,
    *,
    placement: Placement | None = None,
    log: Callable[[str], None] = print,
) -> Installed:
    """Validate `source`, put it into the store, record it; ImportFailed with the reason if not."""
    placement = placement or Placement()
    shards = _shards(source)
    header = _read(shards)
    name = _check_name(name or default_name(source))
    size = sum(p.stat().st_size for p in shards)
    spec = _spec(header, name, shards[0].name, size)
    folder = models_dir() / name
    folder.mkdir(parents=True, exist_ok=True)
    files = _place_all(shards, folder, placement, log)
    spec.artifacts[0].sha256 = files[0].sha256 if len(files) == 1 else None
    if len(files) > 1:
        spec.artifacts[0].files = [p.name for p in shards]
    record = Installed(
        name=name,
        quant=spec.artifacts[0].quant,
        format="gguf",
        source=IMPORT_SOURCE + str(source.resolve()),
        files=files,
        spec=spec.model_dump(mode="json"),
    )
    manifest().put(record)
    return record


def register_path(path: Path, log: Callable[[str], None] = print) -> Installed:
    """`serve --model PATH.gguf`: the file's record, registered by reference on first use."""
    source = IMPORT_SOURCE + str(path.resolve())
    for rec in manifest().all():
        if rec.source == source:
            if rec.intact() and rec.size == sum(p.stat().st_size for p in _shards(path)):
                return rec
            log(f"{path} changed since it was registered as {rec.name}; reading it again")
            remove_files(rec)
            manifest().remove(rec.name, rec.quant)
    return import_gguf(path, placement=Placement(reference=True), log=log)


def is_gguf_path(value: str) -> bool:
    """Whether a `--model` value names a file rather than a model (`*.gguf` that exists)."""
    return value.lower().endswith(".gguf") and Path(value).expanduser().is_file()


def remove_files(record: Installed) -> None:
    """Delete a store record's files (links only unlink: the original of a hard or symbolic link
    stays where the user keeps it) and its folder when that is left empty."""
    for f in record.files:
        Path(f.path).unlink(missing_ok=True)
    folder = models_dir() / record.name
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _shards(source: Path) -> list[Path]:
    """The file, or every shard of a split GGUF given by its first shard (`*-00001-of-0000N`)."""
    if not source.is_file():
        raise ImportFailed(f"{source}: no such file")
    m = _SHARD.search(source.name)
    if not m:
        return [source]
    if int(m[1]) != 1:
        raise ImportFailed(f"{source} is shard {int(m[1])}; import the first one (-00001-of-{m[2]})")
    n = int(m[2])
    paths = [source.with_name(_SHARD.sub(f"-{i:05d}-of-{n:05d}.gguf", source.name)) for i in range(1, n + 1)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ImportFailed(f"{source}: split GGUF with shards missing beside it: {', '.join(missing)}")
    return paths


def _read(shards: list[Path]) -> GgufHeader:
    """The first shard's header with every shard's tensors (the parameter count needs them all)."""
    try:
        headers = [read_header(p) for p in shards]
    except (NotGguf, OSError) as e:
        raise ImportFailed(f"{e}; `appliance import` takes a .gguf model file") from None
    first = headers[0]
    for other in headers[1:]:
        first.tensors.extend(other.tensors)
    return first


def _check_name(name: str) -> str:
    if not NAME.match(name):
        raise ImportFailed(f"invalid model name {name!r}: use lowercase letters, digits, '.', '_', '-'")
    if load_catalog().get(name) is not None:
        raise ImportFailed(f"{name!r} is a catalog model's name; pass --name to import under another")
    taken = manifest().of_model(name)
    if taken:
        raise ImportFailed(
            f"{name!r} is already installed (from {taken[0].source}); choose another name "
            f"(`appliance import FILE --name NEW`) or `appliance rm {name}`"
        )
    return name


def _spec(header: GgufHeader, name: str, file: str, size: int) -> ModelSpec:
    try:
        fmt = detect_tool_format(header.chat_template)
        return spec_from_header(header, name=name, file=file, size_bytes=size, tool_call_format=fmt)
    except (NotGguf, ValidationError) as e:
        raise ImportFailed(f"{file}: cannot plan for this GGUF: {e}") from None


def _place_all(
    shards: list[Path], folder: Path, placement: Placement, log: Callable[[str], None]
) -> list[InstalledFile]:
    """Every shard into `folder`; on a failure the ones already placed are removed again."""
    placed: list[InstalledFile] = []
    try:
        for src in shards:
            placed.append(_place(src, folder / src.name, placement, log))
    except OSError as e:
        for f in placed:
            Path(f.path).unlink(missing_ok=True)
        raise ImportFailed(f"cannot put {src.name} into the store: {e}") from None
    return placed


def _place(src: Path, dest: Path, placement: Placement, log: Callable[[str], None]) -> InstalledFile:
    """Link or copy one file into the store; a partial copy never sits at `dest`."""
    part = dest.with_name(dest.name + ".part")
    part.unlink(missing_ok=True)
    size = src.stat().st_size
    try:
        if not placement.copy and hard_link(src, part):
            sha = None if placement.reference else sha256_file(part)
            how = "hard-linked"
        elif placement.reference:
            os.symlink(src.resolve(), part)
            sha, how = None, "linked"
        else:
            sha, how = copy_hashing(src, part), "copied"
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    log(f"{how} {src} -> {dest}" + (f" (sha256 {sha[:12]})" if sha else ""))
    return InstalledFile(path=str(dest), size=size, sha256=sha)
