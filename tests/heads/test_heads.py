import pytest
import torch
import torch.nn.functional as F

from ggr_hf.modeling_ggr import GGRForRecommendation
from tests.conftest import membership, tiny_config, tiny_model
from tests.ggr_reference import heads_forward_reference

TWO_PRIORS = [
    {"type": "temporal", "segments": 2, "horizon": 4},
    {"type": "item", "field": "genres", "values": ["a", "b", "c"]},
]


def test_fresh_heads_equal_the_backbone_output(batch):
    ids, ts = batch
    model = tiny_model(perturb=False)
    out = model(ids, timestamps=ts, output_head_states=True)
    expected = F.normalize(out.last_hidden_state, dim=-1).unsqueeze(2).expand_as(out.head_states)
    mask = (ids != 0)[:, :, None, None].expand_as(out.head_states)
    assert torch.allclose(out.head_states[mask], expected[mask], atol=1e-6)
    for block in model.heads.levels[0]:
        assert torch.count_nonzero(block.adapter.weight) == 0
        assert block.adapter.bias is None


def test_fresh_heads_are_identity_after_loading_a_checkpoint_without_them(tmp_path, batch):
    ids, ts = batch
    plain = tiny_model(priors=[], perturb=False)
    plain.save_pretrained(tmp_path)
    # Build a prior model whose backbone weights come from the plain checkpoint: head keys are missing.
    config = tiny_config()
    model = GGRForRecommendation.from_pretrained(tmp_path, config=config, strict=False).eval()
    for block in model.heads.levels[0]:
        assert torch.count_nonzero(block.adapter.weight) == 0
    h = model(ids, timestamps=ts, output_head_states=True)
    assert torch.allclose(h.head_states[:, :, 0], F.normalize(h.last_hidden_state, dim=-1), atol=1e-6)


def test_truncated_normal_init_is_the_release_option():
    model = GGRForRecommendation(tiny_config(head_init="trunc_normal", head_init_std=0.02))
    w = model.heads.levels[0][0].adapter.weight
    assert torch.count_nonzero(w) > 0 and w.abs().max() <= 0.04 + 1e-6


def test_heads_are_independent_modules():
    model = tiny_model()
    blocks = list(model.heads.levels[0])
    assert len({id(b) for b in blocks}) == len(blocks) == 3
    assert len({b.adapter.weight.data_ptr() for b in blocks}) == 3


@pytest.mark.parametrize(
    ("composition", "num_heads", "num_blocks", "num_embeddings"),
    [("multiplicative", 6, 6, 0), ("hierarchical", 6, 2 + 6, 1), ("additive", 5, 5, 0)],
)
def test_compositions_head_and_parameter_counts(composition, num_heads, num_blocks, num_embeddings):
    model = tiny_model(priors=TWO_PRIORS, composition=composition)
    d = model.config.hidden_size
    assert model.num_heads == num_heads
    blocks = sum(len(level) for level in model.heads.levels)
    assert blocks == num_blocks
    assert len(model.heads.level_embeddings) == num_embeddings
    params = sum(p.numel() for p in model.heads.parameters())
    assert params == num_blocks * d * d + num_embeddings * 3 * d
    if composition != "additive":
        assert model.head_names[0] == "short-term / a" and model.head_names[-1] == "long-term / c"


def test_hierarchical_parents_are_shared_by_their_children():
    model = tiny_model(priors=TWO_PRIORS, composition="hierarchical")
    h = torch.randn(5, model.config.hidden_size)
    base = model.heads(h)
    with torch.no_grad():
        model.heads.levels[0][0].adapter.weight.add_(0.5)  # the "short-term" parent
    out = model.heads(h)
    changed = [not torch.allclose(base[:, k], out[:, k]) for k in range(model.num_heads)]
    # Heads 0-2 are short-term / {a, b, c}; heads 3-5 long-term.
    assert changed == [True, True, True, False, False, False]


@pytest.mark.parametrize("composition", ["multiplicative", "hierarchical", "additive"])
def test_batched_selected_and_reference_heads_agree(composition):
    model = tiny_model(priors=TWO_PRIORS, composition=composition)
    with torch.no_grad():
        for emb in model.heads.level_embeddings:
            emb.weight.normal_()
    h = torch.randn(7, model.config.hidden_size)
    dense = model.heads(h)
    assert torch.allclose(dense, heads_forward_reference(model.heads, h), atol=1e-5)
    k = torch.randint(0, model.num_heads, (7,))
    assert torch.allclose(model.heads.forward_selected(h, k), dense[torch.arange(7), k], atol=1e-5)


def test_head_item_mask_follows_membership():
    model = tiny_model()
    mask = model.head_item_mask()
    expected = membership().clone()
    expected[0] = False
    assert torch.equal(mask, expected)


def test_empty_group_is_an_error():
    model = GGRForRecommendation(tiny_config())
    mem = membership()
    mem[:, 1] = False
    with pytest.raises(ValueError, match="groups with no items: \\['b'\\]"):
        model.set_item_groups("genres", mem)
