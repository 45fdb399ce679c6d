"""Export: a checkpoint becomes a verified, versioned Triton repository; bad input loses nothing."""

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import onnxruntime
import pytest
import torch
from conftest import copy_repository, run_cli

from export import exporter, parity
from export.calibrate import calibrate, exact_top, measure
from export.graphs import Encoder
from export.index import build_index
from export.triton_config import config_text
from logitrec import repository as layout
from logitrec.mips import item_points, query_points, search
from logitrec.repository import model_tensors
from training.checkpoint import load_checkpoint

FILES = {
    "encoder": {"model.onnx", "model.py"},
    "topk": {"model.onnx", "model.py"},
    "scorer": {
        "model.onnx",
        "model.py",
        "catalog.parquet",
        "head.npy",
        "faiss.index",
        "manifest.json",
        "parity_histories.npy",
        "parity_context.npy",
    },
}


def leftovers(repository):
    return sorted(p.name for p in repository.rglob(".*"))


@pytest.fixture(scope="module")
def exported(tiny_checkpoints, tmp_path_factory):
    repository = tmp_path_factory.mktemp("repo") / "models"
    printed = run_cli(
        "export",
        "--checkpoint",
        tiny_checkpoints[0],
        "--repository",
        repository,
        "--name",
        "tiny",
        "--triton-backend",
        "python",
    )
    return repository, json.loads(printed.stdout)


def test_export_writes_a_complete_verified_version(exported, tiny_checkpoints):
    repository, printed = exported
    assert printed["version"] == 1 and printed["parity"]["passed"]
    for kind, files in FILES.items():
        assert {p.name for p in (repository / f"tiny_{kind}" / "1").iterdir()} == files
        config = (repository / f"tiny_{kind}" / "config.pbtxt").read_text()
        assert f'name: "tiny_{kind}"' in config and 'backend: "python"' in config
    manifest = json.loads((repository / "tiny_scorer" / "1" / "manifest.json").read_text())
    assert manifest["parity"]["max_abs_logit_diff"] <= 1e-4
    assert manifest["parity"]["top10_identical_users"] == manifest["parity"]["users"] > 0
    assert manifest["context_features"], "the synthetic users' context should be exported"
    assert manifest["opset"] == 17 and manifest["num_items"] == 60
    assert leftovers(repository) == []


def test_onnx_encoder_and_scorer_match_pytorch_on_fresh_histories(exported, tiny_checkpoints):
    repository, _ = exported
    model, config = load_checkpoint(tiny_checkpoints[0])
    rng = np.random.default_rng(5)
    histories = rng.integers(1, 61, size=(5, 9))
    histories[1, :4] = 0  # a shorter, left-padded history
    context = rng.integers(0, 2, size=(5, len(config.context_vocabulary)))
    feed = parity.encoder_feed(histories, context)
    encoder = onnxruntime.InferenceSession(str(repository / "tiny_encoder" / "1" / "model.onnx"))
    (vectors,) = encoder.run(None, feed)
    scorer = onnxruntime.InferenceSession(str(repository / "tiny_scorer" / "1" / "model.onnx"))
    candidates = np.array([[3, 7, 0, 60]] * 5)
    (logits,) = scorer.run(None, {"user_vector": vectors, "candidates": candidates})
    with torch.no_grad():
        expected = model(torch.as_tensor(histories), torch.as_tensor(context)).numpy()
    np.testing.assert_allclose(logits[:, [0, 1, 3]], expected[:, [2, 6, 59]], atol=1e-4)
    assert np.isneginf(logits[:, 2]).all(), "candidate 0 is padding and must never win"


def test_scratch_encoder_computes_only_the_newest_state_and_matches_the_full_forward(
    tiny_checkpoints,
):
    model, config = load_checkpoint(tiny_checkpoints[0])
    encoder = Encoder(model).eval()
    assert encoder.newest_only, "a scratch (GPT-2) model should take the newest-state path"
    histories = torch.tensor([[0, 0, 0, 4, 9, 2], [5, 1, 8, 3, 3, 7], [0, 0, 0, 0, 0, 11]])
    context = torch.ones(3, len(config.context_vocabulary), dtype=torch.long)
    with torch.no_grad():
        fast = encoder(histories, context)
        full = model.user_vectors(histories, context)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)


