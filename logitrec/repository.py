"""The model repository contract: the one place that says where an exported version's files
live, which versions are complete, what the manifest holds, and what the graphs' tensors are.

`logitrec export` writes by it and the gateway reads by it; numpy-free and torch-free, so
every stage (and the Triton launcher, scripts and tests) may import it.

    <repository>/<name>_encoder/config.pbtxt   <version>/model.onnx (+ model.py)
    <repository>/<name>_topk/config.pbtxt      <version>/model.onnx (+ model.py)
    <repository>/<name>_scorer/config.pbtxt    <version>/model.onnx (+ model.py) + catalog.parquet
                                               + head.npy + faiss.index + parity_*.npy
                                               + manifest.json (written last: marks completeness)
    <repository>/<name>_explain/config.pbtxt   <version>/model.onnx (+ model.py), optional
                                               (`export --explain-model`; the manifest's
                                               `explain` says whether a version has one)
"""

import hashlib
import json
from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from logitrec.atomic import write_json
from logitrec.errors import InputError

MANIFEST_FORMAT = "logitrec.model-version"
MANIFEST_FORMAT_VERSION = 1

# Installed in this order: the scorer, whose version directory holds the manifest, comes last.
KINDS = ("encoder", "topk", "scorer")
SERVED_KINDS = ("encoder", "scorer")  # what the gateway runs; topk is for Triton-only clients
# The attribution graph (export/attribution.py): only some versions have one, so a version is
# complete without it. Installed before the scorer, like every graph.
EXPLAIN_KIND = "explain"

MODEL_FILE = "model.onnx"
PYTHON_MODEL_FILE = "model.py"  # Triton's Python-backend wrapper around model.onnx
TRITON_CONFIG = "config.pbtxt"
MANIFEST = "manifest.json"
CATALOG = "catalog.parquet"  # index (1..N), item_id, title, popularity
HEAD = "head.npy"  # [N + 1, d + 1]: W and b side by side, row 0 the padding item
FAISS_INDEX = "faiss.index"
PARITY_HISTORIES = "parity_histories.npy"  # the real histories the parity check ran on
PARITY_CONTEXT = "parity_context.npy"

# Triton serves the newest two versions of each model, so an old one drains while the new one
# takes traffic; the gateway loads the same two, so both backends answer for the same versions.
VERSIONS_SERVED = 2
# The largest batch a Triton model accepts (its config.pbtxt's max_batch_size).
TRITON_MAX_BATCH_SIZE = 64
# FAISS candidates the gateway scores exactly per request; export calibrates the index's
# search breadth for this many (both sides default to it).
DEFAULT_CANDIDATE_COUNT = 4096


# -- tensors ------------------------------------------------------------------------------------
ITEMS = "items"  # [B, L] int64 item indices, left-padded with 0
CONTEXT = "context"  # [B, F] int64 context value indices (0 = unknown)
USER_VECTOR = "user_vector"  # [B, d] float32
CANDIDATES = "candidates"  # [B, C] int64 item indices, right-padded with 0
LOGITS = "logits"  # [B, C] float32
K = "k"  # [B, 1] int64
TOP_LOGITS = "top_logits"  # [B, k] float32
TOP_ITEMS = "top_items"  # [B, k] int64
TARGETS = "targets"  # [B, k] int64 item indices whose logits are explained
ATTRIBUTIONS = "attributions"  # [B, k, L] float32: per target, each history position's share


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # Triton's type name: TYPE_INT64, TYPE_FP32
    dims: tuple[int, ...]  # without the batch dimension; -1 = variable


def model_tensors(kind: str, dim: int, context_tokens: int) -> tuple[list[Tensor], list[Tensor]]:
    """(inputs, outputs) of the encoder, scorer or topk graph, in argument order."""
    items = Tensor(ITEMS, "TYPE_INT64", (-1,))
    context = [Tensor(CONTEXT, "TYPE_INT64", (context_tokens,))] if context_tokens else []
    if kind == "encoder":
        return [items, *context], [Tensor(USER_VECTOR, "TYPE_FP32", (dim,))]
    if kind == "scorer":
        return (
            [Tensor(USER_VECTOR, "TYPE_FP32", (dim,)), Tensor(CANDIDATES, "TYPE_INT64", (-1,))],
            [Tensor(LOGITS, "TYPE_FP32", (-1,))],
        )
    if kind == "topk":
        return (
            [items, Tensor(K, "TYPE_INT64", (1,)), *context],
            [Tensor(TOP_LOGITS, "TYPE_FP32", (-1,)), Tensor(TOP_ITEMS, "TYPE_INT64", (-1,))],
        )
    if kind == EXPLAIN_KIND:
        return (
            [items, Tensor(TARGETS, "TYPE_INT64", (-1,)), *context],
            [Tensor(ATTRIBUTIONS, "TYPE_FP32", (-1, -1))],
        )
    raise ValueError(
        f"unknown model kind {kind!r} (expected one of {', '.join((*KINDS, EXPLAIN_KIND))})"
    )


# -- paths ----------------------------------------------------------------------------------------
def model_name(name: str, kind: str) -> str:
    """Triton's model name for one graph of an exported model: `<name>_<kind>`."""
    return f"{name}_{kind}"


def model_dir(repository: Path, name: str, kind: str) -> Path:
    return Path(repository) / model_name(name, kind)


