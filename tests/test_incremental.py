"""A living catalog: new interactions appended to a dataset, a checkpoint updated on them
(`train --incremental`), and new items placed by their text alone (cold start)."""

import json

import numpy as np
import polars as pl
import pytest
import torch
from conftest import run_cli

from training.batches import windows_by_age
from training.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.data.dataset import load_dataset
from training.features import context_indices
from training.incremental import grow, start_from

TRAIN = ("--max-length", 16, "--hidden-size", 32, "--batch-size", 64, "--warmup-steps", 5, "-q")
# Items that only the new log has: they become new items of the appended dataset.
LATE_ITEMS = (3, 17, 29, 41, 55)


@pytest.fixture(scope="module")
def living(tmp_path_factory):
    """An old log (80% of time, without LATE_ITEMS), the rest as a new log, the old dataset,
    the dataset appended from the new log, and a base model that reads item text."""
    root = tmp_path_factory.mktemp("living")
    run_cli("data", "synth", "--out", root / "raw", "--users", 300, "--items", 60, "--seed", 3)
    log = pl.read_csv(root / "raw" / "interactions.csv")
    cut = log["timestamp"].quantile(0.8)
    late = pl.col("item_id").is_in(list(LATE_ITEMS))
    log.filter((pl.col("timestamp") < cut) & ~late).write_csv(root / "old.csv")
    log.filter((pl.col("timestamp") >= cut) | late).write_csv(root / "new.csv")
    tables = ("--items", root / "raw" / "items.csv", "--users", root / "raw" / "users.csv")
    run_cli("data", "prepare", root / "old.csv", "--out", root / "d0", "-q", *tables)
    run_cli(
        "data", "prepare", root / "new.csv", "--append-to", root / "d0", "--out", root / "d1",
        "-q", "--min-item-interactions", 1, *tables,
    )  # fmt: skip
    run_cli(
        "train", "--data", root / "d0", "--out", root / "c0", "--epochs", 6, "--item-text",
        "--item-id-dropout", 0.5, *TRAIN,
    )  # fmt: skip
    return root


def test_append_keeps_every_index_and_appends_new_items_and_users(living):
    old, new = load_dataset(living / "d0"), load_dataset(living / "d1")
    assert new.items["item_id"][: old.num_items].to_list() == old.items["item_id"].to_list()
    assert new.users["user_id"][: old.num_users].to_list() == old.users["user_id"].to_list()
    added = set(new.items["item_id"][old.num_items :].to_list())
    assert added == {str(i) for i in LATE_ITEMS}
    assert new.items["title"][old.num_items :].null_count() == 0  # from --items
    for user in range(1, old.num_users + 1):
        known = old.sequence(user)
        assert np.array_equal(new.sequence(user)[: len(known)], known)
    appended = new.manifest["appended"]
    assert appended["new_items"] == len(LATE_ITEMS)
    assert appended["new_interactions"] == int(new.lengths.sum() - old.lengths.sum())


def test_growing_the_catalog_keeps_old_rows_bit_identical_and_old_scores(living):
    model, _ = load_checkpoint(living / "c0")
    text = torch.randn(3, model.item_text.shape[1])
    grown = grow(model, text).eval()
    old = model.num_items
    assert grown.num_items == old + 3
    assert torch.equal(grown.item_embedding.weight[: old + 1], model.item_embedding.weight)
    assert torch.equal(grown.head_bias[: old + 1], model.head_bias)
    assert torch.equal(grown.item_text[: old + 1], model.item_text)
    history = torch.tensor([[0, 0, 5, 9, 12, 7]])
    context = torch.zeros(1, len(model.context_embeddings), dtype=torch.long)
    with torch.no_grad():
        before, after = model.eval()(history, context), grown(history, context)
    # Same rows, same history: equal up to the matrix product's summation order.
    torch.testing.assert_close(after[:, :old], before, rtol=0, atol=1e-5)


