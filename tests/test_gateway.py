"""The gateway through its real gRPC server (a `logitrec serve` process on an exported model)."""

import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import polars as pl
import pytest
import torch
from conftest import REPO, run_cli, running_gateway
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from logitrec_client.proto import recommender_pb2 as pb
from logitrec_client.proto import recommender_pb2_grpc

from training.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def repository(tiny_repository):
    return tiny_repository


@pytest.fixture(scope="module")
def gateway(repository, tmp_path_factory):
    config = tmp_path_factory.mktemp("gateway-config") / "serve.toml"
    config.write_text("[serve]\nmax_message_bytes = 1048576\nmax_history = 500\n")
    with running_gateway(repository, "--config", config) as (target, metrics_url, _process):
        channel = grpc.insecure_channel(target)
        yield recommender_pb2_grpc.RecommenderServiceStub(channel), channel, metrics_url
        channel.close()


@pytest.fixture(scope="module")
def catalog(repository):
    return pl.read_parquet(repository / "tiny_scorer" / "1" / "catalog.parquet")


@pytest.fixture(scope="module")
def torch_model(tiny_checkpoints):
    model, config = load_checkpoint(tiny_checkpoints[0])
    return model, config


def events(*item_ids):
    return [pb.Event(item_id=str(i)) for i in item_ids]


def torch_logits(torch_model, history_indices, context=None):
    model, config = torch_model
    width = len(config.context_vocabulary)
    ctx = torch.zeros(1, width, dtype=torch.long) if context is None else context
    with torch.no_grad():
        return model(torch.as_tensor([history_indices]), ctx)[0].numpy()


def code_of(call):
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def test_recommend_returns_the_models_exact_top_k_without_seen_items(gateway, torch_model):
    stub, _, _ = gateway
    history = [3, 17, 42, 8]  # synthetic item ids are their indices' names
    response = stub.Recommend(pb.RecommendRequest(history=events(*history), k=5, request_id="r1"))
    assert response.request_id == "r1" and response.model == "tiny" and response.model_version == 1
    got = [int(item.item_id) for item in response.items]
    assert [item.rank for item in response.items] == [1, 2, 3, 4, 5]
    logits = torch_logits(torch_model, history)
    logits[np.array(history) - 1] = -np.inf
    expected = list(np.argsort(-logits)[:5] + 1)
    assert got == expected
    np.testing.assert_allclose(
        [item.logit for item in response.items], logits[np.array(got) - 1], atol=1e-4
    )
    assert sum(item.probability for item in response.items) == pytest.approx(1, abs=1e-5)
    assert all(item.title for item in response.items)
    assert response.timings.total_seconds > 0 and response.timings.encode_seconds > 0


def test_filters_exclude_seen_allowed_and_excluded(gateway):
    stub, _, _ = gateway
    seen = stub.Recommend(pb.RecommendRequest(history=events(5, 6), k=60, exclude_seen=False)).items
    assert {"5", "6"} <= {i.item_id for i in seen} and len(seen) == 60
    allowed = stub.Recommend(
        pb.RecommendRequest(history=events(5), k=10, allowed_item_ids=["9", "10", "11", "5"])
    )
    assert sorted(i.item_id for i in allowed.items) == ["10", "11", "9"]
    excluded = stub.Recommend(
        pb.RecommendRequest(history=events(5), k=58, exclude_item_ids=["7", "8"])
    )
    assert not {"5", "7", "8"} & {i.item_id for i in excluded.items}


def test_empty_or_unknown_history_falls_back_to_popularity(gateway, catalog):
    stub, _, _ = gateway
    empty = stub.Recommend(pb.RecommendRequest(k=3))
    assert empty.popularity_fallback
    top = catalog.sort("popularity", descending=True)["item_id"].to_list()[:3]
    assert [i.item_id for i in empty.items] == top
    unknown = stub.Recommend(pb.RecommendRequest(history=events("nope", "nada"), k=3))
    assert unknown.popularity_fallback and list(unknown.unknown_item_ids) == ["nope", "nada"]
    mixed = stub.Recommend(pb.RecommendRequest(history=events("nope", 4), k=3))
    assert not mixed.popularity_fallback and list(mixed.unknown_item_ids) == ["nope"]


