"""The pruned path through the real gateway: FAISS candidates (IVF, search breadth calibrated at
export) then exact re-scoring, against the gateway's own exact answers for the same model.

Every other serving test runs catalogs below `exact_below`, so only this one prunes: a
synthetic catalog of 3,000 items, an IVF index, a candidate count of 100 (3% of the catalog).
"""

import re
import urllib.request

import numpy as np
import polars as pl
import pytest
from conftest import TINY_TRAIN, run_cli
from logitrec_client import Filter, RecommenderClient

from logitrec import repository as layout
from logitrec.gateway_process import running_gateway

CANDIDATES = 100
K = 10


@pytest.fixture(scope="module")
def ivf_repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("pruned")
    run_cli("data", "synth", "--out", root / "raw", "--users", 1500, "--items", 3000,
            "--clusters", 30)  # fmt: skip
    run_cli("data", "prepare", root / "raw", "--out", root / "ds", "-q",
            "--min-user-interactions", 1, "--min-item-interactions", 1)  # fmt: skip
    run_cli("train", "--data", root / "ds", "--out", root / "ckpt", *TINY_TRAIN)
    run_cli("export", "--checkpoint", root / "ckpt", "--repository", root / "models",
            "--name", "big", "--index", "IVF32,Flat", "--candidate-count", CANDIDATES)  # fmt: skip
    return root / "models"


def histories(repository) -> list[list[str]]:
    """The exported version's real held-out histories, as external ids."""
    scorer = layout.scorer_dir(repository, "big", 1)
    ids = pl.read_parquet(scorer / layout.CATALOG).sort("index")["item_id"].to_list()
    rows = np.load(scorer / layout.PARITY_HISTORIES)
    return [[ids[i - 1] for i in row if i] for row in rows]


def answers(target: str, queries: list[list[str]], **options) -> list[list[str]]:
    with RecommenderClient(target, timeout=30) as client:
        return [client.recommend(history, K, **options).item_ids for history in queries]


def counter(metrics_url: str, name: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    found = re.search(rf"^{name} (\S+)", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_pruned_answers_match_exact_ones_at_the_recall_export_recorded(ivf_repository):
    manifest = layout.read_manifest(layout.scorer_dir(ivf_repository, "big", 1))
    calibration = manifest.index["calibration"]
    assert calibration["parameter"] == "nprobe" and calibration["candidate_count"] == CANDIDATES
    assert calibration["met"] and 1 <= calibration["value"] < 32
    queries = histories(ivf_repository)
    with running_gateway(ivf_repository, "--exact") as exact:
        expected = answers(exact.target, queries)
    pruned_flags = ("--exact-below", "0", "--candidate-count", str(CANDIDATES))
    with running_gateway(ivf_repository, *pruned_flags) as pruned:
        found = answers(pruned.target, queries)
        assert counter(pruned.metrics_url, "logitrec_candidates_short_total") == 0
        # Exclusions and filters still hold on the pruned path, and k items still come back
        # when a caller excludes more items than the candidate count (the index is asked for
        # that many more), or asks for more than it (then the whole catalog is scored).
        history = queries[0]
        excluded = expected[0][:3]
        with RecommenderClient(pruned.target, timeout=30) as client:
            answer = client.recommend(history, K, exclude=excluded).item_ids
            assert len(answer) == K and not set(answer) & (set(excluded) | set(history))
            allowed = expected[1][::2]
            assert set(client.recommend(history, 3, allowed=allowed).item_ids) <= set(allowed)
            many = found[0] + client.recommend(history, 200).item_ids
            wide = client.recommend(history, K, exclude=list(dict.fromkeys(many))).item_ids
            assert len(wide) == K and not set(wide) & set(many)
            check_filters_hold(client, pruned.metrics_url, ivf_repository, history)
    overlap = [len(set(a) & set(b)) / K for a, b in zip(found, expected, strict=True)]
    assert all(len(a) == K for a in found)
    assert not any(set(a) & set(h) for a, h in zip(found, queries, strict=True))
    # Export measured recall on these histories and their earlier states: allow sampling slack.
    assert np.mean(overlap) >= calibration["recall_at_10"] - 0.03


def check_filters_hold(client, metrics_url, repository, history) -> None:
    """Every genre filter gets exactly K matching items on the pruned path: from the FAISS
    candidates when they hold K matches, else (said in the response) from the whole catalog."""
    catalog = pl.read_parquet(layout.scorer_dir(repository, "big", 1) / layout.CATALOG)
    genre_of = dict(zip(catalog["item_id"], catalog["genres"], strict=True))
    widened = []
    for genre in sorted(set(genre_of.values())):
        answer = client.recommend(history, K, filters=[Filter("genres", any_of=[genre])])
        assert len(answer) == K and {genre_of[i] for i in answer.item_ids} == {genre}
        assert not set(answer.item_ids) & set(history)
        widened.append(answer.filters_widened)
    # The user's own genres fill K from the candidates; genres far from them cannot.
    assert any(widened) and not all(widened)
    assert counter(metrics_url, "logitrec_filters_widened_total") == sum(widened)


def test_a_search_breadth_too_narrow_for_the_candidate_count_is_counted_and_said(
    ivf_repository,
):
    flags = ("--exact-below", "0", "--candidate-count", "1000", "--search-breadth", "1")
    with running_gateway(ivf_repository, *flags) as gateway:
        before = counter(gateway.metrics_url, "logitrec_candidates_short_total")  # warm-up's
        assert len(answers(gateway.target, histories(ivf_repository)[:5])[0]) == K
        after = counter(gateway.metrics_url, "logitrec_candidates_short_total")
        assert after - before == 5
        assert "returned" in gateway.log_path.read_text()
