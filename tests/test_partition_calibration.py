"""Calibrated fusion over partition priors, the prior switch and the positive mix-in (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggr_hf.configuration_ggr import GGRConfig
from ggr_hf.errors import GGRConfigError, GGRInputError
from ggr_hf.evaluation.evaluator import SwitchCounts
from ggr_hf.hub.loading import load_ggr
from ggr_hf.losses import fused_infonce_loss, mix_in_positives, offset_weights
from ggr_hf.modeling_ggr import GGRForRecommendation
from ggr_hf.priors import make_prior
from ggr_hf.priors.item import resolve_groups
from tests.conftest import NUM_ITEMS, tiny_config, tiny_model
from tests.recommender_tester import RecommenderTesterMixin

FIXTURES = Path(__file__).parent / "fixtures" / "ggr_v0_1_0"
PARTITION = [{"type": "item", "field": "genres", "values": ["a", "b", "c"]}]
PARTITION_X_TIME = [*PARTITION, {"type": "temporal", "segments": 2, "horizon": 2}]


def partition_membership(num_items: int = NUM_ITEMS, groups: int = 3) -> torch.Tensor:
    """Items 1..num_items in `groups` disjoint groups by `id % groups`."""
    mem = torch.zeros(num_items + 1, groups, dtype=torch.bool)
    ids = torch.arange(1, num_items + 1)
    mem[ids, ids % groups] = True
    return mem


def partition_model(priors=PARTITION, seed: int = 0, **kwargs) -> GGRForRecommendation:
    model = tiny_model(priors=priors, seed=seed, **kwargs)
    model.set_item_groups("genres", partition_membership())
    return model


def histories(seed: int = 1, batch: int = 4, length: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, NUM_ITEMS + 1, (batch, length), generator=g)
    ids[1, 5:] = 0
    ts = torch.cumsum(torch.randint(1, 5000, (batch, length), generator=g), 1) * (ids != 0)
    return ids, ts


def targets_of(ids: torch.Tensor, horizon: int) -> torch.Tensor:
    return torch.stack([torch.roll(ids, -(p + 1), 1) for p in range(horizon)], -1) * (ids != 0).unsqueeze(-1)


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"calibration": "max"}, r"GGRConfig\.calibration must be one of .*'max'"),
        ({"switch": "yes"}, r"GGRConfig\.switch must be one of .*'yes'"),
        ({"positive_mixin_ratio": 1.5}, r"GGRConfig\.positive_mixin_ratio must be in \[0, 1\], got 1\.5"),
        ({"positive_mixin_ratio": "0.1"}, r"GGRConfig\.positive_mixin_ratio must be a number"),
        ({"calibration_loss_weight": -1.0}, r"GGRConfig\.calibration_loss_weight must be >= 0"),
        ({"switch_loss_weight": -0.5}, r"GGRConfig\.switch_loss_weight must be >= 0"),
        ({"switch": "state", "switch_threshold": 1.0}, r"GGRConfig\.switch_threshold must be a probability"),
        ({"switch": "state", "switch_gating": "yes"}, r"GGRConfig\.switch_gating must be true or false"),
        ({"calibration": "switch"}, r"GGRConfig\.switch is 'none' but calibration='switch' needs"),
        ({"switch_gating": True}, r"GGRConfig\.switch is 'none' but switch_gating=True needs"),
    ],
)
def test_bad_new_fields_are_named(fields, message):
    with pytest.raises(GGRConfigError, match=message):
        tiny_config(**fields)


def test_a_switch_needs_an_item_restricting_prior():
    with pytest.raises(GGRConfigError, match=r"GGRConfig\.switch is 'state' but no prior restricts items"):
        tiny_config(priors=[{"type": "temporal", "segments": 2, "horizon": 2}], switch="state")


def test_item_prior_label_first_keeps_each_items_first_group():
    prior = make_prior({"type": "item", "field": "genres", "label": "first"}, 0)
    values, groups, _ = resolve_groups(prior, [["x", "y"], ["y"], ["z", "x"]], "item")
    assert groups == [["x"], ["y"], ["z"]] and values == ["x", "y", "z"]
    every = make_prior({"type": "item", "field": "genres"}, 0)
    assert resolve_groups(every, [["x", "y"]], "item")[1] == [["x", "y"]]
    with pytest.raises(GGRConfigError, match=r"label must be one of \['all', 'first'\], got 'one'"):
        tiny_config(priors=[{"type": "item", "field": "genres", "label": "one", "values": ["a"]}])


def test_configs_saved_before_the_new_fields_load_as_they_were_trained():
    old = json.loads((FIXTURES / "full" / "config.json").read_text())
    assert "calibration" not in old
    config = GGRConfig.from_dict(old)
    assert config.calibration == "none" and config.switch == "none" and config.positive_mixin_ratio == 0.0
    # A new config built in code gets the new default, and records it when saved.
    assert GGRConfig().calibration == "fused"
    assert (
        GGRConfig.from_dict(GGRConfig(calibration="fused_offsets").to_dict()).calibration == "fused_offsets"
    )


def test_the_v0_1_0_fixture_recommends_as_saved():
    expected = json.loads((FIXTURES / "expected.json").read_text())
    model = load_ggr(FIXTURES / "full")
    assert model.config.calibration == "none" and model.switch is None and model.head_offset is None
    rec = model.recommend(expected["histories"], k=expected["k"])
    assert rec.item_ids.tolist() == expected["item_ids"]
    torch.testing.assert_close(rec.scores, torch.tensor(expected["scores"]), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- switch


def planted_batch(g: torch.Generator, batch: int = 32, length: int = 8, groups: int = 3):
    """Every user's items (history and next items) come from one group: the next item is always in
    the group of the last one."""
    user_group = torch.randint(0, groups, (batch,), generator=g)
    per_group = NUM_ITEMS // groups  # items with id % groups == c, c in 0..groups-1
    slot = torch.randint(0, per_group, (batch, length + 1), generator=g)
    ids = slot * groups + user_group.unsqueeze(1)
    ids = torch.where(ids == 0, torch.full_like(ids, groups), ids)  # id 0 is padding: use 3 (group 0)
    ts = torch.cumsum(torch.randint(1, 5000, (batch, length + 1), generator=g), 1)
    return ids[:, :-1], ts[:, :-1], ids[:, 1:].unsqueeze(-1), ids[:, -1:], user_group


def test_switch_learns_a_planted_group_signal():
    model = partition_model(switch="state", calibration="none", perturb=False).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for step in range(100):
        ids, ts, targets, _, _ = planted_batch(g)
        loss = model(ids, timestamps=ts, target_ids=targets, negative_seeds=[step]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ids, ts, _, nxt, user_group = planted_batch(torch.Generator().manual_seed(99), batch=64)
    probs, labels = model.switch_predictions(ids, ts, target_ids=nxt)
    assert torch.equal(labels, F.one_hot(user_group, 3).bool())
    counts = SwitchCounts(0.5)
    counts.add(probs, labels)
    metrics = counts.metrics()
    # chance: balanced accuracy 0.5 (and accuracy 2/3 by always answering "absent")
    assert metrics["switch_balanced_accuracy"] > 0.85 and metrics["switch_accuracy"] > 0.85
    assert torch.equal(probs.argmax(1), user_group)


def test_switch_counts_metrics_by_hand():
    counts = SwitchCounts(0.5)
    probs = torch.tensor([[0.9, 0.2], [0.6, 0.7], [0.1, 0.4]])
    labels = torch.tensor([[True, False], [False, True], [False, True]])
    counts.add(probs, labels)
    m = counts.metrics()
    assert m["switch_accuracy"] == pytest.approx(4 / 6)
    # group 0: TPR 1/1, TNR 1/2; group 1: TPR 1/2, TNR 1/1
    assert m["switch_balanced_accuracy"] == pytest.approx(0.75)
    assert m["switch_positive_rate"] == pytest.approx(3 / 6)


def set_switch(model: GGRForRecommendation, group_logits: list[float]) -> None:
    with torch.no_grad():
        model.switch.state.weight.zero_()
        model.switch.state.bias.copy_(torch.tensor(group_logits))


@pytest.mark.parametrize("priors", [PARTITION, PARTITION_X_TIME])
def test_gating_removes_only_the_switched_off_heads_items(priors):
    ids, ts = histories()
    gated = partition_model(priors, switch="state", switch_gating=True)
    plain = partition_model(priors, switch="state")
    plain.load_state_dict(gated.state_dict())
    set_switch(gated, [3.0, -3.0, 1.0])  # groups a and c predicted present, b absent
    set_switch(plain, [3.0, -3.0, 1.0])
    q, active = gated.user_queries(ids, ts, None, None, None)
    group_of_head = gated.head_values()[:, 0]
    assert torch.equal(active, (group_of_head != 1).unsqueeze(0).expand(len(ids), -1))
    s_gated, _ = gated.score_items(ids, ts, dense=True)
    s_plain, _ = plain.score_items(ids, ts, dense=True)
    in_b = partition_membership()[:, 1]
    in_b[0] = False
    assert torch.isinf(s_gated[:, in_b]).all()
    torch.testing.assert_close(s_gated[:, ~in_b][:, 1:], s_plain[:, ~in_b][:, 1:])
    top, items, heads = gated.score_items(ids, ts, topk=5)
    assert not in_b[items].any() and (group_of_head[heads] != 1).all()


def test_gating_keeps_each_users_most_probable_group():
    ids, ts = histories()
    model = partition_model(switch="state", switch_gating=True)
    set_switch(model, [-4.0, -1.0, -3.0])  # nothing predicted present: the best group (b) stays on
    _, active = model.user_queries(ids, ts, None, None, None)
    assert torch.equal(active, (model.head_values()[:, 0] == 1).unsqueeze(0).expand(len(ids), -1))


def test_switch_state_query_reads_the_groups_head_query():
    model = partition_model(PARTITION_X_TIME, switch="state_query", composition="multiplicative")
    h = F.normalize(torch.randn(5, 16), dim=-1)
    logits = model._switch_logits(h)
    queries = model.heads(h)  # [5, H, d]
    for g in range(3):
        head = int((model.head_values()[:, 0] == g).nonzero()[0])
        expected = model.switch.state(h)[:, g] + queries[:, head] @ model.switch.query.weight[g]
        torch.testing.assert_close(logits[:, g], expected)


# ---------------------------------------------------------------------------------------------- exactness


def randomize_calibration(model: GGRForRecommendation, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if model.head_offset is not None:
            model.head_offset.copy_(torch.randn(model.num_heads, generator=g) * 3)
        if model.switch is not None:
            for p in model.switch.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 2)


def assert_topk_equals_dense(
    model: GGRForRecommendation, ids: torch.Tensor, ts: torch.Tensor, k: int
) -> None:
    dense, _ = model.score_items(ids, ts, dense=True)
    sparse, _ = model.score_items(ids, ts)
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-5)
    ref = dense.scatter(1, ids, float("-inf"))
    ref[:, 0] = float("-inf")
    top, items, heads = model.score_items(ids, ts, topk=k, exclude=ids)
    torch.testing.assert_close(top, ref.topk(k, dim=1).values, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ref.gather(1, items), top, rtol=1e-5, atol=1e-5)


CALIBRATED = [
    {"calibration": "fused_offsets"},
    {"calibration": "switch", "switch": "state"},
    {"calibration": "switch", "switch": "state_query", "switch_gating": True},
    {"calibration": "fused_offsets", "switch": "state_query", "switch_gating": True},
]


@pytest.mark.parametrize("fields", CALIBRATED)
@pytest.mark.parametrize("composition", ["multiplicative", "hierarchical", "additive"])
def test_calibrated_topk_equals_the_dense_reference(fields, composition):
    for seed in range(3):
        model = partition_model(PARTITION_X_TIME, seed=seed, composition=composition, **fields)
        randomize_calibration(model, seed)
        ids, ts = histories(seed)
        assert_topk_equals_dense(model, ids, ts, k=6)


@torch.no_grad()
def test_the_score_bias_is_added_exactly():
    model = partition_model(PARTITION_X_TIME, calibration="switch", switch="state")
    randomize_calibration(model, 0)
    ids, ts = histories()
    scores, heads = model.score_items(ids, ts, dense=True)
    h = model._last_states(ids, ts, None)
    q = F.normalize(model.heads(h), dim=-1) * model.current_logit_scale()
    cos = torch.einsum("bhd,id->bhi", q, model.backbone.all_item_embeddings())
    log_p = F.logsigmoid(model.switch.state(h))  # [B, G]
    bias = log_p[:, model.head_values()[:, 0]]  # [B, H]: each head's group
    # item by item: its best compatible head's cosine score plus that head's log p
    mask = model.head_item_mask()
    for b in range(len(ids)):
        for i in range(1, NUM_ITEMS + 1):
            best = max(float(cos[b, k, i] + bias[b, k]) for k in range(model.num_heads) if mask[i, k])
            assert float(scores[b, i]) == pytest.approx(best, abs=1e-4)


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    seed=st.integers(0, 10_000),
    groups=st.integers(2, 4),
    k=st.integers(1, 12),
    calibration=st.sampled_from(["fused_offsets", "switch"]),
)
def test_property_calibrated_topk_equals_dense(seed, groups, k, calibration):
    values = [f"g{i}" for i in range(groups)]
    priors = [
        {"type": "item", "field": "genres", "values": values},
        {"type": "temporal", "segments": 2, "horizon": 2},
    ]
    extra = {"switch": "state"} if calibration == "switch" else {}
    torch.manual_seed(seed)
    model = GGRForRecommendation(tiny_config(priors, calibration=calibration, **extra)).eval()
    g = torch.Generator().manual_seed(seed)
    membership = torch.zeros(NUM_ITEMS + 1, groups, dtype=torch.bool)
    membership[torch.arange(1, NUM_ITEMS + 1), torch.randint(0, groups, (NUM_ITEMS,), generator=g)] = True
    membership[1 : groups + 1] = torch.eye(groups, dtype=torch.bool)  # no empty group
    model.set_item_groups("genres", membership)
    randomize_calibration(model, seed)
    assert_topk_equals_dense(model, *histories(seed), k=k)


# ---------------------------------------------------------------------------------------------- losses


def fused_loss_reference(queries, target_ids, valid, mask, emb, negatives, scale, w_p, active, offsets, thr):
    """Loop version of `fused_infonce_loss`."""
    m_count, num_heads, _ = queries.shape
    offsets = torch.zeros(num_heads) if offsets is None else offsets

    def fused(m: int, item: int) -> float:
        vals = [
            float(scale * queries[m, k] @ emb[item] + offsets[k])
            for k in range(num_heads)
            if mask[item, k] and (active is None or active[m, k])
        ]
        return max(vals) if vals else float("-inf")

    per_p: dict[int, list[float]] = {}
    for m in range(m_count):
        for p in range(target_ids.shape[1]):
            pos_id = int(target_ids[m, p])
            if not valid[m, p]:
                continue
            pos = fused(m, pos_id)
            if pos == float("-inf"):
                continue
            logits = [pos]
            for n in negatives[0].tolist():
                if n == pos_id or float(emb[pos_id] @ emb[n]) > thr:
                    continue
                logits.append(fused(m, n))
            per_p.setdefault(p, []).append(float(torch.logsumexp(torch.tensor(logits), 0) - pos))
    total = sum(float(w_p[p]) * sum(v) / len(v) for p, v in per_p.items())
    return total / sum(float(w_p[p]) for p in per_p)


@pytest.mark.parametrize("with_active", [False, True])
def test_fused_loss_matches_a_loop_reference(with_active):
    g = torch.Generator().manual_seed(0)
    num_items, heads, dim, horizon = 12, 4, 8, 2
    queries = F.normalize(torch.randn(5, heads, dim, generator=g), dim=-1)
    emb = F.normalize(torch.randn(num_items + 1, dim, generator=g), dim=-1)
    mask = torch.rand(num_items + 1, heads, generator=g) < 0.5
    mask[0] = False
    target_ids = torch.randint(0, num_items + 1, (5, horizon), generator=g)
    valid = target_ids > 0
    negatives = torch.randint(1, num_items + 1, (1, 9), generator=g)
    negatives[0, 0] = target_ids[0, 0].clamp(min=1)  # a negative equal to a positive is masked
    active = torch.rand(5, heads, generator=g) < 0.7 if with_active else None
    offsets = torch.randn(heads, generator=g)
    w_p = offset_weights(horizon, 0.7)
    out = fused_infonce_loss(
        queries, target_ids, valid, mask, lambda i: emb[i], negatives, 7.0, w_p, active, offsets, 0.9
    )
    ref = fused_loss_reference(
        queries, target_ids, valid, mask, emb, negatives, 7.0, w_p, active, offsets, 0.9
    )
    assert float(out.loss) == pytest.approx(ref, rel=1e-5, abs=1e-5)


def test_fused_loss_in_position_chunks_equals_one_chunk(monkeypatch):
    """Chunking the `(M, N, heads)` scores over positions changes neither the loss nor its gradients."""
    import ggr_hf.losses as losses

    g = torch.Generator().manual_seed(3)
    num_items, heads, dim = 20, 5, 8
    emb = F.normalize(torch.randn(num_items + 1, dim, generator=g), dim=-1)
    mask = torch.rand(num_items + 1, heads, generator=g) < 0.4
    mask[0] = False
    mask[1:, 0] |= ~mask[1:].any(-1)  # every item has a head
    target_ids = torch.randint(1, num_items + 1, (7, 1), generator=g)
    negatives = torch.randint(1, num_items + 1, (1, 6), generator=g)
    base = torch.randn(7, heads, dim, generator=g)
    offsets0 = torch.randn(heads, generator=g)

    def run():
        q = base.clone().requires_grad_(True)
        offsets = offsets0.clone().requires_grad_(True)
        out = fused_infonce_loss(
            F.normalize(q, dim=-1),
            target_ids,
            target_ids > 0,
            mask,
            lambda i: emb[i],
            negatives,
            5.0,
            torch.ones(1),
            None,
            offsets,
            0.99,
        )
        out.loss.backward()
        return out.loss.detach(), q.grad, offsets.grad

    whole = run()
    monkeypatch.setattr(losses, "_FUSED_CHUNK_ELEMENTS", 2 * 6 * heads)  # at most 2 positions per chunk
    chunked = run()
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b)


def test_model_loss_is_the_paper_loss_plus_the_weighted_fused_term():
    ids, ts = histories()
    targets = targets_of(ids, 2)
    paper = partition_model(PARTITION_X_TIME, calibration="none").train()
    fused = partition_model(PARTITION_X_TIME, calibration="fused", calibration_loss_weight=0.5).train()
    fused.load_state_dict(paper.state_dict())
    a = paper(ids, timestamps=ts, target_ids=targets, negative_seeds=[5])
    b = fused(ids, timestamps=ts, target_ids=targets, negative_seeds=[5])
    assert a.calibration_loss is None and b.calibration_loss is not None
    torch.testing.assert_close(b.loss, a.loss + 0.5 * b.calibration_loss)
    b.loss.backward()
    # With overlapping groups a target trains several heads: the term counts per main-loss pair (what
    # the trainer weights processes by), i.e. scaled by (targets with a head) / num_pairs.
    overlap = tiny_model(calibration="none").train()
    multi = tiny_model(calibration="fused").train()
    multi.load_state_dict(overlap.state_dict())
    targets = targets_of(ids, 1)
    a = overlap(ids, timestamps=ts, target_ids=targets, negative_seeds=[5])
    b = multi(ids, timestamps=ts, target_ids=targets, negative_seeds=[5])
    n_targets = int(((targets > 0) & (ids != 0).unsqueeze(-1)).sum())
    assert b.num_pairs > n_targets  # some targets are in two groups
    torch.testing.assert_close(b.loss, a.loss + n_targets / b.num_pairs * b.calibration_loss)
    # without an item-restricting prior the fused term is off: every head already scores everything
    plain = tiny_model(priors=[{"type": "temporal", "segments": 2, "horizon": 2}]).train()
    assert plain(ids, timestamps=ts, target_ids=targets).calibration_loss is None


def test_fused_offsets_are_trained_by_the_fused_term_only():
    ids, ts = histories()
    model = partition_model(calibration="fused_offsets").train()
    out = model(ids, timestamps=ts, target_ids=targets_of(ids, 1), negative_seeds=[1])
    grad = torch.autograd.grad(out.calibration_loss, model.head_offset)[0]
    assert float(grad.abs().sum()) > 0
    model.config.calibration_loss_weight = 0.0
    out = model(ids, timestamps=ts, target_ids=targets_of(ids, 1), negative_seeds=[1])
    assert out.calibration_loss is None
    assert torch.autograd.grad(out.loss, model.head_offset, allow_unused=True)[0] is None


def test_switch_loss_is_class_balanced_and_weighted():
    ids, ts = histories()
    targets = targets_of(ids, 1)
    model = partition_model(switch="state", calibration="none", switch_loss_weight=2.0).train()
    paper = partition_model(calibration="none").train()
    paper.load_state_dict(model.state_dict(), strict=False)
    out = model(ids, timestamps=ts, target_ids=targets, negative_seeds=[2])
    ref = paper(ids, timestamps=ts, target_ids=targets, negative_seeds=[2])
    torch.testing.assert_close(out.loss, ref.loss + 2.0 * out.switch_loss)
    # by hand: positions with a target, labels = the target's group, positives weigh n_neg / n_pos
    b, t = (targets[..., 0] > 0).nonzero(as_tuple=True)
    h = out.last_hidden_state[b, t]
    logits = model.switch(h)
    y = partition_membership()[targets[b, t, 0]].float()
    pos_weight = (len(y) - y.sum(0)) / y.sum(0).clamp(min=1)
    expected = F.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight)
    torch.testing.assert_close(out.switch_loss, expected)


def test_positive_mixin_adds_only_out_of_group_candidates_at_the_ratio():
    g = torch.Generator().manual_seed(0)
    candidates = torch.rand(40, 50, 2, 3, generator=g) < 0.8
    compat = candidates & (torch.rand(candidates.shape, generator=g) < 0.3)
    assert torch.equal(mix_in_positives(compat, candidates, 0.0), compat)
    assert torch.equal(mix_in_positives(compat, candidates, 1.0), compat | candidates)
    mixed = mix_in_positives(compat, candidates, 0.25, torch.Generator().manual_seed(1))
    assert (mixed >= compat).all() and not (mixed & ~candidates).any()
    added = (mixed & ~compat).sum() / (candidates & ~compat).sum()
    assert abs(float(added) - 0.25) < 0.02


def test_positive_mixin_in_the_model_trains_out_of_group_pairs_during_training_only():
    ids, ts = histories()
    targets = targets_of(ids, 1)
    model = partition_model(positive_mixin_ratio=1.0, calibration="none").train()
    paper = partition_model(calibration="none").train()
    valid = (targets > 0) & (ids != 0).unsqueeze(-1)
    # ratio 1: every head trains on every target (3 heads per target); ratio 0: one head per target
    assert model(ids, timestamps=ts, target_ids=targets).num_pairs == 3 * int(valid.sum())
    assert paper(ids, timestamps=ts, target_ids=targets).num_pairs == int(valid.sum())
    model.eval()
    assert model(ids, timestamps=ts, target_ids=targets).num_pairs == int(valid.sum())
    half = partition_model(positive_mixin_ratio=0.5, calibration="none").train()
    a = half(ids, timestamps=ts, target_ids=targets, negative_seeds=[4]).num_pairs
    assert a == half(ids, timestamps=ts, target_ids=targets, negative_seeds=[4]).num_pairs  # seeded
    assert int(valid.sum()) < a < 3 * int(valid.sum())


# ---------------------------------------------------------------------------------------------- saving


def test_save_load_round_trip_keeps_switch_and_calibration(tmp_path):
    model = partition_model(
        PARTITION_X_TIME,
        calibration="fused_offsets",
        switch="state_query",
        switch_gating=True,
        switch_threshold=0.4,
    )
    randomize_calibration(model, 3)
    model.save_pretrained(tmp_path)
    loaded = GGRForRecommendation.from_pretrained(tmp_path).eval()
    for name in ("calibration", "switch", "switch_gating", "switch_threshold", "positive_mixin_ratio"):
        assert getattr(loaded.config, name) == getattr(model.config, name), name
    torch.testing.assert_close(loaded.head_offset, model.head_offset)
    for a, b in zip(loaded.switch.parameters(), model.switch.parameters()):
        torch.testing.assert_close(a, b)
    ids, ts = histories()
    s1, h1 = model.score_items(ids, ts)
    s2, h2 = loaded.score_items(ids, ts)
    assert torch.equal(s1, s2) and torch.equal(h1, h2)
    p1, _ = model.switch_predictions(ids, ts)
    p2, _ = loaded.switch_predictions(ids, ts)
    assert torch.equal(p1, p2)


def test_switch_predictions_without_a_switch_is_an_input_error():
    ids, ts = histories()
    with pytest.raises(GGRInputError, match="no prior switch"):
        partition_model().switch_predictions(ids, ts)


# ---------------------------------------------------------------------------------------------- contract

BACKBONE = {"hidden_size": 16, "num_layers": 1, "num_attention_heads": 2, "max_seq_len": 12, "dropout": 0.0}


class TestCalibratedPartitionGGRContract(RecommenderTesterMixin):
    def make_model(self):
        torch.manual_seed(0)
        priors = [
            {"type": "item", "field": "cat", "values": ["a", "b", "c"]},
            {"type": "temporal", "segments": 2, "horizon": 2},
        ]
        config = GGRConfig(
            num_items=40,
            backbone_config=BACKBONE,
            priors=priors,
            composition="hierarchical",
            head_init="trunc_normal",
            calibration="fused_offsets",
            switch="state_query",
            switch_gating=True,
            positive_mixin_ratio=0.2,
        )
        model = GGRForRecommendation(config)
        model.set_item_groups("cat", partition_membership(40, 3))
        randomize_calibration(model, 0)
        return model.eval()
