"""Write output directories atomically: build in a hidden sibling, rename when complete."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from logitrec.errors import InputError


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
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            target.rename(retired / target.name)
            staging.rename(target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
