"""Property-based fuzzing of the gateway through one real `logitrec serve` process.

Hypothesis generates RecommendRequest, RecommendBatchRequest, ScoreRequest and
GetModelInfoRequest messages (catalog ids mixed with empty, unicode and 5,000-30,000-character
strings, duplicates, k from negative to huge, context maps, model names and versions) and raw
byte bodies. Every answer must be OK and well formed, or INVALID_ARGUMENT / NOT_FOUND with a
short message naming the field; never UNKNOWN, INTERNAL, a hang (each call has a deadline) or
RESOURCE_EXHAUSTED for a request under the message limit. Every request that reached the
gateway must leave exactly one access log line, and no traceback.

Fixed, derandomized cases (settings(max_examples=..., derandomize=True)): Recommend 300,
RecommendBatch 100, Score 200, GetModelInfo 50 and raw bodies 200 (to the four methods): 850
calls, about 15 s on 2 cores once the gateway is up.
"""

import json
import operator
import re
from collections import Counter
from types import SimpleNamespace

import grpc
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from logitrec_client.proto import recommender_pb2 as pb
from logitrec_client.proto import recommender_pb2_grpc

from logitrec import gateway_process

# Small bounds, so generated requests fall on both sides of each.
LIMITS = {
    "max_history": 40,
    "max_ids": 40,
    "max_k": 50,
    "max_batch_requests": 6,
    "max_batch_items": 120,
    "max_message_bytes": 4 * 1024 * 1024,
}
DEADLINE_SECONDS = 20.0
SERVICE = "/logitrec.v1.RecommenderService/"
MESSAGE = re.compile(r"^(request|requests|requests\[\d+\]\.\w+|\w+): ")  # names the field


def fuzz_settings(examples: int):
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def gateway(tiny_repository, tmp_path_factory):
    config = tmp_path_factory.mktemp("fuzz-config") / "serve.toml"
    config.write_text("[serve]\n" + "".join(f"{k} = {v}\n" for k, v in LIMITS.items()))
    args = ("--config", config, "--drain-seconds", 0)
    with gateway_process.running_gateway(tiny_repository, *args) as running:
        channel = grpc.insecure_channel(
            running.target, options=[("grpc.max_receive_message_length", -1)]
        )
        catalog = pl.read_parquet(tiny_repository / "tiny_scorer" / "1" / "catalog.parquet")
        manifest = json.loads((tiny_repository / "tiny_scorer" / "1" / "manifest.json").read_text())
        yield SimpleNamespace(
            stub=recommender_pb2_grpc.RecommenderServiceStub(channel),
            channel=channel,
            log_path=running.log_path,
            item_ids=catalog["item_id"].to_list(),
            context=manifest["context_vocabulary"],
        )
        channel.close()


# -- strategies -----------------------------------------------------------------------------------
# Each message comes in two flavours, half and half: "wild" (any value in any field) and
# "plausible" (fields the gateway checks hold mostly acceptable values; the free ones, such as
# request_id, user_id and unknown history ids, stay wild), so both refusals and answers are
# tested.
HUGE = st.builds(operator.mul, st.characters(codec="utf-8"), st.integers(5_000, 30_000))
TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
NAMES = st.one_of(st.just(""), TEXT, HUGE)
WILD_K = st.one_of(st.integers(-3, 65), st.integers(-(2**31), 2**31 - 1))
WILD_MODELS = st.one_of(st.just(""), st.just("tiny"), TEXT, HUGE)
WILD_VERSIONS = st.one_of(st.just(0), st.just(1), st.integers(-(2**63), 2**63 - 1))
MODELS = st.sampled_from(["", "tiny"])
VERSIONS = st.sampled_from([0, 1])


def _with_duplicates(lists):
    return st.one_of(lists, lists.map(lambda values: values + values[:2]))


def _events(ids, **size):
    event = st.builds(pb.Event, item_id=ids, timestamp=st.integers(-(2**63), 2**63 - 1))
    return st.lists(event, **size)


