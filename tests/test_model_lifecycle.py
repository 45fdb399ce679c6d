"""Model versions rolled in and out of a running gateway (real `logitrec serve` processes on
private copies of an exported repository): no failed request while a version rolls in, half-
written versions ignored, pinned versions served until unloaded, the admin service's refusals."""

import contextlib
import json
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from conftest import copy_repository, run_cli
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from logitrec_client.proto import admin_pb2, admin_pb2_grpc, recommender_pb2_grpc
from logitrec_client.proto import recommender_pb2 as pb

from logitrec import repository as layout
from logitrec.errors import InputError
from logitrec.gateway_process import running_gateway
from logitrec.triton_local import run_triton, triton_venv
from serving.registry import load_version

HISTORIES = ((3, 17, 42, 8), (1, 2, 3), (40,), (9, 8, 7, 6, 5), (12, 30))
K = 5
FAST_STOP = ("--drain-seconds", 0)  # nothing to drain for a load balancer in a test
WAIT_SECONDS = 120  # every wait for a condition gives up after this long


# -- helpers -----------------------------------------------------------------------------------
@dataclass
class Stubs:
    channel: grpc.Channel
    recommender: recommender_pb2_grpc.RecommenderServiceStub
    admin: admin_pb2_grpc.ModelAdminServiceStub

    @classmethod
    def of(cls, channel: grpc.Channel) -> "Stubs":
        return cls(
            channel,
            recommender_pb2_grpc.RecommenderServiceStub(channel),
            admin_pb2_grpc.ModelAdminServiceStub(channel),
        )

    def recommend(self, history, **fields) -> pb.RecommendResponse:
        request = pb.RecommendRequest(
            history=[pb.Event(item_id=str(i)) for i in history], k=K, **fields
        )
        return self.recommender.Recommend(request, timeout=30)

    def latest_version(self) -> int:
        return self.recommender.GetModelInfo(pb.GetModelInfoRequest(), timeout=30).model_version

    def listed(self) -> dict[str, tuple[list[int], int, list[int]]]:
        """name -> (loaded versions, the default version, available versions)."""
        models = self.admin.ListModels(admin_pb2.ListModelsRequest(), timeout=30).models
        return {
            m.name: (
                [v.version for v in m.loaded_versions],
                next((v.version for v in m.loaded_versions if v.default_version), 0),
                list(m.available_versions),
            )
            for m in models
        }


@contextlib.contextmanager
def serving(repository: Path, *args):
    """A `logitrec serve` process on `repository`, and stubs on one channel to it."""
    with running_gateway(repository, *FAST_STOP, *args) as gateway:
        channel = grpc.insecure_channel(gateway.target)
        try:
            yield gateway, Stubs.of(channel)
        finally:
            channel.close()


def answer_of(response: pb.RecommendResponse) -> tuple[list[str], list[float]]:
    return [i.item_id for i in response.items], [i.logit for i in response.items]


def assert_same_answer(response: pb.RecommendResponse, reference) -> None:
    ids, logits = answer_of(response)
    assert ids == reference[0]
    assert logits == pytest.approx(reference[1], abs=1e-4)


def code_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def wait_for(condition, what: str, gateway=None) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if gateway is not None:
            assert gateway.process.poll() is None, f"the gateway exited:\n{log_of(gateway)}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def log_of(gateway) -> str:
    return Path(gateway.log_path).read_text(errors="replace")


def skip_warnings(gateway) -> list[str]:
    """The gateway's warnings about versions it skipped."""
    lines = [json.loads(line) for line in log_of(gateway).splitlines() if line.startswith("{")]
    return [
        line["message"]
        for line in lines
        if line["level"] == "warning" and line["message"].startswith("skipped")
    ]


def install_version(source: Path, repository: Path, version: int, *, as_version=None, kinds=None):
    """Copy one exported version into a served repository as an export installs it: each
    graph's folder complete under a hidden name first, then renamed; the scorer last."""
    as_version = as_version or version
    for kind in kinds or layout.KINDS:
        target = layout.version_dir(repository, "tiny", kind, as_version)
        staging = target.parent / f".staging-{as_version}"
        shutil.copytree(layout.version_dir(source, "tiny", kind, version), staging)
        staging.rename(target)


