"""Write the encoder, scorer and top-k graphs as ONNX files with dynamic batch/length axes."""

import warnings
from pathlib import Path

import torch

from export.attribution import Attribution, joint_graph
from export.attribution import example_inputs as attribution_inputs
from export.graphs import Encoder, Scorer, TopK
from logitrec.errors import InputError
from logitrec.repository import (
    ATTRIBUTIONS,
    CANDIDATES,
    CONTEXT,
    EXPLAIN_KIND,
    ITEMS,
    LOGITS,
    TARGETS,
    TOP_ITEMS,
    TOP_LOGITS,
    K,
    model_tensors,
)

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


def _export(
    module, args, path: Path, inputs, outputs, dynamic_axes, opset: int, weights_of=None
) -> None:
    """`weights_of`: the module whose state is the graph's weights, when `module` holds them as
    plain constants (a captured graph)."""
    state = (weights_of or module).state_dict()
    size = sum(t.numel() * t.element_size() for t in state.values())
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
    inputs = {ITEMS: items}
    if context_tokens:
        inputs[CONTEXT] = torch.ones(batch, context_tokens, dtype=torch.long)
    return inputs


def _names(kind: str, dim: int, context_tokens: int) -> tuple[list[str], list[str]]:
    inputs, outputs = model_tensors(kind, dim, context_tokens)
    return [t.name for t in inputs], [t.name for t in outputs]


def _axes(names: list[str]) -> dict:
    """Every tensor's batch axis is dynamic, and so is each variable-width second axis."""
    second = {ITEMS: "length", CANDIDATES: "candidates", LOGITS: "candidates"}
    second |= {TOP_LOGITS: "k", TOP_ITEMS: "k", TARGETS: "k", ATTRIBUTIONS: "k"}
    third = {ATTRIBUTIONS: "length"}
    return {
        n: {
            0: "batch",
            **({1: second[n]} if n in second else {}),
            **({2: third[n]} if n in third else {}),
        }
        for n in names
    }


def export_encoder(encoder: Encoder, path: Path, opset: int = OPSET) -> None:
    context_tokens = encoder.model.context_tokens
    inputs = example_inputs(context_tokens)
    names, outputs = _names("encoder", 0, context_tokens)
    args = tuple(inputs[n] for n in names)
    _export(encoder, args, path, names, outputs, _axes(names + outputs), opset)


def export_scorer(scorer: Scorer, path: Path, opset: int = OPSET) -> None:
    dim = scorer.weight.shape[1]
    args = (torch.zeros(2, dim), torch.ones(2, 3, dtype=torch.long))
    names, outputs = _names("scorer", dim, 0)
    _export(scorer, args, path, names, outputs, _axes(names + outputs), opset)


def export_topk(topk: TopK, path: Path, opset: int = OPSET) -> None:
    context_tokens = topk.encoder.model.context_tokens
    inputs = example_inputs(context_tokens)
    inputs[K] = torch.full((2, 1), 3, dtype=torch.long)
    names, outputs = _names("topk", 0, context_tokens)
    args = tuple(inputs[n] for n in names)
    _export(topk, args, path, names, outputs, _axes(names + outputs), opset)


def export_explain(attribution: Attribution, path: Path, opset: int = OPSET) -> None:
    """The attribution graph: its forward and autograd's backward captured as one graph first
    (export/attribution.py says why), then written like the others."""
    context_tokens = attribution.encoder.model.context_tokens
    inputs = attribution_inputs(context_tokens, attribution.num_items)
    names, outputs = _names(EXPLAIN_KIND, 0, context_tokens)
    args = tuple(inputs[n] for n in names)
    graph = joint_graph(attribution, args)
    _export(graph, args, path, names, outputs, _axes(names + outputs), opset, attribution)
