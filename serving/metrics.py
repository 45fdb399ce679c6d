"""Prometheus metrics of the gateway (units in the names, as the house style asks)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.request_duration = Histogram(
            "logitrec_request_duration_seconds",
            "Time from receiving a request to answering it.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage_duration = Histogram(
            "logitrec_stage_duration_seconds",
            "Time per pipeline stage of a batch (queue is per request).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "logitrec_batch_size",
            "Requests per executed batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "logitrec_queue_depth", "Requests waiting for a batch.", registry=self.registry
        )
        self.failures = Counter(
            "logitrec_request_failures_total",
            "Failed requests by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.denied = Counter(
            "logitrec_denied_total",
            "Calls refused by authentication (UNAUTHENTICATED) or role (PERMISSION_DENIED).",
            ["status"],
            registry=self.registry,
        )
        self.candidates_short = Counter(
            "logitrec_candidates_short_total",
            "Pruned requests for which the index returned fewer candidates than asked for.",
            registry=self.registry,
        )
        self.filters_widened = Counter(
            "logitrec_filters_widened_total",
            "Filtered requests whose pruned candidates held fewer than k matches, so the whole "
            "catalog was searched.",
            registry=self.registry,
        )
        self.explanations = Counter(
            "logitrec_explanations_total",
            "Requests answered with explanations (their own batch lane).",
            registry=self.registry,
        )
        self.reranked = Counter(
            "logitrec_reranked_total",
            "Requests whose candidates were re-ranked (popularity, diversity, calibration).",
            registry=self.registry,
        )
