"""The Helm chart's topology run for real, on CPU: two gateways with the chart's own config
(Triton backend, one version served, rescanning the repository) share one Triton that polls the
repository itself. A version exported meanwhile reaches both gateways with no failed request,
and neither goes back to the old version (docs/deployment.md, "Why Triton polls")."""

import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from conftest import copy_repository, run_cli
from logitrec_client import RecommenderClient

from logitrec import repository as layout
from logitrec.gateway_process import running_gateway
from logitrec.triton_local import run_triton, triton_venv

if not (triton_venv() / "bin" / "python").exists():
    pytest.skip(
        f"no Triton environment at {triton_venv()} (run `make install`)", allow_module_level=True
    )

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (dev extra) not installed")

CHART = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "logitrec"
ROLL_IN_SECONDS = 120  # export, Triton's poll and load, each gateway's rescan and warm-up


def chart_gateway_config(folder: Path) -> Path:
    """The gateway.toml the chart renders (rescanning every second instead of 30)."""
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render({"gateway": {"pollSeconds": 1}}, name="recs", namespace="test")
    configmap = yaml.safe_load(rendered["logitrec/templates/gateway-configmap.yaml"])
    path = folder / "gateway.toml"
    path.write_text(configmap["data"]["gateway.toml"])
    return path


def gateway_flags(config: Path, triton_url: str) -> tuple[str, ...]:
    """The chart's config, on this machine: loopback, Triton's real address, no drain wait
    (the repository and free ports come from running_gateway, which overrides the file)."""
    return ("--config", config, "--host", "127.0.0.1", "--triton-url", triton_url,
            "--drain-seconds", "0")  # fmt: skip


def first_history(repository) -> list[str]:
    scorer = layout.scorer_dir(repository, "tiny", 1)
    item_ids = pl.read_parquet(scorer / layout.CATALOG).sort("index")["item_id"].to_list()
    return [item_ids[i - 1] for i in np.load(scorer / layout.PARITY_HISTORIES)[0] if i]


def test_gateways_sharing_a_polling_triton_roll_in_a_new_version_without_failures(
    tiny_repository, tiny_checkpoints, tmp_path
):
    repository = copy_repository(tiny_repository, tmp_path)
    history = first_history(repository)
    config = chart_gateway_config(tmp_path)
    with (
        run_triton(repository, poll_seconds=1) as triton,
        running_gateway(repository, *gateway_flags(config, triton.grpc_url)) as first,
        running_gateway(repository, *gateway_flags(config, triton.grpc_url)) as second,
    ):
        answered = {first.target: [], second.target: []}  # version per answer, or the error
        finished = threading.Event()
        deadline = time.monotonic() + ROLL_IN_SECONDS

        def call(target: str) -> None:
            with RecommenderClient(target, timeout=30) as client:
                while not finished.is_set() and time.monotonic() < deadline:
                    try:
                        answered[target].append(client.recommend(history, 5).model_version)
                    except Exception as error:  # every failure is kept and reported
                        answered[target].append(error)

        callers = [threading.Thread(target=call, args=(target,)) for target in answered]
        for caller in callers:
            caller.start()
        try:
            run_cli("export", "--checkpoint", tiny_checkpoints[1], "--repository", repository,
                    "--name", "tiny", "--version", 2, "--triton-backend", "python")  # fmt: skip
            while time.monotonic() < deadline:
                if all(seen and seen[-1] == 2 for seen in answered.values()):
                    break
                time.sleep(0.2)
        finally:
            finished.set()
            for caller in callers:
                caller.join()
    for target, seen in answered.items():
        failures = [outcome for outcome in seen if isinstance(outcome, Exception)]
        assert not failures, f"{target}: {len(failures)} failed, e.g. {failures[0]!r}"
        assert seen[0] == 1 and seen[-1] == 2, f"{target} answered with versions {set(seen)}"
        switched = seen.index(2)
        assert set(seen[switched:]) == {2}, f"{target} went back to version 1"
