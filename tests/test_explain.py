"""Explanations: leave-one-out contributions (serving/explain.py) on an encoder stand-in and on a
real exported encoder, and the exported attribution graph against torch autograd."""

import json
from types import SimpleNamespace

import numpy as np
import onnxruntime
import pytest
import torch
from conftest import run_cli

from export import parity
from logitrec import repository as layout
from serving import explain, pipeline
from serving.explain import CONTEXT, ITEM, Removal
from training.checkpoint import load_checkpoint

DIM = 4


class RecencyEncoder:
    """A stand-in encoder that reads histories the way the real one does: left-padded, newest
    item in the last column (weight 1), each older one worth half the next; plus one vector per
    known context value. Padding (item 0, context 0) adds nothing."""

    def __init__(self, num_items: int, cardinalities: list[int], seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.items = rng.normal(size=(num_items + 1, DIM))
        self.items[0] = 0
        self.context = [rng.normal(size=(n + 1, DIM)) for n in cardinalities]
        for table in self.context:
            table[0] = 0

    def __call__(self, histories: np.ndarray, context: np.ndarray) -> np.ndarray:
        width = histories.shape[1]
        weights = 0.5 ** np.arange(width - 1, -1, -1)
        vectors = (self.items[histories] * weights[:, None]).sum(1)
        for feature, table in enumerate(self.context):
            vectors += table[context[:, feature]]
        return vectors


def head_for(encoder: RecencyEncoder, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    head = np.concatenate([encoder.items, rng.normal(size=(len(encoder.items), 1))], axis=1)
    return head.astype(np.float64)


def explained(encoder, head, items, context, returned, limit=3):
    histories, contexts, removals = explain.variants(np.array(items), np.array(context), 10)
    deltas = explain.contributions(encoder(histories, contexts), head, np.array(returned), removals)
    return deltas, removals, explain.top_contributors(deltas, removals, limit)


def test_the_history_item_whose_removal_drops_the_logit_most_is_reported_first():
    encoder = RecencyEncoder(num_items=12, cardinalities=[2])
    head = head_for(encoder)
    # Item 5 sits in the middle of the history, and the returned item's vector is item 5's own:
    # removing it costs the item more than removing anything else.
    head[9, :DIM] = encoder.items[5] * 3
    items, context = [2, 7, 5, 11, 3], [0]
    deltas, _, top = explained(encoder, head, items, context, returned=[9, 4])

    full = encoder(np.array([items]), np.array([context]))[0] @ head[9, :DIM] + head[9, DIM]
    drops = []
    for position in range(len(items)):
        without = np.delete(items, position)[None]
        vector = encoder(without, np.array([context]))[0]
        drops.append(full - (vector @ head[9, :DIM] + head[9, DIM]))
    assert top[0][0][0] == Removal(ITEM, int(np.argmax(drops)), 5)
    np.testing.assert_allclose(deltas[0, : len(items)], drops)  # exact, not approximated
    assert [value for _, value in top[0]] == sorted((v for _, v in top[0]), reverse=True)
    assert len(top) == 2 and all(len(row) == 3 for row in top)


def test_variants_are_left_padded_exactly_as_the_engine_pads_a_batch():
    items, context = np.array([4, 8, 15, 16, 23]), np.array([2, 0, 1])
    histories, contexts, removals = explain.variants(items, context, max_length=5)

    assert histories.shape == (1 + 5 + 2, 5) and contexts.shape == (8, 3)
    np.testing.assert_array_equal(histories[0], items)
    for row, removal in enumerate(removals[:5], start=1):
        kept = np.delete(items, removal.position)
        expected = pipeline.pad_histories(
            [SimpleNamespace(items=kept), SimpleNamespace(items=items)]
        )
        np.testing.assert_array_equal(histories[row], expected[0])  # [0, rest...], newest last
        assert removal == Removal(ITEM, removal.position, int(items[removal.position]))
    np.testing.assert_array_equal(contexts[: 1 + 5], np.tile(context, (6, 1)))


def test_context_features_are_removed_by_setting_them_unknown_and_unknown_ones_are_skipped():
    encoder = RecencyEncoder(num_items=6, cardinalities=[2, 3, 4])
    head = head_for(encoder)
    items, context = [1, 2], [2, 0, 3]
    histories, contexts, removals = explain.variants(np.array(items), np.array(context), 4)

    assert [r for r in removals if r.kind == CONTEXT] == [
        Removal(CONTEXT, 0, 0),
        Removal(CONTEXT, 2, 0),
    ]
    np.testing.assert_array_equal(contexts[-2:], [[0, 0, 3], [2, 0, 0]])
    np.testing.assert_array_equal(histories[-2:], [items, items])
    deltas = explain.contributions(encoder(histories, contexts), head, np.array([5]), removals)
    expected = [encoder.context[0][2] @ head[5, :DIM], encoder.context[2][3] @ head[5, :DIM]]
    np.testing.assert_allclose(deltas[0, -2:], expected)
    (only_context,) = explain.top_contributors(deltas, removals, 5, kind=CONTEXT)
    assert {r for r, _ in only_context} == {Removal(CONTEXT, 0, 0), Removal(CONTEXT, 2, 0)}


def test_a_repeated_item_is_removed_one_occurrence_at_a_time():
    items = np.array([3, 9, 3])
    histories, _, removals = explain.variants(items, np.zeros(0, np.int64), 3)
    assert [(r.position, r.item) for r in removals] == [(0, 3), (1, 9), (2, 3)]
    np.testing.assert_array_equal(histories[1:], [[0, 9, 3], [0, 3, 3], [0, 3, 9]])


def test_a_one_item_history_has_no_item_rows_and_helpers_come_before_hurters():
    histories, _, removals = explain.variants(np.array([7]), np.array([1]), 3)
    assert histories.tolist() == [[7], [7]] and removals == [Removal(CONTEXT, 0, 0)]

    removals = [Removal(ITEM, p, p + 1) for p in range(4)]
    deltas = np.array([[-2.0, 0.5, 1.5, -0.1]])
    (top,) = explain.top_contributors(deltas, removals, 3)
    assert [(r.position, v) for r, v in top] == [(2, 1.5), (1, 0.5), (3, -0.1)]


@pytest.mark.parametrize(
    ("items", "context", "message"),
    [([], [0], "non-empty"), ([1, 2, 3, 4], [0], "window is 3"), ([0, 2], [0], "padding")],
)
def test_bad_variant_inputs_name_the_field(items, context, message):
    with pytest.raises(ValueError, match=message):
        explain.variants(np.array(items, np.int64), np.array(context), 3)


# -- the real exported model ------------------------------------------------------------------
@pytest.fixture(scope="module")
def explained_export(tiny_checkpoints, tmp_path_factory):
    repository = tmp_path_factory.mktemp("explain-repo") / "models"
    printed = run_cli(
        "export", "--checkpoint", tiny_checkpoints[0], "--repository", repository,
        "--name", "tiny", "--explain-model",
    )  # fmt: skip
    return repository, json.loads(printed.stdout)


def autograd_attributions(model, items, targets, context) -> np.ndarray:
    """Gradient x input straight from the training model, one target at a time."""
    items, context = torch.as_tensor(items), torch.as_tensor(context)
    out = np.zeros((*targets.shape, items.shape[1]), np.float32)
    for t in range(targets.shape[1]):
        inputs = model.item_vectors(items).detach().requires_grad_(True)
        hidden = model.encode(inputs, items != 0, context)[:, -1]
        logits = model.logits(hidden)  # column j is item j + 1
        chosen = logits.gather(1, torch.as_tensor(targets[:, t : t + 1]) - 1).sum()
        (gradient,) = torch.autograd.grad(chosen, inputs)
        out[:, t] = ((gradient * inputs).sum(-1) * (items != 0)).detach().numpy()
    return out


def test_the_exported_attribution_graph_matches_torch_autograd(explained_export, tiny_checkpoints):
    repository, printed = explained_export
    assert printed["explain"]["model"] == "tiny_explain" and printed["explain"]["parity"]["passed"]
    manifest = layout.read_manifest(layout.scorer_dir(repository, "tiny", 1))
    assert manifest.explain["method"] == "gradient_x_input"
    assert (layout.model_dir(repository, "tiny", "explain") / layout.TRITON_CONFIG).is_file()

    model, config = load_checkpoint(tiny_checkpoints[0])
    model.eval()
    rng = np.random.default_rng(3)
    session = onnxruntime.InferenceSession(
        str(layout.model_file(repository, "tiny", "explain", 1)), providers=["CPUExecutionProvider"]
    )
    # Other batch sizes, lengths (one longer than the window) and k than the graph was traced at.
    for batch, length, count in ((1, 1, 1), (3, 6, 4), (2, 20, 2)):
        items = rng.integers(1, 61, size=(batch, length))
        items[0, : length // 2] = 0  # left padding
        targets = rng.integers(1, 61, size=(batch, count))
        context = rng.integers(0, 3, size=(batch, len(config.context_vocabulary)))
        (got,) = session.run(None, {"items": items, "targets": targets, "context": context})
        expected = autograd_attributions(model, items, targets, context)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)
        assert (got[0][:, items[0] == 0] == 0).all(), "padding positions get no attribution"


def test_leave_one_out_on_the_exported_encoder_matches_re_encoding_the_shorter_history(
    explained_export,
):
    """The one column of left padding a removal row gains changes nothing: each delta is what
    the gateway's own encoder gives for the history without that item."""
    repository, _ = explained_export
    encoder = parity.session(layout.model_file(repository, "tiny", "encoder", 1))
    head = np.load(layout.scorer_dir(repository, "tiny", 1) / layout.HEAD)
    features = len(layout.read_manifest(layout.scorer_dir(repository, "tiny", 1)).context_features)
    items, context = np.array([5, 17, 33, 8, 41, 12]), np.arange(features) % 2 + 1
    histories, contexts, removals = explain.variants(items, context, 16)
    (vectors,) = encoder.run(None, parity.encoder_feed(histories, contexts))
    returned = np.array([3, 50])
    deltas = explain.contributions(vectors, head, returned, removals)

    def logit(history, features, item):
        (vector,) = encoder.run(None, parity.encoder_feed(history[None], features[None]))
        return vector[0] @ head[item, :-1] + head[item, -1]

    top = explain.top_contributors(deltas, removals, 1)
    for row, item in enumerate(returned):
        removal, delta = top[row][0]
        shorter = np.delete(items, removal.position) if removal.kind == ITEM else items
        reduced = context.copy()
        if removal.kind == CONTEXT:
            reduced[removal.position] = 0
        expected = logit(items, context, item) - logit(shorter, reduced, item)
        assert delta == pytest.approx(expected, abs=1e-4)
        assert delta == pytest.approx(deltas[row].max())


def test_a_plain_export_has_no_attribution_graph(tiny_repository):
    manifest = layout.read_manifest(layout.scorer_dir(tiny_repository, "tiny", 1))
    assert manifest.explain == {}
    assert not layout.model_dir(tiny_repository, "tiny", "explain").exists()
