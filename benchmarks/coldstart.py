"""Benchmark cold-start items by their text, and what the pretrained backbone buys (issue 18).

    python benchmarks/coldstart.py prepare [--ml1m ../shared/data/ml-1m]
    python benchmarks/coldstart.py train [--variants scratch,text,minilm] [--datasets full,warm,few]
    python benchmarks/coldstart.py evaluate     # -> results/coldstart.{json,md,png}

Datasets, all from the SASRec ML-1M file with MovieLens titles and genres (leave-one-out):
- full: ML-1M as `data prepare` makes it;
- warm: ML-1M without any interaction with a held-out 10% of the items (drawn at random,
  seed 0): those items are never seen in training; users keep their other interactions;
- few: 10% of the users (drawn at random, seed 0), the few-shot regime.
Variants (same recipe, same data; see RECIPES): scratch (ID embeddings only), text (scratch +
the MiniLM title projection with item-id dropout 0.5), minilm (the pretrained MiniLM backbone,
titles included, item-id dropout 0.5; fewer epochs, since an epoch of it costs ~20x one of
scratch on 2 CPU cores).

Evaluation (full ranking over every item, seen items excluded):
- all / rare: each full model on all test users, and on those whose target has fewer than 10
  training interactions;
- cold: each warm model with the held-out items added by their titles alone
  (`logitrec checkpoint add-items`, no training), on the full dataset's test users whose target
  is a held-out item (histories keep their held-out items: they are in the catalog now);
  against random ranking (exact expectation) and most-popular (held-out items have no training
  interactions). The ID-only model gets the rows a new item without text gets (mean row,
  median bias);
- warm: each warm model on the warm test split (what the text projection costs on known items);
- few: each few-shot model on its test split.
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "artifacts" / "coldstart"
LOGITREC = [sys.executable, "-m", "logitrec"]
HELD_OUT_SHARE = 0.10
FEW_SHOT_SHARE = 0.10
RARE = 10  # training interactions below which a target item counts as rare
# ML-1M's 5-core leaves few items that rare; a looser bucket gives a readable second figure.
UNCOMMON = 50
SCRATCH = [
    "--max-length", "50", "--hidden-size", "64", "--windows", "all", "--patience", "100",
    "--valid-users", "1000", "--device", "cpu",
]  # fmt: skip
RECIPES = {
    "scratch": SCRATCH,
    "text": [*SCRATCH, "--item-text", "--item-id-dropout", "0.5"],
    "minilm": [
        "--backbone", "minilm", "--max-length", "50", "--batch-size", "64", "--windows", "all",
        "--warmup-steps", "20", "--valid-users", "1000", "--item-id-dropout", "0.5",
        "--device", "cpu",
    ],
}  # fmt: skip
# Epochs per dataset (the few-shot set is a tenth of the data, so it gets more passes). An
# epoch of minilm costs ~20x one of scratch on 2 CPU cores (~3 minutes on full ML-1M): it gets
# fewer; epochs rather than minutes keep the comparison independent of what else ran.
BUDGETS = {
    "scratch": {"full": ["--epochs", "8"], "warm": ["--epochs", "8"], "few": ["--epochs", "30"]},
    "minilm": {"full": ["--epochs", "2"], "warm": ["--epochs", "2"], "few": ["--epochs", "4"]},
}
DESCRIPTIONS = {
    "scratch": "scratch (ID embeddings)",
    "text": "scratch + title projection",
    "minilm": "pretrained MiniLM backbone",
}


def command(arguments: list[str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as handle:
        subprocess.run([*LOGITREC, *arguments], check=True, stdout=handle, stderr=handle)
    return time.perf_counter() - started


def prepare(ml1m: Path) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    full = WORK / "data-full"
    if not (full / "manifest.json").is_file():
        command(["data", "prepare", str(ml1m), "--out", str(full), "--force", "-q"], WORK / "p.log")
    from training.data.dataset import load_dataset

    dataset = load_dataset(full)
    rng = np.random.default_rng(0)
    items = dataset.items["item_id"].to_numpy()
    held_out = np.sort(rng.choice(items, round(HELD_OUT_SHARE * len(items)), replace=False))
    users = dataset.users["user_id"].to_numpy()
    few_users = np.sort(rng.choice(users, round(FEW_SHOT_SHARE * len(users)), replace=False))
    (WORK / "held_out_items.json").write_text(json.dumps(held_out.tolist()))
    log = _log(dataset)
    tables = [
        "--items", str(ml1m / "movies.dat"), "--users", str(ml1m / "users.dat"), "--force", "-q",
    ]  # fmt: skip
    log.filter(~pl.col("item_id").is_in(held_out.tolist())).write_csv(WORK / "warm.csv")
    command(
        ["data", "prepare", str(WORK / "warm.csv"), "--out", str(WORK / "data-warm"), *tables],
        WORK / "p.log",
    )
    log.filter(pl.col("user_id").is_in(few_users.tolist())).write_csv(WORK / "few.csv")
    command(
        ["data", "prepare", str(WORK / "few.csv"), "--out", str(WORK / "data-few"), *tables],
        WORK / "p.log",
    )


def _log(dataset) -> pl.DataFrame:
    """The dataset's interactions with external ids, in order (`order` keeps it)."""
    users = np.repeat(dataset.users.sort("user_index")["user_id"].to_numpy(), dataset.lengths)
    items = dataset.items.sort("item_index")["item_id"].to_numpy()[dataset.item_indices - 1]
    return pl.DataFrame(
        {"user_id": users, "item_id": items, "timestamp": np.arange(len(items), dtype=np.int64)}
    )


