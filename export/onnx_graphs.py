"""Write the encoder, scorer and top-k graphs as ONNX files with dynamic batch/length axes."""

import warnings
from pathlib import Path

import torch

from export.graphs import Encoder, Scorer, TopK

# The smallest opset with LayerNormalization as one op; onnxruntime >= 1.14 and Triton >= 23.x
# run it.
OPSET = 17
# Above this a model's weights go to a side file (protobuf's 2 GB limit).
EXTERNAL_DATA_BYTES = 1_900_000_000


def _export(module, args, path: Path, inputs, outputs, dynamic_axes) -> None:
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
            opset_version=OPSET,
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


def export_encoder(encoder: Encoder, path: Path) -> None:
    inputs = example_inputs(encoder.model.context_tokens)
    axes = {"items": {0: "batch", 1: "length"}, "user_vector": {0: "batch"}}
    if "context" in inputs:
        axes["context"] = {0: "batch"}
    _export(encoder, tuple(inputs.values()), path, list(inputs), ["user_vector"], axes)


def export_scorer(scorer: Scorer, path: Path) -> None:
    dim = scorer.weight.shape[1]
    args = (torch.zeros(2, dim), torch.ones(2, 3, dtype=torch.long))
    axes = {
        "user_vector": {0: "batch"},
        "candidates": {0: "batch", 1: "candidates"},
        "logits": {0: "batch", 1: "candidates"},
    }
    _export(scorer, args, path, ["user_vector", "candidates"], ["logits"], axes)


def export_topk(topk: TopK, path: Path) -> None:
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
    _export(topk, args, path, names, ["top_logits", "top_items"], axes)
