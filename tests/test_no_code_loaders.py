"""No loader that can execute code hides anywhere in the repository's Python: model repositories,
checkpoints and datasets are read as safetensors, ONNX, Parquet, JSON and .npy without pickles.

The scan reads the syntax tree (not the text), so a docstring naming pickle is fine and an
aliased import is still caught.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCANNED = ["logitrec", "training", "export", "serving", "clients/python", "benchmarks",
           "scripts", "tests"]  # fmt: skip
GENERATED = ("_proto",)  # protoc's stubs, compared with its output by test_proto_stubs
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve",
                  "marshal"}  # fmt: skip
# (module, function) pairs that deserialize arbitrary objects, and builtins that run strings.
UNSAFE_CALLS = {("torch", "load"), ("jit", "load"), ("yaml", "load"), ("yaml", "unsafe_load"),
                ("pd", "read_pickle"), ("pandas", "read_pickle")}  # fmt: skip
UNSAFE_BUILTINS = {"eval", "exec"}
# Uses that read nothing from outside, each with its reason.
ALLOWED = {
    "tests/test_client_failures.py": "pickles the client's own exception objects in memory "
    "(they must survive multiprocessing)",
}


def _is_true(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_uses(source: str, filename: str = "<source>") -> list[str]:
    """Each code-executing loader in `source`, as "file:line: what"."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in UNSAFE_MODULES]  # fmt: skip
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in UNSAFE_MODULES:
                found.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            function = node.func
            keywords = {k.arg: k.value for k in node.keywords}
            if isinstance(function, ast.Name) and function.id in UNSAFE_BUILTINS:
                found.append(f"{where}: {function.id}()")
            if isinstance(function, ast.Attribute):
                owner = function.value
                owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
                if (owner_name, function.attr) in UNSAFE_CALLS:
                    found.append(f"{where}: {owner_name}.{function.attr}()")
                if function.attr == "load" and _is_true(keywords.get("allow_pickle")):
                    found.append(f"{where}: load(allow_pickle=True)")
            if _is_true(keywords.get("trust_remote_code")):
                found.append(f"{where}: trust_remote_code=True")
    return found


def python_files() -> list[Path]:
    files = []
    for folder in SCANNED:
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = path.relative_to(REPO).parts
            if not any(p in GENERATED or p.startswith(".") for p in parts):
                files.append(path)
    return files


def test_no_code_executing_loaders_in_the_repository():
    files = python_files()
    assert len(files) > 50, "the scan found too few files: are the folders right?"
    found = []
    for path in files:
        name = path.relative_to(REPO).as_posix()
        if name not in ALLOWED:
            found += unsafe_uses(path.read_text(), name)
    assert found == [], "code-executing loaders:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle",
        "import joblib as jl",
        "from dill import loads",
        "state = torch.load(path)",
        "model = torch.jit.load(path)",
        "x = np.load(path, allow_pickle=True)",
        "config = yaml.load(text)",
        "frame = pd.read_pickle(path)",
        "value = eval(text)",
        "AutoModel.from_pretrained(path, trust_remote_code=True)",
    ],
)
def test_the_scan_catches_each_kind_of_loader(snippet):
    assert unsafe_uses(snippet) != []


def test_the_scan_passes_safe_look_alikes():
    safe = "np.load(path, allow_pickle=False)\nmodel.eval()\nsafetensors.torch.load_file(p)\n"
    assert unsafe_uses(safe + '"""pickle is never used"""\n') == []
