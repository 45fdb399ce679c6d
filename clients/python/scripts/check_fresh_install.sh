#!/usr/bin/env bash
# Install the client into a fresh virtualenv and fail if it pulls in anything beyond grpcio and
# protobuf (and grpcio's own typing-extensions), or if the installed CLI does not start.
#
#   clients/python/scripts/check_fresh_install.sh        # from anywhere; PYTHON=python3.12 to pick
#
# Needs the package index (it downloads grpcio, protobuf and the build backend).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
python="${PYTHON:-python3}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

"$python" -m venv "$scratch/venv"
venv_python="$scratch/venv/bin/python"
# From the repo root, as a user installs it: a regular (not editable) install of ./clients/python.
(cd "$repo_root" && "$venv_python" -m pip install --quiet --disable-pip-version-check ./clients/python)

# Run the checks from the scratch folder, so the source tree cannot stand in for the install.
cd "$scratch"
"$venv_python" - <<'PY'
import importlib.metadata
import re
import sys

required = {"logitrec-client", "grpcio", "protobuf"}
# pip (and setuptools, which `python -m venv` still seeds before Python 3.12) come with the venv;
# typing-extensions is grpcio's only requirement (typing-extensions~=4.12).
allowed = required | {"pip", "setuptools", "typing-extensions"}
installed = {
    re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
    for dist in importlib.metadata.distributions()
}
missing, unexpected = required - installed, installed - allowed
if missing or unexpected:
    sys.exit(f"fresh install: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
print("installed distributions:", ", ".join(sorted(installed)))

import logitrec_client  # noqa: E402  (after the check, so an import error cannot hide it)
from logitrec_client._proto.logitrec.v1 import recommender_pb2_grpc  # noqa: E402, F401

print("logitrec_client", logitrec_client.__version__, "imports with its generated stubs")
PY
"$scratch/venv/bin/logitrec-client" --help >/dev/null
"$scratch/venv/bin/logitrec-client" recommend --help >/dev/null
echo "fresh install OK: logitrec-client starts"
