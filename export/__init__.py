"""Export: a checkpoint becomes verified ONNX graphs, a catalog and a FAISS index in a Triton
model repository (the layout: logitrec.repository)."""
