"""Prometheus metrics for one app: its own CollectorRegistry, so two apps in one
process (tests, an appliance serving two ports) never share or clash counters.

Slot and queue gauges are read from `runtime.stats()` at scrape time rather than
pushed, so they are never stale.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from appliance.api.live import LiveWindow
from appliance.api.registry import ModelRegistry
from runtimes.base import Usage

log = logging.getLogger("appliance.api")

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)


class _RuntimeStatsCollector(Collector):
    """Slots busy/total, queue depth and loaded state per model, read at scrape time."""

    def __init__(self, models: ModelRegistry):
        self.models = models

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        total = GaugeMetricFamily(
            "appliance_slots_total", "Sequences a model can run at once", labels=["model"]
        )
        busy = GaugeMetricFamily("appliance_slots_busy", "Sequences running now", labels=["model"])
        queue = GaugeMetricFamily("appliance_queue_depth", "Requests waiting for a slot", labels=["model"])
        loaded = GaugeMetricFamily("appliance_model_loaded", "1 when the model is ready", labels=["model"])
        drafted = CounterMetricFamily(
            "appliance_spec_drafted_tokens", "Speculative draft tokens verified", labels=["model"]
        )
        accepted = CounterMetricFamily(
            "appliance_spec_accepted_tokens", "Speculative draft tokens accepted", labels=["model"]
        )
        rate = GaugeMetricFamily(
            "appliance_spec_acceptance_rate", "Accepted / drafted tokens since load", labels=["model"]
        )
        for rt in self.models.runtimes():
            try:
                s = rt.stats()
            except Exception:
                log.exception("stats() failed for %s", rt.id)
                continue
            total.add_metric([rt.id], s.slots_total)
            busy.add_metric([rt.id], s.slots_busy)
            queue.add_metric([rt.id], s.queue_depth)
            loaded.add_metric([rt.id], 1.0 if s.loaded else 0.0)
            drafted.add_metric([rt.id], s.spec_drafted_tokens)
            accepted.add_metric([rt.id], s.spec_accepted_tokens)
            if s.spec_drafted_tokens:
                rate.add_metric([rt.id], s.spec_accepted_tokens / s.spec_drafted_tokens)
        yield from (total, busy, queue, loaded, drafted, accepted, rate)


class Metrics:
    """The counters and histograms the API updates, plus the runtime gauges."""

    def __init__(self, models: ModelRegistry):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "appliance_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.prompt_tokens = Counter(
            "appliance_prompt_tokens", "Prompt tokens processed", ["model"], registry=r
        )
        self.completion_tokens = Counter(
            "appliance_completion_tokens", "Tokens generated", ["model"], registry=r
        )
        self.cached_tokens = Counter(
            "appliance_cached_prompt_tokens",
            "Prompt tokens served from the prefix cache",
            ["model"],
            registry=r,
        )
        self.ttft = Histogram(
            "appliance_time_to_first_token_seconds",
            "Request arrival to first token",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "appliance_inter_token_latency_seconds",
            "Time between streamed tokens",
            ["model"],
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "appliance_requests_in_flight", "Completions being answered", ["model"], registry=r
        )
        r.register(_RuntimeStatsCollector(models))
        self.live = LiveWindow()  # the last minutes, per second, for the console's live panel

    def record_usage(self, model: str, usage: Usage) -> None:
        self.prompt_tokens.labels(model).inc(usage.prompt_tokens)
        self.completion_tokens.labels(model).inc(usage.completion_tokens)
        self.cached_tokens.labels(model).inc(usage.cached_tokens)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
