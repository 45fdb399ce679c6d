"""Re-ranking on ML-1M: what each lever buys in catalog coverage, equality and tail exposure, and
what it costs in NDCG@10; and NDCG@10 per demographic group with and without user context.

Issue 17: sweep the popularity weight beta, the MMR lambda, the genre cap and calibration on the
ML-1M model; goal: a setting that at least doubles catalog coverage@10 while losing at most 5%
NDCG@10. The test users' logits are computed once with torch; every list is then chosen by
serving/rerank.py exactly as the gateway serves it (the top `candidate_pool(10, settings)` items
by logit, then `rerank`), and described by training/metrics.py as `logitrec evaluate` does.

    .venv/bin/python benchmarks/rerank.py \\
        --with-context artifacts/checkpoints/demo --without-context artifacts/rerank/none-s42 \\
        --with-context artifacts/rerank/context-s7 --without-context artifacts/rerank/none-s7
    .venv/bin/python benchmarks/rerank.py --report-only

Writes benchmarks/results/rerank.{json,md,png} (or --out PREFIX).
"""

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from export.exporter import _catalog, _with_metadata
from logitrec.atomic import write_json, write_text
from serving.rerank import ItemMetadata, RerankSettings, candidate_pool, log_popularity, rerank
from training.batches import evaluation_rows
from training.checkpoint import load_checkpoint, load_items
from training.data.dataset import load_dataset
from training.evaluate import model_scores, rank_targets
from training.features import context_indices
from training.metrics import GenreSets, list_metrics, per_user_metrics

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
K = 10
GOAL = {"coverage_factor": 2.0, "max_ndcg_loss": 0.05}
BOOTSTRAP_RESAMPLES = 2000
# ML-1M's age codes (README of the data set).
AGE_GROUPS = {
    "1": "under 18",
    "18": "18-24",
    "25": "25-34",
    "35": "35-44",
    "45": "45-49",
    "50": "50-55",
    "56": "56+",
}


def sweep() -> list[tuple[str, RerankSettings]]:
    """(lever, settings): each lever alone from the identity, then a few combinations."""
    settings = [("baseline", RerankSettings())]
    settings += [
        ("beta", RerankSettings(popularity_beta=b))
        for b in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.5)
    ]
    settings += [("lambda", RerankSettings(mmr_lambda=x)) for x in (0.9, 0.8, 0.7, 0.6, 0.5, 0.3)]
    settings += [("genre cap", RerankSettings(category_cap=c)) for c in (5, 4, 3, 2, 1)]
    settings += [("calibration", RerankSettings(calibration=c)) for c in (0.1, 0.3, 0.5, 0.7, 0.9)]
    settings += [
        ("beta + lambda", RerankSettings(popularity_beta=b, mmr_lambda=x))
        for b, x in ((0.3, 0.8), (0.4, 0.7), (0.5, 0.8))
    ]
    settings += [
        ("beta + cap", RerankSettings(popularity_beta=b, category_cap=c))
        for b, c in ((0.3, 3), (0.4, 3), (0.5, 2))
    ]
    return settings


def describe(settings: RerankSettings) -> str:
    parts = []
    if settings.popularity_beta:
        parts.append(f"beta {settings.popularity_beta:g}")
    if settings.mmr_lambda != 1:
        parts.append(f"lambda {settings.mmr_lambda:g}")
    if settings.category_cap:
        parts.append(f"cap {settings.category_cap}")
    if settings.calibration:
        parts.append(f"calibration {settings.calibration:g}")
    return ", ".join(parts) or "none (logit order)"


# --- inputs -------------------------------------------------------------------------------------


class Served:
    """What the gateway holds for the model (ModelVersion's popularity, head and metadata) and
    the test users' logits, seen items masked."""

    def __init__(self, data: Path, checkpoint: Path) -> None:
        self.dataset = load_dataset(data)
        model, config = load_checkpoint(checkpoint, "cpu")
        model.eval()
        self.rows = evaluation_rows(self.dataset, "test", config.model.max_length)
        catalog = _catalog(_with_metadata(load_items(checkpoint), checkpoint))
        self.popularity = catalog["popularity"].to_numpy().astype(np.float64)
        self.metadata = ItemMetadata.from_catalog(catalog)
        weight, bias = (t.detach().float().numpy() for t in model.head())
        self.weight = weight
        self.head = np.zeros((len(weight) + 1, weight.shape[1] + 1), np.float32)
        self.head[1:, :-1], self.head[1:, -1] = weight, bias
        genres = catalog["genres"].to_list() if "genres" in catalog.columns else None
        self.genres = GenreSets(genres) if genres else None
        context = context_indices(self.dataset.users, config.context_vocabulary)
        self.logits = user_logits(model, context, self.rows)
        self.num_items = len(weight)

    def histories(self) -> np.ndarray:
        return self.rows["histories"]


