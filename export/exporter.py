"""Checkpoint -> one version of <name>_encoder, _scorer and _topk in a Triton model repository.

Everything is built in a hidden staging folder inside the repository, checked (ONNX Runtime
against PyTorch), and only then renamed into place, scorer last: a version directory with a
manifest.json is therefore always complete, and a failed export leaves no version behind.
"""

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from export import parity
from export.graphs import Encoder, Scorer, TopK, head_table
from export.index import build_index
from export.onnx_graphs import OPSET, check_opset, export_encoder, export_scorer, export_topk
from export.triton_config import config_text, model_tensors
from logitrec.errors import InputError
from training import checkpoint as ckpt
from training.batches import evaluation_rows
from training.data.dataset import load_dataset
from training.evaluate import popularity_scores
from training.features import context_indices

KINDS = ("encoder", "topk", "scorer")  # rename order: the scorer's manifest marks completeness
BACKENDS = ("onnxruntime", "python")
DEVICES = ("cpu", "gpu")
PRECISIONS = ("fp32",)
MANIFEST_FORMAT = "logitrec.model-version"
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    checkpoint: Path
    repository: Path
    name: str = "logitrec"
    version: str = "auto"  # or a positive integer
    triton_backend: str = "onnxruntime"
    device: str = "cpu"
    precision: str = "fp32"
    index: str | None = None  # FAISS factory string; None: by catalog size
    opset: int = OPSET
    data: Path | None = None  # dataset for parity histories; None: the checkpoint's own
    force: bool = False


def validate(options: ExportOptions) -> None:
    if options.precision == "fp16":
        raise InputError("--precision fp16: not implemented yet; export fp32 (the default)")
    for flag, value, allowed in (
        ("--triton-backend", options.triton_backend, BACKENDS),
        ("--device", options.device, DEVICES),
        ("--precision", options.precision, PRECISIONS),
    ):
        if value not in allowed:
            raise InputError(f"{flag}: expected one of {', '.join(allowed)}, got {value!r}")
    if not NAME_PATTERN.match(options.name):
        raise InputError(
            f"--name: expected letters, digits, '_' or '-' starting with a letter, "
            f"got {options.name!r}"
        )
    if options.repository.exists() and not options.repository.is_dir():
        raise InputError(f"{options.repository}: the repository path exists and is not a directory")
    if options.version != "auto" and not (options.version.isdigit() and int(options.version) > 0):
        raise InputError(f"--version: expected a positive integer or auto, got {options.version!r}")
    check_opset(options.opset)


def existing_versions(repository: Path, name: str) -> set[int]:
    versions = set()
    for kind in KINDS:
        folder = repository / f"{name}_{kind}"
        if folder.is_dir():
            versions |= {int(p.name) for p in folder.iterdir() if p.name.isdigit()}
    return versions


def choose_version(options: ExportOptions) -> int:
    taken = existing_versions(options.repository, options.name)
    if options.version == "auto":
        return max(taken, default=0) + 1
    version = int(options.version)
    if version in taken and not options.force:
        raise InputError(
            f"{options.repository}: {options.name} version {version} exists; "
            "pass --force to replace it or --version auto for the next one"
        )
    return version


def checkpoint_hash(checkpoint: Path) -> str:
    return parity.file_hash(checkpoint / "model.safetensors", checkpoint / "config.json")


def export(options: ExportOptions) -> dict:
    """Write one verified version; returns its manifest."""
    validate(options)
    checkpoint = Path(options.checkpoint)
    model, config = ckpt.load_checkpoint(checkpoint)
    data = Path(options.data or config.get("dataset", {}).get("path", ""))
    if not options.data and not (data / "manifest.json").is_file():
        raise InputError(
            f"{checkpoint}: its dataset {str(data)!r} is not there; pass --data DATASET_DIR "
            "(parity is checked on real histories)"
        )
    dataset = load_dataset(data)
    ckpt.check_catalog(config, dataset.items, data, checkpoint)
    version = choose_version(options)
    options.repository.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".export-{options.name}-{version}-", dir=options.repository)
    )
    try:
        manifest = _build(options, model, config, dataset, staging, version, checkpoint)
        _install(options, staging, version, config)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _build(options, model, config, dataset, staging: Path, version: int, checkpoint: Path) -> dict:
    folders = {kind: staging / kind for kind in KINDS}
    for folder in folders.values():
        folder.mkdir()
        shutil.copyfile(PYTHON_MODEL, folder / "model.py")
    encoder = Encoder(model).eval()
    weight, bias = head_table(model)
    with torch.no_grad():
        export_encoder(encoder, folders["encoder"] / "model.onnx", options.opset)
        export_scorer(Scorer(weight, bias).eval(), folders["scorer"] / "model.onnx", options.opset)
        export_topk(
            TopK(encoder, weight, bias).eval(), folders["topk"] / "model.onnx", options.opset
        )

    scorer_dir = folders["scorer"]
    head = torch.cat([weight, bias[:, None]], 1).numpy().astype(np.float32)
    np.save(scorer_dir / "head.npy", head, allow_pickle=False)
    index, index_info = build_index(head[1:, :-1], head[1:, -1], options.index)
    import faiss

    faiss.write_index(index, str(scorer_dir / "faiss.index"))
    _catalog(dataset).write_parquet(scorer_dir / "catalog.parquet")

    rows = evaluation_rows(dataset, "test", config["model"]["max_length"])
    context = context_indices(dataset.users, config["context_vocabulary"])
    histories, user_context = parity.sample_inputs(rows, context)
    np.save(scorer_dir / "parity_histories.npy", histories, allow_pickle=False)
    np.save(scorer_dir / "parity_context.npy", user_context, allow_pickle=False)
    results = parity.check(model, folders, histories, user_context, index=index)

    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": 1,
        "name": options.name,
        "version": version,
        "models": {kind: f"{options.name}_{kind}" for kind in KINDS},
        "num_items": config["num_items"],
        "hidden_size": config["hidden_size"],
        "max_length": config["model"]["max_length"],
        "context_features": list(config["context_vocabulary"]),
        "context_vocabulary": config["context_vocabulary"],
        "opset": options.opset,
        "precision": options.precision,
        "triton_backend": options.triton_backend,
        "device": options.device,
        "index": index_info.as_dict(),
        "checkpoint": {"path": str(checkpoint.resolve()), "sha256": checkpoint_hash(checkpoint)},
        "dataset": {"path": str(Path(dataset.path).resolve())},
        "catalog_sha256": config["catalog_sha256"],
        "versions": parity.versions(),
        "parity": results,
    }
    ckpt.write_json(scorer_dir / "manifest.json", manifest)
    if not results["passed"]:
        raise parity.ParityFailed(results)
    return manifest


