"""One file of a hub repo into the Hugging Face cache: resumable across runs, hashed as it arrives.

huggingface_hub 2.x's `hf_hub_download` writes into a process-unique temporary file and deletes
it when the download fails, so an interrupted pull starts over from zero on the next run
(huggingface_hub issue #4196; the unique name came with PR #4228). For multi-gigabyte GGUFs on
a home connection that is the complaint this appliance must not have. So the bytes of a blob
are fetched with huggingface_hub's own `http_get` (Range requests, its retries and error types)
into `blobs/<etag>.incomplete`, a name that outlives the process, under the lock file
`hf_hub_download` takes for that blob; once verified it becomes the blob, and `hf_hub_download`
makes the snapshot link (no bytes move then). The layout stays huggingface_hub's, so other
tools (transformers, vLLM, `hf`) find the files, and a file they downloaded is found here.

Every byte is hashed as it arrives; only the part of a partial file that an earlier run wrote
is read back, once. Verification never reads a downloaded file a second time.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.file_download import http_get, repo_folder_name
from huggingface_hub.utils import WeakFileLock, build_hf_headers

from appliance.models.files import BLOCK
from appliance.models.hub_errors import PullError
from appliance.models.hub_target import RemoteFile
from appliance.models.progress import PullProgress

CHUNK = 1 << 20


def cache_root() -> Path:
    """The Hugging Face cache as huggingface_hub finds it, read now (not at import): HF_HUB_CACHE,
    else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub."""
    env = os.environ
    if hub := env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(hub).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


class Hashes:
    """sha256 of a file, and for a file the hub keeps in git (config, tokenizer) its git blob id
    (sha1 of `blob <size>\\0` + bytes), which the listing gives to check it against."""

    def __init__(self, size: int, git: bool):
        self.sha256 = hashlib.sha256()
        self.git = hashlib.sha1(b"blob %d\0" % size) if git else None

    def update(self, data: bytes | memoryview) -> None:
        self.sha256.update(data)
        if self.git is not None:
            self.git.update(data)

    def check(self, remote: RemoteFile, want_sha256: str | None) -> str | None:
        """Which expectation failed ("what got, not want"); None when the file is right or
        there is nothing to check it against."""
        got = self.sha256.hexdigest()
        if want_sha256:
            return None if got == want_sha256 else f"sha256 {got} is not the expected {want_sha256}"
        if remote.git_oid and self.git is not None:
            oid = self.git.hexdigest()
            return None if oid == remote.git_oid else f"git blob id {oid} is not the listed {remote.git_oid}"
        return None


@dataclass
class Entry:
    """Where one remote file is, or goes, in the cache."""

    remote: RemoteFile
    pointer: Path  # snapshots/<commit>/<path>: what the record lists and runtimes open
    blob: Path | None = None  # blobs/<etag>; None when not known (offline and not cached)
    url: str | None = None  # where the bytes come from (None: nothing to download)

    @property
    def cached(self) -> bool:
        return self.pointer.exists()

    @property
    def partial(self) -> Path:
        assert self.blob is not None
        return self.blob.with_name(self.blob.name + ".incomplete")

    def on_disk(self) -> int:
        """Bytes of this file already here: all of it when cached (or its blob is, from another
        revision or tool), else a partial download's."""
        if self.cached or (self.blob is not None and self.blob.exists()):
            return self.remote.size
        try:
            return min(self.partial.stat().st_size, self.remote.size)
        except (OSError, AssertionError):
            return 0


