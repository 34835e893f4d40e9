import pytest
import torch

from ggr_hf.modeling_ggr import GGRForRecommendation
from tests.conftest import tiny_model

PRIOR_SETS = {
    "none": [],
    "item": None,
    "temporal+item": [
        {"type": "temporal", "segments": 2, "horizon": 2},
        {"type": "item", "field": "genres", "values": ["a", "b", "c"]},
    ],
}


@pytest.mark.parametrize("name", list(PRIOR_SETS))
def test_save_pretrained_from_pretrained_gives_identical_scores(tmp_path, batch, name):
    ids, ts = batch
    model = tiny_model(priors=PRIOR_SETS[name])
    with torch.no_grad():
        model.logit_scale.fill_(13.0)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))
    loaded = GGRForRecommendation.from_pretrained(tmp_path).eval()
    s1, h1 = model.score_items(ids, ts)
    s2, h2 = loaded.score_items(ids, ts)
    assert torch.equal(s1, s2) and torch.equal(h1, h2)
    assert loaded.head_names == model.head_names
    assert torch.equal(loaded.head_item_mask(), model.head_item_mask())


def test_zero_priors_is_plain_hstu(batch):
    ids, ts = batch
    model = tiny_model(priors=[])
    assert model.num_heads == 1 and model.head_names == ["backbone"]
    assert sum(p.numel() for p in model.heads.parameters()) == 0
    scores, heads = model.score_items(ids, ts)
    h = model._last_states(ids, ts, None)
    expected = (torch.nn.functional.normalize(h, dim=-1) @ model.backbone.all_item_embeddings().T) * 20.0
    assert torch.allclose(scores[:, 1:], expected[:, 1:], atol=1e-5)
    assert (heads[:, 1:] == 0).all()


def test_forward_returns_typed_output_with_loss(batch):
    ids, ts = batch
    model = tiny_model().train()
    out = model(ids, timestamps=ts, target_ids=torch.roll(ids, -1, 1))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.last_hidden_state.shape == (3, 8, 16)
    assert out.head_states is None  # not built during training unless asked for
    out.loss.backward()
    assert model.logit_scale.grad is not None


def test_temporal_segment_heads_see_only_their_offsets(batch):
    ids, ts = batch
    model = tiny_model(priors=[{"type": "temporal", "segments": 2, "horizon": 4}])
    targets = torch.randint(1, 21, (3, 8, 4))
    compat = model.compatibility(targets, torch.ones_like(targets, dtype=torch.bool))
    # offsets 0-1 -> short-term (head 0), offsets 2-3 -> long-term (head 1)
    assert compat[..., :2, 0].all() and not compat[..., 2:, 0].any()
    assert compat[..., 2:, 1].all() and not compat[..., :2, 1].any()


def test_event_heads_positives_are_only_their_event_type():
    model = tiny_model(priors=[{"type": "event", "values": ["view", "cart", "buy"]}])
    targets = torch.randint(1, 21, (2, 3, 1))
    events = torch.tensor([[[0], [2], [1]], [[1], [1], [0]]])
    compat = model.compatibility(targets, torch.ones_like(targets, dtype=torch.bool), target_event_ids=events)
    assert torch.equal(compat[..., 0, :].long().argmax(-1), events[..., 0])
    assert compat.sum(-1).eq(1).all()
    # honest evaluation: every event head scores; oracle: only the true event's head
    assert model.head_active() is None
    oracle = model.head_active(target_event=torch.tensor([2, 0]))
    assert oracle.tolist() == [[False, False, True], [True, False, False]]


def test_user_prior_selects_only_the_users_heads(batch):
    ids, ts = batch
    model = tiny_model(priors=[{"type": "user", "field": "occupation", "values": ["x", "y"]}])
    groups = torch.tensor([[1], [0], [1]])
    scores, heads = model.score_items(ids, ts, user_groups=groups)
    finite = torch.isfinite(scores)
    assert torch.equal(heads[finite], groups.expand_as(heads)[finite])
    with pytest.raises(ValueError, match="user_groups"):
        model.score_items(ids, ts)


def test_unseen_combinations_train_without_nan(batch):
    ids, ts = batch
    priors = [
        {"type": "item", "field": "genres", "values": ["a", "b", "c"]},
        {"type": "temporal", "segments": 2, "horizon": 2},
    ]
    for composition in ("multiplicative", "hierarchical", "additive"):
        model = tiny_model(priors=priors, composition=composition).train()
        targets = torch.zeros(3, 8, 2, dtype=torch.long)
        targets[0, :3, 0] = 2  # only "a / short-term" ever has a positive
        out = model(ids, timestamps=ts, target_ids=targets)
        assert torch.isfinite(out.loss)
        out.loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), name
        scores, _ = model.score_items(ids, ts)
        assert not torch.isnan(scores).any()


