"""`logitrec bench load` and `logitrec bench echo` as an operator runs them: real processes, the
real gateway on the tiny model, the numbers read back from the JSON it writes."""

import json
import secrets
import subprocess
import sys

import numpy as np
import pytest
from certificates import make_certificates
from conftest import REPO, run_cli

from logitrec.bench.load import Calls, Window, summarize
from logitrec.gateway_process import running_gateway

SHORT_RUN = ("--warmup", "0.5", "--duration", "2")
QUICK_EXIT = ("--log-level", "warning", "--drain-seconds", "0")  # no drain when the test ends


@pytest.fixture(scope="module")
def gateway(tiny_repository):
    with running_gateway(tiny_repository, *QUICK_EXIT) as running:
        yield running.target


def bench_load(*args, check: bool = True) -> subprocess.CompletedProcess:
    return run_cli("bench", "load", *args, check=check)


def test_closed_loop_against_the_gateway_reports_answers_and_percentiles(
    gateway, tiny_repository, tmp_path
):
    out = tmp_path / "closed.json"
    result = bench_load(
        "--target", gateway, "--repository", tiny_repository, "--model", "tiny",
        "--clients", 4, "--channels", 2, *SHORT_RUN, "--out", out,
    )  # fmt: skip
    results = json.loads(out.read_text())
    [run] = results["runs"]
    assert run["clients"] == 4 and run["status_counts"]["OK"] > 0
    assert set(run["status_counts"]) == {"OK"}
    assert run["achieved_rps"] > 0
    latency = run["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p999"]
    assert latency["p999"] <= latency["max"]
    assert results["settings"]["mode"] == "closed" and results["machine"]["cpus"] >= 1
    assert results["command"].startswith("logitrec bench load --target")
    assert "4 clients" in result.stdout and "p99" in result.stdout


def test_open_loop_keeps_to_its_schedule_and_measures_from_the_intended_send_time(
    gateway, tiny_repository, tmp_path
):
    out, plot = tmp_path / "open.json", tmp_path / "open.png"
    bench_load(
        "--target", gateway, "--repository", tiny_repository, "--model", "tiny",
        "--rate", "20,40", *SHORT_RUN, "--out", out, "--plot", plot,
    )  # fmt: skip
    results = json.loads(out.read_text())
    assert results["settings"]["latency_from"] == "intended send time"
    assert [run["offered_rps"] for run in results["runs"]] == [20, 40]
    for run in results["runs"]:
        # Evenly spaced arrivals: every request of the 2 s window was sent, none skipped.
        assert abs(run["requests"] - 2 * run["offered_rps"]) <= 1
        assert run["status_counts"] == {"OK": run["requests"]}
        assert run["achieved_rps"] == pytest.approx(run["offered_rps"], rel=0.2)
        # Each latency includes how late the generator sent its request.
        assert run["latency_ms"]["max"] >= run["generator_lag_ms"]["max"]
        assert run["latency_ms"]["p50"] >= run["generator_lag_ms"]["p50"]
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_echo_serves_the_same_proto_and_is_driven_alike(tmp_path):
    histories = tmp_path / "histories.jsonl"
    histories.write_text('{"history": ["a", "b"], "k": 10}\n\n{"history": [3]}\n')
    out = tmp_path / "echo.json"
    result = bench_load(
        "--echo", "--histories", histories, "--clients", 4, "--warmup", "0.3",
        "--duration", "1", "--out", out,
    )  # fmt: skip
    results = json.loads(out.read_text())
    assert "echo" in results["target"] and "echo" in result.stdout
    [run] = results["runs"]
    assert run["status_counts"]["OK"] > 0 and run["latency_ms"]["p99"] > 0
    assert results["settings"]["requests"]["distinct"] == 2


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('{"history": ["a"]}\nnot json\n', "line 2: not JSON"),
        ('{"history": "a b c"}\n', "line 1: expected an object"),
        ('{"history": ["a"], "k": 0}\n', "line 1: k must be a positive integer"),
        ("\n", "has no histories"),
    ],
)
def test_a_bad_histories_file_is_refused_naming_the_file_and_line(tmp_path, text, complaint):
    histories = tmp_path / "bad.jsonl"
    histories.write_text(text)
    result = bench_load("--echo", "--histories", histories, check=False)
    assert result.returncode == 2
    assert f"--histories {histories}" in result.stderr and complaint in result.stderr
    assert "Traceback" not in result.stderr


def test_a_secured_gateway_is_loaded_with_tls_and_a_token(tiny_repository, tmp_path):
    pki = make_certificates(tmp_path / "pki")
    token = secrets.token_urlsafe(24)
    tokens_file = tmp_path / "tokens.toml"
    tokens_file.write_text(f'[[token]]\nname = "bench"\nrole = "recommend"\ntoken = "{token}"\n')
    token_file = tmp_path / "token.txt"
    token_file.write_text(token + "\n")
    tls = ("--root-certs", pki.path("ca.pem"))
    with running_gateway(
        tiny_repository, *QUICK_EXIT, "--tls-cert", pki.path("server.pem"),
        "--tls-key", pki.path("server.key"), "--tokens-file", tokens_file,
    ) as secured:  # fmt: skip
        common = ("--target", secured.target, "--repository", tiny_repository, "--model", "tiny",
                  "--clients", 2, "--warmup", "0.2", "--duration", "1", *tls)  # fmt: skip
        bench_load(*common, "--token-file", token_file, "--out", tmp_path / "ok.json")
        refused = bench_load(*common, "--out", tmp_path / "refused.json", check=False)
    [answered] = json.loads((tmp_path / "ok.json").read_text())["runs"]
    assert answered["status_counts"]["OK"] > 0
    [denied] = json.loads((tmp_path / "refused.json").read_text())["runs"]
    assert refused.returncode == 1 and "no call was answered OK" in refused.stderr
    assert set(denied["status_counts"]) == {"UNAUTHENTICATED"}


def test_late_answers_count_from_when_the_request_was_due():
    """A server that stalls for a second: the requests due during the stall waited for it, and
    their latencies say so even though each was answered quickly once it got through."""
    due = np.arange(100) * 0.01  # 100 req/s for 1 s
    finished = np.maximum(due, 1.0) + 0.002  # nothing answered before t = 1 s
    calls = Calls(
        intended=due, sent=due, finished=finished, codes=np.array(["OK"] * 100),
        measured=np.ones(100, dtype=bool), window=Window(0.0, 1.5), scheduled=True,
    )  # fmt: skip
    summary = summarize(calls)
    assert summary["latency_ms"]["p50"] == pytest.approx(507, abs=1)
    assert summary["latency_ms"]["max"] == pytest.approx(1002, abs=1)
    assert summary["achieved_rps"] == pytest.approx(100 / 1.5, abs=0.1)
    assert summary["generator_limited"] is False


def test_the_load_tool_imports_neither_torch_nor_the_training_and_export_stages():
    code = (
        "import sys, logitrec.bench.cli, logitrec.bench.load, logitrec.bench.echo, "
        "logitrec.bench.report, logitrec.bench.workload; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'training', 'export'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
