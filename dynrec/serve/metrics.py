"""Server metrics for GET /metrics, kept by prometheus_client in a registry owned by one app.

Each app gets its own `CollectorRegistry` (not the process-wide default), so several apps in one process
(the tests) keep separate counts. Endpoint labels are the routes the app serves (anything else is
"other"), so a client cannot grow the label set.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format every Prometheus server reads
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
disable_created_metrics()  # no `*_created` timestamp series: they double the page and nobody graphs them


class Metrics:
    """Request counts by endpoint and status, request latency, model batch sizes and times, queue depth."""

    def __init__(self, endpoints: tuple[str, ...], queue_depth: Callable[[], int] = lambda: 0) -> None:
        self.endpoints = set(endpoints)
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("dynrec_requests", "HTTP requests answered, by endpoint and status code.",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("dynrec_request_seconds", "Time from request start to response end, by endpoint.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("dynrec_batch_size", "Requests per model forward pass.",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_seconds = Histogram("dynrec_batch_seconds", "Model time per forward pass (scoring and top-k).",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        Gauge("dynrec_queue_depth", "Requests waiting for the model now.",
              registry=self.registry).set_function(queue_depth)
        self.answers = Counter("dynrec_recommendations", "Answers of /recommend by the mode that produced them.",
                               ["mode"], registry=self.registry)

    def endpoint(self, path: str) -> str:
        return path if path in self.endpoints else "other"

    def request(self, path: str, status: int, seconds: float) -> None:
        endpoint = self.endpoint(path)
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def answer(self, mode: str) -> None:
        self.answers.labels(mode).inc()

    def render(self) -> bytes:
        """Every metric in the Prometheus text format 0.0.4."""
        return generate_latest(self.registry)