def train(variants: list[str], datasets: list[str]) -> None:
    for name in datasets:
        for variant in variants:
            out = WORK / f"{variant}-{name}"
            if (out / "metrics.json").is_file():
                continue
            budget = BUDGETS["minilm" if variant == "minilm" else "scratch"][name]
            seconds = command(
                ["train", "--data", str(WORK / f"data-{name}"), "--out", str(out), "--force",
                 "-q", *RECIPES[variant], *budget],
                WORK / f"{variant}-{name}.log",
            )  # fmt: skip
            print(f"{variant}-{name}: {seconds:.0f} s", flush=True)


def evaluate(ml1m: Path) -> None:
    from training.data.dataset import load_dataset

    full = load_dataset(WORK / "data-full")
    result = {
        "machine": f"{platform.machine()}, {_cpus()} CPUs",
        "date": time.strftime("%Y-%m-%d"),
        "recipes": RECIPES,
        "budgets": BUDGETS,
        "held_out_items": len(json.loads((WORK / "held_out_items.json").read_text())),
        "variants": {},
    }
    for variant in RECIPES:
        entry = {}
        if (WORK / f"{variant}-full" / "metrics.json").is_file():
            entry["full"] = _training(WORK / f"{variant}-full")
            entry["all"], entry["rare"], entry["uncommon"] = _all_and_rare(
                WORK / f"{variant}-full", full
            )
        if (WORK / f"{variant}-warm" / "metrics.json").is_file():
            entry["warm_training"] = _training(WORK / f"{variant}-warm")
            entry["warm"] = entry["warm_training"]["test"]
            entry["cold"] = _cold(WORK / f"{variant}-warm", variant, full, ml1m)
        if (WORK / f"{variant}-few" / "metrics.json").is_file():
            entry["few_training"] = _training(WORK / f"{variant}-few")
            entry["few"] = entry["few_training"]["test"]
        result["variants"][variant] = entry
    result["baselines"] = _baselines(full)
    (RESULTS / "coldstart.json").write_text(json.dumps(result, indent=2) + "\n")
    report()


def _training(checkpoint: Path) -> dict:
    values = json.loads((checkpoint / "metrics.json").read_text())
    return {
        "test": _short(values["test"]),
        "epochs": values["epochs_run"],
        "train_seconds": values["wall_seconds"],
        "most_popular": _short(values["baselines"]["most_popular"]["test"]),
    }


def _short(metrics: dict) -> dict:
    return {k: round(metrics[k], 4) for k in ("hr@10", "ndcg@10")} | {"users": metrics["users"]}


def _ranks(checkpoint: Path, dataset, rows: dict, item_map: np.ndarray | None = None):
    """0-based ranks of `rows`' targets under the checkpoint's model (items of `dataset`
    translated to the model's indices by `item_map` when given)."""
    from training.checkpoint import load_checkpoint
    from training.evaluate import model_scores, rank_targets
    from training.features import context_indices

    model, config = load_checkpoint(checkpoint)
    if item_map is not None:
        rows = {
            **rows,
            "histories": item_map[rows["histories"]],
            "targets": item_map[rows["targets"]],
            "seen_items": item_map[rows["seen_items"]],
        }
    context = context_indices(dataset.users, config.context_vocabulary)
    score = model_scores(model, context, "cpu")
    return rank_targets(score, rows, np.arange(len(rows["targets"])))


def _metrics(ranks: np.ndarray) -> dict:
    from training.metrics import ranking_metrics

    values = ranking_metrics(ranks)
    return {k: round(values[k], 4) for k in ("hr@10", "ndcg@10")} | {"users": len(ranks)}


