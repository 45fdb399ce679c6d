"""`logitrec export --verify`: re-run an installed version's parity check against the checkpoint
it came from, on the histories its export checked (stored in the version itself)."""

from pathlib import Path

import numpy as np

from export import parity
from export.exporter import checkpoint_hash
from logitrec import repository as layout
from logitrec.errors import InputError
from training import checkpoint as ckpt


def find_version(path: Path, name: str | None, version: str) -> Path:
    """The scorer version directory: given directly, or repository + name + version."""
    path = Path(path)
    if (path / layout.MANIFEST).is_file():
        return path
    if not path.is_dir():
        raise InputError(f"{path}: not a directory")
    name = name or "logitrec"
    if version == "auto":
        if not layout.complete_versions(path, name):
            raise InputError(f"{path}: no exported versions of {name!r}")
        return layout.scorer_dir(path, name, layout.latest_version(path, name))
    folder = layout.scorer_dir(path, name, int(version))
    if not (folder / layout.MANIFEST).is_file():
        raise InputError(f"{folder}: no {layout.MANIFEST} (not an exported scorer version)")
    return folder


def verify(version_dir: Path) -> dict:
    """The parity results; ParityFailed when ONNX Runtime and PyTorch disagree."""
    import faiss

    version_dir = Path(version_dir)
    manifest = layout.read_manifest(version_dir)
    checkpoint = Path(manifest.checkpoint["path"])
    if not checkpoint.is_dir():
        raise InputError(f"{version_dir}: its checkpoint {checkpoint} is not there any more")
    if checkpoint_hash(checkpoint) != manifest.checkpoint["sha256"]:
        raise InputError(f"{checkpoint}: changed since version {manifest.version} was exported")
    model, _ = ckpt.load_checkpoint(checkpoint)
    repository = version_dir.parent.parent
    folders = {
        kind: layout.version_dir(repository, manifest.name, kind, manifest.version)
        for kind in layout.KINDS
    }
    histories = np.load(version_dir / layout.PARITY_HISTORIES, allow_pickle=False)
    context = np.load(version_dir / layout.PARITY_CONTEXT, allow_pickle=False)
    index = faiss.read_index(str(version_dir / layout.FAISS_INDEX))
    results = parity.check(
        model, folders, histories, context, index=index, precision=manifest.precision
    )
    if not results["passed"]:
        raise parity.ParityFailed(results)
    return results
