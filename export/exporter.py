"""Checkpoint -> one version of <name>_encoder, _scorer and _topk in a Triton model repository.

Reads only the checkpoint directory (config, weights, items with popularity, the parity sample
of real histories). Everything is built in a hidden staging folder inside the repository,
checked (ONNX Runtime against PyTorch), and only then renamed into place, scorer last: a version
whose scorer directory holds a manifest is therefore complete, and a failed export leaves no
version behind. The layout itself is logitrec.repository's.
"""

import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from export import attribution, parity
from export.calibrate import Calibration, calibrate, history_prefixes
from export.graphs import Encoder, Scorer, TopK, head_table
from export.index import build_index
from export.onnx_graphs import (
    OPSET,
    check_opset,
    export_encoder,
    export_explain,
    export_scorer,
    export_topk,
)
from export.precision import PRECISIONS, convert_to_fp16
from export.triton_config import config_text
from logitrec import repository as layout
from logitrec.atomic import file_sha256, install_directory, retire_directory, write_text
from logitrec.errors import InputError
from logitrec.runtime_check import check_runtime
from training import checkpoint as ckpt

BACKENDS = ("onnxruntime", "python")
DEVICES = ("cpu", "gpu")
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")
log = logging.getLogger("logitrec.export")


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    checkpoint: Path
    repository: Path
    name: str = "logitrec"
    version: str = "auto"  # or a positive integer
    triton_backend: str = "onnxruntime"
    device: str = "cpu"
    precision: str = "fp32"  # or fp16: the graphs' weights and arithmetic (export.precision)
    tensorrt: bool = False  # with device gpu: Triton runs the graphs through TensorRT
    index: str | None = None  # FAISS factory string; None: by catalog size
    candidate_count: int = layout.DEFAULT_CANDIDATE_COUNT  # what the gateway will re-score
    recall_target: float = 0.99  # recall@10 the search breadth is chosen for
    opset: int = OPSET
    force: bool = False
    explain_model: bool = False  # also the attribution graph (export/attribution.py)


def validate(options: ExportOptions) -> None:
    check_runtime()  # both onnxruntime builds installed: parity would run on a broken one
    for flag, value, allowed in (
        ("--triton-backend", options.triton_backend, BACKENDS),
        ("--device", options.device, DEVICES),
        ("--precision", options.precision, PRECISIONS),
    ):
        if value not in allowed:
            raise InputError(f"{flag}: expected one of {', '.join(allowed)}, got {value!r}")
    if options.tensorrt and (options.device, options.triton_backend) != ("gpu", "onnxruntime"):
        raise InputError(
            "--tensorrt: needs --device gpu and --triton-backend onnxruntime (TensorRT is an "
            "accelerator of Triton's native onnxruntime backend on GPUs)"
        )
    if not NAME_PATTERN.match(options.name):
        raise InputError(
            f"--name: expected letters, digits, '_' or '-' starting with a letter, "
            f"got {options.name!r}"
        )
    if options.repository.exists() and not options.repository.is_dir():
        raise InputError(f"{options.repository}: the repository path exists and is not a directory")
    if options.candidate_count < 1:
        raise InputError(f"--candidate-count: expected >= 1, got {options.candidate_count}")
    if not 0 < options.recall_target <= 1:
        raise InputError(f"--recall-target: expected in (0, 1], got {options.recall_target}")
    if options.version != "auto" and not (options.version.isdigit() and int(options.version) > 0):
        raise InputError(f"--version: expected a positive integer or auto, got {options.version!r}")
    check_opset(options.opset)


def choose_version(options: ExportOptions) -> int:
    taken = layout.existing_versions(options.repository, options.name)
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
    return file_sha256(checkpoint / "model.safetensors", checkpoint / "config.json")


@dataclass(frozen=True)
class _Source:
    """What an export reads from the checkpoint."""

    model: torch.nn.Module
    config: "ckpt.CheckpointConfig"
    items: pl.DataFrame
    histories: np.ndarray  # the parity sample: real left-padded histories
    context: np.ndarray


def _read_checkpoint(checkpoint: Path) -> _Source:
    model, config = ckpt.load_checkpoint(checkpoint)
    items = ckpt.load_items(checkpoint)
    if ckpt.catalog_hash(items) != config.catalog_sha256:
        raise InputError(f"{checkpoint}: items.parquet is not the catalog config.json names")
    histories, context = ckpt.load_parity_sample(checkpoint)
    return _Source(model, config, _with_metadata(items, checkpoint), histories, context)