def _all_and_rare(checkpoint: Path, full) -> tuple[dict, dict, dict]:
    from training.batches import evaluation_rows
    from training.evaluate import item_popularity

    rows = evaluation_rows(full, "test", 50)
    ranks = _ranks(checkpoint, full, rows)
    popularity = item_popularity(full)[rows["targets"] - 1]
    return (
        _metrics(ranks),
        _metrics(ranks[popularity < RARE]),
        _metrics(ranks[popularity < UNCOMMON]),
    )


def _cold(checkpoint: Path, variant: str, full, ml1m: Path) -> dict:
    """The warm model, held-out items added by their titles, on full test users whose target
    is a held-out item."""
    from training.batches import evaluation_rows
    from training.checkpoint import load_items

    held_out = {str(i) for i in json.loads((WORK / "held_out_items.json").read_text())}
    grown = WORK / f"{variant}-warm-grown"
    if variant == "scratch":
        grown = _grown_without_text(checkpoint, held_out)
    elif not (grown / "config.json").is_file():
        movies = _movies(ml1m).filter(pl.col("item_id").is_in(list(held_out)))
        movies.write_csv(WORK / "held_out_items.csv")
        command(
            ["checkpoint", "add-items", str(checkpoint), "--items",
             str(WORK / "held_out_items.csv"), "--out", str(grown), "--force"],
            WORK / f"{variant}-add-items.log",
        )  # fmt: skip
    catalog = load_items(grown)
    model_index = dict(
        zip(catalog["item_id"].to_list(), catalog["item_index"].to_list(), strict=True)
    )
    item_map = np.zeros(full.num_items + 1, dtype=np.int64)
    for item_id, index in zip(full.items["item_id"], full.items["item_index"], strict=True):
        item_map[index] = model_index[item_id]
    rows = evaluation_rows(full, "test", 50)
    cold = np.isin(full.items.sort("item_index")["item_id"].to_numpy()[rows["targets"] - 1],
                   list(held_out))  # fmt: skip
    subset = _rows_subset(rows, cold)
    ranks = _ranks(grown, full, subset, item_map)
    if variant == "scratch":
        # Every new item has the same row: they all tie, and ties count in the target's
        # favour, so a rank among them would read as perfect. There is no order to measure.
        return {**_metrics(ranks), "among_held_out": None}
    among_cold = _ranks_among(grown, full, subset, item_map, held_out, catalog)
    return {**_metrics(ranks), "among_held_out": _metrics(among_cold)}


def _rows_subset(rows: dict, keep: np.ndarray) -> dict:
    chosen = np.flatnonzero(keep)
    starts, ends = rows["seen_offsets"][chosen], rows["seen_offsets"][chosen + 1]
    seen = [rows["seen_items"][s:e] for s, e in zip(starts, ends, strict=True)]
    return {
        "users": rows["users"][chosen],
        "histories": rows["histories"][chosen],
        "targets": rows["targets"][chosen],
        "seen_offsets": np.concatenate([[0], np.cumsum([len(s) for s in seen])]),
        "seen_items": np.concatenate(seen) if seen else np.zeros(0, dtype=np.int64),
    }


def _ranks_among(grown: Path, full, rows, item_map, held_out, catalog) -> np.ndarray:
    """Ranks among the held-out items only: how well the titles order new items among
    themselves (every warm item counted as seen, so it never outranks the target)."""
    warm = catalog.filter(~pl.col("item_id").is_in(list(held_out)))["item_index"].to_numpy()
    # Express warm items in the full dataset's indices so `_ranks` maps them back.
    full_of_model = np.zeros(item_map.max() + 1, dtype=np.int64)
    full_of_model[item_map] = np.arange(len(item_map))
    warm_full = full_of_model[warm]
    warm_full = warm_full[warm_full > 0]
    counts = np.diff(rows["seen_offsets"])
    seen = [
        np.union1d(rows["seen_items"][s : s + c], warm_full)
        for s, c in zip(rows["seen_offsets"][:-1], counts, strict=True)
    ]
    masked = {
        **rows,
        "seen_offsets": np.concatenate([[0], np.cumsum([len(s) for s in seen])]),
        "seen_items": np.concatenate(seen),
    }
    return _ranks(grown, full, masked, item_map)


