"""A fake Hugging Face hub: a real loopback HTTP server speaking the hub's API the way
`huggingface_hub` uses it, so `appliance pull` can be tested without the real hub (which
cannot be reached from here).

What it answers, as the hub does:
  - `GET /api/models/{repo}` and `.../revision/{rev}`: the commit `sha` and `siblings`
    (`rfilename`, `size`, `blobId`, `lfs: {sha256, size, pointerSize}` with `?blobs=true`);
  - `GET /api/models/{repo}/tree/{rev}[/{path}]` and `POST .../paths-info/{rev}`;
  - `HEAD`/`GET /{repo}/resolve/{rev}/{file}` with `X-Repo-Commit`, `ETag`, and for LFS
    files `X-Linked-Etag` (the quoted sha256) and `X-Linked-Size`; `Range` requests get 206.
    Answers come straight from here with 200 (a mirror's way), not as a CDN redirect.
  - errors with `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`,
    `GatedRepo`: 401 without a token, 403 with a wrong one).

It serves real bytes: files on disk (a real GGUF, or a slice of one for split-GGUF shards)
with `os.sendfile`, so the server is never what limits a download, and synthetic bytes.
Knobs for misbehaviour: `cut(file, at)` closes the connection once the file's byte `at` is
reached and answers 503 until `heal()` (a network that went away mid-download); `flip(file,
at)` corrupts one byte on the wire. `served[file]` counts the body bytes sent per file,
`requests` what arrived (method, path, whether it had a token: never the token itself).

Run alone (for the pull benchmark's curl): `python tests/fakes/hf_hub.py FILE --repo o/r`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

POINTER_SIZE = 134  # a git-lfs pointer file's usual size
SEND_CHUNK = 8 << 20
PACED_CHUNK = 256 << 10  # with a rate set: small steps, so the pacing is smooth


@dataclass
class FakeFile:
    """One file of a repo: bytes in memory, or `length` bytes of `source` from `offset`."""

    path: str
    data: bytes | None = None
    source: Path | None = None
    offset: int = 0
    length: int = 0
    lfs: bool = True
    sha256: str = ""

    def __post_init__(self) -> None:
        if self.data is not None:
            self.length = len(self.data)
        elif self.source is not None and not self.length:
            self.length = self.source.stat().st_size - self.offset
        if not self.sha256:
            digest = hashlib.sha256()
            for at in range(0, self.length, SEND_CHUNK):
                digest.update(self.read(at, min(self.length, at + SEND_CHUNK)))
            self.sha256 = digest.hexdigest()

    @property
    def size(self) -> int:
        return self.length

    @property
    def oid(self) -> str:
        """The git blob id: of the LFS pointer for LFS files, of the content otherwise."""
        body = self._pointer() if self.lfs else self.read(0, self.length)
        return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()

    def _pointer(self) -> bytes:
        spec = "version https://git-lfs.github.com/spec/v1"
        lines = [spec, f"oid sha256:{self.sha256}", f"size {self.size}"]
        return ("\n".join(lines) + "\n").encode()

    def read(self, start: int, end: int) -> bytes:
        if self.data is not None:
            return self.data[start:end]
        assert self.source is not None
        with self.source.open("rb") as f:
            f.seek(self.offset + start)
            return f.read(end - start)

    def tree_entry(self) -> dict:
        entry = {"type": "file", "oid": self.oid, "size": self.size, "path": self.path}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": POINTER_SIZE}
        return entry

    def sibling(self, blobs: bool) -> dict:
        out: dict = {"rfilename": self.path}
        if blobs:
            out |= {"size": self.size, "blobId": self.oid}
            if self.lfs:
                out["lfs"] = {"sha256": self.sha256, "size": self.size, "pointerSize": POINTER_SIZE}
        return out


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, FakeFile]
    sha: str
    gated_token: str | None = None  # set: a gated repo; files need this token


@dataclass
class _Knobs:
    cut_at: dict[str, int] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    flip_at: dict[str, int] = field(default_factory=dict)


class FakeHub:
    """The server and its repos; tests add repos, turn knobs, and read `served`/`requests`."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.served: Counter[str] = Counter()  # "repo/file" -> body bytes sent
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, had a token)
        self.knobs = _Knobs()
        self.rate: float | None = None  # bytes/s per download (a link's speed); None: as fast as it goes
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.base_url = ""

    # -- content ------------------------------------------------------------------------
    def add_repo(
        self, repo_id: str, files: dict[str, bytes | Path | FakeFile], *, gated_token: str | None = None
    ) -> FakeRepo:
        """A repo with `files` (path -> bytes, a file on disk, or a FakeFile); `.gitattributes`
        and README.md are added as small non-LFS files, as every hub repo has them."""
        made = {p: _as_file(p, f) for p, f in files.items()}
        for extra in (".gitattributes", "README.md"):
            made.setdefault(extra, FakeFile(extra, data=f"{extra} of {repo_id}\n".encode(), lfs=False))
        sha = hashlib.sha1(repo_id.encode() + b"".join(f.sha256.encode() for f in made.values())).hexdigest()
        repo = FakeRepo(repo_id, made, sha, gated_token)
        self.repos[repo_id] = repo
        return repo

    # -- knobs --------------------------------------------------------------------------
    def cut(self, key: str, at: int) -> None:
        """`key` ("repo/file"): the next GET stops at byte `at` and drops the connection; the
        hub then answers 503 for that file until `heal()`."""
        with self.lock:
            self.knobs.cut_at[key] = at

    def heal(self) -> None:
        with self.lock:
            self.knobs.cut_at.clear()
            self.knobs.down.clear()

    def flip(self, key: str, at: int) -> None:
        """Serve byte `at` of `key` inverted (until `unflip()`)."""
        with self.lock:
            self.knobs.flip_at[key] = at

    def unflip(self) -> None:
        with self.lock:
            self.knobs.flip_at.clear()

    def reset_counts(self) -> None:
        with self.lock:
            self.served.clear()
            self.requests.clear()

    def gets(self, key: str) -> int:
        """How many resolve GETs `key` ("owner/name/file") had."""
        owner, name, file = key.split("/", 2)
        where = f"/{owner}/{name}/resolve/"
        gets = [p for m, p, _ in self.requests if m == "GET" and p.startswith(where)]
        return sum(1 for p in gets if p.endswith("/" + file))

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, port: int = 0) -> FakeHub:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _as_file(path: str, f: bytes | Path | FakeFile) -> FakeFile:
    if isinstance(f, FakeFile):
        f.path = path
        return f
    if isinstance(f, bytes):
        return FakeFile(path, data=f, lfs=not path.endswith((".json", ".txt", ".md", ".jinja")))
    return FakeFile(path, source=f)


