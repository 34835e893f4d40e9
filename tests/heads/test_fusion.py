import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ggr_hf.heads.fusion import fuse_scores, fuse_scores_dense
from tests.conftest import membership, tiny_model
from tests.ggr_reference import merge_topk_lists


def _inputs(seed=0, batch=4, heads=3, items=21, d=8):
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(batch, heads, d, generator=g), dim=-1)
    e = torch.nn.functional.normalize(torch.randn(items, d, generator=g), dim=-1)
    return q, e


def test_sparse_fusion_equals_dense_reference():
    q, e = _inputs()
    compat = membership()
    compat[0] = False
    head_items = [compat[:, k].nonzero(as_tuple=True)[0] for k in range(3)]
    active = torch.tensor([[True, True, True], [True, False, True], [False, True, True], [True, True, True]])
    for fusion in ("max", "mean"):
        s1, h1 = fuse_scores(q, e, head_items, active, fusion)
        s2, h2 = fuse_scores_dense(q, e, compat, active, fusion)
        finite = torch.isfinite(s2)
        assert torch.equal(torch.isfinite(s1), finite)
        assert torch.allclose(s1[finite], s2[finite], atol=1e-6)
        assert torch.equal(h1, h2)


def test_max_and_mean_fusion_differ_as_defined():
    q, e = _inputs(1)
    compat = torch.ones(21, 3, dtype=torch.bool)
    compat[0] = False
    s_max, head = fuse_scores(q, e, [None] * 3, None, "max")
    s_mean, _ = fuse_scores(q, e, [None] * 3, None, "mean")
    per_head = torch.einsum("bhd,id->bhi", q, e)
    assert torch.allclose(s_max[:, 1:], per_head.max(1).values[:, 1:], atol=1e-6)
    assert torch.allclose(s_mean[:, 1:], per_head.mean(1)[:, 1:], atol=1e-6)
    assert torch.equal(head[:, 1:], per_head.argmax(1)[:, 1:])
    assert not torch.allclose(s_max, s_mean)


def test_a_head_never_returns_an_incompatible_item():
    model = tiny_model()
    ids = torch.randint(1, 21, (5, 6))
    scores, head = model.score_items(ids)
    mask = model.head_item_mask()
    top = scores.topk(15, dim=1).indices
    top_heads = head.gather(1, top)
    assert (top_heads >= 0).all()
    assert mask[top, top_heads].all()


def test_max_fusion_equals_merging_per_head_topk_lists():
    model = tiny_model(seed=3)
    ids = torch.randint(1, 21, (4, 6))
    k = 6
    scores, head = model.score_items(ids)
    top_scores, top_items = scores.topk(k, dim=1)
    # Per-head lists, as the release computes them: each head ranks its own items.
    h = model._last_states(ids, None, None)
    q = torch.nn.functional.normalize(model.heads(h), dim=-1) * model.current_logit_scale()
    e = model.backbone.all_item_embeddings()
    mask = model.head_item_mask()
    for b in range(len(ids)):
        per_scores, per_items = [], []
        for j in range(model.num_heads):
            items = mask[:, j].nonzero(as_tuple=True)[0]
            s = q[b, j] @ e[items].T
            order = s.argsort(descending=True)[:k]
            per_scores.append(s[order])
            per_items.append(items[order])
        merged_items, merged_scores, merged_heads = merge_topk_lists(per_scores, per_items, k)
        assert merged_items == top_items[b].tolist()
        assert torch.allclose(torch.tensor(merged_scores), top_scores[b], atol=1e-5)
        assert merged_heads == head[b, top_items[b]].tolist()


def test_recommend_excludes_history_and_explains_each_item():
    model = tiny_model()
    rec = model.recommend([[1, 2, 3, 10], [12]], k=5)
    assert rec.item_ids.shape == (2, 5)
    assert not set(rec.item_ids[0].tolist()) & {1, 2, 3, 10}
    assert 12 not in rec.item_ids[1].tolist()
    mask = model.head_item_mask()
    for row_items, row_heads, row_names in zip(rec.item_ids, rec.head_index, rec.head_names):
        assert mask[row_items, row_heads].all()
        assert row_names == [model.head_names[h] for h in row_heads.tolist()]
    kept = model.recommend([1, 2, 3], k=20, exclude_history=False)
    assert {1, 2, 3} <= set(kept.item_ids[0].tolist())


def _reference_topk(q, items, compatible, k, active=None, exclude=None, fusion="max"):
    """Dense fused scores, history removed, then `topk`: what `fused_topk` must return."""
    scores, heads = fuse_scores_dense(q, items, compatible, active, fusion)
    if exclude is not None:
        scores = scores.scatter(1, exclude, float("-inf"))
    top, ids = scores.topk(k, dim=1)
    return top, ids, heads.gather(1, ids)


def _check_topk(q, items, compatible, k, active=None, exclude=None, fusion="max", chunk_size=7):
    from ggr_hf.heads.fusion import build_fusion_index, fused_topk

    index = build_fusion_index(items, compatible)
    got, got_ids, got_heads = fused_topk(q, index, k, active, exclude, fusion, chunk_size=chunk_size)
    want, want_ids, want_heads = _reference_topk(q, items, compatible, k, active, exclude, fusion)
    finite = torch.isfinite(want)
    torch.testing.assert_close(got[finite], want[finite])
    assert torch.equal(torch.isfinite(got), finite)
    assert torch.equal(got_ids[finite], want_ids[finite]) and torch.equal(
        got_heads[finite], want_heads[finite]
    )
    assert bool((got_ids[~finite] == 0).all()) and bool((got_heads[~finite] == -1).all())


