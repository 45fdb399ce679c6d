"""Typed Python client for the LogitRec gateway: recommendations over gRPC, no torch needed."""

from logitrec_client._version import __version__
from logitrec_client.aio import AsyncRecommenderClient
from logitrec_client.client import RecommenderClient
from logitrec_client.config import (
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT_S,
    NO_RETRIES,
    Keepalive,
    RetryPolicy,
    TlsConfig,
)
from logitrec_client.errors import (
    DeadlineExceeded,
    InvalidRequest,
    LogitRecError,
    NotFound,
    Overloaded,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from logitrec_client.queries import Event, Filter, RecommendQuery, Rerank
from logitrec_client.results import (
    Contribution,
    HealthStatus,
    ModelInfo,
    Recommendation,
    Recommendations,
    ScoredItem,
    Scores,
    Timings,
)

__all__ = [
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT_S",
    "NO_RETRIES",
    "AsyncRecommenderClient",
    "Contribution",
    "DeadlineExceeded",
    "Event",
    "Filter",
    "HealthStatus",
    "InvalidRequest",
    "Keepalive",
    "LogitRecError",
    "ModelInfo",
    "NotFound",
    "Overloaded",
    "PermissionDenied",
    "RecommendQuery",
    "Recommendation",
    "Recommendations",
    "RecommenderClient",
    "Rerank",
    "RetryPolicy",
    "ScoredItem",
    "Scores",
    "Timings",
    "TlsConfig",
    "Unauthenticated",
    "Unavailable",
    "__version__",
]