def shards_of(source: Path, stem: str, n: int) -> dict[str, FakeFile]:
    """`source`'s bytes cut into `n` slices named like llama.cpp's split GGUFs
    (`{stem}-00001-of-0000N.gguf`): only the names and bytes, not gguf-split's format."""
    size = source.stat().st_size
    step = -(-size // n)
    names = [f"{stem}-{i + 1:05d}-of-{n:05d}.gguf" for i in range(n)]
    return {
        name: FakeFile(name, source=source, offset=i * step, length=min(step, size - i * step))
        for i, name in enumerate(names)
    }


_MODEL = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<rev>[^/]+))?$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")
_PATHS = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/paths-info/(?P<rev>[^/]+)$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


class _HubError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # -- routing ------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        with self.hub.lock:
            self.hub.requests.append((method, path, "authorization" in {k.lower() for k in self.headers}))
        try:
            if method in ("GET", "HEAD") and (m := _RESOLVE.match(path)):
                return self._resolve(method, m["repo"], m["rev"], m["path"])
            if method == "GET" and (m := _TREE.match(path)):
                return self._tree(m["repo"], m["rev"], m["path"] or "", "true" in query.get("recursive", []))
            if method == "POST" and (m := _PATHS.match(path)):
                return self._paths_info(m["repo"], m["rev"])
            if method == "GET" and (m := _MODEL.match(path)):
                return self._model_info(m["repo"], m["rev"], "true" in query.get("blobs", []))
            raise _HubError(404, "", f"no route for {method} {path}")
        except _HubError as e:
            self._error(e)

    def _repo(self, repo_id: str, rev: str | None) -> FakeRepo:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            status = 404 if self.headers.get("authorization") else 401  # as the hub: 401 when anonymous
            raise _HubError(status, "RepoNotFound", "Repository not found")
        if rev not in (None, "main", repo.sha):
            raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo

    def _check_token(self, repo: FakeRepo) -> None:
        if repo.gated_token is None:
            return
        auth = self.headers.get("authorization", "")
        if not auth:
            raise _HubError(401, "GatedRepo", f"Access to model {repo.repo_id} is restricted. You must have "
                            "access to it and be authenticated to access it. Please log in.")
        if auth != f"Bearer {repo.gated_token}":
            raise _HubError(403, "GatedRepo", f"Access to model {repo.repo_id} is restricted and you are "
                            "not in the authorized list.")

    # -- API ----------------------------------------------------------------------------
    def _model_info(self, repo_id: str, rev: str | None, blobs: bool) -> None:
        repo = self._repo(repo_id, rev)
        body = {
            "_id": repo.sha[:24], "id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.sha,
            "private": False, "disabled": False, "gated": "manual" if repo.gated_token else False,
            "tags": ["gguf"], "lastModified": "2026-12-01T00:00:00.000Z",
            "siblings": [f.sibling(blobs) for f in repo.files.values()],
        }
        self._json(body)

    def _tree(self, repo_id: str, rev: str, under: str, recursive: bool) -> None:
        repo = self._repo(repo_id, rev)
        prefix = under.strip("/") + "/" if under.strip("/") else ""
        entries, folders = [], set()
        for f in repo.files.values():
            if not f.path.startswith(prefix):
                continue
            rest = f.path[len(prefix):]
            if recursive or "/" not in rest:
                entries.append(f.tree_entry())
            if "/" in rest:
                folders.add(prefix + rest.split("/")[0])
        entries += [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                    for d in sorted(folders)]
        self._json(entries)

    def _paths_info(self, repo_id: str, rev: str) -> None:
        repo = self._repo(repo_id, rev)
        length = int(self.headers.get("content-length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        wanted = form.get("paths", [])
        self._json([repo.files[p].tree_entry() for p in wanted if p in repo.files])

    # -- files ----------------------------------------------------------------------------
    def _resolve(self, method: str, repo_id: str, rev: str, path: str) -> None:
        repo = self._repo(repo_id, rev)
        self._check_token(repo)
        f = repo.files.get(path)
        if f is None:
            raise _HubError(404, "EntryNotFound", f"{path} does not exist on {rev}")
        key = f"{repo_id}/{path}"
        with self.hub.lock:
            down = key in self.hub.knobs.down
        if down and method == "GET":
            raise _HubError(503, "", "service unavailable (injected)")
        start, end = self._range(f.size)
        status = 206 if (start, end) != (0, f.size) else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("X-Repo-Commit", repo.sha)
        self.send_header("ETag", f'"{f.sha256 if f.lfs else f.oid}"')
        if f.lfs:
            self.send_header("X-Linked-Etag", f'"{f.sha256}"')
            self.send_header("X-Linked-Size", str(f.size))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{f.size}")
        self.end_headers()
        if method == "GET":
            try:
                self._send_body(key, f, start, end)
            except OSError:  # the client went away (or a cut): nothing more to say on this socket
                self.close_connection = True

    def _range(self, size: int) -> tuple[int, int]:
        header = self.headers.get("range")
        if not header:
            return 0, size
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", header.strip())
        if not m or int(m[1]) >= size:
            raise _HubError(416, "", f"range not satisfiable: {header} of {size}")
        return int(m[1]), min(size, int(m[2]) + 1) if m[2] else size

    def _send_body(self, key: str, f: FakeFile, start: int, end: int) -> None:
        with self.hub.lock:
            cut = self.hub.knobs.cut_at.pop(key, None)
            flip = self.hub.knobs.flip_at.get(key)
            if cut is not None:
                self.hub.knobs.down.add(key)
        stop = end if cut is None else max(start, min(end, cut))
        pos = start
        if flip is not None and start <= flip < stop:
            pos = self._send(key, f, pos, flip)
            byte = bytes([f.read(flip, flip + 1)[0] ^ 0xFF])
            self.wfile.write(byte)
            self._count(key, 1)
            pos += 1
        self._send(key, f, pos, stop)
        if stop < end:  # the cut: drop the connection mid-body
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, key: str, f: FakeFile, start: int, end: int) -> int:
        rate = self.hub.rate
        step = PACED_CHUNK if rate else SEND_CHUNK
        began = time.monotonic()
        if f.source is None:
            for at in range(start, end, step):
                chunk = f.read(at, min(end, at + step))
                self.wfile.write(chunk)
                self._count(key, len(chunk))
                _pace(began, at + len(chunk) - start, rate)
            return end
        with f.source.open("rb") as src:
            pos = start
            while pos < end:
                count = min(step, end - pos)
                sent = os.sendfile(self.connection.fileno(), src.fileno(), f.offset + pos, count)
                if sent == 0:
                    break
                pos += sent
                self._count(key, sent)
                _pace(began, pos - start, rate)
        return end

    def _count(self, key: str, n: int) -> None:
        with self.hub.lock:
            self.hub.served[key] += n

    def _json(self, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, e: _HubError) -> None:
        data = json.dumps({"error": str(e)}).encode()
        self.send_response(e.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if e.code:
            self.send_header("X-Error-Code", e.code)
        self.send_header("X-Error-Message", str(e))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def _pace(began: float, sent: int, rate: float | None) -> None:
    """Sleep until `sent` bytes are due at `rate` bytes/s since `began` (an absolute schedule)."""
    if rate:
        ahead = began + sent / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)


def main() -> None:
    ap = argparse.ArgumentParser(description="serve FILE as REPO/FILENAME on a fake hub until killed")
    ap.add_argument("file", type=Path)
    ap.add_argument("--repo", default="fake-owner/fake-model-GGUF")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--rate-mbps", type=float, help="serve each download at this many MB/s (10^6 bytes)")
    args = ap.parse_args()
    hub = FakeHub()
    hub.rate = args.rate_mbps * 1e6 if args.rate_mbps else None
    hub.add_repo(args.repo, {args.file.name: args.file})
    hub.start(args.port)
    print(hub.base_url, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