def _new_slice_loss(model, data) -> float:
    """Full-softmax loss of `model` on the transitions of `data` that c0 never learned from."""
    dataset = load_dataset(data)
    learned = np.zeros(dataset.num_users, dtype=np.int64)
    trained = pl.read_parquet(data.parent / "c0" / "trained_users.parquet")
    learned[: trained.height] = trained["trained_length"].to_numpy()
    inputs, targets, users = windows_by_age(
        dataset, 16, dataset.split.train_end, learned, replay_ratio=0.0, seed=0
    )
    config_vocabulary = json.loads((data.parent / "c0" / "config.json").read_text())
    context = context_indices(dataset.users, config_vocabulary["context_vocabulary"])[users]
    with torch.no_grad():
        hidden = model.eval().hidden_states(torch.tensor(inputs), torch.tensor(context))
        real = torch.tensor(targets) != 0
        logits = model.logits(hidden[real])
        return torch.nn.functional.cross_entropy(logits, torch.tensor(targets)[real] - 1).item()


def test_an_incremental_step_lowers_the_loss_on_the_new_slice(living):
    out = living / "c1"
    run_cli(
        "train", "--data", living / "d1", "--out", out, "--resume", living / "c0",
        "--incremental", "--epochs", 3, "--warmup-steps", 2, "-q",
    )  # fmt: skip
    base = TrainConfig(model=load_checkpoint(living / "c0")[1].model)
    stale, _, _ = start_from(living / "c0", base, load_dataset(living / "d1"))
    updated, config = load_checkpoint(out)
    assert config.num_items == load_dataset(living / "d1").num_items
    assert config.train["incremental_from"]["num_items"] == load_dataset(living / "d0").num_items
    assert _new_slice_loss(updated, living / "d1") < _new_slice_loss(stale, living / "d1")