class RepoCache:
    """One repo at one commit in the cache: look files up, download, install, discard."""

    def __init__(self, root: Path, repo: str, commit: str, endpoint: str):
        self.root, self.repo, self.commit, self.endpoint = root, repo, commit, endpoint
        self.storage = root / repo_folder_name(repo_id=repo, repo_type="model")
        self.read_back = 0  # bytes read from disk to hash (a resumed partial's first part)

    def entry(self, remote: RemoteFile, *, online: bool) -> Entry:
        """The file's place; online and not cached, the hub's metadata (one HEAD) says which blob."""
        pointer = self.storage / "snapshots" / self.commit / remote.path
        if pointer.exists():
            return Entry(remote, pointer, blob=pointer.resolve())
        if not online:
            return Entry(remote, pointer)
        url = hf_hub_url(self.repo, remote.path, revision=self.commit, endpoint=self.endpoint)
        meta = get_hf_file_metadata(url)
        if meta.etag is None or (meta.size is not None and meta.size != remote.size):
            raise PullError(
                f"{self.endpoint} gives {remote.path} as {meta.size} bytes (etag {meta.etag}) where its "
                f"listing says {remote.size}; the mirror is inconsistent, try again later"
            )
        return Entry(remote, pointer, blob=self.storage / "blobs" / meta.etag, url=meta.location)

    @contextmanager
    def locked(self, e: Entry) -> Iterator[None]:
        """The lock hf_hub_download holds while it writes this blob: one writer per blob."""
        assert e.blob is not None
        lock = self.root / ".locks" / self.storage.name / f"{e.blob.name}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with WeakFileLock(lock):
            yield

    def download(self, e: Entry, progress: PullProgress) -> Hashes:
        """Fetch the rest of `e` into its partial file; the hashes of the whole file."""
        assert e.blob is not None and e.url is not None
        e.partial.parent.mkdir(parents=True, exist_ok=True)
        have = _trim(e.partial, e.remote.size)
        digest = self.hash_file(e.partial, have, e.remote)
        headers = build_hf_headers()  # the token (HF_TOKEN or a login), never logged
        if urlsplit(e.url).netloc != urlsplit(self.endpoint).netloc:
            headers.pop("authorization", None)  # a CDN's signed URL: as huggingface_hub does
        fd = os.open(e.partial, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            os.lseek(fd, 0, os.SEEK_END)
            with _unchunked(), _HashingFile(fd, digest) as sink:
                http_get(
                    e.url, sink, resume_size=have, headers=headers, expected_size=e.remote.size,
                    displayed_filename=e.remote.path, tqdm_class=progress.tqdm_class(),
                )
        finally:
            os.close(fd)
        if sink.stale:  # the server ignored Range and the file was rewritten from a middle point
            return self.hash_file(e.partial, e.remote.size, e.remote)
        return sink.digest

    def promote(self, e: Entry) -> None:
        """The verified partial becomes the blob (under the blob's lock)."""
        if e.partial.exists():
            os.replace(e.partial, e.blob)

    def link(self, e: Entry, revision: str) -> Path:
        """hf_hub_download links the blob into the snapshot (it finds the blob: no bytes move).
        Called without the blob's lock, which hf_hub_download takes itself."""
        if e.pointer.is_symlink() and not e.pointer.exists():
            e.pointer.unlink()  # a dangling link from a deleted blob
        path = hf_hub_download(
            self.repo, e.remote.path, revision=self.commit, cache_dir=self.root, endpoint=self.endpoint
        )
        self.remember(revision)
        return Path(path)

    def remember(self, revision: str) -> None:
        """refs/<revision> -> commit, as hf_hub_download writes it, so offline lookups of the
        branch (HF_HUB_OFFLINE=1, here or in other tools) find this snapshot."""
        if revision == self.commit:
            return
        ref = self.storage / "refs" / revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        if not ref.is_file() or ref.read_text() != self.commit:
            ref.write_text(self.commit)

    def discard(self, e: Entry) -> None:
        """Delete a corrupted file: the partial, the blob and the snapshot link to it, so the
        next pull downloads it again."""
        blob = e.blob or (e.pointer.resolve() if e.pointer.exists() else None)
        if blob is not None:
            blob.with_name(blob.name + ".incomplete").unlink(missing_ok=True)
            blob.unlink(missing_ok=True)
        if e.pointer.is_symlink() or e.pointer.exists():
            e.pointer.unlink()

    def hash_file(self, path: Path, n: int, remote: RemoteFile) -> Hashes:
        """The hashes of the first `n` bytes of `path` (all of it, or a partial's kept part),
        read once, in large blocks."""
        digest, left = Hashes(remote.size, git=remote.sha256 is None), n
        if n:
            buf = bytearray(BLOCK)
            view = memoryview(buf)
            with path.open("rb", buffering=0) as f:
                while left and (got := f.readinto(view[: min(BLOCK, left)])):
                    digest.update(view[:got])
                    left -= got
        self.read_back += n - left
        return digest


class _HashingFile:
    """The file object `http_get` writes to: every piece is hashed on its way to disk.

    Pieces (the socket's reads, ~64 KiB) are batched, without copying, into ~1 MiB groups that a
    thread beside the download hashes and writes with one `writev` (hashlib and writes release
    the GIL), so the socket is read while earlier bytes are hashed and written. A failure
    (a dropped connection) still writes every byte received: a resume starts after them."""

    DEPTH = 16  # groups in flight

    def __init__(self, fd: int, digest: Hashes):
        self.fd, self.digest = fd, digest
        self.stale = False  # True: the hash no longer matches the file (see truncate)
        self._group: list[bytes] = []
        self._grouped = 0
        self._queue: queue.Queue[list[bytes] | None] = queue.Queue(self.DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pull-writer", daemon=True)
        self._thread.start()

    def __enter__(self) -> _HashingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._send()
        self._queue.put(None)
        self._thread.join()
        self._raise()

    def write(self, data: bytes) -> int:
        self._raise()
        self._group.append(data)
        self._grouped += len(data)
        if self._grouped >= CHUNK:
            self._send()
        return len(data)

    def tell(self) -> int:
        self._drain()
        return os.lseek(self.fd, 0, os.SEEK_CUR)

    def seek(self, offset: int, whence: int = 0) -> int:
        self._drain()
        return os.lseek(self.fd, offset, whence)

    def truncate(self, size: int | None = None) -> int:
        """http_get truncates when a server answers a Range request with the whole file."""
        self._drain()
        size = os.lseek(self.fd, 0, os.SEEK_CUR) if size is None else size
        os.ftruncate(self.fd, size)
        self.stale = True  # rare (a server that ignores Range): the file is hashed again at the end
        return size

    def flush(self) -> None:
        self._drain()

    def _send(self) -> None:
        if self._group:
            self._queue.put(self._group)
            self._group, self._grouped = [], 0

    def _run(self) -> None:
        while True:
            group = self._queue.get()
            try:
                if group is None:
                    return
                if self._error is None:
                    for piece in group:
                        self.digest.update(piece)
                    _write_all(self.fd, group)
            except BaseException as e:  # disk full, I/O error: the download stops at the next write
                self._error = e
            finally:
                self._queue.task_done()

    def _drain(self) -> None:
        self._send()
        self._queue.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


def _write_all(fd: int, pieces: list[bytes]) -> None:
    """`writev` until every byte is written (a write may be short)."""
    views = [memoryview(p) for p in pieces]
    while views:
        n = os.writev(fd, views)
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]


@contextmanager
def _unchunked() -> Iterator[None]:
    """http_get re-chunks the response into DOWNLOAD_CHUNK_SIZE pieces (10 MiB) through a BytesIO,
    copying every byte twice more (and losing the unfinished piece when a connection drops): on
    loopback it made the download 2.6x slower (1.2 s vs 0.47 s for 491 MB to /dev/null). None
    hands over the socket's reads as they are; _HashingFile groups them without copying."""
    saved, constants.DOWNLOAD_CHUNK_SIZE = constants.DOWNLOAD_CHUNK_SIZE, None
    try:
        yield
    finally:
        constants.DOWNLOAD_CHUNK_SIZE = saved


def _trim(partial: Path, size: int) -> int:
    """Bytes of `partial` to resume from; a partial longer than the file cannot be right."""
    try:
        have = partial.stat().st_size
    except FileNotFoundError:
        return 0
    if have > size:
        partial.unlink()
        return 0
    return have
