"""Server metrics in the Prometheus text exposition format (version 0.0.4).

Written here because no Prometheus client library is a dependency: counters and histograms are plain
numbers updated on the event loop thread, rendered on each GET /metrics. Endpoint labels are the routes
the app serves (anything else is "other"), so a client cannot grow the label set.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    escaped = (k + '="' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
               for k, v in labels.items())
    return "{" + ",".join(escaped) + "}"


def _number(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value)) if isinstance(value, float) else str(value)


class Histogram:
    """Cumulative-bucket histogram of observed values."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # per bucket (not cumulative); the last is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def lines(self, name: str, labels: dict[str, str]) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(f"{name}_bucket{_labels({**labels, 'le': _number(bound)})} {running}")
        out.append(f"{name}_sum{_labels(labels)} {_number(self.sum)}")
        out.append(f"{name}_count{_labels(labels)} {running}")
        return out


class Metrics:
    """Request counts by endpoint and status, request latency, model batch sizes and times, queue depth."""

    def __init__(self, endpoints: tuple[str, ...], queue_depth: Callable[[], int] = lambda: 0) -> None:
        self.endpoints = set(endpoints)
        self.queue_depth = queue_depth
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.batch_seconds = Histogram(LATENCY_BUCKETS)
        self.answers: dict[str, int] = {}  # /recommend answers by the mode that produced them

    def endpoint(self, path: str) -> str:
        return path if path in self.endpoints else "other"

    def request(self, path: str, status: int, seconds: float) -> None:
        endpoint = self.endpoint(path)
        self.requests[(endpoint, status)] = self.requests.get((endpoint, status), 0) + 1
        self.latency.setdefault(endpoint, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def answer(self, mode: str) -> None:
        self.answers[mode] = self.answers.get(mode, 0) + 1

    def render(self) -> str:
        lines = ["# HELP dynrec_requests_total HTTP requests answered, by endpoint and status code.",
                 "# TYPE dynrec_requests_total counter"]
        for (endpoint, status), count in sorted(self.requests.items()):
            lines.append(f"dynrec_requests_total{_labels({'endpoint': endpoint, 'status': str(status)})} {count}")
        lines += ["# HELP dynrec_request_seconds Time from request start to response end, by endpoint.",
                  "# TYPE dynrec_request_seconds histogram"]
        for endpoint, histogram in sorted(self.latency.items()):
            lines += histogram.lines("dynrec_request_seconds", {"endpoint": endpoint})
        lines += ["# HELP dynrec_batch_size Requests per model forward pass.", "# TYPE dynrec_batch_size histogram",
                  *self.batch_size.lines("dynrec_batch_size", {}),
                  "# HELP dynrec_batch_seconds Model time per forward pass (scoring and top-k).",
                  "# TYPE dynrec_batch_seconds histogram", *self.batch_seconds.lines("dynrec_batch_seconds", {}),
                  "# HELP dynrec_queue_depth Requests waiting for the model now.", "# TYPE dynrec_queue_depth gauge",
                  f"dynrec_queue_depth {self.queue_depth()}",
                  "# HELP dynrec_recommendations_total Answers of /recommend by the mode that produced them.",
                  "# TYPE dynrec_recommendations_total counter"]
        for mode, count in sorted(self.answers.items()):
            lines.append(f"dynrec_recommendations_total{_labels({'mode': mode})} {count}")
        return "\n".join(lines) + "\n"
