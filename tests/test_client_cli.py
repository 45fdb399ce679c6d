"""The `logitrec-client` command: tables, JSON, exit codes and error messages a user sees."""

from __future__ import annotations

import json

import pytest
from grpc_health.v1 import health_pb2
from logitrec_client.cli import main
from test_client_fakes import CATALOG, SERVICE, Gateway, gateway_fixture  # noqa: F401


def test_recommend_prints_a_table(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["recommend", "--target", gateway.target, "--history", "i1, i2", "--k", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0].split() == ["rank", "item_id", "title", "logit", "probability"]
    assert lines[1].split()[:2] == ["1", "i3"] and CATALOG["i3"] in lines[1]
    assert lines[2].split()[:2] == ["2", "i4"]
    assert "model tiny v3" in lines[3]
    (request,) = gateway.servicer.requests("Recommend")
    assert [event.item_id for event in request.history] == ["i1", "i2"]


def test_recommend_explains_and_passes_filters_and_reranking(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["recommend", "--target", gateway.target, "--history", "i1", "--k", "2", "--explain"]
    argv += ["--filter", "genres=Comedy,Drama", "--filter", "year>=1990", "--mmr-lambda", "0.7"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"because you watched {CATALOG['i1']} (+1.5)" in out
    (request,) = gateway.servicer.requests("Recommend")
    assert request.explain
    assert [(f.field, list(f.any_of)) for f in request.filters] == [
        ("genres", ["Comedy", "Drama"]),
        ("year", []),
    ]
    assert request.filters[1].at_least == 1990 and not request.filters[1].HasField("at_most")
    assert request.rerank.mmr_lambda == pytest.approx(0.7)
    assert not request.rerank.HasField("popularity_beta")  # unset: the model's default


def test_a_malformed_filter_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["recommend", "--history", "i1", "--filter", "year>=soon"])
    assert stopped.value.code == 2
    assert "year>=soon" in capsys.readouterr().err


def test_recommend_json_carries_every_field(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["recommend", "--target", gateway.target, "--history", "i1", "--k", "1", "--json"]
    argv += ["--model", "tiny", "--token", "tok", "--timeout", "5", "--include-seen"]
    argv += ["--context", "gender=F"]
    assert main(argv) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["items"] == [
        {"item_id": "i1", "logit": 5.0, "probability": 1.0, "rank": 1, "title": CATALOG["i1"],
         "contributions": []}
    ]  # fmt: skip
    assert answer["model"] == "tiny" and answer["timings"]["total_seconds"] == pytest.approx(0.012)
    assert gateway.servicer.metadata[0]["authorization"] == "Bearer tok"
    (request,) = gateway.servicer.requests("Recommend")
    assert request.exclude_seen is False and dict(request.context) == {"gender": "F"}


def test_score_info_and_health_commands(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["score", "--target", gateway.target, "--history", "i1", "--items", "i2,i9"]) == 0
    score_lines = capsys.readouterr().out.splitlines()
    assert score_lines[0].split() == ["item_id", "logit"]
    assert score_lines[1].split() == ["i2", "4.0000"]
    assert "not in the catalog: i9" in score_lines[2]

    assert main(["info", "--target", gateway.target, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loaded_versions"] == [2, 3]

    assert main(["health", "--target", gateway.target]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
    gateway.health.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    assert main(["health", "--target", gateway.target, "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {"status": "NOT_SERVING"}


def test_a_failed_call_prints_the_servers_message_and_exits_1(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["recommend", "--target", gateway.target, "--history", "i1", "--model", "missing"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == "logitrec-client: NOT_FOUND: unknown model 'missing'"


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["recommend", "--history", "i1", "--context", "no-equals-sign"])
    assert exited.value.code == 2
    assert "KEY=VALUE" in capsys.readouterr().err