@pytest.mark.parametrize("fusion", ["max", "mean"])
@pytest.mark.parametrize("chunk_size", [3, 7, 1000])
def test_fused_topk_equals_dense_scores_then_topk(fusion, chunk_size):
    torch.manual_seed(0)
    num_items, num_heads, bsz, d = 40, 6, 5, 8
    items = torch.nn.functional.normalize(torch.randn(num_items + 1, d), dim=-1)
    compatible = torch.rand(num_items + 1, num_heads) < 0.35  # multi-label, some items in no head
    compatible[:, 5] = False  # an empty head
    q = torch.randn(bsz, num_heads, d)
    active = torch.rand(bsz, num_heads) < 0.7
    active[:, 0] = True
    exclude = torch.randint(0, num_items + 1, (bsz, 9))
    for k in (1, 5, 12):
        _check_topk(q, items, compatible, k, None, None, fusion, chunk_size)
        _check_topk(q, items, compatible, k, active, exclude, fusion, chunk_size)


def test_fused_topk_k_above_what_can_be_recommended_pads_the_tail():
    from ggr_hf.heads.fusion import build_fusion_index, fused_topk

    items = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    compatible = torch.zeros(6, 2, dtype=torch.bool)
    compatible[[1, 2, 3], 0] = True  # items 4 and 5 belong to no head
    scores, ids, heads = fused_topk(torch.randn(2, 2, 4), build_fusion_index(items, compatible), 5)
    assert torch.isfinite(scores[:, :3]).all() and torch.isinf(scores[:, 3:]).all()
    assert sorted(ids[0, :3].tolist()) == [1, 2, 3] and ids[:, 3:].eq(0).all() and heads[:, 3:].eq(-1).all()


@given(
    num_heads=st.integers(1, 6),
    num_items=st.integers(1, 30),
    k=st.integers(1, 35),
    density=st.floats(0.0, 1.0),
    chunk_size=st.integers(1, 40),
    fusion=st.sampled_from(["max", "mean"]),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=60, deadline=None, derandomize=True, database=None)
def test_fused_topk_property(num_heads, num_items, k, density, chunk_size, fusion, seed):
    gen = torch.Generator().manual_seed(seed)
    d, bsz = 4, 3
    items = torch.nn.functional.normalize(torch.randn(num_items + 1, d, generator=gen), dim=-1)
    compatible = torch.rand(num_items + 1, num_heads, generator=gen) < density
    q = torch.randn(bsz, num_heads, d, generator=gen)
    active = torch.rand(bsz, num_heads, generator=gen) < 0.8
    exclude = torch.randint(0, num_items + 1, (bsz, 4), generator=gen)
    k = min(k, num_items + 1)
    _check_topk(q, items, compatible, k, active, exclude, fusion, chunk_size)


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 8, 9])
def test_block_scores_every_product_path_equals_torch_mm(rows):
    # 1-3 rows: NumPy matrix-vector per row; 4-8: NumPy matrix-matrix; 9: torch.mm.
    from ggr_hf.heads.fusion import _block_scores

    gen = torch.Generator().manual_seed(rows)
    q, table = torch.randn(rows, 16, generator=gen), torch.randn(1000, 16, generator=gen)
    got = _block_scores(q, table[100:900])  # a slice of the table, as a block is
    assert got.shape == (rows, 800) and got.is_contiguous()
    assert torch.allclose(got, q @ table[100:900].T, atol=1e-5)


def test_block_scores_keeps_gradients():
    from ggr_hf.heads.fusion import _block_scores

    q = torch.randn(1, 8, requires_grad=True)
    _block_scores(q, torch.randn(5, 8)).sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_single_threaded_torch_restores_the_thread_count_nested_and_on_error():
    from ggr_hf.heads.fusion import single_threaded_torch

    original = torch.get_num_threads()
    torch.set_num_threads(2)  # whatever OMP_NUM_THREADS says, so that a missed restore shows
    try:
        with pytest.raises(RuntimeError), single_threaded_torch():
            assert torch.get_num_threads() == 1
            with single_threaded_torch():
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1  # the inner exit does not restore early
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
        with single_threaded_torch(enabled=False):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(original)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": 2.5}, "chunk_size"),
        ({"k": 0}, "k must be"),
        ({"k": True}, "k must be"),
        ({"queries": torch.randn(1, 3, 4)}, r"queries: expected .* \(\*, 2, 4\)"),  # one head too many
        ({"queries": torch.randn(1, 2, 5)}, "queries"),  # another width
        ({"queries": torch.randn(2, 4)}, "queries"),
        ({"head_active": torch.ones(1, 3, dtype=torch.bool)}, "head_active"),
        ({"head_active": torch.ones(1, 2)}, "head_active"),
        ({"exclude": torch.ones(1, 3)}, "exclude"),
        ({"exclude": torch.tensor([[1], [2]])}, "exclude"),  # rows of another batch would broadcast
        ({"exclude": torch.tensor([[9]])}, "item id 9 is outside 0..5"),
    ],
)
def test_fused_topk_names_the_argument_that_does_not_fit(kwargs, message):
    from ggr_hf.errors import GGRInputError
    from ggr_hf.heads.fusion import build_fusion_index, fused_topk

    index = build_fusion_index(torch.randn(6, 4), torch.ones(6, 2, dtype=torch.bool))
    args = {"queries": torch.randn(1, 2, 4), "index": index, "k": 2, **kwargs}
    with pytest.raises(GGRInputError, match=message):
        fused_topk(**args)
