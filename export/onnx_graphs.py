"""Write the encoder, scorer and top-k graphs as ONNX files with dynamic batch/length axes."""

import warnings
from pathlib import Path

import torch

from export.graphs import Encoder, Scorer, TopK
from logitrec.errors import InputError

# The smallest opset with LayerNormalization as one op; onnxruntime >= 1.14 and Triton >= 23.x
# run it. --opset picks another (14 is the oldest the graphs export to).
OPSET = 17
MIN_OPSET = 14
# Above this a model's weights go to a side file (protobuf's 2 GB limit).
EXTERNAL_DATA_BYTES = 1_900_000_000


def check_opset(opset: int) -> None:
    """Refuse an opset the installed torch exporter or onnxruntime cannot handle, up front."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    if opset < MIN_OPSET:
        raise InputError(f"--opset {opset}: the graphs need opset {MIN_OPSET} or newer")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    probe.ir_version = min(probe.ir_version, onnx.IR_VERSION)
    try:
        onnxruntime.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as error:
        raise InputError(
            f"--opset {opset}: the installed onnxruntime {onnxruntime.__version__} cannot run it "
            f"({str(error).splitlines()[0][:160]})"
        ) from None


def _export(module, args, path: Path, inputs, outputs, dynamic_axes, opset: int) -> None:
    size = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
            external_data=size > EXTERNAL_DATA_BYTES,
        )


def example_inputs(context_tokens: int, length: int = 7, batch: int = 2) -> dict:
    items = torch.arange(1, batch * length + 1).reshape(batch, length) % 5 + 1
    items[0, :3] = 0  # left padding, so the traced graph keeps the masking path
    inputs = {"items": items}
    if context_tokens:
        inputs["context"] = torch.ones(batch, context_tokens, dtype=torch.long)
    return inputs


def export_encoder(encoder: Encoder, path: Path, opset: int = OPSET) -> None:
    inputs = example_inputs(encoder.model.context_tokens)
    axes = {"items": {0: "batch", 1: "length"}, "user_vector": {0: "batch"}}
    if "context" in inputs:
        axes["context"] = {0: "batch"}
    _export(encoder, tuple(inputs.values()), path, list(inputs), ["user_vector"], axes, opset)


def export_scorer(scorer: Scorer, path: Path, opset: int = OPSET) -> None:
    dim = scorer.weight.shape[1]
    args = (torch.zeros(2, dim), torch.ones(2, 3, dtype=torch.long))
    axes = {
        "user_vector": {0: "batch"},
        "candidates": {0: "batch", 1: "candidates"},
        "logits": {0: "batch", 1: "candidates"},
    }
    _export(scorer, args, path, ["user_vector", "candidates"], ["logits"], axes, opset)


def export_topk(topk: TopK, path: Path, opset: int = OPSET) -> None:
    inputs = example_inputs(topk.encoder.model.context_tokens)
    k = torch.full((2, 1), 3, dtype=torch.long)
    names = ["items", "k", *(["context"] if "context" in inputs else [])]
    args = (inputs["items"], k, *([inputs["context"]] if "context" in inputs else []))
    axes = {
        "items": {0: "batch", 1: "length"},
        "k": {0: "batch"},
        "top_logits": {0: "batch", 1: "k"},
        "top_items": {0: "batch", 1: "k"},
    }
    if "context" in inputs:
        axes["context"] = {0: "batch"}
    _export(topk, args, path, names, ["top_logits", "top_items"], axes, opset)
