"""Which loaded runtime answers a request, from the model id an agent sends.

Agents send whatever their config says: the catalog name, a catalog alias
(`qwen2.5-coder:0.5b`), a role (`main`, `small`: the planner's names; `default` is accepted
for `main`, as clients written for earlier versions send it), or a provider-prefixed id
(`appliance/qwen2.5-coder-0.5b-instruct`, `openai/...`). All of them land here,
case-insensitively, so the API never guesses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from quantization.catalog import Catalog
from runtimes.base import Runtime

# Provider prefixes agents put in front of a model id; stripped once, before lookup.
KNOWN_PREFIXES: tuple[str, ...] = ("appliance/", "openai/", "local/")

MAIN_ROLE = "main"  # the coding agent's model; the planner's name for the role
ROLE_ALIASES = {"default": MAIN_ROLE}

# Maps a name to a catalog id, or None when it does not know the name.
AliasResolver = Callable[[str], str | None]


class ModelNotFound(LookupError):
    """No loaded runtime answers to this name; `catalog_id` is set when the catalog knows it."""

    def __init__(self, name: str, catalog_id: str | None = None):
        self.name = name
        self.catalog_id = catalog_id
        super().__init__(name)


@dataclass(frozen=True)
class Download:
    """A model being pulled before it can load: what /health reports meanwhile. Replaced, never
    mutated, so the loader thread can publish progress while the server thread reads it."""

    model: str
    done_bytes: int
    total_bytes: int


@dataclass
class _Entry:
    runtime: Runtime
    aliases: list[str] = field(default_factory=list)


class ModelRegistry:
    """The loaded runtimes under their catalog ids, with role and alias lookup.

    `catalog_aliases` resolves names outside the registry (a dict alias -> id, or a
    callable such as `catalog_resolver()`). The `loading` flag (and `download`, while a
    model is being pulled first) is what /health reports while the owner is still loading.
    Changes replace the tables rather than mutate them, so a loader thread can add models
    while the server thread reads.
    """

    def __init__(
        self,
        catalog_aliases: Mapping[str, str] | AliasResolver | None = None,
        *,
        loading: bool = False,
        prefixes: Iterable[str] = KNOWN_PREFIXES,
    ):
        if isinstance(catalog_aliases, Mapping):
            table = {k.lower(): v for k, v in catalog_aliases.items()}
            self._catalog: AliasResolver | None = lambda name: table.get(name.lower())
        else:
            self._catalog = catalog_aliases
        self._entries: dict[str, _Entry] = {}  # lowercased id -> entry, in load order
        self._roles: dict[str, str] = {}  # role -> lowercased id
        self._prefixes = tuple(p.lower() for p in prefixes)
        self.loading = loading
        self.download: Download | None = None

    # -- filling it -------------------------------------------------------------------
    def add(self, runtime: Runtime, *, roles: Iterable[str] = (), aliases: Iterable[str] = ()) -> None:
        """Serve `runtime` under its id, plus extra aliases and roles (`main`, `small`)."""
        key = runtime.id.lower()
        self._entries = {**self._entries, key: _Entry(runtime, list(aliases))}
        self._roles = {**self._roles, **{_role(role): key for role in roles}}

    def set_role(self, role: str, model_id: str) -> None:
        key = model_id.lower()
        if key not in self._entries:
            raise ModelNotFound(model_id)
        self._roles = {**self._roles, _role(role): key}

    def remove(self, model_id: str) -> Runtime | None:
        key = model_id.lower()
        entry = self._entries.get(key)
        self._entries = {k: e for k, e in self._entries.items() if k != key}
        self._roles = {r: k for r, k in self._roles.items() if k != key}
        return entry.runtime if entry else None

    # -- reading it -------------------------------------------------------------------
    def runtimes(self) -> list[Runtime]:
        return [e.runtime for e in self._entries.values()]

    def roles_of(self, model_id: str) -> list[str]:
        key = model_id.lower()
        return sorted(role for role, target in self._all_roles().items() if target == key)

    def aliases_of(self, model_id: str) -> list[str]:
        entry = self._entries.get(model_id.lower())
        return list(entry.aliases) if entry else []

    @property
    def ready(self) -> bool:
        """Loaded and able to answer: what /health reports as 200."""
        if self.loading or not self._entries:
            return False
        return all(_is_loaded(rt) for rt in self.runtimes())

    def _all_roles(self) -> dict[str, str]:
        """Explicit roles; `main` falls back to the first model loaded."""
        roles = dict(self._roles)
        if MAIN_ROLE not in roles and self._entries:
            roles[MAIN_ROLE] = next(iter(self._entries))
        return roles

    def resolve(self, name: str) -> Runtime:
        """The runtime for the name a client sent, or ModelNotFound."""
        wanted = name.strip().lower()
        candidates = [wanted]
        for prefix in self._prefixes:
            if wanted.startswith(prefix) and len(wanted) > len(prefix):
                candidates.append(wanted[len(prefix) :])
                break
        catalog_id: str | None = None
        for cand in candidates:
            rt = self._lookup_local(cand)
            if rt is not None:
                return rt
            if self._catalog is not None:
                target = self._catalog(cand)
                if target is not None:
                    entry = self._entries.get(target.lower())
                    if entry is not None:
                        return entry.runtime
                    catalog_id = catalog_id or target
        raise ModelNotFound(name, catalog_id)

    def _lookup_local(self, key: str) -> Runtime | None:
        entry = self._entries.get(key)
        if entry is not None:
            return entry.runtime
        for e in self._entries.values():
            if any(a.lower() == key for a in e.aliases):
                return e.runtime
        role_key = self._all_roles().get(_role(key))
        if role_key is not None:
            return self._entries[role_key].runtime
        return None

    async def close(self) -> None:
        """Close every runtime (at shutdown)."""
        for rt in self.runtimes():
            await rt.close()


def _role(name: str) -> str:
    key = name.strip().lower()
    return ROLE_ALIASES.get(key, key)


def _is_loaded(runtime: Runtime) -> bool:
    try:
        return runtime.stats().loaded
    except Exception:
        return False


def catalog_resolver(catalog: Catalog | None = None) -> AliasResolver:
    """Resolve names through a catalog's names and aliases: `quantization/catalog/*.yaml` unless
    the caller passes one (serve passes the catalog plus this machine's imported models)."""
    from quantization.catalog import load_catalog

    catalog = catalog or load_catalog()

    def resolve(name: str) -> str | None:
        spec = catalog.get(name)
        return spec.name if spec is not None else None

    return resolve