def test_incremental_refuses_a_dataset_whose_ids_conflict_and_writes_nothing(living, tmp_path):
    # Prepared on its own, the full log numbers items in id order: the late items sit among
    # the old ones, so the old indices mean other items.
    tables = ("--items", living / "raw" / "items.csv")
    run_cli("data", "prepare", living / "raw", "--out", tmp_path / "fresh", "-q", *tables)
    out = tmp_path / "c"
    result = run_cli(
        "train", "--data", tmp_path / "fresh", "--out", out, "--resume", living / "c0",
        "--incremental", "--epochs", 1, "-q", check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "id maps conflict" in result.stderr and "--append-to" in result.stderr
    assert not out.exists()


def test_incremental_refuses_new_items_without_text_for_a_text_model(living, tmp_path):
    run_cli(
        "data", "prepare", living / "new.csv", "--append-to", living / "d0", "--out",
        tmp_path / "untitled", "-q", "--min-item-interactions", 1,
    )  # fmt: skip
    result = run_cli(
        "train", "--data", tmp_path / "untitled", "--out", tmp_path / "c", "--resume",
        living / "c0", "--incremental", "--epochs", 1, "-q", check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "have no title" in result.stderr and "--items" in result.stderr
    assert not (tmp_path / "c").exists()


def test_incremental_refuses_model_settings_it_would_ignore(living, tmp_path):
    result = run_cli(
        "train", "--data", living / "d1", "--out", tmp_path / "c", "--resume", living / "c0",
        "--incremental", "--hidden-size", 64, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "--hidden-size" in result.stderr


def _rank_of(model, item: int, history: list[int]) -> int:
    """1-based rank of `item` among all items for `history` (seen items not excluded)."""
    context = torch.zeros(1, len(model.context_embeddings), dtype=torch.long)
    with torch.no_grad():
        scores = model.eval()(torch.tensor([history]), context)[0]
    return int((scores > scores[item - 1]).sum()) + 1


def test_a_text_only_item_ranks_high_for_a_history_of_its_neighbours(living, tmp_path):
    """A brand-new item, known only by its title, scored for a history of items of its theme:
    it must rank far above where an unrelated new title lands."""
    items = pl.read_csv(living / "raw" / "items.csv")
    dataset = load_dataset(living / "d0")
    known = dataset.items.with_columns(pl.col("item_id").cast(pl.Int64))
    theme = items.filter(pl.col("item_id") == int(known["item_id"][0]))["genres"][0]
    neighbours = known.join(items.select("item_id", "genres"), on="item_id")
    history = neighbours.filter(pl.col("genres") == theme)["item_index"].to_list()[-8:]
    new_items = pl.DataFrame(
        {
            "item_id": ["new-1", "new-2"],
            "title": [f"Silent {theme} Garden", "Quarterly Tax Filing Instructions"],
            "genres": [theme, "Documents"],
        }
    )
    new_items.write_csv(tmp_path / "new_items.csv")
    out = tmp_path / "grown"
    result = run_cli(
        "checkpoint", "add-items", living / "c0", "--items", tmp_path / "new_items.csv",
        "--out", out,
    )  # fmt: skip
    assert json.loads(result.stdout)["added"] == 2
    model, config = load_checkpoint(out)
    on_theme = _rank_of(model, config.num_items - 1, history)
    off_theme = _rank_of(model, config.num_items, history)
    assert on_theme <= config.num_items // 4, (on_theme, config.num_items)
    assert on_theme < off_theme


def test_add_items_refuses_known_ids_and_models_without_text(living, tiny_checkpoints, tmp_path):
    pl.DataFrame({"item_id": ["1"], "title": ["Again"]}).write_csv(tmp_path / "known.csv")
    result = run_cli(
        "checkpoint", "add-items", living / "c0", "--items", tmp_path / "known.csv", "--out",
        tmp_path / "a", check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "already in the catalog" in result.stderr
    pl.DataFrame({"item_id": ["x"], "title": ["New"]}).write_csv(tmp_path / "new.csv")
    result = run_cli(
        "checkpoint", "add-items", tiny_checkpoints[0], "--items", tmp_path / "new.csv",
        "--out", tmp_path / "b", check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "reads no item text" in result.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_export_adds_items_by_text_to_a_new_version(living, tmp_path):
    pl.DataFrame(
        {"item_id": ["new-1"], "title": ["Silent Noir Garden"], "genres": ["Noir"]}
    ).write_csv(tmp_path / "new_items.csv")
    repository = tmp_path / "models"
    run_cli(
        "export", "--checkpoint", living / "c0", "--repository", repository, "--name", "grown",
        "--add-items", tmp_path / "new_items.csv",
    )  # fmt: skip
    catalog = pl.read_parquet(next(repository.glob("grown*/1/catalog.parquet")))
    assert catalog["item_id"].to_list()[-1] == "new-1"
    assert catalog.height == load_dataset(living / "d0").num_items + 1


def test_item_id_dropout_needs_item_text():
    from logitrec.errors import InputError
    from training.config import load_config

    with pytest.raises(InputError, match="--item-id-dropout"):
        load_config(None, {"item_id_dropout": 0.3})


def test_append_refuses_mismatched_order_and_overwriting_its_base(living, tmp_path):
    base_hash = load_dataset(living / "d0").manifest["content_hash"]
    # A log without timestamps cannot follow one ordered by time.
    pl.read_csv(living / "new.csv").drop("timestamp").write_csv(tmp_path / "untimed.csv")
    result = run_cli(
        "data", "prepare", tmp_path / "untimed.csv", "--append-to", living / "d0", "--out",
        tmp_path / "d", check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "timestamps" in result.stderr
    result = run_cli(
        "data", "prepare", living / "new.csv", "--append-to", living / "d0", "--out",
        living / "d0", "--force", check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "appended to" in result.stderr
    assert load_dataset(living / "d0").manifest["content_hash"] == base_hash
    assert not (tmp_path / "d").exists()
