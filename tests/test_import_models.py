"""`appliance import`, `models`, `rm` and `serve --model NAME|PATH.gguf` (issue 13).

Synthetic GGUFs are written with the `gguf` package (llama.cpp's own writer): the real layout
and tensor shapes of each architecture, zero weights, a few hundred KB. The slow tests import
the real SmolLM2 and chat with it through `appliance serve` on loopback.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import gguf
import httpx
import numpy as np
import pytest

from appliance.cli import main as cli
from appliance.models.imports import ImportFailed, Placement, import_gguf
from appliance.models.inventory import known_models
from appliance.models.store import manifest
from appliance.profiles import load_profile
from quantization.gguf_header import read_header
from quantization.gguf_spec import spec_from_header
from tests.test_opencode import free_port

HERMES_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if tools %}<tool_call>\n{\"name\": ...}\n</tool_call>{% endif %}<|im_start|>assistant\n<think>\n"
)
GEMMA_TEMPLATE = (
    "{% for m in messages %}<start_of_turn>{{ m.role }}\n{{ m.content }}<end_of_turn>\n{% endfor %}"
)


# A tiny model's shape; each test overrides what it checks.
TINY = {"layers": 2, "hidden": 64, "heads": 4, "kv_heads": 2, "head_dim": None, "vocab": 256, "ff": 128,
        "ctx": 4096, "experts": 0, "experts_used": 0, "tied": False, "template": None,
        "file_type": gguf.LlamaFileType.MOSTLY_Q4_K_M, "extra": {}, "split_max_tensors": 0}


def write_gguf(path: Path, arch: str, **options) -> dict[str, int]:
    """A GGUF with `arch`'s keys and tensor shapes (zeros); returns the expected counts."""
    assert set(options) <= set(TINY), set(options) - set(TINY)
    o = SimpleNamespace(**{**TINY, **options})
    w = gguf.GGUFWriter(path, arch, split_max_tensors=o.split_max_tensors)
    _write_keys(w, o)
    shapes, expert_params = _tensor_shapes(o)
    for name, shape in shapes.items():
        w.add_tensor(name, np.zeros(shape, dtype=np.float16 if len(shape) > 1 else np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"params": sum(int(np.prod(s)) for s in shapes.values()), "experts": expert_params}


def _write_keys(w: gguf.GGUFWriter, o: SimpleNamespace) -> None:
    w.add_block_count(o.layers)
    w.add_context_length(o.ctx)
    w.add_embedding_length(o.hidden)
    w.add_feed_forward_length(o.ff)
    w.add_head_count(o.heads)
    w.add_head_count_kv(o.kv_heads)
    if o.head_dim:
        w.add_key_length(o.head_dim)
        w.add_value_length(o.head_dim)
    if o.experts:
        w.add_expert_count(o.experts)
        w.add_expert_used_count(o.experts_used)
    if o.file_type is not None:
        w.add_file_type(int(o.file_type))
    w.add_token_list([f"t{i}" for i in range(o.vocab)])
    if o.template:
        w.add_chat_template(o.template)
    adders = {str: w.add_string, int: w.add_uint32, list: w.add_array}
    for key, value in o.extra.items():
        adders[type(value)](key, value)


def _tensor_shapes(o: SimpleNamespace) -> tuple[dict[str, tuple[int, ...]], int]:
    """llama.cpp's tensor names and numpy shapes (rows first), and the routed experts' weights."""
    hd = o.head_dim or o.hidden // o.heads
    shapes = {"token_embd.weight": (o.vocab, o.hidden), "output_norm.weight": (o.hidden,)}
    if not o.tied:
        shapes["output.weight"] = (o.vocab, o.hidden)
    expert_params = 0
    for i in range(o.layers):
        b = f"blk.{i}."
        shapes |= {
            b + "attn_norm.weight": (o.hidden,),
            b + "attn_q.weight": (o.heads * hd, o.hidden),
            b + "attn_k.weight": (o.kv_heads * hd, o.hidden),
            b + "attn_v.weight": (o.kv_heads * hd, o.hidden),
            b + "attn_output.weight": (o.hidden, o.heads * hd),
            b + "ffn_norm.weight": (o.hidden,),
        }
        if o.experts:
            shapes[b + "ffn_gate_inp.weight"] = (o.experts, o.hidden)
            shapes[b + "ffn_gate_exps.weight"] = (o.experts, o.ff, o.hidden)
            shapes[b + "ffn_up_exps.weight"] = (o.experts, o.ff, o.hidden)
            shapes[b + "ffn_down_exps.weight"] = (o.experts, o.hidden, o.ff)
            expert_params += 3 * o.experts * o.ff * o.hidden
        else:
            shapes[b + "ffn_gate.weight"] = (o.ff, o.hidden)
            shapes[b + "ffn_up.weight"] = (o.ff, o.hidden)
            shapes[b + "ffn_down.weight"] = (o.hidden, o.ff)
    return shapes, expert_params


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty data directory of the test's own: imports and removals never touch the real store."""
    home = tmp_path / "home"
    monkeypatch.setenv("APPLIANCE_HOME", str(home))
    return home


def spec_of(path: Path, fmt: str = "none"):
    return spec_from_header(read_header(path), name="m", file=path.name, size_bytes=1, tool_call_format=fmt)


# -- the header reader -------------------------------------------------------------------------

def test_llama_header_every_field(tmp_path):
    path = tmp_path / "tiny-llama.gguf"
    names = {"general.name": "Tiny Llama", "general.license": "mit"}
    want = write_gguf(path, "llama", layers=3, hidden=64, heads=8, kv_heads=2, vocab=300, ctx=8192,
                      template=HERMES_TEMPLATE, extra=names)
    header = read_header(path)
    spec = spec_of(path, "hermes")
    a = spec.arch
    shape = (a.n_layers, a.n_heads, a.n_kv_heads, a.head_dim, a.hidden_size, a.vocab_size)
    assert shape == (3, 8, 2, 8, 64, 300)
    assert not a.tie_word_embeddings and a.sliding_window is None and a.n_experts is None
    assert spec.params_total == spec.params_active == want["params"]
    assert spec.params_experts == 0
    assert spec.context_native == 8192
    assert spec.family == "llama" and spec.display_name == "m (Tiny Llama)" and spec.license == "mit"
    assert spec.artifacts[0].quant == "Q4_K_M"
    assert header.chat_template == HERMES_TEMPLATE
    assert spec.capabilities == ["chat", "tools", "thinking"]
    # the same numbers as llama.cpp's own reader
    ref = gguf.GGUFReader(path)
    assert sum(int(t.n_elements) for t in ref.tensors) == want["params"]
    assert [t.name for t in ref.tensors] == [t.name for t in header.tensors]


def test_qwen3moe_experts_and_explicit_head_dim(tmp_path):
    path = tmp_path / "tiny-moe.gguf"
    want = write_gguf(path, "qwen3moe", layers=2, hidden=64, heads=4, kv_heads=1, head_dim=32,
                      experts=8, experts_used=2, ff=32, ctx=32768, tied=True,
                      file_type=gguf.LlamaFileType.MOSTLY_Q8_0)
    spec = spec_of(path)
    a = spec.arch
    assert a.head_dim == 32 != a.hidden_size // a.n_heads
    assert (a.n_experts, a.n_experts_used) == (8, 2)
    assert a.tie_word_embeddings
    assert spec.params_total == want["params"]
    assert spec.params_experts == want["experts"] > 0
    assert spec.params_active == want["params"] - want["experts"] * 6 / 8
    assert spec.is_moe and spec.artifacts[0].quant == "Q8_0"
    assert spec.capabilities == ["base"] and spec.tool_call_format == "none"


def test_gemma3_sliding_window(tmp_path):
    path = tmp_path / "tiny-gemma3.gguf"
    write_gguf(path, "gemma3", layers=12, heads=4, kv_heads=1, head_dim=32, tied=True,
               template=GEMMA_TEMPLATE, extra={"gemma3.attention.sliding_window": 512})
    a = spec_of(path).arch
    assert (a.sliding_window, a.sliding_window_pattern) == (512, 6)
    assert a.n_swa_layers == 10  # llama.cpp: every 6th layer global
    assert a.tie_word_embeddings and a.head_dim == 32


def test_pattern_and_per_layer_heads_from_the_file(tmp_path):
    path = tmp_path / "tiny.gguf"
    write_gguf(path, "llama", layers=4, file_type=None, extra={
        "llama.attention.sliding_window": 128,
        "llama.attention.sliding_window_pattern": [True, False, True, False],
        "llama.attention.head_count_kv": [2, 4, 2, 4],
    })
    spec = spec_of(path)
    assert spec.arch.sliding_window_pattern == 2 and spec.arch.n_kv_heads == 4
    assert spec.artifacts[0].quant == "F16"  # no general.file_type: the dominant tensor type


@pytest.mark.parametrize("ftype,name", [(15, "Q4_K_M"), (3, "Q4_1"), (7, "Q8_0"), (30, "IQ4_XS"), (0, "F32")])
def test_quant_names_are_llama_cpps(ftype, name):
    from quantization.gguf_header import quant_name

    assert quant_name(ftype, []) == name


def test_not_a_gguf_is_a_clear_error(tmp_path, home):
    text = tmp_path / "notes.gguf"
    text.write_text("hello, not a model\n")
    with pytest.raises(ImportFailed, match="is not a GGUF file"):
        import_gguf(text)
    good = tmp_path / "tiny.gguf"
    write_gguf(good, "llama")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImportFailed, match="truncated or corrupt"):
        import_gguf(cut)
    assert manifest().all() == []


