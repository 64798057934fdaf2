"""`appliance rm MODEL[:QUANT]`: which installed records a name means, whether a running
appliance serves them, and deleting their files.

Only the paths a record lists are touched. A file in the store's own folder is unlinked (for
an import by reference that is the link, never the user's original). A file in the Hugging
Face cache goes through huggingface_hub's cache API, so the cache stays consistent for every
other tool that shares it: the whole revision when no other record uses it, else just the
file's snapshot link and its blob when nothing else links to that blob.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from appliance.models.imports import remove_files
from appliance.models.inventory import installed_models, known_models
from appliance.models.manifest import Installed, InstalledFile
from appliance.models.store import manifest

HUB_PREFIXES = ("hf.co/", "huggingface.co/")
SERVING_TIMEOUT_S = 1.5


class RemoveRefused(Exception):
    """Nothing was deleted; the message says why."""


def find(target: str) -> list[Installed]:
    """The records `MODEL[:QUANT]` names. The whole text is tried as a name first, since catalog
    aliases may hold a colon themselves (`qwen2.5-coder:0.5b`)."""
    for prefix in HUB_PREFIXES:
        target = target.removeprefix(prefix)
    records = installed_models()
    found = _of(records, target)
    if found:
        return found
    model, _, quant = target.rpartition(":")
    if model:
        return [r for r in _of(records, model) if r.quant.lower() == quant.lower()]
    return []


def _of(records: list[Installed], name: str) -> list[Installed]:
    spec = known_models().get(name)
    wanted = {name.lower(), spec.name.lower()} if spec is not None else {name.lower()}
    return [r for r in records if r.name.lower() in wanted]


def served_models(port: int, api_key: str | None = None, host: str = "127.0.0.1") -> set[str] | None:
    """The model ids an appliance on `port` serves (lowercased): empty when nothing listens there,
    None when something answers but does not list its models."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        resp = httpx.get(f"http://{host}:{port}/v1/models", headers=headers, timeout=SERVING_TIMEOUT_S)
    except httpx.HTTPError:
        return set()
    try:
        resp.raise_for_status()
        items = resp.json().get("data", [])
        names = [i["id"] for i in items] + [a for i in items for a in i.get("aliases", [])]
        return {str(n).lower() for n in names}
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
        return None


def check_not_served(records: list[Installed], port: int, api_key: str | None = None) -> None:
    """RemoveRefused when the appliance on `port` serves one of `records` (or will not say)."""
    served = served_models(port, api_key)
    if served is None:
        raise RemoveRefused(
            f"something answers on 127.0.0.1:{port} but does not list its models (/v1/models); "
            "stop it first if it is an appliance serving this model"
        )
    busy = sorted({r.name for r in records if r.name.lower() in served})
    if busy:
        raise RemoveRefused(
            f"{', '.join(busy)} is being served by the appliance on 127.0.0.1:{port}; stop it first"
        )


def remove(records: list[Installed]) -> None:
    """Delete each record's files, then the record."""
    keep = [r for r in manifest().all() if r.key not in {x.key for x in records}]
    for rec in records:
        hub = [f for f in rec.files if _hub_cache_root(Path(f.path)) is not None]
        if hub:
            _remove_from_hub_cache(rec, keep)
        remove_files(rec)  # store files, and hub paths that are already gone
        manifest().remove(rec.name, rec.quant)


def _hub_cache_root(path: Path) -> Path | None:
    """The Hugging Face cache a path lies in (`<root>/models--owner--repo/snapshots/<rev>/...`)."""
    parts = path.parts
    for i, part in enumerate(parts[:-2]):
        if part.startswith("models--") and parts[i + 1] in ("snapshots", "blobs"):
            return Path(*parts[:i])
    return None


def _remove_from_hub_cache(rec: Installed, keep: list[Installed]) -> None:
    from huggingface_hub import scan_cache_dir

    ours = _paths(rec.files)
    kept = _paths([f for r in keep for f in r.files])
    for root in {_hub_cache_root(p) for p in ours} - {None}:
        cache = scan_cache_dir(root)
        for repo in cache.repos:
            for rev in repo.revisions:
                files = {f.file_path for f in rev.files} | {f.blob_path for f in rev.files}
                if not files & ours:
                    continue
                if files & kept:  # another record still uses this revision: only our files go
                    _remove_files_of_revision(repo, rev, ours)
                else:
                    cache.delete_revisions(rev.commit_hash).execute()


def _paths(files: list[InstalledFile]) -> set[Path]:
    """Each path as recorded and as resolved (a snapshot link's blob), to match the scan's."""
    return {Path(f.path) for f in files} | {Path(f.path).resolve() for f in files}


def _remove_files_of_revision(repo, rev, ours: set[Path]) -> None:
    """Unlink our snapshot links in `rev`, and each blob no other snapshot file links to."""
    others = {f.blob_path for r in repo.revisions for f in r.files if not {f.file_path, f.blob_path} & ours}
    for f in rev.files:
        if {f.file_path, f.blob_path} & ours:
            f.file_path.unlink(missing_ok=True)
            if f.blob_path not in others:
                f.blob_path.unlink(missing_ok=True)