def _with_metadata(items: pl.DataFrame, checkpoint: Path) -> pl.DataFrame:
    """`items` plus the checkpoint's other item columns (genres, year, ...): the metadata
    serving filters, caps and calibrates on. A checkpoint without any adds nothing."""
    table = pl.read_parquet(checkpoint / ckpt.ITEMS)
    extra = [c for c in table.columns if c not in items.columns]
    if not extra:
        return items
    return items.join(table.select("item_index", *extra), on="item_index", how="left")


def export(options: ExportOptions) -> layout.Manifest:
    """Write one verified version; returns its manifest."""
    validate(options)
    checkpoint = Path(options.checkpoint)
    source = _read_checkpoint(checkpoint)
    version = choose_version(options)
    options.repository.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".export-{options.name}-{version}-", dir=options.repository)
    )
    try:
        manifest = _build(options, source, staging, version, checkpoint)
        _install(options, staging, version, source.config)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _export_graphs(model, folders: dict[str, Path], opset: int) -> tuple[torch.Tensor, ...]:
    encoder = Encoder(model).eval()
    weight, bias = head_table(model)
    with torch.no_grad():
        export_encoder(encoder, folders["encoder"] / layout.MODEL_FILE, opset)
        export_scorer(Scorer(weight, bias).eval(), folders["scorer"] / layout.MODEL_FILE, opset)
        topk = TopK(encoder, weight, bias).eval()
        export_topk(topk, folders["topk"] / layout.MODEL_FILE, opset)
    return weight, bias


def _build(options, source: _Source, staging: Path, version: int, checkpoint: Path):
    folders = {kind: staging / kind for kind in layout.KINDS}
    for folder in folders.values():
        folder.mkdir()
        shutil.copyfile(PYTHON_MODEL, folder / layout.PYTHON_MODEL_FILE)
    weight, bias = _export_graphs(source.model, folders, options.opset)
    if options.precision == "fp16":
        for kind in layout.KINDS:
            convert_to_fp16(folders[kind] / layout.MODEL_FILE)

    scorer_dir = folders["scorer"]
    head = torch.cat([weight, bias[:, None]], 1).numpy().astype(np.float32)
    np.save(scorer_dir / layout.HEAD, head, allow_pickle=False)
    index, index_info = build_index(head[1:, :-1], head[1:, -1], options.index)
    calibration = _calibrate(options, source, index, head)
    import faiss

    faiss.write_index(index, str(scorer_dir / layout.FAISS_INDEX))
    _catalog(source.items).write_parquet(scorer_dir / layout.CATALOG)
    np.save(scorer_dir / layout.PARITY_HISTORIES, source.histories, allow_pickle=False)
    np.save(scorer_dir / layout.PARITY_CONTEXT, source.context, allow_pickle=False)
    results = parity.check(
        source.model, folders, source.histories, source.context,
        index=index, precision=options.precision,
    )  # fmt: skip
    explain = _export_explain(options, source, staging) if options.explain_model else {}

    config = source.config
    manifest = layout.Manifest(
        name=options.name,
        version=version,
        num_items=config.num_items,
        hidden_size=config.hidden_size,
        max_length=config.model.max_length,
        context_vocabulary=config.context_vocabulary,
        index={**index_info.as_dict(), "calibration": calibration.as_dict()},
        opset=options.opset,
        precision=options.precision,
        triton_backend=options.triton_backend,
        device=options.device,
        catalog_sha256=config.catalog_sha256,
        checkpoint={"path": str(checkpoint.resolve()), "sha256": checkpoint_hash(checkpoint)},
        dataset={"path": config.dataset.get("path")},
        versions=parity.versions(),
        parity=results,
        explain=explain,
    )
    layout.write_manifest(scorer_dir, manifest)
    if not results["passed"]:
        raise parity.ParityFailed(results)
    return manifest


