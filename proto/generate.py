"""Generate the Python stubs for every proto under proto/logitrec/ into the client package.

    python proto/generate.py            # write clients/python/logitrec_client/_proto/
    python proto/generate.py --out DIR  # write elsewhere (the stub test compares the two)

protoc names a stub's imports after the proto path (`from logitrec.v1 import ...`,
`from logitrec.admin.v1 import ...`), which would clash with the `logitrec` package; those import
lines are rewritten to the client package.
"""

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO = PROTO_ROOT.parent
DEFAULT_OUT = REPO / "clients" / "python" / "logitrec_client" / "_proto"
PACKAGE = "logitrec_client._proto"
PROTO_IMPORT = re.compile(r"^from logitrec\.(\S+) import", re.MULTILINE)


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc

    protos = sorted(PROTO_ROOT.glob("logitrec/**/*.proto"))
    with tempfile.TemporaryDirectory() as scratch:
        include = Path(protoc.__file__).parent / "_proto"
        arguments = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={scratch}",
            f"--pyi_out={scratch}",
            f"--grpc_python_out={scratch}",
            *map(str, protos),
        ]
        if protoc.main(arguments) != 0:
            raise SystemExit("protoc failed")
        if out.exists():
            shutil.rmtree(out)
        written = []
        for source in sorted(Path(scratch).rglob("*.py*")):
            target = out / source.relative_to(scratch)
            target.parent.mkdir(parents=True, exist_ok=True)
            text = PROTO_IMPORT.sub(rf"from {PACKAGE}.logitrec.\1 import", source.read_text())
            target.write_text(text)
            written.append(target)
        for folder in {out, *(p.parent for p in written)}:
            while folder != out.parent:
                (folder / "__init__.py").touch()
                folder = folder.parent
    return sorted(written)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    for path in generate(parser.parse_args(sys.argv[1:]).out):
        print(path)
