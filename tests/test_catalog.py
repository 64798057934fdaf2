"""The model catalog: it loads, its ids are unique, and its numbers are self-consistent.

The slow test checks the catalog's architecture numbers against the GGUF metadata of the three real
small models (fetched once by the conftest fixtures).
"""

from __future__ import annotations

import re
import struct
from collections import defaultdict
from importlib import resources
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from quantization.catalog import Architecture, Artifact, ModelSpec, load_catalog

REQUIRED = [
    "qwen3-30b-a3b",
    "qwen3-coder-30b-a3b-instruct",
    "devstral-small-24b",
    "gemma-3-270m-it",
    "gemma-3-1b-it",
    "gemma-3-4b-it",
    "gemma-3-12b-it",
    "gemma-3-27b-it",
    "qwen3-0.6b",
    "qwen3-1.7b",
    "qwen3-4b",
    "qwen3-8b",
    "qwen3-14b",
    "qwen2.5-coder-0.5b-instruct",
    "qwen2.5-coder-1.5b-instruct",
    "qwen2.5-coder-3b-instruct",
    "qwen2.5-coder-7b-instruct",
    "qwen2.5-coder-14b-instruct",
    "qwen2.5-coder-32b-instruct",
    "llama-3.1-8b-instruct",
    # the real small models
    "smollm2-135m-instruct",
    "gemma-3-270m",
]

# What agents and users send, and the catalog id it must resolve to.
ALIASES = {
    "qwen3:30b-a3b": "qwen3-30b-a3b",
    "Qwen/Qwen3-30B-A3B": "qwen3-30b-a3b",
    "qwen3-coder:30b": "qwen3-coder-30b-a3b-instruct",
    "devstral": "devstral-small-24b",
    "devstral-small-2507": "devstral-small-24b",
    "mistralai/Devstral-Small-2507": "devstral-small-24b",
    "gemma3:27b": "gemma-3-27b-it",
    "qwen3:8b": "qwen3-8b",
    "qwen2.5-coder:7b": "qwen2.5-coder-7b-instruct",
    "Qwen/Qwen2.5-Coder-32B-Instruct": "qwen2.5-coder-32b-instruct",
    "llama3.1:8b": "llama-3.1-8b-instruct",
    "meta-llama/Llama-3.1-8B-Instruct": "llama-3.1-8b-instruct",
}

# Models that ship in PyPI wheels: one artifact each, the file that really exists.
SMALL_REAL = {"qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct", "gemma-3-270m"}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def _raw_entries() -> list[dict]:
    folder = resources.files("quantization") / "catalog"
    entries = []
    for entry in folder.iterdir():
        if entry.name.endswith(".yaml"):
            entries.extend(yaml.safe_load(entry.read_text())["models"])
    return entries


def test_catalog_loads(catalog):
    models = list(catalog)
    assert len(models) >= len(REQUIRED)
    assert all(isinstance(m, ModelSpec) for m in models)


def test_names_and_aliases_unique():
    seen: dict[str, str] = {}
    for item in _raw_entries():
        name = item["name"]
        assert name == name.lower() and " " not in name, f"catalog id must be lowercase: {name}"
        for key in [name, *item.get("aliases", [])]:
            k = key.lower()
            assert k not in seen, f"{key!r} used by {seen[k]} and {name}"
            seen[k] = name


@pytest.mark.parametrize("name", REQUIRED)
def test_required_model_present(catalog, name):
    model = catalog.get(name)
    assert model is not None, name
    assert model.name == name


@pytest.mark.parametrize(("alias", "name"), ALIASES.items())
def test_aliases_resolve(catalog, alias, name):
    model = catalog.get(alias)
    assert model is not None, alias
    assert model.name == name
    assert catalog.get(alias.upper()) is model  # lookups ignore case


@pytest.mark.parametrize(
    ("name", "head_dim", "naive"),
    [
        ("qwen3-30b-a3b", 128, 64),  # 2048 / 32
        ("qwen3-coder-30b-a3b-instruct", 128, 64),
        ("gemma-3-27b-it", 128, 168),  # 5376 / 32
        ("devstral-small-24b", 128, 160),  # 5120 / 32
        ("qwen3-0.6b", 128, 64),  # 1024 / 16
    ],
)
def test_head_dim_is_not_hidden_over_heads(catalog, name, head_dim, naive):
    arch = catalog.get(name).arch
    assert arch.hidden_size // arch.n_heads == naive
    assert arch.head_dim == head_dim != naive


