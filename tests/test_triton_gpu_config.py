"""Triton GPU configs (`logitrec export --device gpu [--tensorrt]`) parse as Triton's own
ModelConfig message (tritonclient ships its schema) and say what a GPU deployment needs."""

import json

import pytest
from conftest import run_cli
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from export.triton_config import GPU_PREFERRED_BATCH_SIZES, config_text, tensorrt_profile
from logitrec.repository import TRITON_MAX_BATCH_SIZE, model_tensors

ModelConfig = model_config_pb2.ModelConfig


def parse(text: str) -> ModelConfig:
    """Strict: an unknown field or a malformed value fails, as in Triton's own parser."""
    return text_format.Parse(text, ModelConfig())


@pytest.fixture(scope="module")
def gpu_repository(tiny_checkpoints, tmp_path_factory):
    repository = tmp_path_factory.mktemp("gpu") / "models"
    printed = run_cli(
        "export", "--checkpoint", tiny_checkpoints[0], "--repository", repository,
        "--name", "tiny", "--device", "gpu", "--tensorrt", "--precision", "fp16",
    )  # fmt: skip
    assert json.loads(printed.stdout)["parity"]["passed"]
    return repository


@pytest.mark.parametrize("kind", ["encoder", "scorer", "topk"])
def test_exported_gpu_configs_parse_as_triton_model_configs(gpu_repository, kind):
    config = parse((gpu_repository / f"tiny_{kind}" / "config.pbtxt").read_text())
    assert config.name == f"tiny_{kind}" and config.backend == "onnxruntime"
    assert config.default_model_filename == "model.onnx"
    assert config.max_batch_size == TRITON_MAX_BATCH_SIZE
    (group,) = config.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU and group.count == 1
    assert list(config.dynamic_batching.preferred_batch_size) == list(GPU_PREFERRED_BATCH_SIZES)
    assert max(config.dynamic_batching.preferred_batch_size) <= config.max_batch_size
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == "FP16"  # the export is fp16
    assert accelerator.parameters["trt_engine_cache_enable"] == "1"
    shapes = accelerator.parameters["trt_profile_max_shapes"].split(",")
    declared = {t.name for t in config.input}
    assert {s.split(":")[0] for s in shapes} == declared  # one profile covering every input
    assert all(s.split(":")[1].startswith(f"{TRITON_MAX_BATCH_SIZE}x") for s in shapes)


def test_the_encoder_profile_spans_the_models_window():
    inputs, _ = model_tensors("encoder", 32, 3)
    smallest, largest = tensorrt_profile(inputs, {"items": 50})
    assert smallest == "items:1x1,context:1x3"
    assert largest == f"items:{TRITON_MAX_BATCH_SIZE}x50,context:{TRITON_MAX_BATCH_SIZE}x3"
    assert tensorrt_profile(inputs, {}) is None  # no bound known: TensorRT sizes per shape


def test_fp32_gpu_config_without_tensorrt_has_no_accelerator_and_cpu_configs_stay_as_they_were():
    inputs, outputs = model_tensors("scorer", 64, 0)
    config = parse(config_text("m_scorer", inputs, outputs, backend="onnxruntime", device="gpu"))
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator
    fp32 = parse(config_text("m", inputs, outputs, backend="onnxruntime", device="gpu",
                             tensorrt=True, widest={"candidates": 4096}))  # fmt: skip
    (accelerator,) = fp32.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.parameters["precision_mode"] == "FP32"  # as its parity check measured
    cpu = parse(config_text("m_scorer", inputs, outputs, backend="python", device="cpu"))
    assert cpu.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert list(cpu.dynamic_batching.preferred_batch_size) == [8, 16, 32]


def test_tensorrt_needs_the_native_backend_on_a_gpu(tiny_checkpoints, tmp_path):
    for extra in (("--tensorrt",), ("--device", "gpu", "--triton-backend", "python", "--tensorrt")):
        result = run_cli("export", "--checkpoint", tiny_checkpoints[0], "--repository",
                         tmp_path / "r", *extra, check=False)  # fmt: skip
        assert result.returncode == 2 and "--tensorrt: needs --device gpu" in result.stderr