def export_version2(checkpoint: Path, repository: Path) -> None:
    """`logitrec export` of the second tiny checkpoint as version 2 of "tiny"."""
    run_cli(
        "export", "--checkpoint", checkpoint, "--repository", repository, "--name", "tiny",
        "--triton-backend", "python", "--version", 2,
    )  # fmt: skip


def answers(stubs: Stubs, **fields) -> dict[tuple, tuple]:
    return {h: answer_of(stubs.recommend(h, **fields)) for h in HISTORIES}


@dataclass
class LoadLoop:
    """A few threads sending Recommend for fixed histories until stopped, at most `limit`
    requests each or until the deadline. `phase` is read before each request is sent."""

    stubs: Stubs
    threads: int = 3
    limit: int = 2000
    phase: int = 0
    records: list = field(default_factory=list)  # (phase, history, response or RpcError)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list = field(default_factory=list)

    def __enter__(self) -> "LoadLoop":
        deadline = time.monotonic() + WAIT_SECONDS
        for worker in range(self.threads):
            thread = threading.Thread(target=self._run, args=(worker, deadline), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(timeout=60)

    def _run(self, worker: int, deadline: float) -> None:
        for n in range(self.limit):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            phase, history = self.phase, HISTORIES[(worker + n) % len(HISTORIES)]
            try:
                self.records.append((phase, history, self.stubs.recommend(history)))
            except grpc.RpcError as error:
                self.records.append((phase, history, error))

    def answered(self, phase: int) -> int:
        return sum(1 for p, _, r in self.records if p == phase and not isinstance(r, Exception))


def assert_rolled_in_without_a_failure(loop: LoadLoop, references: dict[int, dict]) -> None:
    """Every request answered, each by version 1 or 2 exactly as that version answers it, and
    every request sent after the roll-in by version 2."""
    failures = [r for _, _, r in loop.records if isinstance(r, Exception)]
    assert not failures, f"{len(failures)} requests failed, e.g. {failures[0]!r}"
    for phase, history, response in loop.records:
        assert response.model_version in (1, 2)
        assert_same_answer(response, references[response.model_version][history])
        if phase == 1:
            assert response.model_version == 2
    assert {r.model_version for p, _, r in loop.records if p == 0} >= {1}


def roll_in_under_load(stubs: Stubs, references: dict[int, dict], roll_in, gateway) -> None:
    """Load before, during and after `roll_in()` (which returns once version 2 is in)."""
    with LoadLoop(stubs) as loop:
        wait_for(lambda: loop.answered(0) >= 6, "traffic before the roll-in", gateway)
        roll_in()
        loop.phase = 1
        wait_for(lambda: loop.answered(1) >= 6, "traffic after the roll-in", gateway)
    assert_rolled_in_without_a_failure(loop, references)
    for history, reference in references[2].items():
        response = stubs.recommend(history)
        assert response.model_version == 2
        assert_same_answer(response, reference)


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def version2(tiny_checkpoints, tmp_path_factory) -> Path:
    """A repository with version 2 of "tiny" alone: the second tiny checkpoint, exported."""
    folder = tmp_path_factory.mktemp("version2") / "models"
    export_version2(tiny_checkpoints[1], folder)
    return folder


@pytest.fixture(scope="module")
def version2_gateway(version2):
    """A gateway serving version 2 alone. Tests only read from it or send it requests it
    refuses, so it stays as it started."""
    with serving(version2) as (_, stubs):
        yield stubs


@pytest.fixture(scope="module")
def references(tiny_repository, version2_gateway) -> dict[int, dict]:
    """What version 1 alone and version 2 alone answer for each history (they differ)."""
    with serving(tiny_repository) as (_, stubs):
        version1 = answers(stubs)
    version2 = answers(version2_gateway)
    assert version1 != version2, "the two tiny checkpoints answer alike: nothing to tell apart"
    return {1: version1, 2: version2}


# -- tests ---------------------------------------------------------------------------------------
def test_load_model_rolls_a_version_in_under_load_without_a_failed_request(
    tiny_repository, tiny_checkpoints, references, tmp_path
):
    served = copy_repository(tiny_repository, tmp_path)
    with serving(served) as (gateway, stubs):

        def roll_in():
            export_version2(tiny_checkpoints[1], served)
            loaded = stubs.admin.LoadModel(admin_pb2.LoadModelRequest(model="tiny"), timeout=60)
            assert loaded.loaded.version == 2 and loaded.loaded.default_version
            assert not loaded.already_loaded and list(loaded.unloaded_versions) == []

        roll_in_under_load(stubs, references, roll_in, gateway)
        assert stubs.listed() == {"tiny": ([1, 2], 2, [])}


def test_polling_picks_up_a_version_exported_under_load_without_a_failed_request(
    tiny_repository, tiny_checkpoints, references, tmp_path
):
    served = copy_repository(tiny_repository, tmp_path)
    with serving(served, "--poll-seconds", 0.2) as (gateway, stubs):

        def roll_in():  # the export lands while the gateway polls the repository
            export_version2(tiny_checkpoints[1], served)
            wait_for(lambda: stubs.latest_version() == 2, "the poll to load version 2")

        roll_in_under_load(stubs, references, roll_in, gateway)
        assert not skip_warnings(gateway)  # no poll caught the export half-way


def test_half_written_versions_are_skipped_at_start_and_on_sighup(
    tiny_repository, version2, references, tmp_path
):
    served = copy_repository(tiny_repository, tmp_path)
    install_version(version2, served, 2)
    # Version 3: the scorer (with its manifest) arrived, the encoder and topk did not.
    install_version(version2, served, 2, as_version=3, kinds=("scorer",))
    with serving(served) as (gateway, stubs):
        assert stubs.latest_version() == 2
        assert_same_answer(stubs.recommend(HISTORIES[0]), references[2][HISTORIES[0]])
        assert stubs.listed() == {"tiny": ([1, 2], 2, [])}
        assert any("tiny version 3" in w and "encoder" in w for w in skip_warnings(gateway))

        # Version 4: every file there, but the catalog is not the one the manifest names.
        install_version(version2, served, 2, as_version=4)
        manifest_path = layout.scorer_dir(served, "tiny", 4) / layout.MANIFEST
        manifest = json.loads(manifest_path.read_text())
        manifest.update(version=4, catalog_sha256="0" * 64)
        manifest_path.write_text(json.dumps(manifest))
        gateway.process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: any("tiny version 4" in w for w in skip_warnings(gateway)),
            "the rescan's warning",
            gateway,
        )
        assert any("catalog_sha256" in w for w in skip_warnings(gateway))
        assert stubs.latest_version() == 2
        assert_same_answer(stubs.recommend(HISTORIES[1]), references[2][HISTORIES[1]])
        assert stubs.listed() == {"tiny": ([1, 2], 2, [4])}

        for version, why in ((3, "encoder"), (4, "catalog_sha256")):
            code, details = code_of(
                lambda v=version: stubs.admin.LoadModel(
                    admin_pb2.LoadModelRequest(model="tiny", version=v), timeout=60
                )
            )
            assert code == grpc.StatusCode.FAILED_PRECONDITION and why in details
        assert stubs.latest_version() == 2
        assert gateway.process.poll() is None  # SIGHUP rescans; it does not end the gateway


