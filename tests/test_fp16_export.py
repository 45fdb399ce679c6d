"""`logitrec export --precision fp16`: fp16 graphs with fp32 inputs and outputs, checked against
the fp32 PyTorch model on CPU ONNX Runtime with the looser fp16 tolerance, and recorded."""

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import run_cli

from export import parity
from logitrec import repository as layout
from training.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def fp16_export(tiny_checkpoints, tmp_path_factory):
    repository = tmp_path_factory.mktemp("fp16") / "models"
    printed = run_cli(
        "export", "--checkpoint", tiny_checkpoints[0], "--repository", repository,
        "--name", "tiny", "--precision", "fp16", "--triton-backend", "python",
    )  # fmt: skip
    return repository, json.loads(printed.stdout)


def test_fp16_export_passes_its_parity_check_within_the_stated_tolerance(fp16_export):
    repository, printed = fp16_export
    results = printed["parity"]
    assert results["passed"] and results["precision"] == "fp16"
    assert results["relative_tolerance"] == parity.FP16_RELATIVE_TOLERANCE
    assert 0 < results["max_abs_logit_diff"] <= results["tolerance"]
    assert results["top10_within_tolerance_users"] == results["users"]
    assert results["top10_overlap"] >= 0.95
    manifest = layout.read_manifest(layout.scorer_dir(repository, "tiny", 1))
    assert manifest.precision == "fp16" and manifest.parity == results


def test_fp16_graphs_hold_half_weights_behind_fp32_inputs_and_outputs(fp16_export):
    repository, _ = fp16_export
    for kind in layout.KINDS:
        model = onnx.load(str(layout.model_file(repository, "tiny", kind, 1)))
        floats = {i.data_type for i in model.graph.initializer} & {
            onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
        }  # fmt: skip
        assert onnx.TensorProto.FLOAT16 in floats, kind
        types = {
            v.name: v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)
        }
        assert all(t in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64) for t in types.values())


def test_fp16_answers_rank_like_pytorch_on_fresh_histories(fp16_export, tiny_checkpoints):
    repository, _ = fp16_export
    model, _ = load_checkpoint(tiny_checkpoints[0])
    rng = np.random.default_rng(7)
    histories = rng.integers(1, 61, size=(32, 12))
    folder = layout.scorer_dir(repository, "tiny", 1)
    context = np.load(folder / layout.PARITY_CONTEXT)[:1].repeat(32, axis=0)
    encoder = onnxruntime.InferenceSession(str(layout.model_file(repository, "tiny", "encoder", 1)))
    (vectors,) = encoder.run(None, parity.encoder_feed(histories, context))
    assert vectors.dtype == np.float32
    with torch.no_grad():
        expected = model.logits(
            model.user_vectors(torch.as_tensor(histories), torch.as_tensor(context))
        ).numpy()
    scorer = onnxruntime.InferenceSession(str(layout.model_file(repository, "tiny", "scorer", 1)))
    candidates = np.tile(np.arange(1, 61, dtype=np.int64), (32, 1))
    (logits,) = scorer.run(None, {"user_vector": vectors, "candidates": candidates})
    assert np.abs(logits - expected).max() <= parity.logit_tolerance("fp16", expected)
    top = np.argsort(-logits, axis=1)[:, :10] + 1
    tolerance = parity.logit_tolerance("fp16", expected)
    assert parity.near_ties_only(expected, top, tolerance) == 32


def test_verify_rechecks_an_fp16_version_with_its_own_tolerance(fp16_export):
    repository, _ = fp16_export
    printed = run_cli("export", "--verify", repository, "--name", "tiny")
    results = json.loads(printed.stdout)["parity"]
    assert results["passed"] and results["precision"] == "fp16"


def test_fp32_keeps_its_strict_tolerance_and_an_unknown_precision_is_refused(
    tiny_checkpoints, tmp_path
):
    result = run_cli("export", "--checkpoint", tiny_checkpoints[0], "--repository", tmp_path / "r",
                     "--precision", "int8", check=False)  # fmt: skip
    assert result.returncode == 2 and "--precision: expected one of fp32, fp16" in result.stderr
    expected = np.array([[10.0, -3.0]])
    assert parity.logit_tolerance("fp32", expected) == parity.LOGIT_TOLERANCE
    assert parity.logit_tolerance("fp16", expected) == pytest.approx(
        10 * parity.FP16_RELATIVE_TOLERANCE
    )