# -- import, list, remove ------------------------------------------------------------------------

def test_import_links_or_copies_and_records(tmp_path, home, capsys):
    src = tmp_path / "Tiny-Llama.Q4_K_M.gguf"
    write_gguf(src, "llama", template=HERMES_TEMPLATE)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    assert cli(["import", str(src)]) == 0
    rec = manifest().get("tiny-llama.q4_k_m", "Q4_K_M")
    assert rec is not None and rec.files[0].sha256 == sha
    stored = Path(rec.files[0].path)
    assert stored == home / "models" / "tiny-llama.q4_k_m" / src.name
    assert stored.stat().st_ino == src.stat().st_ino  # same filesystem: a hard link
    copied = import_gguf(src, "copied", placement=Placement(copy=True), log=lambda _: None)
    assert Path(copied.path).stat().st_ino != src.stat().st_ino
    assert copied.files[0].sha256 == sha == hashlib.sha256(Path(copied.path).read_bytes()).hexdigest()
    with pytest.raises(ImportFailed, match="already installed"):
        import_gguf(src, "copied")
    with pytest.raises(ImportFailed, match="catalog model"):
        import_gguf(src, "qwen3-30b-a3b")
    capsys.readouterr()
    assert cli(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["copied"]["size_bytes"] == src.stat().st_size
    assert rows["copied"]["sha256"] == sha and rows["copied"]["source"] == f"import:{src}"
    assert rows["copied"]["quant"] == "Q4_K_M" and rows["copied"]["intact"]


def test_copy_stops_on_a_write_error(tmp_path):
    """A full disk fails the copy with the OS's error instead of hanging the reader."""
    from appliance.models.files import BLOCK, copy_hashing

    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(BLOCK * 9 + 7))
    with pytest.raises(OSError, match="No space left"):
        copy_hashing(src, Path("/dev/full"))
    dest = tmp_path / "copy.bin"
    assert copy_hashing(src, dest) == hashlib.sha256(src.read_bytes()).hexdigest()
    assert dest.read_bytes() == src.read_bytes()


