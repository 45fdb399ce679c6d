"""Shared fixtures: the CLI as a user runs it, and the shared ML-1M folder when present."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