def _catalog(dataset) -> pl.DataFrame:
    items = dataset.items.sort("item_index")
    popularity = popularity_scores(dataset).numpy().astype(np.int64)
    columns = [
        pl.col("item_index").cast(pl.Int64).alias("index"),
        pl.col("item_id").cast(pl.String),
        (pl.col("title") if "title" in items.columns else pl.lit(None, pl.String)).alias("title"),
    ]
    return items.select(columns).with_columns(pl.Series("popularity", popularity))


def _install(options, staging: Path, version: int, config: dict) -> None:
    """Rename the staged versions into place and (re)write each model's config.pbtxt."""
    context_tokens = len(config["context_vocabulary"])
    for kind in KINDS:
        model_dir = options.repository / f"{options.name}_{kind}"
        model_dir.mkdir(exist_ok=True)
        inputs, outputs = model_tensors(kind, config["hidden_size"], context_tokens)
        text = config_text(
            model_dir.name,
            inputs,
            outputs,
            backend=options.triton_backend,
            device=options.device,
        )
        _replace_file(model_dir / "config.pbtxt", text)
        target = model_dir / str(version)
        if target.exists():  # only with --force (choose_version refused otherwise)
            retired = Path(tempfile.mkdtemp(prefix=f".old-{version}-", dir=model_dir))
            target.rename(retired / "version")
            shutil.rmtree(retired, ignore_errors=True)
        (staging / kind).rename(target)


def _replace_file(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def read_manifest(version_dir: Path) -> dict:
    path = Path(version_dir) / "manifest.json"
    if not path.is_file():
        raise InputError(f"{version_dir}: no manifest.json (not an exported scorer version)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None


def find_version(path: Path, name: str | None, version: str) -> Path:
    """The scorer version directory for --verify: given directly, or repository + name + version."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        return path
    if not path.is_dir():
        raise InputError(f"{path}: not a directory")
    name = name or "logitrec"
    taken = existing_versions(path, name)
    if not taken:
        raise InputError(f"{path}: no exported versions of {name!r}")
    chosen = max(taken) if version == "auto" else int(version)
    folder = path / f"{name}_scorer" / str(chosen)
    if not (folder / "manifest.json").is_file():
        raise InputError(f"{folder}: no manifest.json (not an exported scorer version)")
    return folder


def verify(version_dir: Path) -> dict:
    """Re-run the parity check of an installed version against the checkpoint it came from."""
    import faiss

    manifest = read_manifest(version_dir)
    checkpoint = Path(manifest["checkpoint"]["path"])
    if not checkpoint.is_dir():
        raise InputError(f"{version_dir}: its checkpoint {checkpoint} is not there any more")
    if checkpoint_hash(checkpoint) != manifest["checkpoint"]["sha256"]:
        raise InputError(
            f"{checkpoint}: changed since version {manifest['version']} was exported from it"
        )
    model, _ = ckpt.load_checkpoint(checkpoint)
    repository = Path(version_dir).parent.parent
    folders = {
        kind: repository / model_name / str(manifest["version"])
        for kind, model_name in manifest["models"].items()
    }
    histories = np.load(version_dir / "parity_histories.npy", allow_pickle=False)
    context = np.load(version_dir / "parity_context.npy", allow_pickle=False)
    index = faiss.read_index(str(Path(version_dir) / "faiss.index"))
    results = parity.check(model, folders, histories, context, index=index)
    if not results["passed"]:
        raise parity.ParityFailed(results)
    return results
