"""Shared fixtures: the CLI as a user runs it, and the shared ML-1M folder when present."""

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from logitrec import gateway_process
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


@pytest.fixture(scope="session")
def tiny_repository(tiny_checkpoints, tmp_path_factory) -> Path:
    """The first tiny checkpoint exported once (model "tiny", version 1, Triton's Python-backend
    configs, which the embedded gateway serves as well). Shared: tests only read it, and a test
    that adds versions works on a copy (`copy_repository`)."""
    folder = tmp_path_factory.mktemp("tiny-repository") / "models"
    run_cli(
        "export", "--checkpoint", tiny_checkpoints[0], "--repository", folder, "--name", "tiny",
        "--triton-backend", "python",
    )  # fmt: skip
    return folder


def copy_repository(repository: Path, into: Path) -> Path:
    """A private copy of an exported repository, for tests that change it."""
    return Path(shutil.copytree(repository, Path(into) / "models"))


def spawn_gateway(repository, scratch: Path, *args) -> tuple[subprocess.Popen, Path, Path]:
    """Start `logitrec serve` on free ports without waiting: (process, ready file, log file)."""
    gateway = gateway_process.spawn_gateway(repository, scratch, *args)
    return gateway.process, gateway.ready_file, gateway.log_path


stop_process = stop  # tests stop gateway processes as the product stops Triton


@contextlib.contextmanager
def running_gateway(repository, *args, timeout: float = 60.0):
    """`logitrec serve` in a subprocess on free ports; yields (grpc target, metrics URL, process).

    A gateway that dies or is not ready within `timeout` fails the test with its log.
    """
    with gateway_process.running_gateway(repository, *args, timeout=timeout) as gateway:
        yield gateway.target, gateway.metrics_url, gateway.process
