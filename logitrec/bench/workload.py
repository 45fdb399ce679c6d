"""The Recommend requests a load run sends: real test histories from an exported model version,
or a JSONL file of histories."""

import json
from pathlib import Path

from logitrec_client.proto import recommender_pb2 as pb

from logitrec import repository as layout
from logitrec.errors import InputError


def repository_requests(
    repository: Path, model: str, version: int | None, k: int
) -> list[pb.RecommendRequest]:
    """One request per parity history of the version (the latest complete one by default): the
    real test histories the export's parity check ran on, as the catalog's external ids."""
    import numpy as np
    import polars as pl

    chosen = layout.latest_version(repository, model) if version is None else version
    folder = layout.scorer_dir(repository, model, chosen)
    histories_file = folder / layout.PARITY_HISTORIES
    catalog_file = folder / layout.CATALOG
    for path in (histories_file, catalog_file):
        if not path.is_file():
            raise InputError(
                f"--repository/--model/--model-version: {path} not found (expected an exported "
                f"version of {model!r})"
            )
    histories = np.load(histories_file)
    item_ids = pl.read_parquet(catalog_file).sort("index")["item_id"].to_list()
    return [
        pb.RecommendRequest(
            history=[pb.Event(item_id=item_ids[index - 1]) for index in row if index],
            k=k,
            model=model,
            model_version=version or 0,  # 0: whatever the gateway serves as latest
        )
        for row in histories
    ]


def histories_requests(path: Path, k: int) -> list[pb.RecommendRequest]:
    """One request per line of a JSONL file: {"history": [item ids...], "k": 10}, k optional."""
    if not path.is_file():
        raise InputError(f"--histories {path}: not found")
    requests = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            requests.append(_history_line(line, f"--histories {path} line {number}", k))
    if not requests:
        raise InputError(f"--histories {path}: has no histories (expected JSON lines)")
    return requests


def _history_line(line: str, where: str, default_k: int) -> pb.RecommendRequest:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise InputError(f"{where}: not JSON ({error.msg})") from None
    if not isinstance(value, dict) or not isinstance(value.get("history"), list):
        raise InputError(f'{where}: expected an object like {{"history": ["id", ...], "k": 10}}')
    history = value["history"]
    if not all(isinstance(item, str | int) and not isinstance(item, bool) for item in history):
        raise InputError(f"{where}: history must hold item ids (strings or integers)")
    k = value.get("k", default_k)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InputError(f"{where}: k must be a positive integer, got {k!r}")
    return pb.RecommendRequest(history=[pb.Event(item_id=str(item)) for item in history], k=k)
