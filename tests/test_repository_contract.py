"""The model repository contract: version discovery, the manifest, tensor names, and what the
gateway's registry refuses to load."""

import ast
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import copy_repository

from logitrec import repository as layout
from logitrec.errors import InputError
from serving.registry import load_version


def fake_version(repository: Path, name: str, version: int, *, kinds=layout.KINDS) -> None:
    """Empty stand-ins for one version's files (enough for discovery, not for loading)."""
    for kind in kinds:
        layout.model_file(repository, name, kind, version).parent.mkdir(parents=True)
        layout.model_file(repository, name, kind, version).write_bytes(b"")
    (layout.scorer_dir(repository, name, version) / layout.MANIFEST).write_text("{}")


def test_versions_are_listed_in_numeric_order_and_incomplete_ones_are_left_out(tmp_path):
    for version in (9, 10, 2):
        fake_version(tmp_path, "m", version)
    fake_version(tmp_path, "m", 11, kinds=("topk", "scorer"))  # the encoder never arrived
    layout.version_dir(tmp_path, "m", "scorer", 12).mkdir()  # an export still being written
    assert layout.complete_versions(tmp_path, "m") == [2, 9, 10]
    assert layout.latest_version(tmp_path, "m") == 10
    assert layout.existing_versions(tmp_path, "m") == {2, 9, 10, 11, 12}
    assert layout.model_names(tmp_path) == ["m"]
    with pytest.raises(InputError, match="no complete exported version of 'other'"):
        layout.latest_version(tmp_path, "other")


def test_the_manifest_round_trips_and_a_foreign_or_partial_one_is_refused(tmp_path):
    manifest = layout.Manifest(
        name="m", version=3, num_items=5, hidden_size=8, max_length=10,
        context_vocabulary={"age": ["1", "18"]}, index={"factory": "Flat"}, opset=17,
        precision="fp32", triton_backend="python", device="cpu", catalog_sha256="abc",
    )  # fmt: skip
    layout.write_manifest(tmp_path, manifest)
    written = json.loads((tmp_path / layout.MANIFEST).read_text())
    assert written["models"]["encoder"] == "m_encoder" and written["context_features"] == ["age"]
    assert layout.read_manifest(tmp_path) == manifest

    (tmp_path / layout.MANIFEST).write_text(json.dumps({**written, "format": "something.else"}))
    with pytest.raises(InputError, match=r"not a logitrec\.model-version manifest"):
        layout.read_manifest(tmp_path)
    del written["max_length"]
    (tmp_path / layout.MANIFEST).write_text(json.dumps(written))
    with pytest.raises(InputError, match="manifest lacks max_length"):
        layout.read_manifest(tmp_path)
    (tmp_path / layout.MANIFEST).write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        layout.read_manifest(tmp_path)


def test_the_triton_python_model_pads_the_contracts_tensors():
    """model.py runs inside Triton without logitrec, so it spells the names out itself."""
    source = (Path(layout.__file__).parents[1] / "export" / "triton_python_model.py").read_text()
    assigned = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    assert assigned["LEFT_PADDED"] == {layout.ITEMS}
    assert assigned["RIGHT_PADDED"] == {layout.CANDIDATES}


def test_registry_refuses_a_bad_manifest_or_a_missing_model_file(tiny_repository, tmp_path):
    repository = copy_repository(tiny_repository, tmp_path)
    assert load_version(repository, "tiny", 1).num_items == 60

    manifest_path = layout.scorer_dir(repository, "tiny", 1) / layout.MANIFEST
    original = manifest_path.read_text()
    manifest_path.write_text(json.dumps({**json.loads(original), "num_items": 61}))
    with pytest.raises(InputError, match="60 items, but the manifest says 61"):
        load_version(repository, "tiny", 1)
    manifest_path.write_text(json.dumps({**json.loads(original), "format": "other"}))
    with pytest.raises(InputError, match=re.escape(str(manifest_path))):
        load_version(repository, "tiny", 1)
    manifest_path.write_text(original)

    encoder = layout.model_file(repository, "tiny", "encoder", 1)
    shutil.move(encoder, tmp_path / "moved.onnx")
    with pytest.raises(InputError, match="the encoder of tiny version 1 is missing"):
        load_version(repository, "tiny", 1)
    assert layout.complete_versions(repository, "tiny") == []
