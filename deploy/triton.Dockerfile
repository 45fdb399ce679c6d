# A model server for LogitRec: NVIDIA's Triton image with its native onnxruntime backend, which
# serves the `backend: "onnxruntime"` configs `logitrec export` writes. The model repository is
# not baked in: it lives on a shared volume (or object storage) mounted at /models, so a new
# model version needs no new image. 24.10 is Triton 2.51, the server version the tests run
# (nvidia-pytriton 0.7.0 bundles it).
#
#   docker build -f deploy/triton.Dockerfile -t logitrec-triton:24.10 .
#   docker run --gpus 1 -p 8001:8001 -v $PWD/model_repository:/models:ro logitrec-triton:24.10
FROM nvcr.io/nvidia/tritonserver:24.10-py3

# The image's unprivileged user, triton-server (uid 1000): the server needs no root.
USER 1000
# HTTP (health probes), gRPC (the gateways' inference), Prometheus metrics.
EXPOSE 8000 8001 8002
ENTRYPOINT ["tritonserver"]
# poll: Triton loads each new version the export writes and keeps the newest two (the configs'
# version_policy), so gateways sharing it never load or unload versions on it; readiness not
# strict, so an export in progress does not make it unready (docs/deployment.md).
CMD ["--model-repository=/models", "--model-control-mode=poll", "--repository-poll-secs=15", \
     "--strict-readiness=false", "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"]
