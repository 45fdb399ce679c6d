"""Refuse to run on an environment holding both the CPU and the GPU build of one library.

onnxruntime and onnxruntime-gpu both install the `onnxruntime` package (faiss-cpu and the
faiss-gpu wheels both install `faiss`). pip treats them as unrelated distributions, so
`pip install 'logitrec[gpu]'` on top of the default install puts both in place: in one
site-packages their files overwrite each other (the CUDA provider may vanish, and uninstalling
either later deletes files the other needs); in two directories the earlier one on sys.path is
the one imported, silently. Both are refused here with the fix. One case is allowed: the GPU
build in an earlier directory than the CPU one (a virtual environment or PYTHONPATH over a base
image), since then the GPU build is what `import` loads, whole.
"""

import importlib.metadata
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from logitrec.errors import InputError

# (the CPU distribution, its GPU builds, the module both install)
CONFLICTS = (
    ("onnxruntime", ("onnxruntime-gpu",), "onnxruntime"),
    ("faiss-cpu", ("faiss-gpu-cu12", "faiss-gpu-cu11", "faiss-gpu"), "faiss"),
)


@dataclass(frozen=True)
class Installed:
    name: str  # normalised: lower case, "-" for "_" and "."
    location: str  # the directory the distribution's package lives in (a sys.path entry)


def normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def conflicts(installed: Iterable[Installed], search_path: Sequence[str]) -> list[str]:
    """One message per library whose CPU and GPU builds are both installed in a way that
    breaks it (pure: the caller lists the distributions and sys.path)."""
    found: dict[str, list[str]] = {}
    for distribution in installed:
        found.setdefault(normalise(distribution.name), []).append(distribution.location)
    problems = []
    for cpu, gpu_builds, module in CONFLICTS:
        for gpu in gpu_builds:
            if cpu in found and gpu in found:
                problem = _clash(cpu, found[cpu], gpu, found[gpu], module, search_path)
                if problem:
                    problems.append(problem)
    return problems


def _clash(cpu, cpu_places, gpu, gpu_places, module, search_path) -> str | None:
    fix = (
        f"fix: `pip uninstall -y {cpu} {gpu}` then `pip install {gpu}` (uninstalling only "
        f"{cpu} would delete files {gpu} shares with it)"
    )
    shared = sorted(set(cpu_places) & set(gpu_places))
    if shared:
        return (
            f"{cpu} and {gpu} are both installed in {shared[0]}: they install the same "
            f"`{module}` package over each other, so neither is whole; {fix}"
        )
    cpu_first = min(_rank(place, search_path) for place in cpu_places)
    if cpu_first < min(_rank(place, search_path) for place in gpu_places):
        return (
            f"{cpu} ({cpu_places[0]}) comes before {gpu} ({gpu_places[0]}) on the Python path, "
            f"so `import {module}` loads the CPU build and the GPU is never used; {fix}"
        )
    return None


def _rank(place: str, search_path: Sequence[str]) -> int:
    """Where a directory sits on the search path (unknown: last)."""
    resolved = [str(Path(p).resolve()) if p else "" for p in search_path]
    target = str(Path(place).resolve())
    return resolved.index(target) if target in resolved else len(resolved)


def installed_distributions() -> list[Installed]:
    """The distributions this interpreter can see, with the directory each lives in."""
    found = []
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"]
        if name:
            found.append(Installed(normalise(name), str(distribution.locate_file(""))))
    return found


def check_runtime() -> None:
    """InputError naming the clashing distributions and the fix, if any."""
    problems = conflicts(installed_distributions(), sys.path)
    if problems:
        raise InputError("; ".join(problems))