def strategies(gateway) -> SimpleNamespace:
    catalog = st.sampled_from(gateway.item_ids)
    wild_ids = st.one_of(catalog, catalog, st.just(""), TEXT, HUGE)
    known_or_not = st.one_of(catalog, catalog, catalog, TEXT.filter(bool))
    wild_lists = _with_duplicates(st.lists(wild_ids, max_size=45))
    features = st.sampled_from(sorted(gateway.context))
    values = st.sampled_from(sorted({v for vs in gateway.context.values() for v in vs}))
    wild_context = st.dictionaries(
        st.one_of(features, features, TEXT, HUGE), st.one_of(values, TEXT, HUGE), max_size=4
    )
    context = st.dictionaries(features, st.one_of(values, TEXT, HUGE), max_size=3)
    wild_recommend = st.builds(
        _recommend_request, history=_events(wild_ids, max_size=45), user_id=NAMES,
        context=wild_context, k=WILD_K, exclude_seen=st.one_of(st.none(), st.booleans()),
        exclude_item_ids=wild_lists, allowed_item_ids=st.one_of(st.just([]), wild_lists),
        model=WILD_MODELS, model_version=WILD_VERSIONS, explain=st.booleans(), request_id=NAMES,
    )  # fmt: skip
    recommend = st.builds(
        _recommend_request, history=_events(known_or_not, max_size=30), user_id=NAMES,
        context=context, k=st.integers(1, 50), exclude_seen=st.one_of(st.none(), st.booleans()),
        exclude_item_ids=st.lists(known_or_not, unique=True, max_size=10),
        allowed_item_ids=st.one_of(
            st.just([]), st.just([]), st.lists(catalog, unique=True, min_size=1, max_size=30)
        ),
        model=MODELS, model_version=VERSIONS, explain=st.just(False), request_id=NAMES,
    )  # fmt: skip
    plausible_batch = st.lists(recommend, max_size=LIMITS["max_batch_requests"])
    recommend = st.one_of(recommend, wild_recommend)
    score = st.one_of(
        st.builds(
            pb.ScoreRequest, history=_events(catalog, min_size=1, max_size=30), user_id=NAMES,
            context=context, item_ids=st.lists(known_or_not, unique=True, min_size=1, max_size=40),
            model=MODELS, model_version=VERSIONS, request_id=NAMES,
        ),
        st.builds(
            pb.ScoreRequest, history=_events(wild_ids, max_size=45), user_id=NAMES,
            context=wild_context, item_ids=wild_lists, model=WILD_MODELS,
            model_version=WILD_VERSIONS, request_id=NAMES,
        ),
    )  # fmt: skip
    info = st.one_of(
        st.builds(pb.GetModelInfoRequest, model=MODELS, model_version=VERSIONS),
        st.builds(pb.GetModelInfoRequest, model=WILD_MODELS, model_version=WILD_VERSIONS),
    )
    return SimpleNamespace(
        recommend=recommend,
        batch=st.builds(
            pb.RecommendBatchRequest,
            requests=st.one_of(plausible_batch, st.lists(recommend, max_size=8)),
        ),
        score=score,
        info=info,
        raw=st.tuples(st.sampled_from(["Recommend", "RecommendBatch", "Score", "GetModelInfo"]),
                      _bodies(recommend, score)),
    )  # fmt: skip


def _recommend_request(*, exclude_seen, **fields) -> pb.RecommendRequest:
    request = pb.RecommendRequest(**fields)
    if exclude_seen is not None:  # unset means the default (True)
        request.exclude_seen = exclude_seen
    return request


def _bodies(recommend, score):
    """Random bytes, and real messages cut short or followed by garbage."""
    messages = st.one_of(recommend, score).map(lambda m: m.SerializeToString())
    return st.one_of(
        st.binary(max_size=300),
        st.tuples(messages, st.integers(0, 64)).map(lambda t: t[0][: max(len(t[0]) - t[1], 0)]),
        st.tuples(messages, st.binary(min_size=1, max_size=32)).map(lambda t: t[0] + t[1]),
    )


# -- checks --------------------------------------------------------------------------------------
class Caller:
    """Sends requests, checks each failure's status, and counts those the gateway answered."""

    def __init__(self, gateway) -> None:
        self.gateway = gateway
        self.answered = 0
        self.codes: Counter[str] = Counter()  # what came back, by status (OK included)

    def call(self, method: str, request: bytes):
        """The raw answer (bytes), or None for an allowed refusal."""
        call = self.gateway.channel.unary_unary(
            SERVICE + method, request_serializer=bytes, response_deserializer=bytes
        )
        try:
            answer = call(request, timeout=DEADLINE_SECONDS)
        except grpc.RpcError as error:
            self.codes[error.code().name] += 1
            self.check_refusal(error, len(request))
            return None
        self.codes["OK"] += 1
        self.answered += 1
        return answer

    def check_refusal(self, error: grpc.RpcError, size: int) -> None:
        code, details = error.code(), error.details() or ""
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and size > LIMITS["max_message_bytes"]:
            return  # refused by gRPC itself before the gateway saw it: no access line
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (
            code,
            details[:300],
        )
        assert MESSAGE.match(details) and len(details.encode()) <= 1024, details[:300]
        self.answered += 1


