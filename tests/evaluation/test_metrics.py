"""Ranking metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from ggr_hf.evaluation.metrics import (
    aggregate,
    category_entropy_at_k,
    compute_ranking_metrics,
    default_horizons,
    ndcg_at_k,
    new_event_mask,
    new_interest_mask,
    recall_at_k,
)

INV_LOG2_3 = 1.0 / math.log2(3.0)  # discount of rank 2
INV_LOG2_4 = 0.5  # discount of rank 3


def _toy() -> tuple[torch.Tensor, torch.Tensor]:
    """Three users, Kmax = 6, T = 4.

    user 0: topk 1..6, targets [3, 9, 1, 0] -> R = {1, 3, 9}; hits at ranks 1 (item 1) and 3 (item 3).
    user 1: topk 7..12, targets [8, 8, 0, 0] -> duplicate target, R = {8}; hit at rank 2.
    user 2: no targets -> NaN.
    """
    topk = torch.tensor(
        [
            [1, 2, 3, 4, 5, 6],
            [7, 8, 9, 10, 11, 12],
            [1, 2, 3, 4, 5, 6],
        ]
    )
    targets = torch.tensor([[3, 9, 1, 0], [8, 8, 0, 0], [0, 0, 0, 0]])
    return topk, targets


def _close(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32), equal_nan=True)


def test_recall_full_horizon() -> None:
    topk, targets = _toy()
    # k=1: user 0 hits item 1 -> 1/3; user 1 rank 1 is item 7 -> 0.
    _close(recall_at_k(topk, targets, 1), [1 / 3, 0.0, math.nan])
    # k=3: user 0 hits items 1 and 3 -> 2/3; user 1 hits item 8 -> 1/1 (duplicate target counted once).
    _close(recall_at_k(topk, targets, 3), [2 / 3, 1.0, math.nan])
    # k=6: no further hits (item 9 is not in user 0's list).
    _close(recall_at_k(topk, targets, 6), [2 / 3, 1.0, math.nan])


def test_ndcg_full_horizon() -> None:
    topk, targets = _toy()
    # k=1, user 0: DCG = 1, IDCG over min(3, 1) = 1 rank = 1 -> 1.
    _close(ndcg_at_k(topk, targets, 1), [1.0, 0.0, math.nan])
    # k=3, user 0: DCG = 1 + 1/log2(4) = 1.5, IDCG = 1 + 1/log2(3) + 1/log2(4) -> 1.5 / (1.5 + 1/log2 3).
    # user 1: DCG = 1/log2(3), |R| = 1 so IDCG = 1 -> 1/log2(3) ~= 0.6309.
    u0 = 1.5 / (1.5 + INV_LOG2_3)
    _close(ndcg_at_k(topk, targets, 3), [u0, INV_LOG2_3, math.nan])
    # k=6: same hits, IDCG still over min(3, 6) = 3 ranks.
    _close(ndcg_at_k(topk, targets, 6), [u0, INV_LOG2_3, math.nan])


def test_horizons() -> None:
    topk, targets = _toy()
    # h=1: user 0 R = {3} (hit at rank 3); user 1 R = {8} (rank 2); user 2 none.
    _close(recall_at_k(topk, targets, 1, horizon=1), [0.0, 0.0, math.nan])
    _close(recall_at_k(topk, targets, 3, horizon=1), [1.0, 1.0, math.nan])
    # NDCG@3, h=1: user 0 DCG = 1/log2(4) = 0.5, IDCG = 1 -> 0.5; user 1 -> 1/log2(3).
    _close(ndcg_at_k(topk, targets, 3, horizon=1), [0.5, INV_LOG2_3, math.nan])
    # h=2: user 0 R = {3, 9}: recall@3 = 1/2, NDCG@3 = 0.5 / (1 + 1/log2 3).
    _close(recall_at_k(topk, targets, 3, horizon=2), [0.5, 1.0, math.nan])
    _close(ndcg_at_k(topk, targets, 3, horizon=2), [0.5 / (1 + INV_LOG2_3), INV_LOG2_3, math.nan])


def test_duplicate_targets_count_once() -> None:
    topk = torch.tensor([[5, 6, 7]])
    # R = {5, 6} despite 4 non-zero targets.
    targets = torch.tensor([[5, 5, 6, 5]])
    # recall@1 = 1/2; NDCG@1 = 1 / IDCG(min(2, 1) = 1) = 1.
    _close(recall_at_k(topk, targets, 1), [0.5])
    _close(ndcg_at_k(topk, targets, 1), [1.0])
    # recall@2 = 2/2; NDCG@2 = (1 + 1/log2 3) / (1 + 1/log2 3) = 1.
    _close(recall_at_k(topk, targets, 2), [1.0])
    _close(ndcg_at_k(topk, targets, 2), [1.0])


def test_duplicate_recommendations_count_once() -> None:
    # Item 5 recommended twice: only its best rank counts, so recall stays 1/2 and NDCG <= 1.
    topk = torch.tensor([[5, 5, 0]])
    targets = torch.tensor([[5, 6]])
    _close(recall_at_k(topk, targets, 3), [0.5])
    # DCG = 1, IDCG = 1 + 1/log2 3.
    _close(ndcg_at_k(topk, targets, 3), [1.0 / (1.0 + INV_LOG2_3)])


def test_padding_in_topk_never_hits() -> None:
    # Fewer than Kmax candidates: padded 0s must not match the 0 slots of the relevant set.
    topk = torch.tensor([[4, 0, 0]])
    targets = torch.tensor([[9, 0]])
    _close(recall_at_k(topk, targets, 3), [0.0])
    _close(ndcg_at_k(topk, targets, 3), [0.0])


def test_idcg_uses_min_of_relevant_and_k() -> None:
    # |R| = 4, k = 2.
    targets = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4]])
    topk = torch.tensor([[1, 2], [9, 3]])
    # user 0: both ranks hit, IDCG over min(4, 2) = 2 ranks -> NDCG = 1 (not DCG / IDCG(4)).
    # user 1: hit at rank 2 -> (1/log2 3) / (1 + 1/log2 3) ~= 0.3869; recall 1/4.
    _close(ndcg_at_k(topk, targets, 2), [1.0, INV_LOG2_3 / (1 + INV_LOG2_3)])
    _close(recall_at_k(topk, targets, 2), [0.5, 0.25])


def test_brief_example_recall_half() -> None:
    # R = {1, 2}, top-2 = [3, 2]: recall 1/2, NDCG = (1/log2 3) / (1 + 1/log2 3).
    topk = torch.tensor([[3, 2]])
    targets = torch.tensor([[1, 2]])
    _close(recall_at_k(topk, targets, 2), [0.5])
    _close(ndcg_at_k(topk, targets, 2), [INV_LOG2_3 / (1 + INV_LOG2_3)])


def _categories() -> torch.Tensor:
    """5 items (+ padding row 0), 3 categories.

    item 1: {0, 1}; item 2: {0, 2}; item 3: {0}; item 4: {0}; item 5: {2}.
    """
    cats = torch.zeros(6, 3, dtype=torch.bool)
    cats[1, [0, 1]] = True
    cats[2, [0, 2]] = True
    cats[3, 0] = True
    cats[4, 0] = True
    cats[5, 2] = True
    return cats


def test_entropy() -> None:
    cats = _categories()
    topk = torch.tensor([[1, 2, 3], [3, 4, 1], [0, 0, 0]])
    # user 0, k=2: counts [2, 1, 1] -> p = [1/2, 1/4, 1/4] -> H = 0.5 + 0.5 + 0.5 = 1.5 bits.
    # user 1, k=2: items 3, 4 both only category 0 -> p = [1, 0, 0] -> H = 0.
    # user 2: padding only, no categories -> 0.
    _close(category_entropy_at_k(topk, cats, 2), [1.5, 0.0, 0.0])
    # float multi-hot gives the same result.
    _close(category_entropy_at_k(topk, cats.float(), 2), [1.5, 0.0, 0.0])
    # user 0, k=3: counts [3, 1, 1] -> p = [3/5, 1/5, 1/5].
    # user 1, k=3: counts [3, 1, 0] -> p = [3/4, 1/4].
    h0 = -(0.6 * math.log2(0.6) + 2 * 0.2 * math.log2(0.2))
    h1 = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    _close(category_entropy_at_k(topk, cats, 3), [h0, h1, 0.0])


def test_new_interest_mask() -> None:
    cats = _categories()
    history = torch.tensor([[1, 0, 0], [1, 2, 0], [1, 0, 0], [3, 4, 0]])
    targets = torch.tensor([[2, 0], [1, 5], [3, 5], [0, 0]])
    # user 0: history categories {0, 1}; target item 2 brings category 2 -> True.
    # user 1: history {0, 1, 2} covers everything -> False.
    # user 2: history {0, 1}; first target (item 3) has {0} only, second (item 5) has {2}:
    #         False at horizon 1, True with all targets.
    # user 3: no targets -> False.
    assert new_interest_mask(history, targets, cats).tolist() == [True, False, True, False]
    assert new_interest_mask(history, targets, cats, horizon=1).tolist() == [True, False, False, False]


def test_new_event_mask() -> None:
    history = torch.tensor([[0, 1, -1], [0, 1, -1], [2, -1, -1], [-1, -1, -1]])
    targets = torch.tensor([[1, -1], [2, 0], [-1, -1], [0, -1]])
    # user 0: event 1 seen -> False; user 1: event 2 unseen -> True;
    # user 2: no targets -> False; user 3: empty history, event 0 (a real type) -> True.
    assert new_event_mask(history, targets).tolist() == [False, True, False, True]
    assert new_event_mask(history, targets, horizon=1).tolist() == [False, True, False, True]


def test_compute_ranking_metrics_keys_t8() -> None:
    torch.manual_seed(0)
    topk = torch.randint(1, 6, (4, 10))
    targets = torch.randint(1, 6, (4, 8))
    history = torch.randint(0, 6, (4, 5))
    out = compute_ranking_metrics(
        topk, targets, ks=(5, 10), item_categories=_categories(), history=history, entropy_ks=(5, 10)
    )
    expected = {f"{m}@{k}" for m in ("recall", "ndcg") for k in (5, 10)}
    expected |= {f"{m}@{k}_h{h}" for m in ("recall", "ndcg") for k in (5, 10) for h in (1, 4, 8)}
    expected |= {"entropy@5", "entropy@10"}
    expected |= {f"new_interest_{m}@{k}" for m in ("recall", "ndcg") for k in (5, 10)}
    assert set(out) == expected
    assert all(v.shape == (4,) for v in out.values())
    torch.testing.assert_close(out["recall@5_h4"], recall_at_k(topk, targets, 5, horizon=4))


def test_compute_ranking_metrics_keys_t1() -> None:
    topk = torch.tensor([[1, 2, 3, 4, 5]])
    targets = torch.tensor([[2]])
    out = compute_ranking_metrics(topk, targets, ks=(1, 5))
    assert set(out) == {"recall@1", "ndcg@1", "recall@5", "ndcg@5", "recall@1_h1", "ndcg@1_h1"} | {
        "recall@5_h1",
        "ndcg@5_h1",
    }
    assert default_horizons(1) == [1]
    assert default_horizons(8) == [1, 4, 8]
    assert default_horizons(3) == [1, 3]


def test_new_interest_values_and_aggregate() -> None:
    cats = _categories()
    topk = torch.tensor([[2, 1], [1, 3], [1, 2]])
    targets = torch.tensor([[2, 0], [1, 0], [0, 0]])
    history = torch.tensor([[1, 0], [1, 2], [3, 0]])
    out = compute_ranking_metrics(
        topk, targets, ks=(1, 2), item_categories=cats, history=history, entropy_ks=(2,)
    )
    # recall@1: users 0 and 1 rank their single target first -> 1.0; user 2 has no targets -> NaN.
    _close(out["recall@1"], [1.0, 1.0, math.nan])
    # Only user 0 is new-interest (target item 2 brings category 2; user 1 has seen it).
    _close(out["new_interest_recall@1"], [1.0, math.nan, math.nan])
    agg = aggregate(out)
    # NaN users are excluded: mean over users 0 and 1 only.
    assert agg["recall@1"] == pytest.approx(1.0)
    assert agg["new_interest_recall@1"] == pytest.approx(1.0)
    assert agg["num_users"] == 3
    assert agg["new_interest_users"] == 1
    # entropy@2: user 0 items {0,2} + {0,1} -> 1.5; user 1 {0,1} + {0} -> p = [2/3, 1/3]; user 2 -> 1.5.
    h1 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert agg["entropy@2"] == pytest.approx((1.5 + h1 + 1.5) / 3, rel=1e-6)


def test_aggregate_excludes_nan() -> None:
    # (0.5 + 1.0) / 2 with the NaN user ignored; an all-NaN key aggregates to NaN.
    agg = aggregate({"recall@10": torch.tensor([0.5, math.nan, 1.0]), "x": torch.full((3,), math.nan)})
    assert agg["recall@10"] == pytest.approx(0.75)
    assert math.isnan(agg["x"])
    assert agg["num_users"] == 3
    assert "new_interest_users" not in agg


def test_k_larger_than_kmax_raises() -> None:
    topk, targets = _toy()
    with pytest.raises(ValueError, match="k=7"):
        recall_at_k(topk, targets, 7)
    with pytest.raises(ValueError, match="k=10"):
        compute_ranking_metrics(topk, targets)  # default ks (5, 10, 50, 200): 10 is the first too large
    with pytest.raises(ValueError, match="k=200"):
        compute_ranking_metrics(topk, targets, ks=(5, 200))
    with pytest.raises(ValueError, match="k=50"):
        compute_ranking_metrics(topk, targets, ks=(5,), item_categories=_categories(), entropy_ks=(5, 50))


def test_input_validation() -> None:
    topk, targets = _toy()
    with pytest.raises(ValueError, match="`topk`"):
        recall_at_k(topk.float(), targets, 1)
    with pytest.raises(ValueError, match="`targets`"):
        ndcg_at_k(topk, targets[0], 1)
    with pytest.raises(ValueError, match="batch size"):
        recall_at_k(topk, targets[:2], 1)
    with pytest.raises(ValueError, match="`horizon`"):
        recall_at_k(topk, targets, 1, horizon=5)
    with pytest.raises(ValueError, match="`item_categories`"):
        category_entropy_at_k(topk, torch.zeros(13, 2, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="`topk` holds ids"):
        category_entropy_at_k(topk, _categories(), 6)
    bad = _categories()
    bad[0, 1] = True
    with pytest.raises(ValueError, match="padding row"):
        category_entropy_at_k(topk, bad, 1)
