"""Hardware profiles: real machines as YAML, loaded into the same `Hardware` the
detector returns, so `appliance plan --profile rtx-4090` plans for a box you don't have.

The YAML may give sizes in friendly units: a key ending in `_gib` or `_mib` becomes
the `_bytes` field of the same stem (`total_mib: 24564` -> `total_bytes`).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel

from appliance.hardware.types import CPU, GPU, GPUProcess, Hardware
from appliance.units import GiB, MiB

_UNITS = {"_gib": GiB, "_mib": MiB}
PACKAGE = "hardware_profiles"


def _files() -> dict[str, Any]:
    root = resources.files(PACKAGE)
    return {p.name[: -len(".yaml")]: p for p in root.iterdir() if p.name.endswith(".yaml")}


def list_profiles() -> list[str]:
    """Names of the bundled profiles, sorted."""
    return sorted(_files())


def _to_bytes(value: Any) -> Any:
    """Turn `x_gib` / `x_mib` keys into `x_bytes`, recursively."""
    if isinstance(value, list):
        return [_to_bytes(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, v in value.items():
        for suffix, unit in _UNITS.items():
            if key.endswith(suffix):
                out[key[: -len(suffix)] + "_bytes"] = round(float(v) * unit)
                break
        else:
            out[key] = _to_bytes(v)
    return out


def _check_keys(data: dict[str, Any], model: type[BaseModel], where: str) -> None:
    """Pydantic ignores unknown keys; in a hand-written profile one is a typo."""
    unknown = set(data) - set(model.model_fields)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    if isinstance(data.get("cpu"), dict):
        _check_keys(data["cpu"], CPU, f"{where}.cpu")
    for i, gpu in enumerate(data.get("gpus") or []):
        _check_keys(gpu, GPU, f"{where}.gpus[{i}]")
        for j, proc in enumerate(gpu.get("processes") or []):
            _check_keys(proc, GPUProcess, f"{where}.gpus[{i}].processes[{j}]")


def _raw(name: str) -> dict[str, Any]:
    files = _files()
    if name not in files:
        raise ValueError(f"unknown hardware profile {name!r}; known profiles: {', '.join(sorted(files))}")
    data = yaml.safe_load(files[name].read_text())
    if not isinstance(data, dict):
        raise ValueError(f"profile {name}: not a mapping")
    return data


def profile_description(name: str) -> str:
    """The profile's one-line description of the machine."""
    return str(_raw(name).get("description", ""))


def load_profile(name: str) -> Hardware:
    """The named profile as a `Hardware`; ValueError listing the known names if unknown."""
    data = _to_bytes(_raw(name))
    data.pop("description", None)
    declared = data.pop("name", name)
    if declared != name:
        raise ValueError(f"profile file {name}.yaml declares name {declared!r}")
    for i, gpu in enumerate(data.get("gpus") or []):
        gpu.setdefault("index", i)
    _check_keys(data, Hardware, f"profile {name}")
    data.setdefault("os", "linux")
    return Hardware(name=name, source=f"profile:{name}", **data)


def machine(profile: str | None) -> Hardware:
    """The machine to plan for: the named profile, else this one as detected."""
    if profile:
        return load_profile(profile)
    from appliance.hardware.detect import detect

    return detect()
