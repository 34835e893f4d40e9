import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ggr_hf.losses import infonce_loss, offset_weights, sample_negatives
from tests.conftest import membership, tiny_model
from tests.ggr_reference import infonce_loss_reference


def _case(seed=0, heads=3, horizon=2):
    g = torch.Generator().manual_seed(seed)
    table = F.normalize(torch.randn(21, 8, generator=g), dim=-1)

    def embed(ids):
        return table[ids]

    q = F.normalize(torch.randn(2, 4, heads, 8, generator=g), dim=-1)
    targets = torch.randint(1, 21, (2, 4, horizon), generator=g)
    targets[1, 3] = 0
    compat = torch.rand(2, 4, horizon, heads, generator=g) > 0.4
    compat &= (targets > 0).unsqueeze(-1)
    return q, targets, compat, embed, g


@pytest.mark.parametrize("weighting", ["frequency", "uniform"])
@pytest.mark.parametrize("shared", [True, False])
def test_vectorised_loss_equals_the_loop_formula(weighting, shared):
    q, targets, compat, embed, g = _case()
    negatives = torch.randint(1, 21, (1 if shared else 3, 6), generator=g)
    negatives[0, 0] = targets[0, 0, 0]  # a negative equal to a positive is masked
    w = offset_weights(2, 0.7)
    fast = infonce_loss(q, targets, compat, embed, negatives, 20.0, w, weighting, 0.99).loss
    slow = infonce_loss_reference(q, targets, compat, embed, negatives, 20.0, w, weighting, 0.99)
    assert torch.allclose(fast.double(), slow, atol=1e-4)


def test_pair_function_equals_dense_queries():
    q, targets, compat, embed, g = _case(1)
    negatives = torch.randint(1, 21, (3, 6), generator=g)
    w = offset_weights(2, 0.99)
    dense = infonce_loss(q, targets, compat, embed, negatives, 10.0, w).loss
    pairs = infonce_loss(lambda b, t, k: q[b, t, k], targets, compat, embed, negatives, 10.0, w).loss
    assert torch.allclose(dense, pairs)


def test_false_negative_guard_masks_near_duplicates():
    table = F.normalize(torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.001], [0.0, 1.0]]), dim=-1)
    q = F.normalize(torch.tensor([[[[1.0, 0.2]]]]), dim=-1)  # [1, 1, 1, 2]
    targets = torch.tensor([[[1]]])
    compat = torch.ones(1, 1, 1, 1, dtype=torch.bool)
    negs = torch.tensor([[2, 3]])  # item 2 is nearly item 1 (cosine > 0.99), item 3 is not
    loss = infonce_loss(q, targets, compat, lambda i: table[i], negs, 1.0, torch.ones(1)).loss
    s_pos, s_3 = float(q[0, 0, 0] @ table[1]), float(q[0, 0, 0] @ table[3])
    expected = torch.logsumexp(torch.tensor([s_pos, s_3]), 0) - s_pos
    assert torch.allclose(loss, expected, atol=1e-6)


def test_offset_weights():
    w = offset_weights(3, 0.5)
    assert torch.allclose(w, torch.tensor([0.5, 0.25, 0.125]) / 0.875)
    assert torch.allclose(offset_weights(4, 1.0), torch.full((4,), 0.25))


def test_in_group_negatives_come_only_from_the_group():
    mask = membership()
    negs = sample_negatives(mask, 20, 500, torch.Generator().manual_seed(0))
    assert negs.shape == (3, 500)
    for k in range(3):
        assert mask[negs[k], k].all()
        # every item of the group is reachable
        assert set(negs[k].tolist()) == set(mask[:, k].nonzero(as_tuple=True)[0].tolist())
    shared = sample_negatives(None, 20, 300, torch.Generator().manual_seed(0))
    assert shared.shape == (1, 300) and shared.min() >= 1 and shared.max() <= 20


def test_in_group_negatives_match_the_per_head_reference():
    # The sampler lays every head's items out in one flat list instead of sorting the mask; the draws
    # must stay those of the plain per-head form (same generator stream), so that runs and checkpoints
    # keep their negatives. Row 0 (padding) set and an empty head are included.
    gen = torch.Generator().manual_seed(3)
    for trial in range(40):
        num_items = int(torch.randint(1, 50, (1,), generator=gen))
        num_heads = int(torch.randint(1, 6, (1,), generator=gen))
        mask = torch.rand(num_items + 1, num_heads, generator=gen) < float(torch.rand(1, generator=gen))
        mask[0] = True
        mask[:, -1] = False
        got = sample_negatives(mask, num_items, 33, torch.Generator().manual_seed(trial))
        g = torch.Generator().manual_seed(trial)
        u = torch.rand((num_heads, 33), generator=g)
        fallback = torch.randint(1, num_items + 1, (num_heads, 33), generator=g)
        for k in range(num_heads):
            items = mask[1:, k].nonzero(as_tuple=True)[0] + 1
            expected = items[(u[k] * len(items)).long()] if len(items) else fallback[k]
            assert torch.equal(got[k], expected), (trial, k)