def test_every_model_has_a_gguf(catalog):
    for m in catalog:
        ggufs = [a for a in m.artifacts if a.format == "gguf"]
        assert ggufs, m.name
        for a in ggufs:
            assert a.file and a.file.endswith(".gguf"), (m.name, a.quant)
            assert a.repo or a.pypi, (m.name, a.quant)


def test_standard_quants_published(catalog):
    for m in catalog:
        if m.name in SMALL_REAL:
            continue
        quants = {a.quant for a in m.artifacts if a.format == "gguf"}
        missing = {"Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"} - quants
        assert not missing, (m.name, missing)
        if m.params_total >= 20e9:
            assert quants & {"Q3_K_M", "IQ4_XS"}, f"{m.name}: no quant below 4 bits for small GPUs"


def test_artifact_sizes_match_params(catalog):
    """bytes x 8 / params is the bits per weight: 2..17 for anything from Q2_K to BF16 plus metadata.

    A size typed in GiB, MB or with a digit missing lands far outside this band."""
    for m in catalog:
        for a in m.artifacts:
            assert a.size_bytes > 0, (m.name, a.quant)
            bpw = a.size_bytes * 8 / m.params_total
            assert 2 <= bpw <= 17, f"{m.name} {a.format} {a.quant}: {bpw:.2f} bits per weight"


