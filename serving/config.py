"""Gateway settings: one frozen dataclass from a TOML file's [serve] table, then CLI overrides."""

import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

from logitrec.errors import InputError
from logitrec.repository import VERSIONS_SERVED

BACKENDS = ("embedded", "triton")


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    repository: Path = Path("model_repository")
    model: str | None = None  # default model name; None: the only one in the repository
    backend: str = "embedded"  # embedded (ONNX Runtime in-process) | triton
    triton_url: str = "127.0.0.1:8001"
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int | None = 9464  # Prometheus /metrics over HTTP; None: off
    max_batch_size: int = 64  # with --backend triton: at most the models' exported max_batch_size
    max_wait_ms: float = 2.0  # how long a batch waits to fill once its first request arrived
    max_queue: int = 1024  # queued requests per model version before RESOURCE_EXHAUSTED
    candidate_count: int = 4096  # FAISS candidates scored exactly per request
    exact_below: int = 20_000  # catalogs smaller than this are always scored exactly
    exact: bool = False  # score every item for every request (the reference for recall)
    versions_served: int = VERSIONS_SERVED  # newest versions loaded per model, as Triton serves
    max_history: int = 10_000  # events per request; more is refused (INVALID_ARGUMENT)
    max_message_bytes: int = 8 * 1024 * 1024
    threads: int | None = None  # ONNX Runtime intra-op threads (None: its default)
    grace_seconds: float = 10.0  # drain time on shutdown


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
        if "repository" in table:
            table["repository"] = Path(table["repository"])
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
    for name in (
        "max_batch_size",
        "max_queue",
        "candidate_count",
        "max_history",
        "versions_served",
    ):
        if getattr(config, name) < 1:
            flag = name.replace("_", "-")
            raise InputError(f"--{flag}: expected a positive integer, got {getattr(config, name)}")
    if config.max_wait_ms < 0:
        raise InputError(f"--max-wait-ms: expected >= 0, got {config.max_wait_ms}")
    if not Path(config.repository).is_dir():
        raise InputError(f"{config.repository}: model repository not found (run `logitrec export`)")
