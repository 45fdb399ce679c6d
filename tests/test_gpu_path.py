"""The GPU serving path as far as a CPU machine can check it: which ONNX Runtime providers and
where the FAISS index are chosen, the errors when a GPU is asked for and absent, the refusal of
clashing CPU/GPU installs, and the IO-binding calls (run here with CPU memory)."""

import faiss
import numpy as np
import onnxruntime
import pytest
from conftest import run_cli

from logitrec import repository as layout
from logitrec.errors import InputError
from logitrec.runtime_check import Installed, check_runtime, conflicts
from serving.backends.embedded import EmbeddedBackend
from serving.backends.iobinding import DeviceVectors, encode_bound, score_bound
from serving.backends.providers import (
    CPU,
    CUDA,
    TENSORRT,
    Provider,
    check_active,
    choose_providers,
    tensorrt_options,
)
from serving.faiss_device import GPU_MAX_K, GpuSearch, check_device, place_index, placement

SITE = "/venv/lib/python3.11/site-packages"
BASE = "/usr/lib/python3/dist-packages"


# -- both onnxruntime builds installed ----------------------------------------------------------
def test_cpu_and_gpu_onnxruntime_in_one_place_are_refused_naming_both_and_the_fix():
    installed = [Installed("onnxruntime", SITE), Installed("onnxruntime_gpu", SITE)]
    (problem,) = conflicts(installed, [SITE])
    assert "onnxruntime and onnxruntime-gpu are both installed" in problem
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in problem
    assert "pip install onnxruntime-gpu" in problem


def test_a_cpu_build_shadowing_the_gpu_build_is_refused_and_the_reverse_allowed():
    installed = [Installed("onnxruntime", SITE), Installed("onnxruntime-gpu", BASE)]
    (problem,) = conflicts(installed, [SITE, BASE])
    assert "comes before onnxruntime-gpu" in problem and "GPU is never used" in problem
    # The GPU build in a virtual environment over a base image's CPU build: it is imported.
    assert conflicts(installed, [BASE, SITE]) == []


def test_faiss_builds_clash_too_and_lone_builds_are_fine():
    installed = [Installed("faiss-cpu", SITE), Installed("faiss-gpu-cu12", SITE)]
    (problem,) = conflicts(installed, [SITE])
    assert "faiss-cpu and faiss-gpu-cu12" in problem
    assert conflicts([Installed("onnxruntime", SITE), Installed("faiss-cpu", SITE)], [SITE]) == []
    assert conflicts([Installed("onnxruntime-gpu", SITE)], [SITE]) == []


def test_this_environment_passes_the_start_up_check():
    check_runtime()  # the CPU builds only


# -- providers ----------------------------------------------------------------------------------
CPU_ONLY = [CPU]
GPU_BUILD = [TENSORRT, CUDA, CPU]


def names(providers):
    return [p.name for p in providers]


def test_auto_takes_cuda_when_the_installed_onnxruntime_has_it_and_cpu_otherwise():
    assert names(choose_providers("auto", CPU_ONLY)) == [CPU]
    chosen = choose_providers("auto", GPU_BUILD, device_id=1)
    assert names(chosen) == [CUDA, CPU]  # TensorRT only when asked for
    assert chosen[0].options == {"device_id": 1} and chosen[0].on_gpu
    assert names(choose_providers("cpu", GPU_BUILD)) == [CPU]


def test_tensorrt_comes_first_with_its_options_and_cpu_always_last():
    chosen = choose_providers("cuda", GPU_BUILD, tensorrt=True, tensorrt_options={"x": "1"})
    assert names(chosen) == [TENSORRT, CUDA, CPU]
    assert chosen[0].options == {"device_id": 0, "x": "1"}


@pytest.mark.parametrize(
    ("device", "available", "tensorrt", "message"),
    [
        ("cuda", CPU_ONLY, False, "--device cuda: the installed onnxruntime has no CUDA"),
        ("auto", CPU_ONLY, True, "--tensorrt: the installed onnxruntime has no CUDA"),
        ("cpu", GPU_BUILD, True, "--tensorrt runs on the GPU"),
        ("cuda", [CUDA, CPU], True, "no TensorRT execution provider"),
        ("gpu", GPU_BUILD, False, "--device: expected one of auto, cpu, cuda"),
    ],
)
def test_a_device_asked_for_and_absent_is_refused_with_what_is_there(
    device, available, tensorrt, message
):
    with pytest.raises(InputError, match=message) as error:
        choose_providers(device, available, tensorrt=tensorrt)
    if "no CUDA" in message:
        assert "available: CPUExecutionProvider" in str(error.value)
        assert "docs/gpu.md" in str(error.value)


def test_a_gpu_provider_that_did_not_start_is_refused_not_served_slowly_on_the_cpu():
    chosen = [Provider(CUDA, {}), Provider(CPU, {})]
    check_active(chosen, [CUDA, CPU])
    with pytest.raises(InputError, match="CUDAExecutionProvider could not start"):
        check_active(chosen, [CPU])