@pytest.mark.parametrize("fusion", ["max", "mean"])
def test_recommend_is_the_topk_of_the_full_fused_scores(batch, fusion):
    priors = [
        {"type": "temporal", "segments": 2, "horizon": 2},
        {"type": "item", "field": "genres", "values": ["a", "b", "c"]},
        {"type": "user", "field": "age", "values": ["young", "old"]},
    ]
    model = tiny_model(priors, composition="additive")
    ids, ts = batch
    groups = torch.tensor([[0], [1], [0]])
    rec = model.recommend(ids, k=6, user_groups=groups, fusion=fusion)
    scores, heads = model.score_items(ids, ts * 0, user_groups=groups, exclude=ids, fusion=fusion)
    top, items = scores.topk(6, dim=1)
    torch.testing.assert_close(rec.scores, top)
    assert torch.equal(rec.item_ids, items) and torch.equal(rec.head_index, heads.gather(1, items))


def test_fusion_index_is_rebuilt_after_the_weights_change(batch):
    model = tiny_model()
    ids, _ = batch
    first = model.fusion_index()
    assert model.fusion_index() is first  # cached while nothing changed
    before = model.recommend(ids, k=5)
    with torch.no_grad():
        model.backbone.item_embeddings.weight.mul_(-1.0)  # an in-place change, as an optimizer step makes
    assert model.fusion_index() is not first
    after = model.recommend(ids, k=5)
    scores, _ = model.score_items(ids, exclude=ids)
    assert torch.equal(after.item_ids, scores.topk(5, dim=1).indices)
    assert not torch.equal(before.item_ids, after.item_ids)


def test_training_mask_is_kept_between_steps_and_follows_the_item_groups(batch):
    ids, ts = batch
    model = tiny_model().train()
    targets = torch.roll(ids, -1, 1)
    first = model._training_mask()
    assert model._training_mask() is first  # kept while the item groups are unchanged
    loss = model(ids, timestamps=ts, target_ids=targets).loss
    # New groups (as set_item_groups or load_state_dict write them, in place): the loss must use them.
    name = model.config.priors[model.layout.item_prior_indices[0]]["name"]
    model.set_item_groups(name, model.item_groups.membership(0).roll(1, dims=1))
    assert torch.equal(model._training_mask(), model.head_item_mask())
    assert not torch.equal(model._training_mask(), first)
    torch.manual_seed(0)
    cached = model(ids, timestamps=ts, target_ids=targets, negative_seeds=[5]).loss
    model._training_mask_cache = None
    torch.manual_seed(0)
    rebuilt = model(ids, timestamps=ts, target_ids=targets, negative_seeds=[5]).loss
    assert torch.equal(cached, rebuilt) and not torch.equal(cached, loss)
    # The kept negative pool draws what a pool built from a fresh mask draws.
    kept = model._training_negatives(model._training_mask(), torch.device("cpu"), [5, 6])
    fresh = model._training_negatives(model.head_item_mask(), torch.device("cpu"), [5, 6])
    assert torch.equal(kept, fresh)
    state = tiny_model().state_dict()
    model.load_state_dict(state)
    assert torch.equal(model._training_mask(), tiny_model().head_item_mask())


@pytest.mark.parametrize("calibration", ["none", "fused"])
def test_one_lookup_of_the_steps_items_gives_the_same_loss_and_gradients(calibration):
    # A catalogue larger than the step's training pairs takes the one-lookup path
    # (`_step_item_embeddings`, the history passed to the backbone as `inputs_embeds`); it must train
    # exactly as looking every id up on its own does.
    from tests.conftest import GROUPS, tiny_config

    torch.manual_seed(0)
    model = GGRForRecommendation(tiny_config(num_items=400, calibration=calibration)).train()
    groups = torch.zeros(401, len(GROUPS), dtype=torch.bool)
    ids = torch.arange(401)
    groups[1:, 0] = True  # multi-label: every item in "a", and in "b" or "c"
    groups[(ids % 3 == 0) & (ids > 0), 1] = True
    groups[(ids % 3 != 0), 2] = True
    model.set_item_groups(model.config.priors[0]["name"], groups)
    gen = torch.Generator().manual_seed(1)
    inputs = dict(
        input_ids=torch.randint(1, 401, (2, 8), generator=gen),
        target_ids=torch.randint(1, 401, (2, 8, 1), generator=gen),
        negative_seeds=[7],
    )
    calls = []
    original = model._step_item_embeddings

    def counted(*args):
        embed, inputs_embeds = original(*args)
        calls.append((embed.__name__, None if inputs_embeds is None else tuple(inputs_embeds.shape)))
        return embed, inputs_embeds

    model._step_item_embeddings = counted
    loss = model(**inputs).loss
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    assert calls == [("embed_step", (2, 8, 16))]  # one lookup, the history's rows included
    # The reference: every use looks its ids up itself, the backbone its history too.
    model._step_item_embeddings = lambda *args: (model.backbone.embed_items, None)
    reference = model(**inputs).loss
    reference_grads = torch.autograd.grad(reference, list(model.parameters()), allow_unused=True)
    assert torch.allclose(loss, reference, atol=1e-6)
    for g, r in zip(grads, reference_grads, strict=True):
        assert (g is None) == (r is None)
        if g is not None:
            assert torch.allclose(g, r, atol=1e-6)