def test_split_gguf_imports_every_shard(tmp_path, home):
    base = tmp_path / "big.gguf"
    want = write_gguf(base, "llama", layers=2, split_max_tensors=8)
    shards = sorted(tmp_path.glob("big-*-of-*.gguf"))
    assert len(shards) > 1
    rec = import_gguf(shards[0], "big", log=lambda _: None)
    assert len(rec.files) == len(shards)
    assert rec.size == sum(p.stat().st_size for p in shards)
    spec = known_models().get("big")
    assert spec.params_total == want["params"]
    assert spec.artifacts[0].files == [p.name for p in shards]
    with pytest.raises(ImportFailed, match="import the first one"):
        import_gguf(shards[1], "other")


def test_imports_are_planned_and_served_like_catalog_models(tmp_path, home):
    """The planner ranks an import; `serve --model NAME` and `--model PATH.gguf` pin it."""
    from appliance.config import ServeConfig
    from appliance.planner import plan
    from appliance.serve.choice import ServeError, decide

    src = tmp_path / "agent.gguf"
    write_gguf(src, "qwen3moe", hidden=64, heads=4, kv_heads=1, head_dim=32, experts=8, experts_used=2,
               ctx=32768, template=HERMES_TEMPLATE)
    import_gguf(src, "my-agent", log=lambda _: None)
    hw = load_profile("rtx-4090")
    mains = plan(hw).candidates["main"]
    mine = [c for c in mains if c.model == "my-agent"]
    assert mine and mine[0].available and mine[0].runtime == "llama.cpp"
    assert "my-agent" not in {c.model for c in plan(hw, available=lambda *_: True).candidates["main"]}
    (spec,) = decide(ServeConfig(model="my-agent", small_model="none"), hw)
    assert spec.model.name == "my-agent" and spec.model.tool_call_format == "hermes"
    assert manifest().get("my-agent", "Q4_K_M").last_used is not None

    plain = tmp_path / "Plain-Chat.gguf"  # no tool calls: not an agent model, served when pinned
    write_gguf(plain, "llama", template=GEMMA_TEMPLATE, ctx=8192)
    (spec,) = decide(ServeConfig(model=str(plain), small_model="none"), hw)
    assert spec.model.name == "plain-chat" and "not an agent model" in spec.reason
    rec = manifest().get("plain-chat", "Q4_K_M")
    assert rec.source == f"import:{plain}" and rec.files[0].sha256 is None  # by reference
    (again,) = decide(ServeConfig(model=str(plain), small_model="none"), hw)
    assert again.model.name == "plain-chat" and len(manifest().of_model("plain-chat")) == 1

    base = tmp_path / "base.gguf"  # no chat template at all: says why instead of serving nonsense
    write_gguf(base, "llama")
    with pytest.raises(ServeError, match="base cannot be served here: base model"):
        decide(ServeConfig(model=str(base), small_model="none"), hw)


