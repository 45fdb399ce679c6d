"""Run the real `tritonserver` bundled in the PyPI package nvidia-pytriton, on CPU.

That package ships Triton with the Python backend only, and its Python must have numpy < 2, so
it lives in its own virtual environment (`.venv-triton`, made by `make install`). The recipe,
as it works on CPU machines: stage bin/backends/caches, put the Python backend stub for the
environment's Python into backends/python, run with libpython and the package's bundled
libraries on LD_LIBRARY_PATH and the environment's bin first on PATH, explicit model control, a
unique shared-memory prefix. A model load can hang silently when libpython is missing, so every
wait has a deadline and a failure carries the server's log.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from logitrec.processes import stop

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VENV = REPO / ".venv-triton"


class TritonUnavailable(RuntimeError):
    """The Triton environment is missing or the server did not become ready."""


@dataclass(frozen=True)
class TritonTls:
    """TLS on Triton's gRPC port: its certificate chain and key (PEM files), and the CA that
    signed them, which this module's own clients (readiness poll, load_model) trust. With
    client_ca, Triton requires clients to present a certificate that CA signed (mutual TLS);
    this module's clients then present client_cert/client_key."""

    server_cert: Path
    server_key: Path
    ca: Path
    client_ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    def server_flags(self) -> list[str]:
        flags = [
            "--grpc-use-ssl=true",
            f"--grpc-server-cert={Path(self.server_cert).resolve()}",
            f"--grpc-server-key={Path(self.server_key).resolve()}",
        ]
        if self.client_ca is not None:
            flags.append(f"--grpc-root-cert={Path(self.client_ca).resolve()}")
            flags.append("--grpc-use-ssl-mutual=true")
        return flags

    def client_options(self) -> dict:
        """tritonclient's InferenceServerClient keywords (it reads the files itself)."""
        return {
            "ssl": True,
            "root_certificates": str(self.ca),
            "certificate_chain": None if self.client_cert is None else str(self.client_cert),
            "private_key": None if self.client_key is None else str(self.client_key),
        }


@dataclass(frozen=True)
class TritonServer:
    grpc_url: str
    http_url: str
    metrics_url: str
    log_path: Path
    process: subprocess.Popen
    ports: dict[str, int]  # grpc, http, metrics: pass to run_triton to restart at this address
    tls: TritonTls | None = None  # on the gRPC port

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def grpc_client(self):
        """A blocking tritonclient for the gRPC port (TLS when the server has it)."""
        import tritonclient.grpc as grpcclient

        options = self.tls.client_options() if self.tls else {}
        return grpcclient.InferenceServerClient(self.grpc_url, **options)


def triton_venv() -> Path:
    return Path(os.environ.get("LOGITREC_TRITON_VENV", DEFAULT_VENV))


def _environment_facts(venv: Path) -> tuple[Path, str, str]:
    """(site-packages, 'major.minor', libpython dir) of the Triton environment's Python."""
    python = venv / "bin" / "python"
    if not python.exists():
        raise TritonUnavailable(f"{venv}: no Triton environment (run `make install`)")
    script = (
        "import sys, sysconfig, site; print(site.getsitepackages()[0]); "
        "print(f'{sys.version_info[0]}.{sys.version_info[1]}'); "
        "print(sysconfig.get_config_var('LIBDIR'))"
    )
    out = subprocess.run([python, "-c", script], capture_output=True, text=True, check=True)
    site_packages, version, libdir = out.stdout.split()
    return Path(site_packages), version, libdir


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stage(site_packages: Path, python_version: str, into: Path) -> Path:
    source = site_packages / "pytriton" / "tritonserver"
    if not (source / "bin" / "tritonserver").exists():
        raise TritonUnavailable(f"{source}: nvidia-pytriton's tritonserver is not installed")
    for part in ("bin", "caches"):
        (into / part).symlink_to(source / part)
    python_backend = into / "backends" / "python"
    python_backend.mkdir(parents=True)
    for entry in (source / "backends" / "python").iterdir():
        if entry.name != "__pycache__":
            (python_backend / entry.name).symlink_to(entry)
    stub = source / "python_backend_stubs" / python_version / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonUnavailable(f"{stub}: no Python backend stub for Python {python_version}")
    shutil.copy2(stub, python_backend / stub.name)
    return into / "bin" / "tritonserver"