def test_pinned_requests_are_served_until_their_version_is_unloaded(
    tiny_repository, version2, references, tmp_path
):
    served = copy_repository(tiny_repository, tmp_path)
    with serving(served) as (_, stubs):
        assert stubs.listed() == {"tiny": ([1], 1, [])}
        install_version(version2, served, 2)
        assert stubs.listed() == {"tiny": ([1], 1, [2])}  # found, not loaded yet

        stubs.admin.LoadModel(admin_pb2.LoadModelRequest(model="tiny", version=2), timeout=60)
        assert stubs.listed() == {"tiny": ([1, 2], 2, [])}
        pinned = stubs.recommend(HISTORIES[0], model_version=1)
        assert pinned.model_version == 1
        assert_same_answer(pinned, references[1][HISTORIES[0]])
        assert stubs.recommend(HISTORIES[0]).model_version == 2

        left = stubs.admin.UnloadModel(admin_pb2.UnloadModelRequest(model="tiny", version=1))
        assert list(left.loaded_versions) == [2]
        assert stubs.listed() == {"tiny": ([2], 2, [1])}
        code, details = code_of(lambda: stubs.recommend(HISTORIES[0], model_version=1))
        assert code == grpc.StatusCode.NOT_FOUND and "version 1" in details
        assert stubs.recommend(HISTORIES[0]).model_version == 2


