"""benchmarks/retrieval.py at a tiny size: it runs end to end as a user runs it, its recall
is the gateway's (export's own measure agrees), and its report says what was measured."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "retrieval.py"


def load_script():
    spec = importlib.util.spec_from_file_location("benchmark_retrieval", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_writes_a_report_with_exact_baselines_and_pruned_sweeps(tmp_path):
    prefix = tmp_path / "retrieval"
    command = [
        sys.executable, str(SCRIPT), "--sizes", "2000", "--dims", "16", "--queries", "32",
        "--candidates", "128,256", "--tight", "", "--no-real", "--out", str(prefix),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

    results = json.loads(prefix.with_suffix(".json").read_text())
    (run,) = results["runs"]
    assert (run["items"], run["dim"], run["variant"]) == (2000, 16, "shaped by real")
    for name in ("numpy GEMM + argpartition", "FAISS IndexFlatIP"):
        assert run["exact"][name]["recall_at_10"] == 1.0, name  # exact methods agree
    assert run["truth_matches_export_exact_top"] == 1.0
    families = {setting["family"] for setting in run["settings"]}
    assert {"IVF-Flat", "HNSW"} <= families
    for setting in run["settings"]:
        assert setting["points"], setting["setting"]
        assert setting["build_s"] >= 0 and setting["index_mb"] > 0
    # Scanning every IVF list is exhaustive: the re-scored candidates hold the true top-10.
    full_scans = [
        p
        for s in run["settings"]
        if s["family"] == "IVF-Flat"
        for p in s["points"]
        if p["value"] == int(s["setting"].split(",")[0].removeprefix("IVF"))
    ]
    assert all(p["recall_at_10"] == 1.0 for p in full_scans)
    assert results["machine"]["faiss_threads"] >= 1
    report = prefix.with_suffix(".md").read_text()
    assert "2,000 items x d = 16 (shaped by real)" in report
    assert "Synthetic" in report and "no 1M-item catalog in this run" in report
    assert prefix.with_suffix(".png").stat().st_size > 0


def test_pruned_recall_is_what_export_calibration_measures():
    """The benchmark's recall@10 (exact top-10 among the re-scored candidates) is the share of
    the true top-10 that the candidates hold: export.calibrate.measure's number."""
    import faiss

    from export.calibrate import exact_top, measure
    from logitrec.mips import item_points, set_search_parameter

    retrieval = load_script()
    catalog = retrieval.synthetic_catalog(3000, 16, 64, retrieval.FALLBACK_PROFILE, seed=1)
    points, _ = item_points(catalog.weight, catalog.bias)
    index = faiss.index_factory(points.shape[1], "IVF32,Flat")
    index.train(points)
    index.add(points)
    set_search_parameter(index, "nprobe", 4)
    truth = retrieval.numpy_top(catalog.weight, catalog.bias, catalog.queries)
    assert np.array_equal(
        np.sort(truth[:, :10], axis=1),
        np.sort(exact_top(catalog.queries, catalog.weight, catalog.bias, 10), axis=1),
    )
    point = retrieval.measure_point(index, catalog, truth, 200, reference_qps=1e-9)
    expected, _ = measure(index, catalog.queries, truth[:, :10], 200)
    assert 0 < point.recall_at_10 < 1
    assert abs(point.recall_at_10 - expected) < 1e-4
