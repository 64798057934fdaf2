"""Why a pull from the Hugging Face hub did not happen: one type per cause, each message saying
what to do, so the CLI prints it as it is and `serve` can tell a user the exact fix."""

from __future__ import annotations

from appliance.units import MiB


class PullError(Exception):
    """A pull failed; the message says why and what to do."""


class GatedModel(PullError):
    """The repo needs a token (a gated license, or a private repo): 401/403 from the hub."""


class NotEnoughDisk(PullError):
    """The cache's filesystem has less free space than the bytes still to download."""

    def __init__(self, needed: int, free: int, where: str):
        super().__init__(
            f"not enough disk space in {where}: the pull needs {needed} bytes ({_mib(needed)}) more, "
            f"{free} bytes ({_mib(free)}) are free; free some space or point HF_HUB_CACHE at a larger disk"
        )
        self.needed, self.free, self.where = needed, free, where


class Corrupted(PullError):
    """A downloaded file's sha256 is not the one the hub (or catalog) gives; it was deleted."""


class NotInCache(PullError):
    """Offline (HF_HUB_OFFLINE=1) and the model is not in the Hugging Face cache."""


class AirGapped(PullError):
    """Air-gapped and no internal mirror is configured."""


class NoSuchQuant(PullError):
    """The repo has no file for the quant asked for, or nothing that fits this machine."""


def _mib(n: int) -> str:
    return f"{n / MiB:.1f} MiB"
