"""`recommend()` / `score_items()` reject bad inputs with a `GGRInputError` naming the argument, the
user, the position and the value, and accept ints, numpy and torch integer inputs alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ggr_hf.errors import GGRInputError
from tests.conftest import NUM_ITEMS, tiny_model

USER_PRIOR = [{"type": "user", "field": "occupation", "values": ["x", "y"]}]


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.mark.parametrize("k", [0, -1, 2.0, 2.5, True, "3", None])
def test_k_must_be_a_positive_int(model, k):
    with pytest.raises(GGRInputError, match=r"recommend: k must be an integer >= 1, got"):
        model.recommend([1, 2, 3], k=k)


def test_k_above_the_recommendable_items_names_both_numbers(model):
    assert model.recommend([1, 2, 3], k=NUM_ITEMS - 3).item_ids.shape == (1, NUM_ITEMS - 3)
    with pytest.raises(
        GGRInputError, match=rf"k={NUM_ITEMS - 2} is more than the {NUM_ITEMS - 3} items .* user 0"
    ):
        model.recommend([1, 2, 3], k=NUM_ITEMS - 2)
    with pytest.raises(GGRInputError, match=rf"the {NUM_ITEMS - 3} items that can be recommended to user 1"):
        model.recommend([[1], [2, 3, 4]], k=NUM_ITEMS - 2)
    # Without exclusion every item can come back, never the padding id 0.
    rec = model.recommend([1, 2, 3], k=NUM_ITEMS, exclude_history=False)
    assert sorted(rec.item_ids[0].tolist()) == list(range(1, NUM_ITEMS + 1))
    assert torch.isfinite(rec.scores).all()


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ([1, -2, 3], "history: user 0, position 1: item id -2 is outside the catalogue 1..20"),
        ([[1, 2], [3, 0, 4]], "history: user 1, position 1: item id 0 is outside the catalogue 1..20"),
        ([[1, 2], [3, 21]], "history: user 1, position 1: item id 21 is outside the catalogue 1..20"),
        ([1, "2"], "history: user 0, position 1: item id '2' is not an integer"),
        ([3.0], "history: user 0, position 0: item id 3.0 is not an integer"),
        ([[1], [3.5]], "history: user 1, position 0: item id 3.5 is not an integer"),
        ([True], "history: user 0, position 0: item id True is not an integer"),
        ([[1], []], "history: user 1 has no items"),
        ([], "history: expected a list of item ids"),
        ([[1], 2], "history: user 1 is 2, not a list of values"),
        (torch.tensor([[1, 0, 2]]), "history: user 0, position 1: 0 (padding) before a real item"),
        (torch.tensor([[1, 2], [0, 0]]), "history: user 1 has no items"),
        (torch.tensor([1.0, 2.0]), "history: item ids must be an integer tensor, got dtype torch.float32"),
        (np.array([1.5]), "history: expected integers, got an array of dtype float64"),
        (torch.tensor([[1, 99]]), "history: user 0, position 1: item id 99 is outside the catalogue"),
    ],
)
def test_bad_item_ids_name_user_position_and_value(model, history, message):
    with pytest.raises(GGRInputError) as err:
        model.recommend(history, k=2)
    assert message in str(err.value)


def test_numpy_and_torch_integers_are_accepted(model):
    expected = model.recommend([[1, 2, 3], [5, 6]], k=4).item_ids
    for history in (
        [np.array([1, 2, 3]), torch.tensor([5, 6])],
        [[np.int64(1), np.int32(2), torch.tensor(3)], [5, 6]],
        torch.tensor([[1, 2, 3], [5, 6, 0]], dtype=torch.int32),
        np.array([[1, 2, 3], [5, 6, 0]]),
    ):
        assert torch.equal(model.recommend(history, k=4).item_ids, expected)


def test_timestamps_must_match_the_history(model):
    with pytest.raises(GGRInputError, match="timestamps: user 0 has 3 items but 2 timestamps"):
        model.recommend([1, 2, 3], k=2, timestamps=[10, 20])
    with pytest.raises(GGRInputError, match="timestamps: 1 users but the history has 2"):
        model.recommend([[1], [2]], k=2, timestamps=[[10]])
    with pytest.raises(GGRInputError, match=r"timestamps: user 0, position 1: 2.5 is not an integer time"):
        model.recommend([1, 2], k=2, timestamps=[1, 2.5])
    with pytest.raises(
        GGRInputError, match=r"integer tensor of its shape \(3,\), got dtype torch.int64, shape \(2,\)"
    ):
        model.recommend(torch.tensor([1, 2, 3]), k=2, timestamps=torch.tensor([1, 2]))
    rec = model.recommend(torch.tensor([1, 2, 3]), k=2, timestamps=torch.tensor([1, 2, 3]))
    assert rec.item_ids.shape == (1, 2)


def test_user_groups_are_checked_against_the_user_priors(model):
    with pytest.raises(GGRInputError, match="this model has no user priors; leave user_groups out"):
        model.recommend([1, 2], k=2, user_groups=[0])
    users = tiny_model(priors=USER_PRIOR)
    assert users.recommend([1, 2], k=2, user_groups=[1]).item_ids.shape == (1, 2)
    assert users.recommend([[1, 2], [3]], k=2, user_groups=[[1], [0]]).item_ids.shape == (2, 2)
    with pytest.raises(GGRInputError, match=r"this model has user priors \['occupation'\]"):
        users.recommend([1, 2], k=2)
    with pytest.raises(GGRInputError, match=r"user 1, prior 'occupation': group 2 is outside 0..1"):
        users.recommend([[1, 2], [3]], k=2, user_groups=[[1], [2]])
    with pytest.raises(GGRInputError, match=r"expected shape \(2, 1\)"):
        users.recommend([[1, 2], [3]], k=2, user_groups=[[1, 0, 1]])
    with pytest.raises(GGRInputError, match="expected integer group indices, got dtype torch.float32"):
        users.recommend([1, 2], k=2, user_groups=[0.5])


def test_score_items_checks_its_tensors(model):
    ids = torch.tensor([[1, 2, 0], [3, 4, 5]])
    scores, _ = model.score_items(ids, torch.ones_like(ids))
    assert scores.shape == (2, NUM_ITEMS + 1)
    with pytest.raises(GGRInputError, match=r"timestamps: expected shape \(2, 3\), got \(2, 2\)"):
        model.score_items(ids, torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(GGRInputError, match=r"input_ids: expected an integer tensor, got list"):
        model.score_items([[1, 2]])
    with pytest.raises(GGRInputError, match=r"exclude: item id 21 is outside 0..20"):
        model.score_items(ids, exclude=torch.tensor([[21], [0]]))
    with pytest.raises(GGRInputError, match=r"query_timestamps: expected shape \(2,\), got \(3,\)"):
        model.score_items(ids, torch.ones_like(ids), query_timestamps=torch.ones(3, dtype=torch.long))
    with pytest.raises(GGRInputError, match=r"fusion must be one of \['max', 'mean'\] or None, got 'min'"):
        model.score_items(ids, fusion="min")
