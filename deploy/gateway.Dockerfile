# The LogitRec gateway (`logitrec serve`) on a slim Python, without torch: serving/ never imports
# it, and the project's own dependencies (which include it, for training and export) are replaced
# by deploy/gateway-requirements.txt. Build from the repository root:
#
#   docker build -f deploy/gateway.Dockerfile -t logitrec-gateway:0.1.0 .
#
# The model repository and the config come from volumes (deploy/helm/logitrec mounts both):
#
#   docker run -p 50051:50051 -p 9464:9464 -v $PWD/model_repository:/models:ro \
#     logitrec-gateway:0.1.0 --repository /models --host 0.0.0.0 --insecure
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin logitrec
WORKDIR /opt/logitrec

# Dependencies first: this layer is rebuilt only when the list changes, not with every commit.
COPY deploy/gateway-requirements.txt deploy/gateway-requirements.txt
RUN pip install -r deploy/gateway-requirements.txt

# The client SDK (the gateway imports its gRPC stubs) and the project without its dependencies.
COPY clients/python clients/python
COPY pyproject.toml README.md ./
COPY logitrec logitrec
COPY serving serving
COPY export export
COPY training training
RUN pip install --no-deps ./clients/python . \
    && logitrec serve --help > /dev/null

USER 10001
# gRPC (recommendations, grpc.health.v1, admin) and Prometheus /metrics: ServeConfig's defaults.
EXPOSE 50051 9464
# No HEALTHCHECK: orchestrators probe grpc.health.v1 on the gRPC port themselves (the chart does).
ENTRYPOINT ["logitrec", "serve"]
CMD ["--config", "/etc/logitrec/gateway.toml"]