def check_recommendation(gateway, request: pb.RecommendRequest, answer: pb.RecommendResponse):
    ids = [item.item_id for item in answer.items]
    assert 1 <= request.k <= LIMITS["max_k"] and len(ids) <= request.k
    assert [item.rank for item in answer.items] == list(range(1, len(ids) + 1))
    assert len(set(ids)) == len(ids) and set(ids) <= set(gateway.item_ids)
    assert not set(ids) & set(request.exclude_item_ids)
    if not request.HasField("exclude_seen") or request.exclude_seen:
        assert not set(ids) & {event.item_id for event in request.history}
    if request.allowed_item_ids:
        assert set(ids) <= set(request.allowed_item_ids)
    if ids:
        assert sum(item.probability for item in answer.items) == pytest.approx(1, abs=1e-4)
    assert (answer.model, answer.model_version) == ("tiny", 1)
    assert answer.request_id == (request.request_id or answer.request_id) != ""


def log_lines(gateway, since: int) -> list[tuple[dict, int]]:
    """The gateway's log lines after byte `since`, parsed, with their sizes in bytes."""
    with open(gateway.log_path, "rb") as log:
        log.seek(since)
        lines = [line for line in log.read().splitlines() if line.startswith(b"{")]
    return [(json.loads(line), len(line)) for line in lines]


def fuzz(gateway, method: str, check) -> None:
    """Run the property `check` (which calls through `Caller`), then hold the log to account."""
    before = gateway.log_path.stat().st_size
    caller = Caller(gateway)
    check(caller)
    print(method, dict(caller.codes))
    if method != "raw":  # both sides of the edge were exercised
        calls = caller.codes.total()
        assert calls * 0.1 <= caller.codes["OK"] <= calls * 0.9, caller.codes
    lines = log_lines(gateway, before)
    access = [line for line, _ in lines if line["logger"] == "logitrec.access"]
    assert len(access) == caller.answered  # one line per request the gateway answered
    assert all("exception" not in line and line["level"] != "error" for line, _ in lines)
    # Every string field is cut: 64 characters of the caller's values, 256 of the error.
    assert max((size for _, size in lines), default=0) < 4096
    if method != "raw":
        assert {line["method"] for line in access} <= {method}


def test_recommend(gateway):
    @fuzz_settings(300)
    @given(strategies(gateway).recommend)
    def check(caller, request):
        answer = caller.call("Recommend", request.SerializeToString())
        if answer is not None:
            check_recommendation(gateway, request, pb.RecommendResponse.FromString(answer))

    fuzz(gateway, "Recommend", check)


def test_recommend_batch(gateway):
    @fuzz_settings(100)
    @given(strategies(gateway).batch)
    def check(caller, batch):
        answer = caller.call("RecommendBatch", batch.SerializeToString())
        if answer is not None:
            responses = pb.RecommendBatchResponse.FromString(answer).responses
            assert len(responses) == len(batch.requests) <= LIMITS["max_batch_requests"]
            assert sum(r.k for r in batch.requests) <= LIMITS["max_batch_items"]
            for request, response in zip(batch.requests, responses, strict=True):
                check_recommendation(gateway, request, response)

    fuzz(gateway, "RecommendBatch", check)


def test_score(gateway):
    @fuzz_settings(200)
    @given(strategies(gateway).score)
    def check(caller, request):
        answer = caller.call("Score", request.SerializeToString())
        if answer is not None:
            answer = pb.ScoreResponse.FromString(answer)
            known = [i for i in request.item_ids if i in set(gateway.item_ids)]
            assert [item.item_id for item in answer.items] == known
            unknown = [i for i in request.item_ids if i not in set(gateway.item_ids)]
            assert list(answer.unknown_scored_item_ids) == unknown

    fuzz(gateway, "Score", check)


def test_get_model_info(gateway):
    @fuzz_settings(50)
    @given(strategies(gateway).info)
    def check(caller, request):
        answer = caller.call("GetModelInfo", request.SerializeToString())
        if answer is not None:
            info = pb.GetModelInfoResponse.FromString(answer)
            assert (info.model, info.num_items) == ("tiny", len(gateway.item_ids))
            assert request.model in ("", "tiny") and request.model_version in (0, 1)

    fuzz(gateway, "GetModelInfo", check)


def test_raw_bodies(gateway):
    response_types = {
        "Recommend": pb.RecommendResponse,
        "RecommendBatch": pb.RecommendBatchResponse,
        "Score": pb.ScoreResponse,
        "GetModelInfo": pb.GetModelInfoResponse,
    }

    @fuzz_settings(200)
    @given(strategies(gateway).raw)
    def check(caller, case):
        method, body = case
        answer = caller.call(method, body)
        if answer is not None:  # some random bytes are a valid message: then a valid answer
            response_types[method].FromString(answer)

    fuzz(gateway, "raw", check)