def _grown_without_text(checkpoint: Path, held_out: set[str]) -> Path:
    """The ID-only warm model with the held-out items given the rows a text-less new item gets
    (training/incremental.py), written as a checkpoint."""
    from training import checkpoint as ckpt
    from training.incremental import grow

    out = WORK / "scratch-warm-grown"
    if (out / "config.json").is_file():
        return out
    model, config = ckpt.load_checkpoint(checkpoint)
    known = pl.read_parquet(checkpoint / ckpt.ITEMS).sort("item_index")
    fresh = sorted(held_out)
    grown = grow(model, None, len(fresh))
    catalog = pl.concat(
        [
            known.select("item_index", "item_id", "popularity"),
            pl.DataFrame(
                {
                    "item_index": np.arange(known.height + 1, known.height + 1 + len(fresh)),
                    "item_id": fresh,
                    "popularity": np.zeros(len(fresh), dtype=np.int64),
                }
            ).cast({"item_index": known["item_index"].dtype}),
        ]
    )
    out.mkdir(parents=True, exist_ok=True)
    ckpt.write_config(
        out,
        replace(config, num_items=catalog.height, catalog_sha256=ckpt.catalog_hash(catalog)),
    )
    ckpt.save_weights(grown, out / "model.safetensors")
    ckpt.write_items(out, catalog.drop("popularity"), catalog["popularity"].to_numpy())
    return out


def _movies(ml1m: Path) -> pl.DataFrame:
    from training.data.tables import TableSource, read_side_table

    table = read_side_table(TableSource(path=ml1m / "movies.dat", id_col="item_id"), "item")
    return table.rename({"item": "item_id"}).with_columns(pl.col("item_id").cast(pl.String))