def test_model_loss_uses_in_group_or_global_negatives(monkeypatch, batch):
    ids, ts = batch
    seen = []
    import ggr_hf.modeling_recommender as modeling

    real = modeling.sample_negatives

    def spy(mask, *args, **kwargs):
        seen.append(mask)
        return real(mask, *args, **kwargs)

    monkeypatch.setattr(modeling, "sample_negatives", spy)
    # The main loss's negatives: in-group (a per-head mask) or global; the plain form draws only those.
    model = tiny_model(calibration="none")
    model(ids, timestamps=ts, target_ids=torch.roll(ids, -1, 1))
    assert len(seen) == 1 and seen[0] is not None
    seen.clear()
    model = tiny_model(negative_sampling="global", calibration="none")
    model(ids, timestamps=ts, target_ids=torch.roll(ids, -1, 1))
    assert len(seen) == 1 and seen[0] is None


def test_loss_only_trains_compatible_heads(batch):
    ids, ts = batch
    # The paper's plain form: the default fused calibration also trains the max over heads.
    model = tiny_model(calibration="none")
    model.train()
    targets = torch.zeros_like(ids).unsqueeze(-1)
    targets[0, 0, 0] = 2  # item 2 is only in group "a" (head 0)
    out = model(ids, timestamps=ts, target_ids=targets)
    assert out.num_pairs == 1
    out.loss.backward()
    grads = [blk.adapter.weight.grad for blk in model.heads.levels[0]]
    assert grads[0].abs().sum() > 0
    assert grads[1] is None or grads[1].abs().sum() == 0
    assert grads[2] is None or grads[2].abs().sum() == 0


@given(
    num_heads=st.integers(1, 6),
    num_items=st.integers(1, 25),
    horizon=st.integers(1, 3),
    num_negatives=st.integers(1, 40),  # often more than a group holds: negatives repeat
    density=st.floats(0.0, 1.0),
    weighting=st.sampled_from(["frequency", "uniform"]),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=60, deadline=None, derandomize=True, database=None)
def test_pair_only_loss_property(num_heads, num_items, horizon, num_negatives, density, weighting, seed):
    # Items in any number of groups (multi-label, or none), groups that may be empty, in-group
    # negatives, padded targets: the pair-only loss (queries of the compatible pairs only) equals the
    # dense-queries form and the loop reference, and so do its gradients.
    gen = torch.Generator().manual_seed(seed)
    bsz, seq_len, d = 2, 4, 6
    table = F.normalize(torch.randn(num_items + 1, d, generator=gen), dim=-1)
    membership_mask = torch.rand(num_items + 1, num_heads, generator=gen) < density
    membership_mask[0] = False
    targets = torch.randint(0, num_items + 1, (bsz, seq_len, horizon), generator=gen)
    compat = membership_mask[targets] & (targets > 0).unsqueeze(-1)  # [B, T, P, H]
    negatives = sample_negatives(membership_mask, num_items, num_negatives, gen)
    states = torch.randn(bsz, seq_len, d, generator=gen, requires_grad=True)
    heads = torch.randn(num_heads, d, d, generator=gen)
    w = offset_weights(horizon, 0.8)

    def dense_queries():
        return F.normalize(torch.einsum("btd,hde->bthe", states, heads), dim=-1)

    def pair_queries(b, t, k):
        return F.normalize(torch.einsum("md,mde->me", states[b, t], heads[k]), dim=-1)

    def embed(ids):
        return table[ids]

    dense = infonce_loss(dense_queries(), targets, compat, embed, negatives, 5.0, w, weighting).loss
    (grad_dense,) = torch.autograd.grad(dense, states, allow_unused=True, materialize_grads=True)
    pairs = infonce_loss(pair_queries, targets, compat, embed, negatives, 5.0, w, weighting).loss
    (grad_pairs,) = torch.autograd.grad(pairs, states, allow_unused=True, materialize_grads=True)
    assert torch.allclose(pairs, dense, atol=1e-5)
    assert torch.allclose(grad_pairs, grad_dense, atol=1e-5)
    if compat.any():
        with torch.no_grad():
            queries = dense_queries()
            reference = infonce_loss_reference(queries, targets, compat, embed, negatives, 5.0, w, weighting)
        assert torch.allclose(pairs.double(), reference, atol=1e-4)
    else:  # no pair to learn: a zero that still backpropagates (zero gradients)
        assert float(pairs.detach()) == 0.0 and pairs.requires_grad and grad_pairs.abs().sum() == 0


def test_a_batch_without_any_compatible_pair_still_backpropagates():
    # Targets outside every head's group, the paper's uncalibrated loss and a fixed logit scale: the
    # loss is a zero that backward accepts (before: "element 0 of tensors does not require grad").
    model = tiny_model(learnable_logit_scale=False, calibration="none").train()
    groups = torch.zeros_like(membership())
    groups[1, 0] = groups[2, 1] = groups[3, 2] = True
    model.set_item_groups(model.config.priors[0]["name"], groups)
    gen = torch.Generator().manual_seed(0)
    out = model(
        input_ids=torch.randint(6, 21, (2, 8), generator=gen),
        target_ids=torch.randint(6, 21, (2, 8, 1), generator=gen),
    )
    assert float(out.loss.detach()) == 0.0
    out.loss.backward()
    reached = [p.grad for p in model.parameters() if p.grad is not None]
    assert reached and all(g.abs().sum() == 0 for g in reached)