def test_long_history_keeps_the_newest_items_and_says_so(gateway, torch_model):
    stub, _, _ = gateway
    _, config = torch_model
    window = config.model.max_length
    history = [(i % 60) + 1 for i in range(window + 10)]
    response = stub.Recommend(pb.RecommendRequest(history=events(*history), k=5))
    assert response.history_truncated_to == window
    cut = stub.Recommend(
        pb.RecommendRequest(history=events(*history[-window:]), k=5, exclude_seen=False)
    )
    full = stub.Recommend(pb.RecommendRequest(history=events(*history), k=5, exclude_seen=False))
    assert [i.item_id for i in cut.items] == [i.item_id for i in full.items]


def test_bad_requests_get_precise_codes_and_the_server_keeps_serving(gateway):
    stub, _, _ = gateway
    cases = [
        (pb.RecommendRequest(history=events(1), k=0), grpc.StatusCode.INVALID_ARGUMENT, "k:"),
        (pb.RecommendRequest(history=events(1), k=61), grpc.StatusCode.INVALID_ARGUMENT, "k:"),
        (
            pb.RecommendRequest(history=events(1), k=3, exclude_item_ids=["2", "2"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "exclude_item_ids: duplicate id '2'",
        ),
        (
            pb.RecommendRequest(history=events(*([1] * 501)), k=3),
            grpc.StatusCode.INVALID_ARGUMENT,
            "history: 501 events exceed",
        ),
        (
            pb.RecommendRequest(history=events(1), k=3, context={"shoe_size": "9"}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "context: unknown feature",
        ),
        (pb.RecommendRequest(history=events(1), k=3, model="other"), grpc.StatusCode.NOT_FOUND,
         "model:"),
        (pb.RecommendRequest(history=events(1), k=3, model_version=7), grpc.StatusCode.NOT_FOUND,
         "model_version:"),
        (
            pb.RecommendRequest(history=events(1), k=3, request_id="x" * 2_000_000),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "",
        ),
        (pb.RecommendRequest(history=events(1), k=30, explain=True),
         grpc.StatusCode.INVALID_ARGUMENT, "k: 30 exceeds the limit of 20 with explain"),
        (pb.RecommendRequest(history=events(1), k=3, explain=True, explain_contributors=99),
         grpc.StatusCode.INVALID_ARGUMENT, "explain_contributors:"),
        (pb.RecommendRequest(history=events(1), k=3, rerank=pb.Rerank(mmr_lambda=2)),
         grpc.StatusCode.INVALID_ARGUMENT, "mmr_lambda"),
        (pb.RecommendRequest(history=events(1), k=3,
                             filters=[pb.MetadataFilter(field="colour", any_of=["red"])]),
         grpc.StatusCode.INVALID_ARGUMENT, "filters[0]: "),
        (pb.RecommendRequest(history=events(1), k=3, filters=[pb.MetadataFilter(field="genres")]),
         grpc.StatusCode.INVALID_ARGUMENT, "filters[0]: give either any_of"),
    ]  # fmt: skip
    for request, code, message in cases:
        got_code, details = code_of(lambda request=request: stub.Recommend(request))
        assert got_code == code, (request.k, details)
        assert message in (details or ""), details
    assert len(stub.Recommend(pb.RecommendRequest(history=events(1), k=3)).items) == 3


def test_batch_and_score_agree_with_single_recommendations(gateway):
    stub, _, _ = gateway
    requests = [pb.RecommendRequest(history=events(*h), k=4) for h in ([1, 2], [30], [7, 8, 9])]
    batch = stub.RecommendBatch(pb.RecommendBatchRequest(requests=requests)).responses
    singles = [stub.Recommend(r) for r in requests]
    for together, alone in zip(batch, singles, strict=True):
        assert [i.item_id for i in together.items] == [i.item_id for i in alone.items]
    scored = stub.Score(
        pb.ScoreRequest(history=events(1, 2), item_ids=[batch[0].items[1].item_id, "nope", "5"])
    )
    assert [i.item_id for i in scored.items] == [batch[0].items[1].item_id, "5"]
    assert scored.items[0].logit == pytest.approx(batch[0].items[1].logit, abs=1e-5)
    assert list(scored.unknown_scored_item_ids) == ["nope"]
    bad_batch = pb.RecommendBatchRequest(requests=[requests[0], pb.RecommendRequest(k=0)])
    code, details = code_of(lambda: stub.RecommendBatch(bad_batch))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("requests[1].k: ")
    code, details = code_of(lambda: stub.Score(pb.ScoreRequest(history=events(1), item_ids=[])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "item_ids" in details


def test_model_info_health_and_reflection(gateway):
    stub, channel, _ = gateway
    info = stub.GetModelInfo(pb.GetModelInfoRequest())
    assert (info.model, info.model_version, info.num_items) == ("tiny", 1, 60)
    assert list(info.loaded_versions) == [1] and info.index_type == "Flat"
    assert info.backend == "embedded" and list(info.context_features)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "logitrec.v1.RecommenderService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answer = next(reflection.ServerReflectionInfo(iter([
        reflection_pb2.ServerReflectionRequest(list_services="")
    ])))  # fmt: skip
    names = {s.name for s in answer.list_services_response.service}
    assert "logitrec.v1.RecommenderService" in names and "grpc.health.v1.Health" in names


def test_concurrent_requests_are_batched_and_metrics_show_it(gateway):
    stub, _, metrics_url = gateway
    histories = [[(i * 7) % 60 + 1, (i * 11) % 60 + 1] for i in range(64)]
    singles = {
        i: [x.item_id for x in stub.Recommend(pb.RecommendRequest(history=events(*h), k=5)).items]
        for i, h in enumerate(histories[:8])
    }

    def ask(i):
        return [x.item_id for x in stub.Recommend(
            pb.RecommendRequest(history=events(*histories[i]), k=5)).items]  # fmt: skip

    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(ask, range(64)))
    for i, expected in singles.items():
        assert answers[i] == expected  # each caller got its own row of the batch
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    batches = float(next(line.split()[-1] for line in text.splitlines()
                         if line.startswith("logitrec_batch_size_count")))  # fmt: skip
    requests = float(next(line.split()[-1] for line in text.splitlines()
                          if line.startswith("logitrec_batch_size_sum")))  # fmt: skip
    assert requests > batches, "no batch ever held more than one request"
    assert "logitrec_request_duration_seconds_bucket" in text
    assert 'logitrec_request_failures_total{reason="invalid_argument"}' in text


