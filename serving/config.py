"""Gateway settings: one frozen dataclass from a TOML file's [serve] table, then CLI overrides."""

import ipaddress
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from logitrec.errors import InputError
from logitrec.repository import DEFAULT_CANDIDATE_COUNT, VERSIONS_SERVED
from serving.rerank import RerankSettings

BACKENDS = ("embedded", "triton")
# Where the embedded backend's ONNX Runtime sessions and the FAISS index run (docs/gpu.md)
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    repository: Path = Path("model_repository")
    model: str | None = None  # default model name; None: the only one in the repository
    backend: str = "embedded"  # embedded (ONNX Runtime in-process) | triton
    triton_url: str = "127.0.0.1:8001"
    host: str = "127.0.0.1"
    port: int = 50051
    # Prometheus /metrics over plain HTTP on metrics_host (default: host):metrics_port. On unless
    # tokens are configured (then off unless asked for: it is unauthenticated); None: that default
    metrics: bool | None = None
    metrics_port: int | None = 9464  # None: off
    metrics_host: str | None = None
    reflection: bool | None = None  # gRPC server reflection; None: on unless tokens are configured
    max_batch_size: int = 64  # with --backend triton: at most the models' exported max_batch_size
    max_wait_ms: float = 2.0  # how long a batch waits to fill once its first request arrived
    max_queue: int = 4096  # queued requests per model version before RESOURCE_EXHAUSTED
    candidate_count: int = DEFAULT_CANDIDATE_COUNT  # FAISS candidates scored exactly per request
    # The index's search breadth (IVF nprobe / HNSW efSearch); None: what export calibrated for
    # its recall target (recorded in the manifest)
    search_breadth: int | None = None
    # Split the index into this many shards over contiguous slices of the catalog, searched in
    # parallel (logitrec.index_shards; Flat and IVF indexes); 1: the index as export wrote it
    index_shards: int = 1
    exact_below: int = 20_000  # catalogs smaller than this are always scored exactly
    exact: bool = False  # score every item for every request (the reference for recall)
    versions_served: int = VERSIONS_SERVED  # newest versions loaded per model, as Triton serves
    max_message_bytes: int = 8 * 1024 * 1024
    threads: int | None = None  # ONNX Runtime intra-op threads (None: its default)
    # ONNX Runtime's worker threads spin waiting for work between ops (its own default). Off
    # (ours), they sleep: the encoder shares the cores with gRPC, FAISS and the scorer, and
    # spinning took their time (1.56x the throughput without it on 2 cores, scratch ML-1M
    # model, benchmarks/results/serving_pipeline.md)
    ort_spinning: bool = False
    # auto: CUDA when the installed onnxruntime (and faiss) have it, else the CPU; cuda refuses
    # to start without it. tensorrt: ONNX Runtime's TensorRT provider ahead of CUDA (embedded)
    device: str = "auto"
    tensorrt: bool = False
    # Batches of one version computing at once: 2 lets batch n+1 encode while batch n is
    # retrieved and scored (see benchmarks/results/serving.md for what it pays on CPU)
    batches_in_flight: int = 1

    # -- per-request bounds, checked at the edge (INVALID_ARGUMENT) so no request stalls a batch
    max_history: int = 10_000  # events per request
    max_ids: int = 10_000  # ids in each of exclude_item_ids, allowed_item_ids, item_ids
    max_k: int = 1_000  # items per answer
    max_batch_requests: int = 1_024  # requests in one RecommendBatch (at most max_queue)
    max_batch_items: int = 100_000  # the sum of k over one RecommendBatch's requests
    # Explanations (explain: true): at most this k, requests per leave-one-out encoder batch
    # (each is about history-length rows), and requests queued in that lane per version
    max_explain_k: int = 20
    max_explain_batch: int = 4
    max_explain_queue: int = 64

    # -- re-ranking defaults (popularity_beta, mmr_lambda, category_cap, cap_field,
    # calibration; serving.rerank.RerankSettings): the TOML's [serve.rerank] table for every
    # model, [serve.rerank.MODEL] for one; a request's own settings override both
    rerank: dict = field(default_factory=dict)

    # -- overload: admit a request only if it can finish within its deadline, judged from the
    # recent batch times and the queue ahead of it; the rest are refused at once
    admission: bool = True
    # Calls the gRPC server takes in at once (health watches included); beyond that gRPC's core
    # refuses them with RESOURCE_EXHAUSTED before any Python runs, which is what keeps a
    # saturated gateway answering; 0: no limit
    max_concurrent_rpcs: int = 256
    default_deadline_seconds: float = 30.0  # for admission when the caller set no deadline

    # -- shutdown: SIGTERM turns health NOT_SERVING, keeps serving for drain_seconds (load
    # balancers notice), then refuses new calls (UNAVAILABLE) and finishes the admitted ones
    # within grace_seconds
    drain_seconds: float = 5.0
    grace_seconds: float = 10.0

    # -- model lifecycle: look for new complete versions every poll_seconds (0: only at start,
    # on SIGHUP and through the admin service)
    poll_seconds: float = 0.0
    # serve logitrec.admin.v1 (load/unload versions) on the same port; None: on when callers
    # authenticate (admin role) or the port is loopback-only, else off
    admin: bool | None = None

    # -- backend faults: every backend call times out (from the batch's earliest deadline,
    # at most backend_timeout_seconds); the backend is probed every backend_probe_seconds
    # and health follows it
    backend_timeout_seconds: float = 10.0
    backend_probe_seconds: float = 1.0

    # -- security (docs/security.md). TLS: certificate chain and key (PEM files); with
    # tls_client_ca, callers must present a certificate signed by it (mutual TLS). Plaintext
    # is for loopback binds; elsewhere it needs `insecure` (e.g. behind a TLS-terminating mesh).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    insecure: bool = False
    # Bearer tokens with roles (recommend, admin): a TOML file, and/or the environment variables
    # LOGITREC_RECOMMEND_TOKENS / LOGITREC_ADMIN_TOKENS; never on the command line
    tokens_file: Path | None = None
    # TLS files and the tokens file are read again when they change (checked this often; 0: only
    # on SIGHUP)
    credentials_poll_seconds: float = 5.0
    # TLS to Triton (needed when triton_url is not a loopback address, unless `insecure`)
    triton_tls: bool = False
    triton_root_certs: Path | None = None  # PEM CAs to trust (default: the system's)
    triton_client_cert: Path | None = None  # client certificate chain, for a Triton with mTLS
    triton_client_key: Path | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def loopback_only(self) -> bool:
        """Is the gRPC port reachable only from this machine?"""
        return is_loopback(self.host)


