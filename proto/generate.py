"""Generate the Python stubs for proto/logitrec/v1 into the client package.

    python proto/generate.py            # write clients/python/logitrec_client/_proto/
    python proto/generate.py --out DIR  # write elsewhere (the stub test compares the two)

protoc names the stub's import after the proto path (`from logitrec.v1 import ...`), which would
clash with the `logitrec` package; the one import line is rewritten to the client package.
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO = PROTO_ROOT.parent
DEFAULT_OUT = REPO / "clients" / "python" / "logitrec_client" / "_proto"
PACKAGE = "logitrec_client._proto"


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc

    protos = sorted(PROTO_ROOT.glob("logitrec/v1/*.proto"))
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
            text = source.read_text().replace(
                "from logitrec.v1 import", f"from {PACKAGE}.logitrec.v1 import"
            )
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