@torch.no_grad()
def user_logits(model, context: np.ndarray, rows: dict, batch: int = 512) -> np.ndarray:
    """[users, N] float32 logits of every test user, items already seen at -inf."""
    score = model_scores(model, context, "cpu")
    out = []
    for begin in range(0, len(rows["targets"]), batch):
        users = np.arange(begin, min(begin + batch, len(rows["targets"])))
        histories = torch.as_tensor(rows["histories"][users])
        out.append(score(histories, rows["users"][users]).float().numpy())
    logits = np.concatenate(out)
    offsets = rows["seen_offsets"]
    user_of_seen = np.repeat(np.arange(len(logits)), np.diff(offsets))
    logits[user_of_seen, rows["seen_items"] - 1] = -np.inf
    return logits


# --- one setting --------------------------------------------------------------------------------


def reranked_lists(served: Served, settings: RerankSettings) -> tuple[np.ndarray, float]:
    """Each user's 10 items as served, and the mean re-ranking time per user (ms)."""
    pool = min(candidate_pool(K, settings), served.num_items)
    logits = served.logits
    tops = np.argpartition(-logits, pool - 1, axis=1)[:, :pool] + 1
    lists = np.zeros((len(logits), K), dtype=np.int64)
    histories = served.histories()
    started = time.perf_counter()
    for user, items in enumerate(tops):
        ranked = rerank(
            items,
            logits[user, items - 1],
            K,
            settings,
            popularity=served.popularity,
            vectors=served.head,
            metadata=served.metadata,
            history=histories[user][histories[user] > 0],
        )
        lists[user, : len(ranked.items)] = ranked.items
    per_user_ms = (time.perf_counter() - started) / len(logits) * 1000
    return lists, per_user_ms


