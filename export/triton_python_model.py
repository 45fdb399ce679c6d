"""Triton Python-backend model that runs the version's model.onnx with ONNX Runtime.

Copied into every version directory as model.py by `logitrec export`. It serves Triton builds
without the native onnxruntime backend (such as the one in the PyPI package nvidia-pytriton).
`execute` runs one ONNX Runtime call for all requests of a dynamic batch: id inputs of different
lengths are padded with 0 (histories on the left, where the padding is; candidate lists on the
right) and each request gets back its own rows, trimmed to its own candidate count.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils

# The tensor names of logitrec.repository (ITEMS, CANDIDATES), written out because this file runs
# inside Triton's Python, where logitrec is not installed; a test holds them equal.
LEFT_PADDED = {"items"}
RIGHT_PADDED = {"candidates"}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]
        version_dir = Path(args["model_repository"]) / args["model_version"]
        providers = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU":
            providers.insert(0, "CUDAExecutionProvider")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(
            config.get("parameters", {}).get("intra_op_threads", {}).get("string_value", "0")
        )
        self.session = onnxruntime.InferenceSession(
            str(version_dir / "model.onnx"), options, providers=providers
        )

    def execute(self, requests):
        try:
            arrays = {
                name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
                for name in self.input_names
            }
            rows = [len(a) for a in arrays[self.input_names[0]]]
            feed = {name: _stack(name, parts) for name, parts in arrays.items()}
            outputs = self.session.run(self.output_names, feed)
        except Exception as error:  # every request of the batch gets the error, none hangs
            message = f"{type(error).__name__}: {error}"
            return [
                pb_utils.InferenceResponse(error=pb_utils.TritonError(message)) for _ in requests
            ]
        widths = [a.shape[1] for a in arrays["candidates"]] if "candidates" in arrays else None
        responses, begin = [], 0
        for index, count in enumerate(rows):
            tensors = []
            for name, value in zip(self.output_names, outputs, strict=True):
                part = value[begin : begin + count]
                if widths is not None and part.ndim == 2:
                    part = part[:, : widths[index]]
                tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(part)))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            begin += count
        return responses

    def finalize(self):
        self.session = None


def _stack(name, parts):
    if parts[0].ndim == 2 and (name in LEFT_PADDED or name in RIGHT_PADDED):
        width = max(p.shape[1] for p in parts)
        padded = []
        for p in parts:
            pad = width - p.shape[1]
            spec = ((0, 0), (pad, 0)) if name in LEFT_PADDED else ((0, 0), (0, pad))
            padded.append(np.pad(p, spec))
        parts = padded
    return np.concatenate(parts, axis=0)
