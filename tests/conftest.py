"""Shared fixtures: the CLI as a user runs it, and the shared ML-1M folder when present."""

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from logitrec.processes import stop

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ML1M = REPO.parent / "shared" / "data" / "ml-1m"


def run_cli(*args, check: bool = True) -> subprocess.CompletedProcess:
    """Run `logitrec ARGS` in a subprocess, exactly as a user would."""
    result = subprocess.run(
        [sys.executable, "-m", "logitrec", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"logitrec {args} failed ({result.returncode}):\n{result.stderr}")
    return result


def prepare_small(source, out, *args) -> subprocess.CompletedProcess:
    """`logitrec data prepare` for tiny test files: no k-core minimums, no progress output."""
    return run_cli(
        "data",
        "prepare",
        source,
        "--out",
        out,
        "--min-user-interactions",
        1,
        "--min-item-interactions",
        1,
        "-q",
        *args,
    )


@pytest.fixture
def ml1m_dir() -> Path:
    """The shared ML-1M folder (LOGITREC_ML1M overrides where to look), or a skip."""
    folder = Path(os.environ.get("LOGITREC_ML1M", DEFAULT_ML1M))
    if not (folder / "ml-1m.txt").is_file():
        pytest.skip(f"shared ML-1M data not found at {folder} (set LOGITREC_ML1M)")
    return folder


# A small synthetic catalog with user context and titles, and two quickly trained scratch models
# on it (different seeds, so their outputs differ): shared by the export, Triton and serving tests.
TINY_TRAIN = (
    "--epochs",
    3,
    "--max-length",
    16,
    "--hidden-size",
    32,
    "--batch-size",
    64,
    "--warmup-steps",
    5,
    "-q",
)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    run_cli("data", "synth", "--out", root / "raw", "--users", 300, "--items", 60)
    run_cli("data", "prepare", root / "raw", "--out", root / "ds", "-q")
    return root / "ds"


@pytest.fixture(scope="session")
def tiny_checkpoints(tiny_dataset, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("tiny-checkpoints")
    checkpoints = []
    for seed in (1, 2):
        out = root / f"seed{seed}"
        run_cli("train", "--data", tiny_dataset, "--out", out, "--seed", seed, *TINY_TRAIN)
        checkpoints.append(out)
    return checkpoints


def spawn_gateway(repository, scratch: Path, *args) -> tuple[subprocess.Popen, Path, Path]:
    """Start `logitrec serve` on free ports without waiting: (process, ready file, log file)."""
    ready = Path(scratch) / "ready.json"
    log_path = Path(scratch) / "gateway.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "logitrec", "serve", "--repository", str(repository),
             "--port", "0", "--metrics-port", "0", "--ready-file", str(ready),
             *map(str, args)],  # a later --port in args wins (click keeps the last)
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    return process, ready, log_path


stop_process = stop  # tests stop gateway processes as the product stops Triton


@contextlib.contextmanager
def running_gateway(repository, *args, timeout: float = 60.0):
    """`logitrec serve` in a subprocess on free ports; yields (grpc target, metrics URL, process).

    Ready means the gateway wrote its --ready-file (models loaded and warmed up); a gateway that
    dies or takes longer than `timeout` fails the test with its log.
    """
    with tempfile.TemporaryDirectory() as scratch:
        process, ready, log_path = spawn_gateway(repository, Path(scratch), *args)
        try:
            deadline = time.monotonic() + timeout
            while not ready.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"gateway did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.1)
            ports = json.loads(ready.read_text())
            yield (
                f"127.0.0.1:{ports['port']}",
                f"http://127.0.0.1:{ports['metrics_port']}/metrics",
                process,
            )
        finally:
            stop_process(process)
