"""Writing outputs so a reader never sees half of them: files and directories are built under a
hidden temporary name beside their target and renamed into place when complete."""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from logitrec.errors import InputError


def write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a hidden sibling of `path`, then rename it over `path`."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, value) -> None:
    write_text(path, json.dumps(value, indent=2) + "\n")


@contextmanager
def replacing_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path for a writer that wants a file name (safetensors, FAISS, numpy);
    it replaces `path` only when the block finishes, and is removed on error."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def retire_directory(directory: Path) -> None:
    """Remove `directory` so that its name is free at once: it is renamed aside first (one atomic
    step, so no reader sees it half-deleted) and deleted after."""
    directory = Path(directory)
    retired = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
    directory.rename(retired / directory.name)
    shutil.rmtree(retired, ignore_errors=True)


def install_directory(staging: Path, target: Path) -> None:
    """Rename a complete `staging` directory to `target`, replacing any existing one."""
    target = Path(target)
    if target.exists():
        retire_directory(target)
    Path(staging).rename(target)


@contextmanager
def atomic_directory(target: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes `target` only if the block finishes.

    On any error the temporary directory is removed and `target` is left as it was. With
    `force`, an existing `target` is replaced (moved aside first, deleted after the rename).
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise InputError(f"{target}: exists and is not a directory")
    if target.exists() and not force:
        raise InputError(f"{target}: already exists; pass --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it private; the result should not be
    try:
        yield staging
        install_directory(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def file_sha256(*paths: Path, chunk_size: int = 1 << 22) -> str:
    """One sha256 over the contents of `paths`, in order, read in chunks."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(chunk_size):
                digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
