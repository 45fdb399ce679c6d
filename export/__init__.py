"""Export: checkpoints -> ONNX models in a Triton model repository (not implemented yet)."""