def _baselines(full) -> dict:
    """Random ranking on the cold users (exact expectation over the unseen items)."""
    from training.batches import evaluation_rows

    held_out = {str(i) for i in json.loads((WORK / "held_out_items.json").read_text())}
    rows = evaluation_rows(full, "test", 50)
    ids = full.items.sort("item_index")["item_id"].to_numpy()
    cold = np.isin(ids[rows["targets"] - 1], list(held_out))
    candidates = full.num_items - np.diff(rows["seen_offsets"])[cold]
    gains = 1 / np.log2(np.arange(2, 12))
    cold_candidates = len(held_out) - np.array(
        [
            np.isin(ids[rows["seen_items"][s:e] - 1], list(held_out)).sum()
            for s, e in zip(
                rows["seen_offsets"][:-1][cold], rows["seen_offsets"][1:][cold], strict=True
            )
        ]
    )
    return {
        "random_cold": {
            "hr@10": round(float(np.mean(np.minimum(1, 10 / candidates))), 4),
            "ndcg@10": round(float(np.mean(gains.sum() / candidates)), 4),
            "users": int(cold.sum()),
        },
        "random_among_held_out": {
            "hr@10": round(float(np.mean(np.minimum(1, 10 / cold_candidates))), 4),
            "ndcg@10": round(float(np.mean(gains.sum() / cold_candidates)), 4),
        },
        "most_popular_cold": {"hr@10": 0.0, "ndcg@10": 0.0, "note": "no training interactions"},
    }


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def report() -> None:
    result = json.loads((RESULTS / "coldstart.json").read_text())
    variants = result["variants"]
    base = result["baselines"]

    def cell(entry: dict | None, key: str = "ndcg@10") -> str:
        return "-" if not entry else f"{entry[key]:.4f}"

    lines = [
        "# Cold-start items and the pretrained backbone on ML-1M (issue 18)",
        "",
        f"{result['machine']}, {result['date']}. `python benchmarks/coldstart.py prepare && "
        "python benchmarks/coldstart.py train && python benchmarks/coldstart.py evaluate`; "
        "protocol in the script's docstring. Full ranking over every item, seen items "
        f"excluded. {result['held_out_items']} items (10%) held out of training entirely.",
        "",
        "## New items by their text",
        "",
        "| model | cold HR@10 | cold NDCG@10 | NDCG@10 among held-out items | warm NDCG@10 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, entry in variants.items():
        cold = entry.get("cold")
        lines.append(
            f"| {DESCRIPTIONS[name]} | {cell(cold, 'hr@10')} | {cell(cold)} | "
            f"{cell(cold and cold['among_held_out'])} | {cell(entry.get('warm'))} |"
        )
    lines += [
        f"| random | {base['random_cold']['hr@10']:.4f} | {base['random_cold']['ndcg@10']:.4f} "
        f"| {base['random_among_held_out']['ndcg@10']:.4f} | - |",
        "| most popular | 0 | 0 | - | - |",
        "",
        f"Cold users: {base['random_cold']['users']:,} test users whose target is a held-out "
        "item. The ID-only row gives new items the rows an item without text gets (mean row, "
        "median bias): it has nothing to tell them apart (they all tie, so no order among them "
        "is reported).",
        "",
        "## What the pretrained backbone buys",
        "",
        "| model | all test users NDCG@10 | rare targets (< 10 training interactions) NDCG@10 | "
        "targets with < 50 NDCG@10 | cold-start items NDCG@10 | few-shot (10% of users) "
        "NDCG@10 | epochs full / few | train s full / few |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in variants.items():
        full, few = entry.get("full", {}), entry.get("few_training", {})
        lines.append(
            f"| {DESCRIPTIONS[name]} | {cell(entry.get('all'))} | {cell(entry.get('rare'))} | "
            f"{cell(entry.get('uncommon'))} | {cell(entry.get('cold'))} | "
            f"{cell(entry.get('few'))} | "
            f"{full.get('epochs', '-')} / {few.get('epochs', '-')} | "
            f"{full.get('train_seconds', '-')} / {few.get('train_seconds', '-')} |"
        )
    missing = [DESCRIPTIONS[name] for name, entry in variants.items() if "cold" not in entry]
    if missing:
        lines += [
            "",
            f"Not run: {', '.join(missing)} on the warm set (so no cold-start figure): an epoch "
            "of MiniLM on ML-1M took ~16 minutes on these 2 cores, and it is undertrained at "
            "the epochs it got here (see the epochs column).",
        ]
    rare_users = next((e["rare"]["users"] for e in variants.values() if "rare" in e), 0)
    uncommon_users = next((e["uncommon"]["users"] for e in variants.values() if "rare" in e), 0)
    lines += [
        "",
        f"Rare-target users: {rare_users:,}; with < {UNCOMMON}: {uncommon_users:,} (of 6,040). "
        "Recipes: "
        + "; ".join(f"{k}: `{' '.join(v)}`" for k, v in result["recipes"].items())
        + f"; budgets {json.dumps(result['budgets'])}.",
    ]
    (RESULTS / "coldstart.md").write_text("\n".join(lines) + "\n")
    _write_quality_section(lines[lines.index("## What the pretrained backbone buys") :])
    _plot(result)
    print("\n".join(lines))


QUALITY_SECTION = "<!-- section: backbones (benchmarks/coldstart.py) -->"
SECTION_END = "<!-- end section -->"


def _write_quality_section(lines: list[str]) -> None:
    """The backbone comparison as a section of quality.md (replacing an older one)."""
    path = RESULTS / "quality.md"
    text = path.read_text()
    if QUALITY_SECTION in text:
        begin = text.index(QUALITY_SECTION)
        end = text.index(SECTION_END, begin) + len(SECTION_END)
        text = text[:begin].rstrip("\n") + "\n" + text[end:].lstrip("\n")
    section = "\n".join([QUALITY_SECTION, *lines, "", "Protocol and cold-start details: "
                         "coldstart.md.", SECTION_END])  # fmt: skip
    path.write_text(text.rstrip("\n") + "\n\n" + section + "\n")


def _plot(result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = result["variants"]
    columns = [("all", "all users"), ("rare", "rare targets"), ("cold", "cold items"),
               ("few", "few-shot")]  # fmt: skip
    fig, axis = plt.subplots(figsize=(9, 4))
    x = np.arange(len(columns))
    for offset, (name, entry) in enumerate(variants.items()):
        values = [entry.get(key, {}).get("ndcg@10", 0) if entry.get(key) else 0
                  for key, _ in columns]  # fmt: skip
        axis.bar(x + (offset - 1) * 0.27, values, 0.27, label=DESCRIPTIONS[name])
    axis.set_xticks(x, [label for _, label in columns])
    axis.set_ylabel("test NDCG@10")
    axis.legend()
    axis.set_title(f"Backbones on ML-1M ({result['machine']})")
    fig.tight_layout()
    fig.savefig(RESULTS / "coldstart.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["prepare", "train", "evaluate", "report"])
    parser.add_argument("--ml1m", type=Path, default=REPO.parent / "shared" / "data" / "ml-1m")
    parser.add_argument("--variants", default="scratch,text,minilm")
    parser.add_argument("--datasets", default="full,warm,few")
    arguments = parser.parse_args()
    if arguments.action == "prepare":
        prepare(arguments.ml1m)
    elif arguments.action == "train":
        train(arguments.variants.split(","), arguments.datasets.split(","))
    elif arguments.action == "evaluate":
        evaluate(arguments.ml1m)
    else:
        report()


if __name__ == "__main__":
    main()
