"""Exported model versions as the gateway sees them: catalog, id maps, FAISS index, file paths.

Reads only what `logitrec export` wrote (a version is complete once its scorer directory holds
manifest.json), never the training code or torch.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from logitrec.errors import InputError
from serving.errors import ModelNotFound

MANIFEST_FORMAT = "logitrec.model-version"


@dataclass(frozen=True, eq=False)
class ModelVersion:
    name: str
    version: int
    manifest: dict
    encoder_path: Path
    scorer_path: Path
    item_ids: np.ndarray  # external ids; item index i (from 1) is item_ids[i - 1]
    titles: list[str | None]
    popularity: np.ndarray  # training interactions per item, index order
    index_of: dict[str, int]
    context_lookup: dict[str, dict[str, int]]  # feature -> value -> index (0 = unknown)
    faiss_index: object

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def max_length(self) -> int:
        return int(self.manifest["max_length"])

    @property
    def hidden_size(self) -> int:
        return int(self.manifest["hidden_size"])

    @property
    def context_features(self) -> list[str]:
        return list(self.manifest["context_features"])

    @property
    def index_type(self) -> str:
        return self.manifest["index"]["factory"]


def model_names(repository: Path) -> list[str]:
    return sorted(
        folder.name.removesuffix("_scorer")
        for folder in Path(repository).glob("*_scorer")
        if any((p / "manifest.json").is_file() for p in folder.iterdir() if p.name.isdigit())
    )


def complete_versions(repository: Path, name: str) -> list[int]:
    folder = Path(repository) / f"{name}_scorer"
    if not folder.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in folder.iterdir()
        if p.name.isdigit() and (p / "manifest.json").is_file()
    )


def load_version(repository: Path, name: str, version: int) -> ModelVersion:
    import json

    import faiss

    repository = Path(repository)
    scorer_dir = repository / f"{name}_scorer" / str(version)
    manifest = json.loads((scorer_dir / "manifest.json").read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise InputError(f"{scorer_dir / 'manifest.json'}: not a {MANIFEST_FORMAT} manifest")
    catalog = pl.read_parquet(scorer_dir / "catalog.parquet").sort("index")
    item_ids = catalog["item_id"].to_numpy().astype(object)
    if catalog["index"].to_list() != list(range(1, len(item_ids) + 1)):
        raise InputError(f"{scorer_dir / 'catalog.parquet'}: indices are not 1..N")
    context_lookup = {
        feature: {value: i for i, value in enumerate(values, start=1)}
        for feature, values in manifest["context_vocabulary"].items()
    }
    paths = {
        kind: repository / f"{name}_{kind}" / str(version) / "model.onnx"
        for kind in ("encoder", "scorer")
    }
    for kind, path in paths.items():
        if not path.is_file():
            raise InputError(f"{path}: the {kind} of {name} version {version} is missing")
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
        faiss_index=faiss.read_index(str(scorer_dir / "faiss.index")),
    )


class Registry:
    """The loaded versions of every model; lookups by (name, version) with NOT_FOUND errors."""

    def __init__(self, default_model: str) -> None:
        self.default_model = default_model
        self._versions: dict[str, dict[int, ModelVersion]] = {}

    def add(self, model: ModelVersion) -> None:
        self._versions.setdefault(model.name, {})[model.version] = model

    def names(self) -> list[str]:
        return sorted(self._versions)

    def versions(self, name: str) -> list[int]:
        return sorted(self._versions.get(name, {}))

    def get(self, name: str = "", version: int = 0) -> ModelVersion:
        name = name or self.default_model
        loaded = self._versions.get(name)
        if not loaded:
            known = ", ".join(self.names()) or "none"
            raise ModelNotFound(f"model: {name!r} is not loaded (loaded: {known})")
        if version == 0:
            return loaded[max(loaded)]
        if version not in loaded:
            have = ", ".join(map(str, sorted(loaded)))
            raise ModelNotFound(f"model_version: {name} has no version {version} (loaded: {have})")
        return loaded[version]
