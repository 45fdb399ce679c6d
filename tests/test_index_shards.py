"""A FAISS index split into shards over contiguous slices of the catalog answers with the same
items as the whole index: exactly for a flat index, the same candidates for IVF at the same
nprobe; and the gateway's pruned path serves the same recommendations through it."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import polars as pl
import pytest
from logitrec_client import RecommenderClient

from export.index import build_index
from logitrec import repository as layout
from logitrec.errors import InputError
from logitrec.gateway_process import running_gateway
from logitrec.index_shards import shard_bounds, shard_index
from logitrec.mips import item_points, search, set_search_parameter

REPO = Path(__file__).resolve().parents[1]


def catalog(items: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((items, dim)).astype(np.float32)
    bias = rng.standard_normal(items).astype(np.float32)
    users = rng.standard_normal((40, dim)).astype(np.float32)
    return weight, bias, users


def test_bounds_cover_the_catalog_in_contiguous_slices_of_near_equal_size():
    for count, shards in ((10, 3), (1_000_003, 4), (7, 7)):
        bounds = shard_bounds(count, shards)
        assert bounds[0][0] == 0 and bounds[-1][1] == count
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
        sizes = [stop - start for start, stop in bounds]
        assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("shards", [2, 3, 4])
def test_sharded_flat_search_returns_the_exact_top_k_with_catalog_ids(shards):
    weight, bias, users = catalog(1_001, 8)
    index, _ = build_index(weight, bias, "Flat")
    sharded = shard_index(index, shards)
    assert sharded.ntotal == index.ntotal
    found = search(sharded, users, 20)
    np.testing.assert_array_equal(found, search(index, users, 20))
    logits = users @ weight.T + bias
    best = np.argsort(-logits, axis=1)[:, :20] + 1  # item indices count from 1
    np.testing.assert_array_equal(found, best)


def test_sharded_ivf_search_returns_the_unsharded_candidates_at_the_same_nprobe():
    weight, bias, users = catalog(4_000, 16, seed=1)
    index, _ = build_index(weight, bias, "IVF32,Flat")
    set_search_parameter(index, "nprobe", 5)
    sharded = shard_index(index, 3)  # the breadth set before splitting carries over
    np.testing.assert_array_equal(search(sharded, users, 50), search(index, users, 50))
    set_search_parameter(index, "nprobe", 9)
    set_search_parameter(sharded, "nprobe", 9)  # and one set afterwards reaches every shard
    np.testing.assert_array_equal(search(sharded, users, 50), search(index, users, 50))


def test_one_shard_is_the_index_itself_and_impossible_splits_are_refused():
    weight, bias, _ = catalog(50, 4)
    index, _ = build_index(weight, bias, "Flat")
    assert shard_index(index, 1) is index
    with pytest.raises(InputError, match="holds only 50 items"):
        shard_index(index, 51)
    points, _ = item_points(weight, bias)
    graph = faiss.IndexHNSWFlat(points.shape[1], 8)
    graph.add(points)
    with pytest.raises(InputError, match="IndexHNSWFlat index cannot be split"):
        shard_index(graph, 2)


def test_the_gateway_serves_the_same_answers_from_a_sharded_index(tiny_repository):
    scorer = layout.scorer_dir(tiny_repository, "tiny", 1)
    ids = pl.read_parquet(scorer / layout.CATALOG).sort("index")["item_id"].to_list()
    rows = np.load(scorer / layout.PARITY_HISTORIES)[:8]
    histories = [[ids[i - 1] for i in row if i] for row in rows]

    def answers(*flags) -> list[list[str]]:
        with (
            running_gateway(tiny_repository, *flags) as gateway,
            RecommenderClient(gateway.target, timeout=30) as client,
        ):
            return [client.recommend(history, 10).item_ids for history in histories]

    # Pruned (every catalog size) to 12 candidates of 60 items: only the index's own top-12,
    # with the right ids, re-score to the exact top-10.
    sharded = answers("--exact-below", "0", "--candidate-count", "12", "--index-shards", "3")
    assert sharded == answers("--exact")


def test_the_shards_benchmark_reports_the_same_candidates_for_every_shard_count(tmp_path):
    out = tmp_path / "faiss_shards"
    command = [sys.executable, "benchmarks/faiss_shards.py", "--items", "60000", "--dim", "8",
               "--queries", "64", "--nprobe", "4,16", "--rounds", "1", "--out", out]  # fmt: skip
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=300)
    summary = json.loads(out.with_suffix(".json").read_text())["summary"]
    assert [(row["nprobe"], row["shards"]) for row in summary] == [
        (nprobe, shards) for nprobe in (4, 16) for shards in (1, 2, 4)
    ]
    assert all(row["same_candidates"] == 1.0 for row in summary)
    for nprobe in (4, 16):
        assert len({row["recall_at_10"] for row in summary if row["nprobe"] == nprobe}) == 1
    report = out.with_suffix(".md").read_text()
    assert "python benchmarks/faiss_shards.py" in report and "shared 2-core machine" in report
