"""fp16 copies of the exported graphs (`logitrec export --precision fp16`).

Weights and arithmetic go to float16 (half the bytes a GPU reads per item scored, and its
tensor cores), while every input and output stays as the fp32 graph has it (keep_io_types):
the gateway, the Triton configs and the clients see the same tensors whatever the precision.
ONNX Runtime's converter keeps the ops it lists as unsafe in fp16 (TopK among them) in fp32,
so the top-k graph ranks fp16 logits with fp32 comparisons.
"""

from pathlib import Path

from export.onnx_graphs import EXTERNAL_DATA_BYTES

PRECISIONS = ("fp32", "fp16")


def convert_to_fp16(path: Path) -> None:
    """Rewrite the ONNX model at `path` in fp16, its inputs and outputs kept fp32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    path = Path(path)
    model = onnx.load(str(path))
    # Infinities stay infinite (the scorer's padding bias is -inf); finite values beyond fp16's
    # range are clipped to +-65504 (the attention mask's float32 minimum becomes -65504, still
    # far enough below any score for softmax to give it no weight).
    half = convert_float_to_float16(model, keep_io_types=True)
    large = half.ByteSize() > EXTERNAL_DATA_BYTES
    for stale in path.parent.glob(f"{path.name}.data"):
        stale.unlink()
    onnx.save(half, str(path), save_as_external_data=large, location=f"{path.name}.data")