def test_catalog_lists_every_item_with_popularity_and_metadata(exported):
    import polars as pl

    from serving.registry import load_version

    repository, _ = exported
    catalog = pl.read_parquet(repository / "tiny_scorer" / "1" / "catalog.parquet")
    # The synthetic items table's genres travel as written, for filters and caps in serving.
    assert catalog.columns == ["index", "item_id", "title", "popularity", "genres"]
    assert catalog["index"].to_list() == list(range(1, 61))
    assert catalog["popularity"].sum() > 0 and catalog["title"].null_count() == 0
    metadata = load_version(repository, "tiny", 1).metadata
    genres = metadata.categories("genres")
    assert list(metadata.fields) == ["genres"]
    assert [genres.values[c] for c in genres.of(1)] == catalog["genres"][0].split("|")


def test_an_older_catalog_without_metadata_still_loads(exported, tmp_path):
    import polars as pl

    from serving.registry import load_version

    repository = copy_repository(exported[0], tmp_path)
    path = repository / "tiny_scorer" / "1" / "catalog.parquet"
    pl.read_parquet(path).drop("genres").write_parquet(path)
    assert load_version(repository, "tiny", 1).metadata is None


def test_verify_rechecks_an_installed_version(exported):
    repository, _ = exported
    result = run_cli("export", "--verify", repository, "--name", "tiny")
    assert json.loads(result.stdout)["parity"]["passed"]


def test_next_export_is_version_two_and_existing_version_needs_force(exported, tiny_checkpoints):
    repository, _ = exported
    args = ("export", "--checkpoint", tiny_checkpoints[1], "--repository", repository)
    second = json.loads(run_cli(*args, "--name", "tiny", "--triton-backend", "python").stdout)
    assert second["version"] == 2
    refused = run_cli(*args, "--name", "tiny", "--version", "1", check=False)
    assert refused.returncode == 2 and "version 1 exists" in refused.stderr
    assert "--force" in refused.stderr
    shutil.rmtree(repository / "tiny_encoder" / "2")  # keep the module's repository at version 1
    shutil.rmtree(repository / "tiny_topk" / "2")
    shutil.rmtree(repository / "tiny_scorer" / "2")


def test_bad_input_is_refused_with_the_thing_named(tiny_checkpoints, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = run_cli(
        "export", "--checkpoint", tiny_checkpoints[0], "--repository", a_file, check=False
    )
    assert result.returncode == 2 and "is not a directory" in result.stderr

    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoints[0], broken)
    (broken / "model.safetensors").unlink()
    repository = tmp_path / "repo"
    result = run_cli("export", "--checkpoint", broken, "--repository", repository, check=False)
    assert result.returncode == 2 and "model.safetensors" in result.stderr
    assert not repository.exists() or list(repository.iterdir()) == []

    result = run_cli(
        "export", "--checkpoint", tiny_checkpoints[0], "--repository", repository,
        "--triton-backend", "tensorflow", check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "--triton-backend" in result.stderr

    for opset, message in ((99, "onnxruntime"), (10, "opset 14 or newer")):
        result = run_cli(
            "export", "--checkpoint", tiny_checkpoints[0], "--repository", repository,
            "--opset", opset, check=False,
        )  # fmt: skip
        assert result.returncode == 2 and f"--opset {opset}" in result.stderr
        assert message in result.stderr
    assert not repository.exists() or list(repository.iterdir()) == []


def test_failed_parity_leaves_no_version_behind(tiny_checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr(parity, "LOGIT_TOLERANCE", -1.0)  # nothing can pass
    repository = tmp_path / "repo"
    options = exporter.ExportOptions(checkpoint=tiny_checkpoints[0], repository=repository)
    with pytest.raises(parity.ParityFailed, match="nothing was installed"):
        exporter.export(options)
    assert layout.existing_versions(repository, "logitrec") == set()
    assert leftovers(repository) == []


def test_flat_index_ranks_exactly_by_logit_with_the_bias_folded_in():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(500, 16)).astype(np.float32)
    bias = (3 * rng.normal(size=500)).astype(np.float32)  # biases large enough to matter
    users = rng.normal(size=(20, 16)).astype(np.float32)
    index, info = build_index(weight, bias)
    assert info.factory == "Flat"
    expected = np.argsort(-(users @ weight.T + bias), axis=1)[:, :10] + 1
    assert (search(index, users, 10) == expected).all()
    points, max_norm = item_points(weight, bias)
    assert np.allclose(np.linalg.norm(points, axis=1), max_norm, rtol=1e-5)
    assert query_points(users).shape == (20, 18)


def test_calibration_picks_the_search_breadth_that_meets_the_recall_target():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(20, 16))
    weight = (centers[rng.integers(0, 20, 4000)] + 0.3 * rng.normal(size=(4000, 16))).astype(
        np.float32
    )
    bias = rng.normal(size=4000).astype(np.float32)
    users = (centers[rng.integers(0, 20, 300)] + 0.3 * rng.normal(size=(300, 16))).astype(
        np.float32
    )
    calibrating, held_out = users[:200], users[200:]
    index, _ = build_index(weight, bias, "IVF64,Flat")
    calibration = calibrate(index, calibrating, weight, bias, 200, 0.99)
    assert calibration.met and calibration.parameter == "nprobe"
    assert 1 < calibration.value < 64  # neither the one list that gave 0.65, nor all of them
    assert faiss.extract_index_ivf(index).nprobe == calibration.value
    # On users it never saw, the pruned-then-exact top-10 keeps its promise.
    recall, filled = measure(index, held_out, exact_top(held_out, weight, bias, 10), 200)
    assert recall >= 0.97 and filled >= 0.999
    # A lossy index that cannot reach the target says so, at the widest breadth tried.
    quantized, _ = build_index(weight, bias, "IVF64,PQ3")
    lossy = calibrate(quantized, calibrating, weight, bias, 10, 0.999)
    assert not lossy.met and lossy.value == 64 and lossy.recall_at_10 < 0.999