@contextlib.contextmanager
def run_triton(
    repository: Path,
    *,
    venv: Path | None = None,
    log_path: Path | None = None,
    ready_timeout: float = 90.0,
    ports: dict[str, int] | None = None,
    tls: TritonTls | None = None,
    poll_seconds: int | None = None,
) -> Iterator[TritonServer]:
    """Start tritonserver over `repository` (explicit model control, nothing loaded yet), on
    free ports or on `ports` (grpc, http, metrics: a restart at the same address); with `tls`,
    its gRPC port speaks only TLS (its HTTP port stays plaintext). With `poll_seconds`, Triton
    instead loads every model at start and polls the repository for new versions this often
    (how the Helm chart runs it under several gateways: docs/deployment.md)."""
    venv = venv or triton_venv()
    site_packages, python_version, libdir = _environment_facts(venv)
    with tempfile.TemporaryDirectory(prefix="logitrec-triton-") as scratch:
        scratch = Path(scratch)
        binary = _stage(site_packages, python_version, scratch)
        ports = dict(ports) if ports else {n: _free_port() for n in ("grpc", "http", "metrics")}
        log_path = log_path or scratch / "tritonserver.log"
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [libdir, str(site_packages / "nvidia_pytriton.libs"), env.get("LD_LIBRARY_PATH", "")]
        )
        env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
        env.pop("PYTHONPATH", None)
        command = [
            str(binary),
            f"--model-repository={Path(repository).resolve()}",
            *(
                ["--model-control-mode=explicit"]
                if poll_seconds is None
                else ["--model-control-mode=poll", f"--repository-poll-secs={poll_seconds}"]
            ),
            f"--backend-directory={scratch / 'backends'}",
            f"--backend-config=python,shm-region-prefix-name=logitrec{uuid.uuid4().hex[:12]}",
            f"--grpc-port={ports['grpc']}",
            f"--http-port={ports['http']}",
            f"--metrics-port={ports['metrics']}",
            "--allow-metrics=true",
            "--exit-on-error=false",
            *(tls.server_flags() if tls else []),
        ]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        server = TritonServer(
            grpc_url=f"127.0.0.1:{ports['grpc']}",
            http_url=f"127.0.0.1:{ports['http']}",
            metrics_url=f"http://127.0.0.1:{ports['metrics']}/metrics",
            log_path=log_path,
            process=process,
            ports=ports,
            tls=tls,
        )
        try:
            client = server.grpc_client()
            deadline = time.monotonic() + ready_timeout
            while True:
                if process.poll() is not None:
                    raise TritonUnavailable(
                        f"tritonserver exited with {process.returncode}:\n{server.log()[-4000:]}"
                    )
                with contextlib.suppress(Exception):
                    if client.is_server_ready():
                        break
                if time.monotonic() > deadline:
                    log = server.log()[-4000:]
                    raise TritonUnavailable(
                        f"tritonserver not ready after {ready_timeout:.0f} s:\n{log}"
                    )
                time.sleep(0.2)
            client.close()
            yield server
        finally:
            stop(process)


def load_model(server: TritonServer, name: str, timeout: float = 120.0) -> None:
    """Load (or reload: picks up new versions) `name`, failing with the log after `timeout`."""
    import tritonclient.grpc as grpcclient

    client = server.grpc_client()
    try:
        client.load_model(name, client_timeout=timeout)
        if not client.is_model_ready(name):
            raise TritonUnavailable(f"{name} did not become ready:\n{server.log()[-4000:]}")
    except grpcclient.InferenceServerException as error:
        raise TritonUnavailable(f"loading {name} failed: {error}\n{server.log()[-4000:]}") from None
    finally:
        client.close()