def _export_explain(options, source: _Source, staging: Path) -> dict:
    """The attribution graph in its own staging folder, checked against autograd on the parity
    histories; what the manifest records about it. A failed check installs nothing."""
    folder = staging / layout.EXPLAIN_KIND
    folder.mkdir()
    shutil.copyfile(PYTHON_MODEL, folder / layout.PYTHON_MODEL_FILE)
    weight, _ = head_table(source.model)
    module = attribution.Attribution(Encoder(source.model).eval(), weight).eval()
    export_explain(module, folder / layout.MODEL_FILE, options.opset)
    results = attribution.check(
        module, folder / layout.MODEL_FILE, source.histories, source.context
    )
    if not results["passed"]:
        raise InputError(
            "--explain-model: the attribution graph disagrees with autograd (max difference "
            f"{results['max_abs_diff']:.3g}, tolerance {results['tolerance']} x the largest "
            "attribution); nothing was installed"
        )
    method = "gradient_x_input" if module.steps == 1 else "integrated_gradients"
    model = layout.model_name(options.name, layout.EXPLAIN_KIND)
    return {"model": model, "method": method, "steps": module.steps, "parity": results}


def _calibrate(options, source: _Source, index, head: np.ndarray) -> Calibration:
    """Set the index's search breadth for the recall target on the checkpoint's real
    histories (and their earlier states); a target not met is said, not hidden."""
    histories, rows = history_prefixes(source.histories)
    context = source.context[rows]
    vectors = []
    with torch.no_grad():
        for start in range(0, len(histories), 128):
            items = torch.as_tensor(histories[start : start + 128])
            ctx = torch.as_tensor(context[start : start + 128]) if context.shape[1] else None
            vectors.append(source.model.user_vectors(items, ctx).numpy())
    calibration = calibrate(
        index, np.concatenate(vectors), head[1:, :-1], head[1:, -1],
        options.candidate_count, options.recall_target,
    )  # fmt: skip
    if not calibration.met:
        log.warning(
            "the index reaches recall@10 %.3f (target %.3f) with %.1f%% of %d candidates at "
            "its widest tried %s=%s: raise --candidate-count or choose another --index",
            calibration.recall_at_10, options.recall_target, 100 * calibration.filled,
            calibration.candidate_count, calibration.parameter, calibration.value,
        )  # fmt: skip
    return calibration


def _catalog(items: pl.DataFrame) -> pl.DataFrame:
    """The serving catalog: index (1..N), external id, title, training popularity, then every
    metadata column as the dataset wrote it (genres "|"-separated text, year an integer)."""
    items = items.sort("item_index")
    title = pl.col("title") if "title" in items.columns else pl.lit(None, pl.String)
    metadata = [c for c in items.columns if c not in ("item_index", "item_id", "title")]
    metadata.remove("popularity")
    return items.select(
        pl.col("item_index").cast(pl.Int64).alias("index"),
        pl.col("item_id").cast(pl.String),
        title.cast(pl.String).alias("title"),
        pl.col("popularity").cast(pl.Int64),
        *metadata,
    )


def _install(options, staging: Path, version: int, config) -> None:
    """Rename the staged versions into place (scorer last) and (re)write each config.pbtxt."""
    context_tokens = len(config.context_vocabulary)
    explain = (staging / layout.EXPLAIN_KIND).is_dir()
    _retire_stale_explain(options, version, explain)
    for kind in ((layout.EXPLAIN_KIND,) if explain else ()) + layout.KINDS:
        model_dir = layout.model_dir(options.repository, options.name, kind)
        model_dir.mkdir(exist_ok=True)
        inputs, outputs = layout.model_tensors(kind, config.hidden_size, context_tokens)
        text = config_text(
            model_dir.name, inputs, outputs, backend=options.triton_backend,
            device=options.device, tensorrt=options.tensorrt, precision=options.precision,
            widest=_widest_inputs(options, config),
        )  # fmt: skip
        write_text(model_dir / layout.TRITON_CONFIG, text)
        # An existing version is only replaced with --force (choose_version refused otherwise).
        install_directory(staging / kind, model_dir / str(version))


# The longest candidate list the gateway sends the scorer besides its pruned candidates: an
# allowed list or Score's items (the gateway's default --max-ids).
LISTED_IDS = 10_000


def _widest_inputs(options, config) -> dict[str, int]:
    """The largest size of each variable input axis the served graphs see (TensorRT's
    optimisation profile): a history's window, the scorer's longest candidate list."""
    widest_list = max(options.candidate_count, LISTED_IDS)
    return {layout.ITEMS: config.model.max_length, layout.CANDIDATES: widest_list}


def _retire_stale_explain(options, version: int, explain: bool) -> None:
    """A version replaced (--force) without --explain-model loses the attribution graph its
    predecessor had: one left behind would explain another model."""
    stale = layout.version_dir(options.repository, options.name, layout.EXPLAIN_KIND, version)
    if not explain and stale.is_dir():
        retire_directory(stale)
