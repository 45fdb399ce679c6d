"""Exported model versions as the gateway sees them: catalog, id maps, FAISS index, file paths.

Reads only what `logitrec export` wrote, through the repository contract (logitrec.repository),
never the training code or torch.
"""

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from logitrec import repository as layout
from logitrec.errors import InputError
from logitrec.mips import search_parameter, set_search_parameter
from serving.errors import ModelNotFound, quote
from serving.rerank import ItemMetadata

# Protobuf framing of one RecommendedItem inside a response, at most: tags, length prefixes,
# two floats and the rank.
ITEM_FRAMING_BYTES = 32
LISTED_NAMES = 10  # loaded models named in a NOT_FOUND message


@dataclass(frozen=True, eq=False)
class ModelVersion:
    name: str
    version: int
    manifest: layout.Manifest
    encoder_path: Path
    scorer_path: Path
    item_ids: np.ndarray  # external ids; item index i (from 1) is item_ids[i - 1]
    titles: list[str | None]
    popularity: np.ndarray  # training interactions per item, index order
    index_of: dict[str, int]
    context_lookup: dict[str, dict[str, int]]  # feature -> value -> index (0 = unknown)
    faiss_index: object
    head: np.ndarray  # [N + 1, d + 1]: [W_i, b_i] per item index, row 0 padding (exact path)
    metadata: ItemMetadata | None = None  # the catalog's genres, year, ... (None: none exported)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def max_length(self) -> int:
        return self.manifest.max_length

    @property
    def hidden_size(self) -> int:
        return self.manifest.hidden_size

    @property
    def context_features(self) -> list[str]:
        return self.manifest.context_features

    @property
    def index_type(self) -> str:
        return self.manifest.index["factory"]

    @cached_property
    def answer_item_bytes(self) -> int:
        """The most bytes one returned item can take in a response (the longest id and the
        longest title, UTF-8): bounds an answer's size before it is computed."""
        longest_id = max((len(str(i).encode()) for i in self.item_ids), default=0)
        longest_title = max((len(t.encode()) for t in self.titles if t), default=0)
        return ITEM_FRAMING_BYTES + longest_id + longest_title


def load_version(
    repository: Path, name: str, version: int, search_breadth: int | None = None
) -> ModelVersion:
    """Read one exported version; InputError naming the file when anything is missing or wrong.
    The FAISS index searches with `search_breadth` (IVF nprobe, HNSW efSearch) when given, else
    with what export calibrated for its recall target."""
    repository = Path(repository)
    scorer_dir = layout.scorer_dir(repository, name, version)
    manifest = layout.read_manifest(scorer_dir)
    paths = {kind: layout.model_file(repository, name, kind, version) for kind in layout.KINDS}
    for kind, path in paths.items():
        if not path.is_file():
            raise InputError(f"{path}: the {kind} of {name} version {version} is missing")
    catalog_path = scorer_dir / layout.CATALOG
    if not catalog_path.is_file():
        raise InputError(f"{catalog_path}: the catalog of {name} version {version} is missing")
    catalog = pl.read_parquet(catalog_path).sort("index")
    item_ids = catalog["item_id"].to_numpy().astype(object)
    if catalog["index"].to_list() != list(range(1, len(item_ids) + 1)):
        raise InputError(f"{catalog_path}: indices are not 1..N")
    if len(item_ids) != manifest.num_items:
        raise InputError(
            f"{catalog_path}: {len(item_ids)} items, but the manifest says {manifest.num_items}"
        )
    _check_identity(scorer_dir, manifest, name, version, item_ids)
    context_lookup = {
        feature: {value: i for i, value in enumerate(values, start=1)}
        for feature, values in manifest.context_vocabulary.items()
    }
    return ModelVersion(
        name=name,
        version=version,
        manifest=manifest,
        encoder_path=paths["encoder"],
        scorer_path=paths["scorer"],
        item_ids=item_ids,
        titles=catalog["title"].to_list(),
        popularity=catalog["popularity"].to_numpy().astype(np.float64),
        index_of={item_id: i for i, item_id in enumerate(item_ids, start=1)},
        context_lookup=context_lookup,
        faiss_index=_read_index(scorer_dir, manifest, search_breadth),
        head=_read_head(scorer_dir, manifest),
        metadata=ItemMetadata.from_catalog(catalog),
    )


def _read_index(scorer_dir: Path, manifest: layout.Manifest, search_breadth: int | None):
    import faiss

    index = faiss.read_index(str(scorer_dir / layout.FAISS_INDEX))
    parameter = search_parameter(index)
    calibrated = manifest.index.get("calibration", {}).get("value")
    breadth = search_breadth or calibrated
    if parameter and breadth:
        set_search_parameter(index, parameter, breadth)
    return index


def _read_head(scorer_dir: Path, manifest: layout.Manifest) -> np.ndarray:
    path = scorer_dir / layout.HEAD
    head = np.load(path, allow_pickle=False)
    expected = (manifest.num_items + 1, manifest.hidden_size + 1)
    if head.shape != expected or head.dtype != np.float32:
        raise InputError(
            f"{path}: expected float32 {list(expected)}, got {head.dtype} {list(head.shape)}"
        )
    return head


def _check_identity(scorer_dir: Path, manifest, name: str, version: int, item_ids) -> None:
    """The manifest describes this very version, and the catalog is the one it was exported
    with (a version folder copied or half-overwritten by hand fails here, not at traffic)."""
    where = scorer_dir / layout.MANIFEST
    if (manifest.name, manifest.version) != (name, version):
        raise InputError(
            f"{where}: describes {manifest.name[:64]!r} version {manifest.version}, "
            f"but lies in the folder of {name!r} version {version}"
        )
    if layout.catalog_sha256(item_ids) != manifest.catalog_sha256:
        raise InputError(
            f"{scorer_dir / layout.CATALOG}: its item ids do not hash to the manifest's "
            "catalog_sha256 (the catalog is not the one this version was exported with)"
        )


class Registry:
    """The loaded versions of every model; lookups by (name, version) with NOT_FOUND errors."""

    def __init__(self, default_model: str) -> None:
        self.default_model = default_model
        self._versions: dict[str, dict[int, ModelVersion]] = {}

    def add(self, model: ModelVersion) -> None:
        model.answer_item_bytes  # noqa: B018  computed once here, so no request pays for it
        self._versions.setdefault(model.name, {})[model.version] = model

    def remove(self, name: str, version: int) -> ModelVersion:
        """Take a version out: requests resolved from now on cannot reach it."""
        model = self.get(name, version)
        del self._versions[name][version]
        if not self._versions[name]:
            del self._versions[name]
        return model

    def names(self) -> list[str]:
        return sorted(self._versions)

    def versions(self, name: str) -> list[int]:
        return sorted(self._versions.get(name, {}))

    def get(self, name: str = "", version: int = 0) -> ModelVersion:
        name = name or self.default_model
        loaded = self._versions.get(name)
        if not loaded:
            raise ModelNotFound(f"model: {quote(name)} is not loaded (loaded: {self._listed()})")
        if version == 0:
            return loaded[max(loaded)]
        if version not in loaded:
            have = ", ".join(map(str, sorted(loaded)))
            raise ModelNotFound(
                f"model_version: {quote(name)} has no version {version} (loaded: {have})"
            )
        return loaded[version]

    def _listed(self) -> str:
        names = self.names()
        listed = ", ".join(quote(n) for n in names[:LISTED_NAMES]) or "none"
        return (
            listed
            if len(names) <= LISTED_NAMES
            else f"{listed} and {len(names) - LISTED_NAMES} more"
        )
