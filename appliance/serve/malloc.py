"""Fewer glibc malloc arenas for the server process.

glibc gives each thread that allocates under contention its own arena, up to 8 per core, and
memory freed into an arena mostly stays resident. A server's threads (the event loop's workers,
the engine's scheduler, the prefix store's writer) can each keep one. Two arenas are plenty for
a process whose hot paths run under the GIL or inside ggml's own buffers. A precaution, not
the fix for issue 15's RSS growth under load (that was llama.cpp's logits buffer; see
`Context.warmup`): the load runs that passed measured it in place. `MALLOC_ARENA_MAX` set by
the operator wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # glibc's mallopt parameter number
ARENAS = 2


def limit_arenas(n: int = ARENAS) -> bool:
    """Cap glibc's arenas at `n`; False where that is not glibc or the operator chose."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)  # glibc only (not macOS, not musl)
    if mallopt is None:
        return False
    return bool(mallopt(M_ARENA_MAX, n))
