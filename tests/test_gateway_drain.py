"""SIGTERM under traffic, through a real `logitrec serve` process: health turns NOT_SERVING at
once (Watch streams told, then closed), requests are still served through the drain period,
then refused with UNAVAILABLE, and no admitted request is lost."""

import signal
import threading
import time

import grpc
from conftest import running_gateway
from grpc_health.v1 import health_pb2, health_pb2_grpc
from logitrec_client.proto import recommender_pb2 as pb
from logitrec_client.proto import recommender_pb2_grpc

CLIENTS = 16
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


class Traffic:
    """Closed-loop clients that send Recommend until the gateway refuses them or `stop`."""

    def __init__(self, target: str) -> None:
        self.target = target
        # (sent at, finished at, code) of every call
        self.outcomes: list[tuple[float, float, grpc.StatusCode]] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(i,)) for i in range(CLIENTS)]

    def _client(self, offset: int) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            request = pb.RecommendRequest(history=[pb.Event(item_id=str(offset % 50 + 1))], k=5)
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    stub.Recommend(request, timeout=20)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as error:
                    code = error.code()
                with self._lock:
                    self.outcomes.append((sent, time.monotonic(), code))
                if code == grpc.StatusCode.UNAVAILABLE:
                    return  # refused: a real client would go to another replica

    def count(self, code=grpc.StatusCode.OK) -> int:
        with self._lock:
            return sum(1 for _, _, c in self.outcomes if c == code)


def watch_health(target: str, seen: list, ended: threading.Event) -> None:
    with grpc.insecure_channel(target) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=60
        )
        try:
            for update in stream:
                seen.append((time.monotonic(), update.status))
        except grpc.RpcError as error:
            seen.append((time.monotonic(), error.code()))
    ended.set()


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_sigterm_under_load_drains_and_loses_nothing(tiny_repository):
    flags = ("--drain-seconds", 1.5, "--grace-seconds", 10, "--log-level", "warning")
    with running_gateway(tiny_repository, *flags) as (target, _, process):
        traffic = Traffic(target)
        seen, watch_ended = [], threading.Event()
        watcher = threading.Thread(target=watch_health, args=(target, seen, watch_ended))
        watcher.start()
        for thread in traffic.threads:
            thread.start()
        try:
            wait_for(lambda: traffic.count() >= 100 and seen, 60, "traffic and a health watch")
            terminated_at = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
            exited_at = time.monotonic()
            wait_for(lambda: all(not t.is_alive() for t in traffic.threads), 30, "clients")
        finally:
            traffic.stop.set()
            for thread in traffic.threads:
                thread.join(timeout=30)
        watcher.join(timeout=30)

    codes = {code for _, _, code in traffic.outcomes}
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    assert traffic.count(grpc.StatusCode.UNAVAILABLE) == CLIENTS  # each refused once, at the end
    # Health: SERVING, then NOT_SERVING after SIGTERM; the watch stream ended before the exit.
    statuses = [status for _, status in seen]
    assert statuses[0] == SERVING and NOT_SERVING in statuses, statuses
    not_serving_at = next(t for t, status in seen if status == NOT_SERVING)
    assert terminated_at < not_serving_at < exited_at and watch_ended.is_set()
    # In that order: NOT_SERVING, new requests still taken and answered (the drain), then
    # refusals. (Requests already in flight at NOT_SERVING would finish without any drain.)
    unavailable = grpc.StatusCode.UNAVAILABLE
    first_refusal = min(done for _, done, code in traffic.outcomes if code == unavailable)
    taken_while_draining = [
        sent
        for sent, done, code in traffic.outcomes
        if code == grpc.StatusCode.OK and not_serving_at < sent and done < first_refusal
    ]
    assert taken_while_draining, "no drain period: new requests were refused at once"