def version_dir(repository: Path, name: str, kind: str, version: int) -> Path:
    return model_dir(repository, name, kind) / str(version)


def model_file(repository: Path, name: str, kind: str, version: int) -> Path:
    return version_dir(repository, name, kind, version) / MODEL_FILE


def scorer_dir(repository: Path, name: str, version: int) -> Path:
    """The version directory that holds the manifest, catalog, head and index."""
    return version_dir(repository, name, "scorer", version)


# -- versions -------------------------------------------------------------------------------------
def _numbered(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir())


def is_complete(repository: Path, name: str, version: int) -> bool:
    """A version is complete when its manifest and every graph's model file are there."""
    if not (scorer_dir(repository, name, version) / MANIFEST).is_file():
        return False
    return all(model_file(repository, name, kind, version).is_file() for kind in KINDS)


def complete_versions(repository: Path, name: str) -> list[int]:
    """The complete versions of `name`, oldest first (numeric order: 9 before 10)."""
    candidates = _numbered(model_dir(repository, name, "scorer"))
    return [v for v in candidates if is_complete(repository, name, v)]


def scorer_versions(repository: Path, name: str) -> list[int]:
    """Versions whose scorer directory (with the manifest) is in place, complete or not, oldest
    first. Export installs the scorer last, so one with a graph missing is broken, not half-way."""
    return _numbered(model_dir(repository, name, "scorer"))


def existing_versions(repository: Path, name: str) -> set[int]:
    """Every version number in use by any graph of `name`, complete or not."""
    kinds = (*KINDS, EXPLAIN_KIND)
    return {v for kind in kinds for v in _numbered(model_dir(repository, name, kind))}


def model_names(repository: Path) -> list[str]:
    """The models with at least one complete version, sorted."""
    repository = Path(repository)
    if not repository.is_dir():
        return []
    suffix = "_scorer"
    names = (p.name.removesuffix(suffix) for p in repository.glob(f"*{suffix}") if p.is_dir())
    return sorted(name for name in names if complete_versions(repository, name))


def latest_version(repository: Path, name: str) -> int:
    versions = complete_versions(repository, name)
    if not versions:
        raise InputError(f"{repository}: no complete exported version of {name!r}")
    return versions[-1]


def catalog_sha256(item_ids: Iterable[str]) -> str:
    """Identifies a catalog: sha256 of its external ids joined by newlines, in index order (the
    manifest's `catalog_sha256`; the checkpoint's catalog hash is the same function)."""
    return hashlib.sha256("\n".join(item_ids).encode()).hexdigest()


# -- the manifest ---------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Manifest:
    """What one exported version is: its shapes, inputs, index, provenance and parity result."""

    name: str
    version: int
    num_items: int
    hidden_size: int
    max_length: int
    context_vocabulary: dict[str, list[str]]  # feature -> known values (index 1..), in order
    index: dict  # the FAISS index: factory, transform, max_norm, calibration (search breadth)
    opset: int
    precision: str
    triton_backend: str
    device: str
    catalog_sha256: str
    checkpoint: dict = field(default_factory=dict)  # path, sha256
    dataset: dict = field(default_factory=dict)  # where the checkpoint's data came from
    versions: dict = field(default_factory=dict)  # library versions at export
    parity: dict = field(default_factory=dict)  # the ONNX-vs-PyTorch check's numbers
    # The attribution graph, when exported: model, method, steps and its parity with autograd;
    # empty: this version has none.
    explain: dict = field(default_factory=dict)
    format: str = MANIFEST_FORMAT
    format_version: int = MANIFEST_FORMAT_VERSION

    @property
    def context_features(self) -> list[str]:
        return list(self.context_vocabulary)

    @property
    def models(self) -> dict[str, str]:
        return {kind: model_name(self.name, kind) for kind in KINDS}

    def to_json(self) -> dict:
        values = asdict(self)
        # Kept in the file for readers that do not derive them (Triton-side tooling, people).
        values["models"] = self.models
        values["context_features"] = self.context_features
        return values

    @classmethod
    def from_json(cls, values: dict, where: str = MANIFEST) -> "Manifest":
        if not isinstance(values, dict) or values.get("format") != MANIFEST_FORMAT:
            raise InputError(f"{where}: not a {MANIFEST_FORMAT} manifest")
        if values.get("format_version", 0) > MANIFEST_FORMAT_VERSION:
            raise InputError(
                f"{where}: manifest format_version {values['format_version']} is newer than "
                f"this gateway understands ({MANIFEST_FORMAT_VERSION}); upgrade logitrec"
            )
        known = {f.name: f for f in fields(cls)}
        required = [
            name
            for name, f in known.items()
            if f.default is MISSING and f.default_factory is MISSING and name not in values
        ]
        if required:
            raise InputError(f"{where}: manifest lacks {', '.join(sorted(required))}")
        return cls(**{k: v for k, v in values.items() if k in known})


def read_manifest(version_directory: Path) -> Manifest:
    """The manifest of a scorer version directory; a clear error when missing or malformed."""
    path = Path(version_directory) / MANIFEST
    if not path.is_file():
        raise InputError(f"{version_directory}: no {MANIFEST} (not an exported scorer version)")
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None
    return Manifest.from_json(values, str(path))


def write_manifest(version_directory: Path, manifest: Manifest) -> None:
    write_json(Path(version_directory) / MANIFEST, manifest.to_json())