def test_bits_per_weight_rise_with_the_quant(catalog):
    order = ["Q3_K_M", "IQ4_XS", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"]
    for m in catalog:
        sizes = {a.quant: a.size_bytes for a in m.artifacts if a.format == "gguf"}
        ladder = [sizes[q] for q in order if q in sizes]
        assert ladder == sorted(ladder), (m.name, ladder)
        if "Q8_0" in sizes:  # Q8_0 is 8.5 bits for nearly every tensor
            assert 8.4 <= sizes["Q8_0"] * 8 / m.params_total <= 10.0, m.name


def test_vllm_checkpoints(catalog):
    for m in catalog:
        for a in m.artifacts:
            if a.format == "awq":
                assert a.quant == "AWQ" and a.repo, m.name
            if a.format == "fp8":
                assert a.quant == "FP8" and a.repo, m.name
            if a.format != "gguf":
                assert a.file is None and not a.pypi, (m.name, a.quant)
            if a.sha256:
                assert len(a.sha256) == 64 and int(a.sha256, 16) >= 0, (m.name, a.quant)


def test_every_hub_artifact_names_repo_file_and_provenance(catalog):
    """Issue 13: a hub pull needs the real repo (and GGUF file); each is marked checked or unchecked."""
    for m in catalog:
        for a in m.artifacts:
            if a.pypi:
                continue
            where = (m.name, a.format, a.quant)
            assert a.repo and re.fullmatch(r"[\w.-]+/[\w.-]+", a.repo), where
            if a.format == "gguf":
                assert a.file and a.file.endswith(".gguf"), where
                assert a.hub_files and a.hub_files[0] == a.file, where
            else:
                assert a.file is None and not a.files, where
            assert bool(a.checked) != bool(a.unchecked), f"{where}: needs exactly one of checked/unchecked"


def test_single_file_names_are_not_shards(catalog):
    """A name like *-00001-of-00003.gguf is one shard: such an artifact must list all of them."""
    for m in catalog:
        for a in m.artifacts:
            if a.format == "gguf" and not a.files:
                assert not re.search(r"-\d{5}-of-\d{5}\.gguf$", a.file), (m.name, a.quant, a.file)


def test_mission_models_default_quants_are_checked(catalog):
    for name in [
        "qwen3-30b-a3b",
        "qwen3-coder-30b-a3b-instruct",
        "devstral-small-24b",
        "gemma-3-4b-it",
        "gemma-3-12b-it",
        "gemma-3-27b-it",
    ]:
        m = catalog.get(name)
        for quant in ["Q4_K_M", "Q8_0"]:
            assert m.artifact(quant).checked, (name, quant)


def test_split_gguf_artifact():
    shards = [f"Q8_0/Model-Q8_0-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    a = Artifact(format="gguf", quant="Q8_0", size_bytes=3, repo="o/r", files=shards, unchecked="test")
    assert a.file == shards[0] and a.is_split and a.hub_files == shards
    single = Artifact(format="gguf", quant="Q4_K_M", size_bytes=1, repo="o/r", file="m.gguf", checked="x")
    assert single.hub_files == ["m.gguf"] and not single.is_split
    bad = [
        dict(files=shards, file=shards[1]),  # file is not the first shard
        dict(files=[shards[0], shards[2]]),  # a shard missing
        dict(files=list(reversed(shards))),  # out of order
        dict(files=shards, sha256="0" * 64),  # one hash for several files
        dict(file="m.gguf", checked="a", unchecked="b"),
    ]
    for extra in bad:
        args = dict(format="gguf", quant="Q8_0", size_bytes=3, repo="o/r") | extra
        with pytest.raises(ValidationError):
            Artifact(**args)


def test_moe_numbers(catalog):
    moe = [m for m in catalog if m.is_moe]
    assert {m.name for m in moe} >= {"qwen3-30b-a3b", "qwen3-coder-30b-a3b-instruct"}
    for m in catalog:
        if m.is_moe:
            assert 0 < m.arch.n_experts_used < m.arch.n_experts, m.name
            assert 0 < m.params_experts < m.params_total, m.name
            assert m.params_active < m.params_total, m.name
            # active = everything that is not a routed expert + the share of experts a token uses
            shared = m.params_total - m.params_experts
            expected = shared + m.params_experts * m.arch.n_experts_used / m.arch.n_experts
            assert m.params_active == pytest.approx(expected, rel=0.01), m.name
        else:
            assert m.params_experts == 0 and m.arch.n_experts_used is None, m.name
            assert m.params_active == m.params_total, m.name


def test_qwen3_30b_a3b_shape(catalog):
    m = catalog.get("qwen3-30b-a3b")
    a = m.arch
    assert (a.n_layers, a.n_heads, a.n_kv_heads, a.head_dim) == (48, 32, 4, 128)
    assert (a.n_experts, a.n_experts_used) == (128, 8)
    assert m.params_experts == 48 * 128 * 3 * 2048 * 768
    assert m.params_total == pytest.approx(30.5e9, rel=0.01)
    assert m.params_active == pytest.approx(3.3e9, rel=0.05)


@pytest.mark.parametrize(
    ("name", "n_layers", "window", "swa_layers"),
    [
        ("gemma-3-27b-it", 62, 1024, 52),  # global layers 5, 11, ..., 59: 10 of 62
        ("gemma-3-12b-it", 48, 1024, 40),
        ("gemma-3-4b-it", 34, 1024, 29),
        ("gemma-3-1b-it", 26, 512, 22),
        ("gemma-3-270m-it", 18, 512, 15),
        ("gemma-3-270m", 18, 512, 15),
    ],
)
def test_sliding_window_layers(catalog, name, n_layers, window, swa_layers):
    arch = catalog.get(name).arch
    assert arch.n_layers == n_layers
    assert (arch.sliding_window, arch.sliding_window_pattern) == (window, 6)
    assert arch.n_swa_layers == swa_layers
    assert arch.n_layers - arch.n_swa_layers == len(range(5, n_layers, 6))


def test_no_sliding_window_outside_gemma(catalog):
    for m in catalog:
        if m.family != "gemma3":
            assert m.arch.sliding_window is None and m.arch.n_swa_layers == 0, m.name


def test_n_swa_layers_counts_the_pattern():
    arch = Architecture(
        n_layers=12,
        n_heads=8,
        n_kv_heads=4,
        head_dim=64,
        hidden_size=512,
        vocab_size=1000,
        sliding_window=128,
        sliding_window_pattern=4,
    )
    assert arch.n_swa_layers == 9  # layers 3, 7, 11 are global


def test_contexts_and_capabilities(catalog):
    for m in catalog:
        assert m.context_native >= 8192, m.name
        if m.context_extended is not None:
            assert m.context_extended > m.context_native, m.name
        if "tools" in m.capabilities:
            assert m.tool_call_format != "none", m.name
        if "thinking" in m.capabilities:
            assert m.family in {"qwen3", "qwen3moe"}, m.name
        assert m.license, m.name
        assert m.sources, m.name
    assert catalog.get("devstral-small-24b").tool_call_format == "mistral"
    assert catalog.get("llama-3.1-8b-instruct").tool_call_format == "llama3_json"
    assert catalog.get("qwen3-8b").tool_call_format == "hermes"
    assert catalog.get("qwen3-coder-30b-a3b-instruct").tool_call_format == "qwen3_coder"
    assert catalog.get("devstral-small-24b").context_native == 131072
    assert catalog.get("llama-3.1-8b-instruct").context_native == 131072
    assert catalog.get("qwen3-14b").context_extended == 131072
    for size in ("4b", "12b", "27b"):
        assert "vision" in catalog.get(f"gemma-3-{size}-it").capabilities


def test_quality_monotone_within_family(catalog):
    by_family = defaultdict(list)
    for m in catalog:
        by_family[m.family].append(m)
    for family, models in by_family.items():
        for a in models:
            for b in models:
                if a.params_total < b.params_total:
                    assert a.quality < b.quality, (family, a.name, b.name)


def test_quality_ranking_for_coding_agents(catalog):
    q = {m.name: m.quality for m in catalog}
    top = ["qwen3-30b-a3b", "devstral-small-24b", "qwen2.5-coder-32b-instruct"]
    assert min(q[n] for n in top) > q["gemma-3-27b-it"] > q["qwen3-14b"] > q["qwen3-8b"]
    assert q["qwen3-coder-30b-a3b-instruct"] >= q["qwen3-30b-a3b"]
    for m in catalog:
        assert 0 <= m.quality <= 100, m.name
        if m.params_total < 1.1e9:
            assert m.quality < 20, m.name


# --- GGUF metadata of the real small models -----------------------------------------------------

_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9


def read_gguf_metadata(path: Path) -> dict:
    """The key/value header of a GGUF file. Arrays come back as their length, except short ones."""

    def read(f, fmt):
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

    def string(f):
        return f.read(read(f, "<Q")).decode("utf-8", "replace")

    def value(f, kind):
        if kind in _SCALARS:
            return read(f, _SCALARS[kind])
        if kind == _STRING:
            return string(f)
        if kind == _ARRAY:
            item, count = read(f, "<I"), read(f, "<Q")
            if item in _SCALARS and count > 64:
                f.seek(count * struct.calcsize(_SCALARS[item]), 1)
                return count
            items = [value(f, item) for _ in range(count)]
            return items if count <= 64 else count
        raise ValueError(f"unknown GGUF value type {kind}")

    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF", path
        version = read(f, "<I")
        assert version in (2, 3), version
        read(f, "<Q")  # tensor count
        return {string(f): value(f, read(f, "<I")) for _ in range(read(f, "<Q"))}


def _write_gguf(path: Path, kvs: list[tuple[str, int, object]]) -> None:
    def s(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs))
    for key, kind, val in kvs:
        out += s(key) + struct.pack("<I", kind)
        if kind == _STRING:
            out += s(val)
        elif kind == _ARRAY:
            item, items = val
            out += struct.pack("<IQ", item, len(items))
            out += b"".join(s(x) if item == _STRING else struct.pack(_SCALARS[item], x) for x in items)
        else:
            out += struct.pack(_SCALARS[kind], val)
    path.write_bytes(out)


def test_gguf_reader_on_a_synthetic_header(tmp_path):
    path = tmp_path / "tiny.gguf"
    _write_gguf(
        path,
        [
            ("general.architecture", _STRING, "llama"),
            ("llama.block_count", 4, 30),
            ("llama.rope.freq_base", 6, 10000.0),
            ("tokenizer.ggml.tokens", _ARRAY, (_STRING, [f"t{i}" for i in range(100)])),
            ("tokenizer.ggml.scores", _ARRAY, (6, [0.0] * 100)),
            ("general.tags", _ARRAY, (_STRING, ["a", "b"])),
        ],
    )
    meta = read_gguf_metadata(path)
    assert meta["general.architecture"] == "llama"
    assert meta["llama.block_count"] == 30
    assert meta["llama.rope.freq_base"] == 10000.0
    assert meta["tokenizer.ggml.tokens"] == 100 and meta["tokenizer.ggml.scores"] == 100
    assert meta["general.tags"] == ["a", "b"]


@pytest.mark.slow
def test_arch_matches_real_gguf_metadata(catalog, qwen_path, smollm_path, gemma_path):
    for name, path in [
        ("qwen2.5-coder-0.5b-instruct", qwen_path),
        ("smollm2-135m-instruct", smollm_path),
        ("gemma-3-270m", gemma_path),
    ]:
        model = catalog.get(name)
        arch = model.arch
        meta = read_gguf_metadata(path)
        a = meta["general.architecture"]
        assert path.stat().st_size == model.artifacts[0].size_bytes, name
        assert meta[f"{a}.block_count"] == arch.n_layers, name
        assert meta[f"{a}.attention.head_count"] == arch.n_heads, name
        assert meta[f"{a}.attention.head_count_kv"] == arch.n_kv_heads, name
        assert meta[f"{a}.embedding_length"] == arch.hidden_size, name
        head_dim = meta.get(
            f"{a}.attention.key_length", meta[f"{a}.embedding_length"] // meta[f"{a}.attention.head_count"]
        )
        assert head_dim == arch.head_dim, name
        assert meta[f"{a}.context_length"] == model.context_native, name
        assert meta["tokenizer.ggml.tokens"] == arch.vocab_size, name
        assert meta.get(f"{a}.attention.sliding_window") == arch.sliding_window, name
