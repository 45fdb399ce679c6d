"""`logitrec export`: checkpoint -> verified ONNX models, catalog and FAISS index in a Triton
repository; `logitrec export --verify DIR` re-checks an installed version."""

import contextlib
import json
from pathlib import Path

import typer

from logitrec.repository import DEFAULT_CANDIDATE_COUNT


def export_command(
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Checkpoint directory."),
    repository: Path = typer.Option(
        Path("model_repository"), "--repository", help="Triton model repository to write into."
    ),
    name: str = typer.Option("logitrec", "--name", help="Model name prefix."),
    version: str = typer.Option("auto", "--version", help="Version number, or auto (next)."),
    triton_backend: str = typer.Option(
        "onnxruntime", "--triton-backend", help="onnxruntime (native) or python (ORT in model.py)."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu or gpu (Triton instance kind)."),
    precision: str = typer.Option(
        "fp32", "--precision", help="fp32 or fp16 (weights and arithmetic; fp32 inputs/outputs)."
    ),
    tensorrt: bool = typer.Option(
        False, "--tensorrt", help="With --device gpu: Triton runs the graphs through TensorRT."
    ),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (17: LayerNormalization as one op)."),
    index: str | None = typer.Option(
        None, "--index", help="FAISS factory string (default: Flat below 50k items, else IVF)."
    ),
    candidate_count: int = typer.Option(
        DEFAULT_CANDIDATE_COUNT, "--candidate-count", help="Candidates the gateway re-scores."
    ),
    recall_target: float = typer.Option(
        0.99, "--recall-target", help="recall@10 the index's search breadth is chosen for."
    ),
    verify: Path | None = typer.Option(
        None, "--verify", help="Re-check an exported version (scorer version dir or repository)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing version."),
    add_items: Path | None = typer.Option(
        None,
        "--add-items",
        help="Table of new items (id + title): export the checkpoint with them added to its "
        "catalog by their text, no retraining (the model must read item text).",
    ),
    explain_model: bool = typer.Option(
        False,
        "--explain-model",
        help="Also export the attribution graph (gradient x input per history item) as "
        "<name>_explain, checked against autograd.",
    ),
) -> None:
    """Export a checkpoint to ONNX in a Triton model repository, checked against PyTorch."""
    from export import exporter
    from export.verify import find_version
    from export.verify import verify as verify_version
    from logitrec.errors import InputError

    if verify is not None:
        folder = find_version(verify, name if name != "logitrec" else None, version)
        results = verify_version(folder)
        typer.echo(json.dumps({"version_dir": str(folder), "parity": results}, indent=2))
        return
    if checkpoint is None:
        raise InputError("--checkpoint: required (or --verify DIR to re-check a version)")
    with contextlib.ExitStack() as stack:
        if add_items is not None:
            checkpoint = _with_added_items(checkpoint, add_items, stack)
        manifest = exporter.export(
            exporter.ExportOptions(
                checkpoint=checkpoint,
                repository=repository,
                name=name,
                version=version,
                triton_backend=triton_backend,
                device=device,
                precision=precision,
                tensorrt=tensorrt,
                index=index,
                candidate_count=candidate_count,
                recall_target=recall_target,
                opset=opset,
                force=force,
                explain_model=explain_model,
            )
        )
    summary = {
        "repository": str(repository),
        "models": manifest.models,
        "version": manifest.version,
        "index": manifest.index["factory"],
        "calibration": manifest.index.get("calibration"),
        "parity": manifest.parity,
    }
    if manifest.explain:
        summary["explain"] = manifest.explain
    typer.echo(json.dumps(summary, indent=2))


def _with_added_items(checkpoint: Path, items: Path, stack: contextlib.ExitStack) -> Path:
    """A temporary copy of `checkpoint` with the items of `items` added by their text."""
    import tempfile

    from training.data.tables import TableSource
    from training.incremental import add_items

    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="logitrec-grown-")))
    grown = folder / "checkpoint"
    add_items(checkpoint, TableSource(path=items, id_col="item_id"), grown)
    return grown
