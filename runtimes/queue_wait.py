"""How long a new request would wait for a slot: one estimator for everyone who asks.

The engine answers a full queue with Retry-After from it, and the router spills a request
to the cloud when the local wait it gives is over the configured bound. Both read the same
formula over the same kind of measurement: requests ahead, per slot, times a moving average
of how long a request takes from arrival to its last token.
"""

from __future__ import annotations

import threading


class QueueWait:
    """Requests ahead per slot x an exponential moving average of request durations."""

    def __init__(self, *, alpha: float = 0.2, initial_s: float | None = None):
        self.alpha = alpha
        self._mean_s = initial_s  # None: nothing measured yet, so no grounds to predict a wait
        self._lock = threading.Lock()

    @property
    def mean_s(self) -> float | None:
        return self._mean_s

    def observe(self, duration_s: float) -> None:
        """Feed the duration of one finished request."""
        with self._lock:
            m = self._mean_s
            self._mean_s = duration_s if m is None else m + self.alpha * (duration_s - m)

    def estimate_s(self, ahead: int, slots: int) -> float:
        """Seconds until a slot frees for a request with `ahead` requests (itself included)
        before it; 0 before anything was measured."""
        m = self._mean_s
        return 0.0 if m is None else ahead * m / max(1, slots)
