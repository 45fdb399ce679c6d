"""The committed gRPC stubs are exactly what protoc makes of proto/logitrec/ (v1, admin/v1)
today."""

import importlib.util

from conftest import REPO


def test_regenerating_the_stubs_changes_nothing(tmp_path):
    spec = importlib.util.spec_from_file_location("generate", REPO / "proto" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    fresh = tmp_path / "_proto"
    generate.generate(fresh)
    committed = generate.DEFAULT_OUT
    fresh_files = {p.relative_to(fresh): p.read_text() for p in fresh.rglob("*") if p.is_file()}
    committed_files = {
        p.relative_to(committed): p.read_text()
        for p in committed.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert sorted(map(str, fresh_files)) == sorted(map(str, committed_files)), (
        "stub files differ: run `python proto/generate.py`"
    )
    for name, text in fresh_files.items():
        assert committed_files[name] == text, f"{name} is stale: run `python proto/generate.py`"