def test_serving_imports_neither_torch_nor_the_training_and_export_stages():
    code = (
        "import sys, serving.server, serving.cli, serving.backends.embedded, "
        "serving.backends.triton; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'training', 'export'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_batch_mixing_popularity_fallbacks_and_model_rows_answers_each_as_alone(gateway, catalog):
    stub, _, _ = gateway
    requests = [
        pb.RecommendRequest(history=events(4, 9), k=4),
        pb.RecommendRequest(history=[], k=4),  # nothing known: popularity
        pb.RecommendRequest(history=events("not-an-item"), k=4),  # unknown only: popularity
        pb.RecommendRequest(history=events(12), k=4),
    ]
    batch = stub.RecommendBatch(pb.RecommendBatchRequest(requests=requests)).responses
    assert [r.popularity_fallback for r in batch] == [False, True, True, False]
    for request, response in zip(requests, batch, strict=True):
        alone = stub.Recommend(request)
        assert [i.item_id for i in response.items] == [i.item_id for i in alone.items]
        assert [i.logit for i in response.items] == pytest.approx([i.logit for i in alone.items])
    popularity = dict(zip(catalog["item_id"], catalog["popularity"], strict=True))
    top_counts = sorted(popularity.values(), reverse=True)[:4]
    assert [popularity[i.item_id] for i in batch[1].items] == top_counts  # ties in any order


def test_gateway_refuses_a_missing_repository(tmp_path):
    result = run_cli("serve", "--repository", tmp_path / "none", check=False)
    assert result.returncode == 2 and "model repository not found" in result.stderr