PATH_SETTINGS = (
    "repository",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "tokens_file",
    "triton_root_certs",
    "triton_client_cert",
    "triton_client_key",
)


def is_loopback(host: str) -> bool:
    """A bind or connect address that only this machine can use (a host name other than
    localhost counts as reachable from elsewhere: it cannot be known here)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_host(url: str) -> str:
    """The host of a host:port address ([v6]:port included)."""
    if url.startswith("["):
        return url[1 : url.find("]")]
    return url.rsplit(":", 1)[0] if url.count(":") == 1 else url


def load_config(path: Path | None, overrides: dict | None = None) -> ServeConfig:
    """Defaults <- the TOML file's [serve] table <- overrides (None values are ignored)."""
    config = ServeConfig()
    known = {f.name for f in fields(ServeConfig)}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: config file not found")
        try:
            table = tomllib.loads(path.read_text()).get("serve", {})
        except tomllib.TOMLDecodeError as error:
            raise InputError(f"{path}: not valid TOML ({error})") from None
        unknown = set(table) - known
        if unknown:
            raise InputError(f"{path}: unknown [serve] setting(s) {', '.join(sorted(unknown))}")
        for name in PATH_SETTINGS:
            if table.get(name) is not None:
                table[name] = Path(table[name])
        config = replace(config, **table)
    values = {k: v for k, v in (overrides or {}).items() if v is not None}
    config = replace(config, **values)
    validate(config)
    return config


def validate(config: ServeConfig) -> None:
    if config.backend not in BACKENDS:
        raise InputError(
            f"--backend: expected one of {', '.join(BACKENDS)}, got {config.backend!r}"
        )
    if config.device not in DEVICES:
        raise InputError(f"--device: expected one of {', '.join(DEVICES)}, got {config.device!r}")
    if config.tensorrt and config.backend != "embedded":
        raise InputError(
            "--tensorrt: for the embedded backend; Triton's accelerator is in its config.pbtxt "
            "(`logitrec export --device gpu --tensorrt`)"
        )
    for name in (
        "max_batch_size",
        "max_queue",
        "index_shards",
        "candidate_count",
        "max_history",
        "versions_served",
        "max_ids",
        "max_k",
        "max_batch_requests",
        "max_batch_items",
        "batches_in_flight",
        "max_explain_k",
        "max_explain_batch",
        "max_explain_queue",
    ):
        if getattr(config, name) < 1:
            flag = name.replace("_", "-")
            raise InputError(f"--{flag}: expected a positive integer, got {getattr(config, name)}")
    for name in (
        "drain_seconds",
        "grace_seconds",
        "poll_seconds",
        "max_concurrent_rpcs",
        "credentials_poll_seconds",
    ):
        if getattr(config, name) < 0:
            raise InputError(
                f"--{name.replace('_', '-')}: expected >= 0, got {getattr(config, name)}"
            )
    for name in ("default_deadline_seconds", "backend_timeout_seconds", "backend_probe_seconds"):
        if getattr(config, name) <= 0:
            raise InputError(
                f"--{name.replace('_', '-')}: expected > 0, got {getattr(config, name)}"
            )
    if config.search_breadth is not None and config.search_breadth < 1:
        raise InputError(f"--search-breadth: expected >= 1, got {config.search_breadth}")
    if config.exact_below < 0:
        raise InputError(f"--exact-below: expected >= 0, got {config.exact_below}")
    if config.max_batch_requests > config.max_queue:
        raise InputError(
            f"--max-batch-requests ({config.max_batch_requests}) must not exceed --max-queue "
            f"({config.max_queue}): one RecommendBatch would fill the queue"
        )
    if config.max_wait_ms < 0:
        raise InputError(f"--max-wait-ms: expected >= 0, got {config.max_wait_ms}")
    if not Path(config.repository).is_dir():
        raise InputError(f"{config.repository}: model repository not found (run `logitrec export`)")
    validate_rerank_defaults(config.rerank)
    validate_security(config)