def test_rm_asks_refuses_and_removes(tmp_path, home, capsys, monkeypatch):
    src = tmp_path / "tiny.gguf"
    write_gguf(src, "llama")
    import_gguf(src, "tiny", placement=Placement(copy=True), log=lambda _: None)
    stored = Path(manifest().get("tiny", "Q4_K_M").path)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal
    port = free_port()
    (home / "config.yaml").parent.mkdir(parents=True, exist_ok=True)
    (home / "config.yaml").write_text(f"port: {port}\n")
    assert cli(["rm", "tiny"]) == 2
    assert "pass --yes" in capsys.readouterr().err and stored.exists()
    with fake_appliance(port, ["tiny"]):
        assert cli(["rm", "tiny", "--yes"]) == 1
    assert "being served" in capsys.readouterr().err and stored.exists()
    assert cli(["rm", "nothing-here", "--yes"]) == 2
    assert cli(["rm", "tiny:Q8_0", "--yes"]) == 2  # no such quant installed
    assert cli(["rm", "tiny:q4_k_m", "--yes"]) == 0
    assert not stored.exists() and not stored.parent.exists() and manifest().all() == []
    assert src.exists()


def test_rm_of_a_hub_file_uses_the_hf_cache_api(tmp_path, home):
    """Two records in one cached revision: the first rm takes only its file and blob, the
    second the whole revision (huggingface_hub's own deletion)."""
    from huggingface_hub import scan_cache_dir

    from appliance.models.manifest import Installed, InstalledFile
    from appliance.models.removal import remove

    cache = tmp_path / "hf"
    repo = cache / "models--someone--tiny-GGUF"
    rev = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    (repo / "blobs").mkdir()
    (repo / "snapshots" / rev).mkdir(parents=True)
    records = []
    for quant, data in (("Q4_K_M", b"four"), ("Q8_0", b"eight")):
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = repo / "snapshots" / rev / f"tiny-{quant}.gguf"
        link.symlink_to(os.path.relpath(blob, link.parent))
        records.append(Installed(name="someone/tiny-GGUF", quant=quant, format="gguf",
                                 source=f"hub:someone/tiny-GGUF@{rev}",
                                 files=[InstalledFile(path=str(link), size=len(data))]))
        manifest().put(records[-1])
    remove([records[0]])
    left = scan_cache_dir(cache)
    (cached,) = left.repos
    assert [f.file_name for r in cached.revisions for f in r.files] == ["tiny-Q8_0.gguf"]
    assert len(list((repo / "blobs").iterdir())) == 1
    remove([records[1]])
    assert not any(r.revisions for r in scan_cache_dir(cache).repos)
    assert manifest().all() == []


