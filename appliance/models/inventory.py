"""What this machine knows and has: the catalog plus imported models, and the installed files.

The catalog (quantization) knows nothing of this machine; the manifest (appliance.models)
records what was imported or pulled. Where the appliance looks a model up by name (the
planner, `serve --model`, the API's registry) it asks `known_models()`, the composition of
the two, so an imported GGUF is planned, pinned and resolved like a catalog model.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from appliance.models.manifest import Installed, InstalledFile
from appliance.models.store import installed, manifest
from quantization.catalog import Artifact, Catalog, ModelSpec, load_catalog

log = logging.getLogger(__name__)


def known_models() -> Catalog:
    """The catalog and, after it, every installed model that is not in it (imports, hub repos
    outside the catalog); a catalog name always means the catalog's model."""
    catalog = load_catalog()
    extra = [s for s in recorded_specs() if catalog.get(s.name) is None]
    return Catalog([*catalog.models, *extra]) if extra else catalog


def recorded_specs() -> list[ModelSpec]:
    """One ModelSpec per recorded name: the first record's shape with every record's artifact."""
    by_name: dict[str, ModelSpec] = {}
    for rec in manifest().all():
        if not rec.spec:
            continue
        try:
            spec = ModelSpec.model_validate(rec.spec)
        except ValidationError as e:
            log.warning("manifest record %s has an invalid spec, skipped: %s", rec.key, e)
            continue
        have = by_name.setdefault(spec.name.lower(), spec)
        if have is not spec:
            have.artifacts += [a for a in spec.artifacts if have.artifact(a.quant) is None]
    return list(by_name.values())


def installed_models() -> list[Installed]:
    """The manifest's records, plus catalog files in the store that predate the manifest (fetched
    from PyPI wheels: verified against the catalog's sha256 when they were written)."""
    records = manifest().all()
    keys = {r.key for r in records}
    for model in load_catalog():
        for artifact in model.artifacts:
            rec = _unrecorded(model, artifact, keys)
            if rec is not None:
                records.append(rec)
    return records


def _unrecorded(model: ModelSpec, artifact: Artifact, keys: set[str]) -> Installed | None:
    if artifact.format != "gguf":
        return None
    path = installed(model, artifact)
    if path is None:
        return None
    rec = Installed(
        name=model.name,
        quant=artifact.quant,
        format="gguf",
        source=f"pypi:{artifact.pypi[0].package}" if artifact.pypi else "store",
        files=[InstalledFile(path=str(path), size=path.stat().st_size, sha256=artifact.sha256)],
        installed_at=path.stat().st_mtime,
    )
    return None if rec.key in keys else rec