def catalog_wide_beta_lists(served: Served, beta: float) -> np.ndarray:
    """The top 10 by logit - beta log p over the whole catalog: what the pool approximates."""
    adjusted = served.logits - beta * log_popularity(served.popularity)[1:]
    top = np.argpartition(-adjusted, K - 1, axis=1)[:, :K]
    order = np.argsort(-np.take_along_axis(adjusted, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1) + 1


def accuracy(lists: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """HR@10 and NDCG@10 of lists against each user's one held-out item."""
    hit = lists == targets[:, None]
    found = hit.any(axis=1)
    position = hit.argmax(axis=1)
    ndcg = np.where(found, 1 / np.log2(position + 2), 0.0)
    return {"hr@10": float(found.mean()), "ndcg@10": float(ndcg.mean())}


def measure(served: Served, lever: str, settings: RerankSettings) -> dict:
    lists, per_user_ms = reranked_lists(served, settings)
    result = {
        "lever": lever,
        "settings": {
            "popularity_beta": settings.popularity_beta,
            "mmr_lambda": settings.mmr_lambda,
            "category_cap": settings.category_cap,
            "calibration": settings.calibration,
        },
        "label": describe(settings),
        "pool": min(candidate_pool(K, settings), served.num_items),
        "rerank_ms_per_user": per_user_ms,
        **accuracy(lists, served.rows["targets"]),
        **list_metrics(lists, served.popularity, vectors=served.weight, genres=served.genres),
    }
    if lever == "beta":
        wide = catalog_wide_beta_lists(served, settings.popularity_beta)
        result["pool_equals_catalog_wide"] = float((wide == lists).all(axis=1).mean())
        result["catalog_wide_ndcg@10"] = accuracy(wide, served.rows["targets"])["ndcg@10"]
    return result


def run_sweep(served: Served) -> list[dict]:
    results = []
    for lever, settings in sweep():
        result = measure(served, lever, settings)
        results.append(result)
        print(
            f"{result['label']:<28} ndcg {result['ndcg@10']:.4f} coverage "
            f"{result['coverage@10']:.3f} gini {result['gini@10']:.3f} tail "
            f"{result['tail_share@10']:.3f} {result['rerank_ms_per_user']:.2f} ms/user",
            flush=True,
        )
    return results


def judge(results: list[dict]) -> dict:
    """The goal: coverage@10 >= 2x the baseline's with NDCG@10 >= 95% of it; the best such
    setting by coverage, else the one closest to it."""
    base = results[0]
    floor = base["ndcg@10"] * (1 - GOAL["max_ndcg_loss"])
    wanted = base["coverage@10"] * GOAL["coverage_factor"]
    within = [r for r in results[1:] if r["ndcg@10"] >= floor]
    met = [r for r in within if r["coverage@10"] >= wanted]
    best = max(within, key=lambda r: r["coverage@10"]) if within else None
    return {
        "baseline_ndcg@10": base["ndcg@10"],
        "baseline_coverage@10": base["coverage@10"],
        "ndcg_floor": floor,
        "coverage_wanted": wanted,
        "met": bool(met),
        "settings_meeting_it": [r["label"] for r in met],
        "best_within_ndcg_floor": best
        and {
            "label": best["label"],
            "ndcg@10": best["ndcg@10"],
            "coverage@10": best["coverage@10"],
            "coverage_factor": best["coverage@10"] / base["coverage@10"],
            "ndcg_change": best["ndcg@10"] / base["ndcg@10"] - 1,
        },
    }


# --- demographics -------------------------------------------------------------------------------


def user_ndcg(data: Path, checkpoint: Path) -> tuple[np.ndarray, dict]:
    """Each test user's NDCG@10 (full ranking, seen items excluded) and the run's settings."""
    dataset = load_dataset(data)
    model, config = load_checkpoint(checkpoint, "cpu")
    model.eval()
    rows = evaluation_rows(dataset, "test", config.model.max_length)
    context = context_indices(dataset.users, config.context_vocabulary)
    ranks = rank_targets(model_scores(model, context, "cpu"), rows, np.arange(len(rows["users"])))
    described = {
        "checkpoint": shown(checkpoint),
        "context_features": config.model.context_features,
        "seed": config.train.get("seed"),
    }
    return per_user_metrics(ranks, (K,))["ndcg@10"], described


def groups(data: Path) -> dict[str, np.ndarray]:
    """Test-user row -> group label, per attribute (every ML-1M user has a test item)."""
    users = load_dataset(data).users.sort("user_index")
    ages = users["age"].cast(pl.String).replace_strict(AGE_GROUPS, default=None)
    return {"gender": users["gender"].to_numpy(), "age": ages.to_numpy()}


def group_table(ndcg: np.ndarray, labels: np.ndarray) -> dict[str, dict]:
    table = {}
    for label in sorted(set(labels.tolist()), key=_age_order):
        values = ndcg[labels == label]
        half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
        table[label] = {"users": len(values), "ndcg@10": float(values.mean()), "ci95": half}
    return table


def _age_order(label: str) -> tuple:
    ages = list(AGE_GROUPS.values())
    return (ages.index(label), label) if label in ages else (-1, label)


def gap(ndcg: np.ndarray, labels: np.ndarray, names: list[str]) -> float:
    """The best group's mean NDCG@10 minus the worst group's."""
    means = [ndcg[labels == name].mean() for name in names]
    return float(max(means) - min(means))


def gap_change(with_ctx: np.ndarray, without: np.ndarray, labels: np.ndarray) -> dict:
    """gap(with context) - gap(without), and its 95% interval by a paired bootstrap over users
    (both models rank the same users)."""
    names = sorted(set(labels.tolist()))
    observed = gap(with_ctx, labels, names) - gap(without, labels, names)
    rng = np.random.default_rng(0)
    changes = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        pick = rng.integers(0, len(labels), len(labels))
        changes.append(
            gap(with_ctx[pick], labels[pick], names) - gap(without[pick], labels[pick], names)
        )
    low, high = np.percentile(changes, [2.5, 97.5])
    return {
        "gap_with_context": gap(with_ctx, labels, names),
        "gap_without_context": gap(without, labels, names),
        "change": observed,
        "ci95": [float(low), float(high)],
    }


def demographics(data: Path, with_context: list[Path], without: list[Path]) -> dict:
    if len(with_context) != len(without):
        sys.exit("--with-context and --without-context: give them in pairs (same seed)")
    labels = groups(data)
    pairs = []
    for ctx_path, none_path in zip(with_context, without, strict=True):
        ctx_ndcg, ctx_run = user_ndcg(data, ctx_path)
        none_ndcg, none_run = user_ndcg(data, none_path)
        pair = {"with_context": ctx_run, "without_context": none_run, "attributes": {}}
        pair["with_context"]["ndcg@10"] = float(ctx_ndcg.mean())
        pair["without_context"]["ndcg@10"] = float(none_ndcg.mean())
        for attribute, values in labels.items():
            pair["attributes"][attribute] = {
                "with_context": group_table(ctx_ndcg, values),
                "without_context": group_table(none_ndcg, values),
                "gap": gap_change(ctx_ndcg, none_ndcg, values),
            }
        pairs.append(pair)
        print(json.dumps({a: p["gap"] for a, p in pair["attributes"].items()}), flush=True)
    return {"pairs": pairs}


# --- report -------------------------------------------------------------------------------------


def shown(path: Path) -> str:
    """A path as the report shows it: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def machine() -> dict:
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other work)",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def report(results: dict, prefix: Path) -> None:
    write_text(prefix.with_suffix(".md"), markdown(results))
    plot(results, prefix.with_suffix(".png"))


def markdown(results: dict) -> str:
    sweep_rows = results["sweep"]
    verdict = results["goal"]
    lines = [
        "# Re-ranking on ML-1M: accuracy against coverage, equality and tail exposure",
        "",
        f"Measured {results['date']} on {results['machine']['machine']}; "
        f"model `{results['checkpoint']}` on `{results['data']}` "
        f"({results['users']} test users, leave-one-out, "
        "seen items excluded).",
        "",
        "```",
        results["command"],
        "```",
        "",
        "## Goal",
        "",
        f"At least double catalog coverage@10 ({verdict['baseline_coverage@10']:.3f} -> "
        f">= {verdict['coverage_wanted']:.3f}) while losing at most 5% NDCG@10 "
        f"({verdict['baseline_ndcg@10']:.4f} -> >= {verdict['ndcg_floor']:.4f}): "
        f"**{'met' if verdict['met'] else 'not met'}**"
        + (f" by {', '.join(verdict['settings_meeting_it'])}." if verdict["met"] else "."),
    ]
    best = verdict["best_within_ndcg_floor"]
    if best:
        lines += [
            "",
            f"The widest coverage within the NDCG floor: {best['label']}, coverage@10 "
            f"{best['coverage@10']:.3f} ({best['coverage_factor']:.2f}x) at NDCG@10 "
            f"{best['ndcg@10']:.4f} ({best['ndcg_change']:+.1%}).",
        ]
    lines += ["", *results.get("findings", []), "", "## Sweep", ""]
    lines += [
        "Every list is the top `candidate_pool(10, settings)` items by logit (10 for the "
        "baseline, 200 otherwise) re-ranked by `serving/rerank.py` as the gateway does; the "
        "metrics are `training/metrics.py`'s (RecBole's ItemCoverage, GiniIndex, "
        "TailPercentage with the least popular 80% of items, AveragePopularity; ILD is the "
        "mean pairwise genre Jaccard / vector cosine distance within a list). ms/user: "
        "re-ranking one user's pool in Python on one shared core, not a serving latency.",
        "",
        "| lever | settings | NDCG@10 | HR@10 | coverage@10 | Gini | tail share | avg pop. "
        "| ILD genre | ILD vector | ms/user |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in sweep_rows:
        lines.append(
            f"| {r['lever']} | {r['label']} | {r['ndcg@10']:.4f} | {r['hr@10']:.4f} | "
            f"{r['coverage@10']:.3f} | {r['gini@10']:.3f} | {r['tail_share@10']:.3f} | "
            f"{r['avg_popularity@10']:.0f} | {r.get('ild_genre@10', float('nan')):.3f} | "
            f"{r['ild_vector@10']:.3f} | {r['rerank_ms_per_user']:.2f} |"
        )
    beta_rows = [r for r in sweep_rows if "pool_equals_catalog_wide" in r]
    if beta_rows:
        lines += [
            "",
            "The pool against the whole catalog for beta alone (top 10 by logit - beta log p "
            "over every unseen item, which the pool of 200 by logit approximates):",
            "",
            "| beta | lists identical | NDCG@10 pool | NDCG@10 catalog-wide |",
            "| --- | --- | --- | --- |",
        ]
        for r in beta_rows:
            lines.append(
                f"| {r['settings']['popularity_beta']:g} | {r['pool_equals_catalog_wide']:.1%} "
                f"| {r['ndcg@10']:.4f} | {r['catalog_wide_ndcg@10']:.4f} |"
            )
    if results.get("demographics"):
        lines += demographics_markdown(results["demographics"])
    return "\n".join(lines) + "\n"


def demographics_markdown(demo: dict) -> list[str]:
    lines = [
        "",
        "## NDCG@10 per demographic group, with and without user context",
        "",
        "Each pair: the same recipe and seed, trained with the context tokens (gender, age, "
        "occupation) and with `--context-features none`; all 6,040 test users, full ranking. "
        "± is the 95% half-width of a group's mean. The gap is the best group's mean minus the "
        "worst's; its change (with - without) has a 95% interval from a paired bootstrap over "
        f"users ({BOOTSTRAP_RESAMPLES} resamples). Measured {demo['date']}, after training the "
        "checkpoints with the Makefile's demo recipe (`logitrec train --epochs 20 --valid-users "
        "1000 --max-length 50 --hidden-size 32 --windows newest`, plus `--seed` and "
        "`--context-features none`):",
        "",
        "```",
        demo["command"],
        "```",
    ]
    for pair in demo["pairs"]:
        ctx, none = pair["with_context"], pair["without_context"]
        lines += [
            "",
            f"### seed {ctx['seed']}: `{ctx['checkpoint']}` ({ctx['ndcg@10']:.4f}) vs "
            f"`{none['checkpoint']}` ({none['ndcg@10']:.4f})",
            "",
            "| attribute | group | users | with context | without | difference |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for attribute, parts in pair["attributes"].items():
            for group, row in parts["with_context"].items():
                other = parts["without_context"][group]
                lines.append(
                    f"| {attribute} | {group} | {row['users']} | {row['ndcg@10']:.4f} ± "
                    f"{row['ci95']:.4f} | {other['ndcg@10']:.4f} ± {other['ci95']:.4f} | "
                    f"{row['ndcg@10'] - other['ndcg@10']:+.4f} |"
                )
        lines += ["", "| attribute | gap with context | gap without | change [95% CI] |"]
        lines.append("| --- | --- | --- | --- |")
        for attribute, parts in pair["attributes"].items():
            g = parts["gap"]
            lines.append(
                f"| {attribute} | {g['gap_with_context']:.4f} | {g['gap_without_context']:.4f} "
                f"| {g['change']:+.4f} [{g['ci95'][0]:+.4f}, {g['ci95'][1]:+.4f}] |"
            )
    return lines


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["sweep"]
    base = rows[0]
    axes_of = (("coverage@10", "catalog coverage@10"), ("gini@10", "Gini index"))
    axes_of += (("tail_share@10", "tail share (least popular 80%)"),)
    figure, axes = plt.subplots(1, 3, figsize=(16, 5))
    levers = list(dict.fromkeys(r["lever"] for r in rows[1:]))
    for ax, (key, title) in zip(axes, axes_of, strict=True):
        for lever in levers:
            points = [base] + [r for r in rows if r["lever"] == lever]
            style = "o-" if "+" not in lever else "s--"
            ax.plot([p[key] for p in points], [p["ndcg@10"] for p in points], style, label=lever)
        ax.scatter([base[key]], [base["ndcg@10"]], color="black", zorder=5, label="logit order")
        ax.axhline(results["goal"]["ndcg_floor"], color="grey", linestyle=":", label="-5% NDCG")
        if key == "coverage@10":
            ax.axvline(results["goal"]["coverage_wanted"], color="red", linestyle=":")
            ax.text(results["goal"]["coverage_wanted"], ax.get_ylim()[0], " 2x coverage")
        ax.set_xlabel(title)
        ax.set_ylabel("NDCG@10")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle("Re-ranking the ML-1M model's lists: NDCG@10 against beyond-accuracy metrics")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "artifacts" / "demo-data")
    parser.add_argument("--checkpoint", type=Path, default=REPO / "artifacts/checkpoints/demo")
    parser.add_argument(
        "--with-context", type=Path, action="append", default=[], help="Demographics: a "
        "checkpoint trained with user context; pair each with a --without-context one."
    )  # fmt: skip
    parser.add_argument("--without-context", type=Path, action="append", default=[])
    parser.add_argument("--skip-sweep", action="store_true", help="Keep the JSON's sweep.")
    parser.add_argument("--out", type=Path, default=RESULTS / "rerank")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    json_path = args.out.with_suffix(".json")
    results = json.loads(json_path.read_text()) if json_path.is_file() else {}
    if args.report_only:
        report(results, args.out)
        return
    command = " ".join(["python", *sys.argv])
    if not args.skip_sweep:
        served = Served(args.data, args.checkpoint)
        results.update(
            date=datetime.date.today().isoformat(),
            command=command,
            machine=machine(),
            data=shown(args.data),
            checkpoint=shown(args.checkpoint),
            users=len(served.rows["targets"]),
            sweep=run_sweep(served),
        )
        results["goal"] = judge(results["sweep"])
    if args.with_context or args.without_context:
        results["demographics"] = {
            "date": datetime.date.today().isoformat(),
            "command": command,
            **demographics(args.data, args.with_context, args.without_context),
        }
    write_json(json_path, results)
    report(results, args.out)


if __name__ == "__main__":
    main()
