"""The exported repository on the real Triton server (nvidia-pytriton's, Python backend).

Checks what a deployment relies on: answers equal PyTorch's, concurrent requests are batched by
Triton's dynamic batcher, and loading a new version in explicit mode swaps it in.
"""

import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from conftest import copy_repository, run_cli

from logitrec.triton_local import load_model, run_triton, triton_venv
from training.checkpoint import load_checkpoint

grpcclient = pytest.importorskip("tritonclient.grpc")

if not (triton_venv() / "bin" / "python").exists():
    pytest.skip(
        f"no Triton environment at {triton_venv()} (run `make install`)", allow_module_level=True
    )


def export(checkpoint, repository):
    run_cli(
        "export", "--checkpoint", checkpoint, "--repository", repository, "--name", "tiny",
        "--triton-backend", "python",
    )  # fmt: skip


@pytest.fixture(scope="module")
def triton(tiny_repository, tmp_path_factory):
    repository = copy_repository(tiny_repository, tmp_path_factory.mktemp("triton"))
    with run_triton(repository) as server:
        for model in ("tiny_encoder", "tiny_scorer"):
            load_model(server, model)
        yield server, repository


def infer_encoder(client, histories, context, version=""):
    items = grpcclient.InferInput("items", list(histories.shape), "INT64")
    items.set_data_from_numpy(histories.astype(np.int64))
    inputs = [items]
    if context.shape[1]:
        ctx = grpcclient.InferInput("context", list(context.shape), "INT64")
        ctx.set_data_from_numpy(context.astype(np.int64))
        inputs.append(ctx)
    result = client.infer("tiny_encoder", inputs, model_version=version)
    return result.as_numpy("user_vector")


def torch_vectors(checkpoint, histories, context):
    model, _ = load_checkpoint(checkpoint)
    with torch.no_grad():
        return model.user_vectors(torch.as_tensor(histories), torch.as_tensor(context)).numpy()


def parity_inputs(repository, version=1):
    folder = repository / "tiny_scorer" / str(version)
    return np.load(folder / "parity_histories.npy"), np.load(folder / "parity_context.npy")


def metric(server, name, model):
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    pattern = rf'^{name}{{[^}}]*model="{model}"[^}}]*}} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, flags=re.MULTILINE))


def test_encoder_and_scorer_answer_like_pytorch(triton, tiny_checkpoints):
    server, repository = triton
    histories, context = parity_inputs(repository)
    histories, context = histories[:6], context[:6]
    client = grpcclient.InferenceServerClient(server.grpc_url)
    vectors = infer_encoder(client, histories, context)
    np.testing.assert_allclose(
        vectors, torch_vectors(tiny_checkpoints[0], histories, context), atol=1e-4
    )
    candidates = np.array([[1, 2, 3, 0], [5, 6, 7, 8]] * 3, dtype=np.int64)
    inputs = [
        grpcclient.InferInput("user_vector", list(vectors.shape), "FP32"),
        grpcclient.InferInput("candidates", list(candidates.shape), "INT64"),
    ]
    inputs[0].set_data_from_numpy(vectors)
    inputs[1].set_data_from_numpy(candidates)
    logits = client.infer("tiny_scorer", inputs).as_numpy("logits")
    model, _ = load_checkpoint(tiny_checkpoints[0])
    with torch.no_grad():
        expected = model.logits(torch.from_numpy(vectors.copy())).numpy()
    real = candidates != 0
    np.testing.assert_allclose(
        logits[real], np.take_along_axis(expected, candidates - 1, 1)[real], atol=1e-4
    )
    assert np.isneginf(logits[~real]).all()


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(triton, tiny_checkpoints):
    server, repository = triton
    histories, context = parity_inputs(repository)
    requests_before = metric(server, "nv_inference_request_success", "tiny_encoder")
    executions_before = metric(server, "nv_inference_exec_count", "tiny_encoder")
    count = 48
    rows = [i % len(histories) for i in range(count)]

    def one(row):
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            return infer_encoder(client, histories[row : row + 1], context[row : row + 1])[0]
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = np.stack(list(pool.map(one, rows)))
    expected = torch_vectors(tiny_checkpoints[0], histories, context)[rows]
    np.testing.assert_allclose(answers, expected, atol=1e-4)
    requests = metric(server, "nv_inference_request_success", "tiny_encoder") - requests_before
    executions = metric(server, "nv_inference_exec_count", "tiny_encoder") - executions_before
    assert requests == count
    assert executions < count, f"{count} requests ran in {executions} executions: no batching"


def test_loading_version_two_swaps_the_model_and_keeps_version_one(triton, tiny_checkpoints):
    server, repository = triton
    export(tiny_checkpoints[1], repository)
    load_model(server, "tiny_encoder")
    client = grpcclient.InferenceServerClient(server.grpc_url)
    histories, context = parity_inputs(repository, version=2)
    histories, context = histories[:4], context[:4]
    latest = infer_encoder(client, histories, context)
    np.testing.assert_allclose(
        latest, torch_vectors(tiny_checkpoints[1], histories, context), atol=1e-4
    )
    old = infer_encoder(client, histories, context, version="1")
    np.testing.assert_allclose(
        old, torch_vectors(tiny_checkpoints[0], histories, context), atol=1e-4
    )
    assert np.abs(latest - old).max() > 1e-3, "the two versions should differ"
