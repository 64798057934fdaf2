"""How sizes and token counts read on screen, in one place so every report prints them alike."""

from __future__ import annotations

MiB = 1024**2
GiB = 1024**3


def gib(n: float, *, unit: bool = True) -> str:
    """Bytes as binary gigabytes, one decimal: `gib(3 * 2**30)` -> "3.0 GiB" ("3.0" without unit)."""
    return f"{n / GiB:.1f}" + (" GiB" if unit else "")


def gb(n: float) -> str:
    """Bytes as decimal gigabytes, two decimals ("0.49 GB"): how bandwidth arithmetic reads."""
    return f"{n / 1e9:.2f} GB"


def kilo(n: int) -> str:
    """A token count in units of 1024: 32768 -> "32k", 1536 -> "1.5k"."""
    return f"{n // 1024}k" if n % 1024 == 0 else f"{n / 1024:.1f}k"