class fake_appliance:
    """A loopback server answering /v1/models with the given ids, as a running appliance does."""

    def __init__(self, port: int, ids: list[str]):
        body = json.dumps({"object": "list", "data": [{"id": i, "aliases": []} for i in ids]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


# -- the real model, served ---------------------------------------------------------------------

def start_serve(home: Path, model: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "APPLIANCE_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "serve", "--model", model, "--small-model", "none",
         "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve exited: {proc.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    pytest.fail("appliance serve did not become healthy")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def chat(port: int, model: str) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
    out = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16, temperature=0
    )
    return out.choices[0].message.content or ""


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "APPLIANCE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120)


@pytest.mark.slow
def test_import_real_smollm_serve_list_and_rm(smollm_path, tmp_path):
    home = tmp_path / "home"
    port = free_port()
    home.mkdir()
    (home / "config.yaml").write_text(f"port: {port}\n")
    assert run_cli(home, "import", str(smollm_path), "--name", "my-smol").returncode == 0
    listed = json.loads(run_cli(home, "models", "--json").stdout)
    (row,) = listed
    assert row["name"] == "my-smol" and row["size_bytes"] == smollm_path.stat().st_size
    assert row["sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert row["source"] == f"import:{smollm_path}"
    proc = start_serve(home, "my-smol", port)
    try:
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()["data"]
        assert [m["id"] for m in models] == ["my-smol"]
        assert chat(port, "my-smol").strip()
        refused = run_cli(home, "rm", "my-smol", "--yes")
        assert refused.returncode == 1 and "being served" in refused.stderr
        assert Path(row["path"]).exists()
    finally:
        stop(proc)
    assert json.loads(run_cli(home, "models", "--json").stdout)[0]["last_used"] is not None
    assert run_cli(home, "rm", "my-smol", "--yes").returncode == 0
    assert not Path(row["path"]).exists() and smollm_path.exists()
    assert json.loads(run_cli(home, "models", "--json").stdout) == []


@pytest.mark.slow
def test_serve_a_gguf_path_directly(smollm_path, tmp_path):
    home = tmp_path / "home"
    port = free_port()
    proc = start_serve(home, str(smollm_path), port)
    try:
        (model,) = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()["data"]
        assert model["id"] == "smollm2-135m-instruct.q4_1"
        assert chat(port, model["id"]).strip()
    finally:
        stop(proc)