def test_a_version_folder_copied_under_another_number_is_refused(tiny_repository, tmp_path):
    served = copy_repository(tiny_repository, tmp_path)
    install_version(served, served, 1, as_version=5)
    with pytest.raises(InputError, match="describes 'tiny' version 1, but lies in the folder of"):
        load_version(served, "tiny", 5)


def test_the_admin_service_refuses_what_it_cannot_do(version2_gateway):
    stubs = version2_gateway
    admin = stubs.admin

    def status(call, request):
        return code_of(lambda: call(request, timeout=30))

    code, details = status(admin.LoadModel, admin_pb2.LoadModelRequest(model="nope"))
    assert code == grpc.StatusCode.NOT_FOUND and "'nope'" in details
    code, details = status(admin.UnloadModel, admin_pb2.UnloadModelRequest(model="nope", version=1))
    assert code == grpc.StatusCode.NOT_FOUND and "'nope'" in details
    code, details = status(admin.LoadModel, admin_pb2.LoadModelRequest(model="tiny", version=7))
    assert code == grpc.StatusCode.NOT_FOUND and "no version 7" in details
    code, details = status(admin.LoadModel, admin_pb2.LoadModelRequest(model="../tiny"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("model:")
    code, details = status(admin.LoadModel, admin_pb2.LoadModelRequest(version=-1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("version:")
    code, details = status(admin.UnloadModel, admin_pb2.UnloadModelRequest(model="tiny"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("version:")

    code, details = status(admin.UnloadModel, admin_pb2.UnloadModelRequest(model="tiny", version=2))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "only loaded version" in details
    assert stubs.listed() == {"tiny": ([2], 2, [])}
    assert stubs.recommend(HISTORIES[0]).model_version == 2

    again = admin.LoadModel(admin_pb2.LoadModelRequest(), timeout=30)  # the newest: loaded
    assert again.already_loaded and again.model == "tiny" and again.loaded.version == 2


def test_the_admin_service_is_discoverable_by_reflection(version2_gateway):
    stub = reflection_pb2_grpc.ServerReflectionStub(version2_gateway.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (response,) = stub.ServerReflectionInfo(iter([request]), timeout=30)
    names = {s.name for s in response.list_services_response.service}
    assert "logitrec.admin.v1.ModelAdminService" in names


@pytest.mark.skipif(
    not (triton_venv() / "bin" / "python").exists(),
    reason=f"no Triton environment at {triton_venv()} (run `make install`)",
)
def test_on_triton_the_gateway_loads_and_unloads_the_versions_it_serves(
    tiny_repository, version2, references, tmp_path
):
    import tritonclient.grpc as triton_client

    served = copy_repository(tiny_repository, tmp_path)
    with run_triton(served) as triton:  # explicit model control: nothing loaded yet
        client = triton_client.InferenceServerClient(triton.grpc_url)

        def on_triton(version: int) -> list[bool]:
            return [
                client.is_model_ready(f"tiny_{kind}", str(version)) for kind in layout.SERVED_KINDS
            ]

        # One backend probe, at start: Triton says it is not ready while it loads a model, and
        # the probe's verdict is not what this test is about.
        args = ("--backend", "triton", "--triton-url", triton.grpc_url)
        with serving(served, *args, "--backend-probe-seconds", 3600) as (_, stubs):
            assert on_triton(1) == [True, True]  # the gateway had Triton load it
            install_version(version2, served, 2)
            stubs.admin.LoadModel(admin_pb2.LoadModelRequest(model="tiny", version=2), timeout=120)
            assert on_triton(1) == on_triton(2) == [True, True]
            assert_same_answer(stubs.recommend(HISTORIES[0]), references[2][HISTORIES[0]])
            pinned = stubs.recommend(HISTORIES[0], model_version=1)
            assert_same_answer(pinned, references[1][HISTORIES[0]])

            stubs.admin.UnloadModel(admin_pb2.UnloadModelRequest(model="tiny", version=1))
            assert on_triton(1) == [False, False] and on_triton(2) == [True, True]
            assert_same_answer(stubs.recommend(HISTORIES[1]), references[2][HISTORIES[1]])
        client.close()
