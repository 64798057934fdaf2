"""A GGUF file's header: its metadata and tensor table, read without touching the weights.

The type codes, magic and quant names come from the `gguf` package (llama.cpp's own Python
library). Its `GGUFReader` is not used for the header: it builds numpy views per array item,
which takes ~10 s on this 2-core box for a 150k-token vocabulary, far more than copying the
file; this reader walks the same layout with `struct` over an mmap and skips long arrays,
keeping only their length (the vocabulary size is all the planner needs from them).
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import GGUF_MAGIC, GGMLQuantizationType, GGUFValueType, LlamaFileType

KEEP_ARRAY_ITEMS = 4096  # longer arrays (token lists, merges, scores) keep only their length

_SCALARS: dict[int, str] = {
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h", GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f", GGUFValueType.BOOL: "?", GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d",
}


class NotGguf(ValueError):
    """The file is not a readable GGUF (wrong magic, unsupported version, truncated)."""


@dataclass(frozen=True)
class LongArray:
    """An array too long to keep: its item type and length."""

    item_type: int
    length: int

    def __len__(self) -> int:
        return self.length


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: the row length first
    type: int  # GGMLQuantizationType value

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass
class GgufHeader:
    version: int
    metadata: dict[str, Any] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise NotGguf("no general.architecture in the GGUF metadata")
        return arch

    def arch_key(self, key: str, default: Any = None) -> Any:
        """`{arch}.{key}`, e.g. arch_key("attention.head_count")."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value.strip() else None

    @property
    def quant(self) -> str:
        """The file's quant preset (Q4_K_M, ...) from `general.file_type`, else its dominant tensor type."""
        return quant_name(self.metadata.get("general.file_type"), self.tensors)


def quant_name(file_type: Any, tensors: list[TensorInfo]) -> str:
    """llama.cpp's LLAMA_FTYPE name without its MOSTLY_/ALL_ prefix; GUESSED or missing falls back
    to the tensor type holding most weights."""
    try:
        ftype = LlamaFileType(int(file_type))
    except (TypeError, ValueError):
        ftype = LlamaFileType.GUESSED
    if ftype != LlamaFileType.GUESSED:
        return ftype.name.removeprefix("MOSTLY_").removeprefix("ALL_")
    weights: dict[int, int] = {}
    for t in tensors:
        if len(t.shape) >= 2:
            weights[t.type] = weights.get(t.type, 0) + t.n_elements
    if not weights:
        return "unknown"
    return GGMLQuantizationType(max(weights, key=weights.__getitem__)).name


def read_header(path: Path) -> GgufHeader:
    """Parse the metadata and tensor table of the GGUF at `path`; NotGguf when it is not one."""
    with open(path, "rb") as f:
        if f.read(4) != struct.pack("<I", GGUF_MAGIC):
            raise NotGguf(f"{path} is not a GGUF file (it does not start with the GGUF magic)")
        try:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return _Parser(mm).header()
        except (struct.error, IndexError, UnicodeDecodeError, ValueError, OverflowError) as e:
            if isinstance(e, NotGguf):
                raise NotGguf(f"{path}: {e}") from None
            raise NotGguf(f"{path}: truncated or corrupt GGUF header ({e})") from None


class _Parser:
    """Walks the header layout: magic, version, counts, key/value pairs, tensor infos."""

    def __init__(self, buf: mmap.mmap):
        self.buf = buf
        self.pos = 4
        version = struct.unpack_from("<I", buf, 4)[0]
        # A big-endian file reads as a huge little-endian version (gguf's reader tests the same).
        self.endian = ">" if version & 0xFFFF == 0 else "<"
        self.version = self.read("I")
        if self.version < 2:
            raise NotGguf(f"GGUF version {self.version} is not supported (v2 and later are)")

    def read(self, fmt: str) -> Any:
        value = struct.unpack_from(self.endian + fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.read("Q")
        end = self.pos + n
        if end > len(self.buf):
            raise NotGguf("truncated or corrupt GGUF header: a string runs past the end of the file")
        text = self.buf[self.pos : end].decode("utf-8")
        self.pos = end
        return text

    def skip_strings(self, count: int) -> None:
        """Step over `count` strings (a vocabulary: 150k of them), reading only their lengths."""
        unpack, buf, pos = struct.Struct(self.endian + "Q").unpack_from, self.buf, self.pos
        for _ in range(count):
            pos += 8 + unpack(buf, pos)[0]
        self.pos = pos

    def value(self, vtype: int) -> Any:
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype == GGUFValueType.ARRAY:
            return self.array()
        fmt = _SCALARS.get(vtype)
        if fmt is None:
            raise NotGguf(f"unknown metadata value type {vtype}")
        return self.read(fmt)

    def array(self) -> list[Any] | LongArray:
        item_type, length = self.read("I"), self.read("Q")
        if length <= KEEP_ARRAY_ITEMS or item_type == GGUFValueType.ARRAY:
            return [self.value(item_type) for _ in range(length)]
        if item_type == GGUFValueType.STRING:
            self.skip_strings(length)
        else:
            fmt = _SCALARS.get(item_type)
            if fmt is None:
                raise NotGguf(f"unknown array item type {item_type}")
            self.pos += struct.calcsize(fmt) * length
        if self.pos > len(self.buf):
            raise NotGguf("truncated or corrupt GGUF header: an array runs past the end of the file")
        return LongArray(item_type, length)

    def tensor(self) -> TensorInfo:
        name = self.string()
        n_dims = self.read("I")
        shape = tuple(self.read("Q") for _ in range(n_dims))
        return TensorInfo(name, shape, self.read("I"))

    def header(self) -> GgufHeader:
        n_tensors, n_kv = self.read("Q"), self.read("Q")
        out = GgufHeader(self.version)
        for _ in range(n_kv):
            key = self.string()
            out.metadata[key] = self.value(self.read("I"))
        for _ in range(n_tensors):
            out.tensors.append(self.tensor())
            self.read("Q")  # the tensor's data offset: not needed to plan
        return out