def test_tensorrt_gets_one_profile_for_every_batch_shape_and_a_cache():
    options = tensorrt_options(
        {"items": ((1, 1), (64, 50)), "context": ((1, 3), (64, 3))}, "/cache", fp16=True
    )
    assert options["trt_profile_min_shapes"] == "items:1x1,context:1x3"
    assert options["trt_profile_max_shapes"] == "items:64x50,context:64x3"
    assert options["trt_engine_cache_path"] == "/cache"
    assert options["trt_fp16_enable"] == "True"


def test_the_embedded_backend_refuses_cuda_at_start_here_and_stays_on_the_cpu_by_default():
    with pytest.raises(InputError, match="--device cuda"):
        EmbeddedBackend(device="cuda")
    backend = EmbeddedBackend()  # auto, with the CPU onnxruntime: the plain session.run path
    assert not backend.on_gpu


# -- IO binding (device memory is CPU memory here; on a GPU the same calls bind CUDA) -------------
def test_bound_encoder_and_scorer_calls_give_the_plain_calls_numbers(tiny_repository):
    encoder = onnxruntime.InferenceSession(
        str(layout.model_file(tiny_repository, "tiny", "encoder", 1))
    )
    scorer = onnxruntime.InferenceSession(
        str(layout.model_file(tiny_repository, "tiny", "scorer", 1))
    )
    folder = layout.scorer_dir(tiny_repository, "tiny", 1)
    histories = np.load(folder / layout.PARITY_HISTORIES)[:8]
    context = np.load(folder / layout.PARITY_CONTEXT)[:8]
    feed = {"items": histories, "context": context}
    (expected_vectors,) = encoder.run(None, feed)
    candidates = np.tile(np.arange(1, 61, dtype=np.int64), (8, 1))
    (expected_logits,) = scorer.run(
        None, {"user_vector": expected_vectors, "candidates": candidates}
    )

    vectors, on_device = encode_bound(encoder, feed, "cpu")
    np.testing.assert_array_equal(vectors, expected_vectors)
    assert isinstance(on_device, onnxruntime.OrtValue) and on_device.device_name() == "cpu"
    for user_vectors in (on_device, vectors):  # the device copy, or the host array
        logits = score_bound(scorer, user_vectors, candidates, "cpu")
        np.testing.assert_array_equal(logits, expected_logits)


def test_device_vectors_are_found_by_their_host_array_only_while_it_lives():
    kept = DeviceVectors()
    host = np.ones((4, 3), np.float32)
    kept.keep(host, "device copy")
    assert kept.find(host) == "device copy"
    assert kept.find(host[:2]) is None and kept.find(host.copy()) is None  # rows: from host
    del host
    assert len(kept) == 0  # the device copy went with the batch


# -- FAISS --------------------------------------------------------------------------------------
def test_faiss_placement_follows_the_device_and_what_the_gpu_can_search():
    assert not placement("cpu", 1, "ivf").on_gpu
    assert placement("auto", 1, "ivf", nprobe=64).on_gpu
    assert placement("cuda", 1, "flat").on_gpu
    assert not placement("auto", 0, "flat").on_gpu  # faiss-cpu: the CPU, quietly
    assert "no GPU version" in placement("cuda", 1, "hnsw").reason
    assert not placement("cuda", 1, "ivf", nprobe=GPU_MAX_K + 1).on_gpu
    with pytest.raises(InputError, match="--device cuda: the installed faiss has no GPU"):
        placement("cuda", 0, "ivf")


def test_the_cpu_index_is_searched_as_it_is_unless_cuda_is_required():
    index = faiss.IndexFlatL2(4)
    index.add(np.eye(4, dtype=np.float32))
    assert place_index(index, "auto") is index and place_index(index, "cpu") is index
    check_device("auto")
    with pytest.raises(InputError, match="faiss-gpu-cu12"):
        check_device("cuda")


def test_searches_wider_than_the_gpu_allows_go_to_the_cpu_copy():
    points = np.random.default_rng(0).normal(size=(3000, 8)).astype(np.float32)
    cpu, stand_in = faiss.IndexFlatL2(8), faiss.IndexFlatL2(8)
    cpu.add(points)
    stand_in.add(points[::-1].copy())  # another index, so the two answers differ
    both = GpuSearch(cpu, stand_in)
    query = points[:1]
    assert (both.search(query, 5)[1] == stand_in.search(query, 5)[1]).all()
    assert (both.search(query, GPU_MAX_K + 1)[1] == cpu.search(query, GPU_MAX_K + 1)[1]).all()


# -- the gateway's flags ------------------------------------------------------------------------
def test_serve_with_device_cuda_on_a_machine_without_it_exits_naming_the_fix(tiny_repository):
    result = run_cli("serve", "--repository", tiny_repository, "--device", "cuda", "--port", 0,
                     "--no-metrics", check=False)  # fmt: skip
    assert result.returncode == 2
    assert "--device cuda" in result.stderr and "docs/gpu.md" in result.stderr


def test_serve_refuses_unknown_devices_and_tensorrt_with_triton(tiny_repository):
    result = run_cli("serve", "--repository", tiny_repository, "--device", "gpu", check=False)
    assert result.returncode == 2 and "--device: expected one of auto, cpu, cuda" in result.stderr
    result = run_cli("serve", "--repository", tiny_repository, "--backend", "triton",
                     "--tensorrt", check=False)  # fmt: skip
    assert result.returncode == 2 and "--tensorrt: for the embedded backend" in result.stderr