def test_triton_configs_name_the_backend_device_and_shapes():
    inputs, outputs = model_tensors("encoder", 64, 3)
    text = config_text("m_encoder", inputs, outputs, backend="onnxruntime", device="gpu")
    assert 'backend: "onnxruntime"' in text and "KIND_GPU" in text
    assert 'name: "context" data_type: TYPE_INT64 dims: [ 3 ]' in text
    assert 'name: "user_vector" data_type: TYPE_FP32 dims: [ 64 ]' in text
    assert "dynamic_batching" in text and "max_batch_size: 64" in text
    inputs, outputs = model_tensors("scorer", 64, 0)
    text = config_text("m_scorer", inputs, outputs, backend="python", device="cpu")
    assert "KIND_CPU" in text and "default_model_filename" not in text


def test_force_replaces_an_existing_version_in_place(exported, tiny_checkpoints, tmp_path):
    repository = copy_repository(exported[0], tmp_path)
    before = layout.read_manifest(layout.scorer_dir(repository, "tiny", 1))
    replaced = run_cli(
        "export", "--checkpoint", tiny_checkpoints[1], "--repository", repository,
        "--name", "tiny", "--version", "1", "--force", "--triton-backend", "python",
    )  # fmt: skip
    assert json.loads(replaced.stdout)["version"] == 1
    after = layout.read_manifest(layout.scorer_dir(repository, "tiny", 1))
    assert before.checkpoint["path"] != after.checkpoint["path"]
    assert after.checkpoint["path"] == str(tiny_checkpoints[1].resolve())
    assert layout.complete_versions(repository, "tiny") == [1]
    assert leftovers(repository) == []
    histories, context = layout_parity(repository)
    encoder = layout.model_file(repository, "tiny", "encoder", 1)
    feed = parity.encoder_feed(histories, context)
    (vectors,) = onnxruntime.InferenceSession(str(encoder)).run(None, feed)
    model, _ = load_checkpoint(tiny_checkpoints[1])
    with torch.no_grad():
        expected = model.user_vectors(torch.as_tensor(histories), torch.as_tensor(context))
    np.testing.assert_allclose(vectors, expected.numpy(), atol=1e-4)


def layout_parity(repository):
    folder = layout.scorer_dir(repository, "tiny", 1)
    return (
        np.load(folder / layout.PARITY_HISTORIES),
        np.load(folder / layout.PARITY_CONTEXT),
    )


def test_export_needs_only_the_checkpoint(tiny_checkpoints, tiny_dataset, tmp_path):
    checkpoint = Path(shutil.copytree(tiny_checkpoints[0], tmp_path / "checkpoint"))
    config = json.loads((checkpoint / "config.json").read_text())
    config["dataset"]["path"] = str(tmp_path / "moved-away")  # the dataset is gone
    (checkpoint / "config.json").write_text(json.dumps(config))
    printed = run_cli(
        "export", "--checkpoint", checkpoint, "--repository", tmp_path / "repo", "--name", "m"
    )
    assert json.loads(printed.stdout)["parity"]["passed"]


def test_a_checkpoint_without_the_parity_sample_is_refused_with_the_fix(tiny_checkpoints, tmp_path):
    checkpoint = Path(shutil.copytree(tiny_checkpoints[0], tmp_path / "old"))
    (checkpoint / "parity_histories.npy").unlink()
    repository = tmp_path / "repo"
    result = run_cli("export", "--checkpoint", checkpoint, "--repository", repository, check=False)
    assert result.returncode == 2
    assert str(checkpoint) in result.stderr and "logitrec checkpoint upgrade" in result.stderr
    assert not repository.exists() or list(repository.iterdir()) == []
