"""`logitrec export`: checkpoint -> verified ONNX models, catalog and FAISS index in a Triton
repository; `logitrec export --verify DIR` re-checks an installed version."""

import json
from pathlib import Path

import typer


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
    precision: str = typer.Option("fp32", "--precision", help="fp32 (fp16: not yet)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (17: LayerNormalization as one op)."),
    index: str | None = typer.Option(
        None, "--index", help="FAISS factory string (default: Flat below 50k items, else IVF)."
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Dataset for parity histories (default: the checkpoint's)."
    ),
    verify: Path | None = typer.Option(
        None, "--verify", help="Re-check an exported version (scorer version dir or repository)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing version."),
) -> None:
    """Export a checkpoint to ONNX in a Triton model repository, checked against PyTorch."""
    from export import exporter
    from logitrec.errors import InputError

    if verify is not None:
        folder = exporter.find_version(verify, name if name != "logitrec" else None, version)
        results = exporter.verify(folder)
        typer.echo(json.dumps({"version_dir": str(folder), "parity": results}, indent=2))
        return
    if checkpoint is None:
        raise InputError("--checkpoint: required (or --verify DIR to re-check a version)")
    manifest = exporter.export(
        exporter.ExportOptions(
            checkpoint=checkpoint,
            repository=repository,
            name=name,
            version=version,
            triton_backend=triton_backend,
            device=device,
            precision=precision,
            index=index,
            opset=opset,
            data=data,
            force=force,
        )
    )
    summary = {
        "repository": str(repository),
        "models": manifest["models"],
        "version": manifest["version"],
        "index": manifest["index"]["factory"],
        "parity": manifest["parity"],
    }
    typer.echo(json.dumps(summary, indent=2))