def rerank_defaults(table: dict, model: str) -> dict:
    """The re-ranking settings a model starts from: [serve.rerank], then [serve.rerank.MODEL]."""
    shared = {k: v for k, v in table.items() if not isinstance(v, dict)}
    return {**shared, **table.get(model, {})}


def validate_rerank_defaults(table: dict) -> None:
    known = {f.name for f in fields(RerankSettings)}
    scopes = {"[serve.rerank]": {k: v for k, v in table.items() if not isinstance(v, dict)}}
    scopes.update({f"[serve.rerank.{k}]": v for k, v in table.items() if isinstance(v, dict)})
    for scope, settings in scopes.items():
        unknown = set(settings) - known
        if unknown:
            raise InputError(
                f"{scope}: unknown setting(s) {', '.join(sorted(unknown))} "
                f"(expected: {', '.join(sorted(known))})"
            )
        try:
            RerankSettings(**rerank_defaults(table, "") | settings).validate()
        except (TypeError, ValueError) as error:
            raise InputError(f"{scope}: {error}") from None


def validate_security(config: ServeConfig) -> None:
    """Refuse settings that would serve in the clear where others can listen, or half a TLS
    setup; files are checked here so a typo is one clear line, not a failed handshake later."""
    if (config.tls_cert is None) != (config.tls_key is None):
        raise InputError("--tls-cert and --tls-key: give both (certificate chain and its key)")
    if config.tls_client_ca is not None and not config.tls:
        raise InputError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS)")
    if not config.tls and not config.loopback_only and not config.insecure:
        raise InputError(
            f"--host {config.host}: a non-loopback address needs TLS (--tls-cert, --tls-key); "
            "to serve plaintext there anyway (e.g. behind a TLS-terminating proxy or mesh), "
            "pass --insecure"
        )
    remote_triton = config.backend == "triton" and not is_loopback(url_host(config.triton_url))
    if remote_triton and not config.triton_tls and not config.insecure:
        raise InputError(
            f"--triton-url {config.triton_url}: a remote Triton needs --triton-tls "
            "(with --triton-root-certs for a private CA), or --insecure"
        )
    if (config.triton_client_cert is None) != (config.triton_client_key is None):
        raise InputError("--triton-client-cert and --triton-client-key: give both")
    if (config.triton_root_certs or config.triton_client_cert) and not config.triton_tls:
        raise InputError("--triton-root-certs/--triton-client-cert need --triton-tls")
    for name in PATH_SETTINGS[1:]:
        path = getattr(config, name)
        if path is not None and not Path(path).is_file():
            raise InputError(f"--{name.replace('_', '-')} {path}: file not found")


@dataclass(frozen=True)
class Exposure:
    """What the gateway serves besides the recommender (its health is always served)."""

    admin: bool  # logitrec.admin.v1 on the gRPC port
    reflection: bool
    metrics: bool  # Prometheus /metrics over HTTP


def exposure(config: ServeConfig, authenticating: bool) -> Exposure:
    """The settings as given, or their defaults: with tokens, admin on (behind its role) and
    reflection and the unauthenticated /metrics off; without tokens, admin only where nobody
    else can reach the port."""
    admin = (authenticating or config.loopback_only) if config.admin is None else config.admin
    reflection = not authenticating if config.reflection is None else config.reflection
    metrics = not authenticating if config.metrics is None else config.metrics
    return Exposure(admin, reflection, metrics and config.metrics_port is not None)


def exposure_warnings(config: ServeConfig, exposed: Exposure, authenticating: bool) -> list[str]:
    """What an operator must hear at every start about who can reach what."""
    if config.loopback_only:
        return []
    warnings = []
    if not config.tls:
        warnings.append(
            f"PLAINTEXT on {config.host}:{config.port} (--insecure): requests, answers and "
            "tokens can be read and changed on the network; only behind a TLS-terminating "
            "proxy or mesh"
        )
    if not authenticating:
        warnings.append(f"no tokens configured: anyone who reaches {config.host} is answered")
        if exposed.admin:
            warnings.append(
                f"the admin service (load/unload models) is open to anyone who reaches "
                f"{config.host}: configure tokens (--tokens-file) or --no-admin"
            )
    return warnings
