"""SASRec and the item-embedding encoder as ggr-hf backbones: the shared backbone and recommender
testers, causal attention, config validation, and a short training on planted data."""

from __future__ import annotations

import pytest
import torch

from ggr_hf.configuration_ggr import GGRConfig
from ggr_hf.errors import GGRConfigError
from ggr_hf.modeling_ggr import GGRForRecommendation
from ggr_hf.models import SHIPPED_BACKBONES, backbone_config_class, build_backbone
from ggr_hf.models.embedding import ItemEmbeddingConfig, ItemEmbeddingModel
from ggr_hf.models.sasrec import SASRecConfig, SASRecModel
from tests.models.backbone_tester import BackboneTesterMixin
from tests.recommender_tester import RecommenderTesterMixin

SASREC = {"hidden_size": 16, "num_layers": 2, "num_attention_heads": 2, "max_seq_len": 10, "dropout": 0.0}
EMBEDDING = {"hidden_size": 16, "max_seq_len": 10, "dropout": 0.0}


def tiny_sasrec(**overrides) -> SASRecModel:
    torch.manual_seed(0)
    return SASRecModel(SASRecConfig(num_items=30, **{**SASREC, **overrides})).eval()


def tiny_item_embedding(**overrides) -> ItemEmbeddingModel:
    torch.manual_seed(0)
    return ItemEmbeddingModel(ItemEmbeddingConfig(num_items=30, **{**EMBEDDING, **overrides})).eval()


class TestSASRecBackbone(BackboneTesterMixin):
    def make_backbone(self) -> SASRecModel:
        return tiny_sasrec()


class TestSASRecOneLayerGELUBackbone(BackboneTesterMixin):
    def make_backbone(self) -> SASRecModel:
        return tiny_sasrec(num_layers=1, num_attention_heads=4, intermediate_size=32, hidden_act="gelu")


class TestItemEmbeddingBackbone(BackboneTesterMixin):
    def make_backbone(self) -> ItemEmbeddingModel:
        return tiny_item_embedding()


class TestItemEmbeddingNoPositionsBackbone(BackboneTesterMixin):
    def make_backbone(self) -> ItemEmbeddingModel:
        return tiny_item_embedding(use_position_embeddings=False)


class TestPlainSASRecContract(RecommenderTesterMixin):
    def make_model(self) -> GGRForRecommendation:
        torch.manual_seed(0)
        config = GGRConfig(
            backbone_type="sasrec", backbone_config={**SASREC, "max_seq_len": 12}, num_items=40, priors=[]
        )
        return GGRForRecommendation(config).eval()


class TestPlainItemEmbeddingContract(RecommenderTesterMixin):
    def make_model(self) -> GGRForRecommendation:
        torch.manual_seed(0)
        config = GGRConfig(
            backbone_type="item_embedding",
            backbone_config={**EMBEDDING, "max_seq_len": 12},
            num_items=40,
            priors=[],
        )
        return GGRForRecommendation(config).eval()


def test_registered_and_built_through_auto_classes():
    assert {"sasrec", "item_embedding"} <= set(SHIPPED_BACKBONES)
    assert backbone_config_class("sasrec") is SASRecConfig
    assert backbone_config_class("item_embedding") is ItemEmbeddingConfig
    assert type(build_backbone(SASRecConfig(num_items=5, hidden_size=8))) is SASRecModel
    assert type(build_backbone(ItemEmbeddingConfig(num_items=5, hidden_size=8))) is ItemEmbeddingModel


def test_sasrec_attention_is_causal_item_by_item():
    model = tiny_sasrec()
    ids = torch.randint(1, 31, (1, 10), generator=torch.Generator().manual_seed(3))
    base = model(ids).last_hidden_state
    for t in range(9):
        changed = ids.clone()
        changed[0, t + 1] = ids[0, t + 1] % 30 + 1
        out = model(changed).last_hidden_state
        torch.testing.assert_close(out[0, : t + 1], base[0, : t + 1], atol=1e-5, rtol=1e-4)
        assert not torch.allclose(out[0, t + 1], base[0, t + 1])


def test_sasrec_ignores_time_and_mixes_positions():
    model = tiny_sasrec()
    ids = torch.tensor([[3, 4, 5, 6]])
    a = model(ids, timestamps=torch.tensor([[1, 2, 3, 4]])).last_hidden_state
    b = model(ids, timestamps=torch.tensor([[10, 10**5, 10**7, 10**9]])).last_hidden_state
    torch.testing.assert_close(a, b)
    # the last state reads the earlier items, unlike the item-embedding encoder's
    other = model(torch.tensor([[7, 4, 5, 6]])).last_hidden_state
    assert not torch.allclose(a[0, 3], other[0, 3])


def test_sasrec_all_padding_row_is_zero_not_nan():
    model = tiny_sasrec()
    model.train()  # attention dropout on as well
    out = model(torch.tensor([[0, 0, 0], [4, 5, 0]])).last_hidden_state
    assert torch.isfinite(out).all()
    assert torch.all(out[0] == 0) and torch.all(out[1, 2] == 0)


def test_item_embedding_states_are_the_items_own_embeddings():
    model = tiny_item_embedding(use_position_embeddings=False)
    ids = torch.tensor([[3, 9, 4, 0]])
    out = model(ids).last_hidden_state
    torch.testing.assert_close(out[0, :3], model.embed_items(ids[0, :3]))
    positioned = tiny_item_embedding()
    again = positioned(torch.tensor([[7, 9]])).last_hidden_state
    # no mixing across positions: item 9 at position 1 does not care what came before it
    torch.testing.assert_close(positioned(ids).last_hidden_state[0, 1], again[0, 1])


@pytest.mark.parametrize(
    ("config_class", "field", "value"),
    [
        (SASRecConfig, "num_layers", 0),
        (SASRecConfig, "hidden_size", 2.5),
        (SASRecConfig, "num_attention_heads", 3),  # does not divide hidden_size 64
        (SASRecConfig, "dropout", 1.0),
        (SASRecConfig, "hidden_act", "tanh"),
        (SASRecConfig, "layer_norm_eps", 0),
        (SASRecConfig, "max_seq_len", True),
        (ItemEmbeddingConfig, "use_position_embeddings", "yes"),
        (ItemEmbeddingConfig, "dropout", -0.1),
        (ItemEmbeddingConfig, "hidden_size", 0),
        (ItemEmbeddingConfig, "initializer_range", 0.0),
    ],
)
def test_bad_config_field_is_named(config_class, field, value):
    with pytest.raises(GGRConfigError, match=f"{config_class.__name__}.{field}"):
        config_class(num_items=10, **{field: value})


def test_unknown_config_field_is_named():
    with pytest.raises(GGRConfigError, match="num_blocks"):
        SASRecConfig(num_items=10, num_blocks=2)
    with pytest.raises(GGRConfigError, match="num_layers"):
        ItemEmbeddingConfig(num_items=10, num_layers=2)


def test_intermediate_size_defaults_to_hidden_size_and_survives_a_round_trip(tmp_path):
    config = SASRecConfig(num_items=10, hidden_size=24, num_attention_heads=3)
    assert config.intermediate_size == 24
    config.save_pretrained(tmp_path)
    assert SASRecConfig.from_pretrained(tmp_path).intermediate_size == 24


def planted_batch(num_items: int, batch: int, length: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Chains `s, s+1, s+2, ...` (wrapping around the catalogue): item i is always followed by i+1."""
    start = torch.randint(0, num_items, (batch, 1), generator=gen)
    ids = (start + torch.arange(length + 1)) % num_items + 1
    lengths = torch.randint(3, length + 1, (batch,), generator=gen)
    keep = torch.arange(length)[None] < lengths[:, None]
    inputs = ids[:, :length] * keep
    targets = (ids[:, 1:] * keep).unsqueeze(-1)
    ts = torch.cumsum(torch.full((batch, length), 60), dim=1) * keep
    return {"input_ids": inputs, "timestamps": ts, "target_ids": targets}


def test_plain_sasrec_learns_planted_next_item():
    torch.manual_seed(0)
    num_items, length = 30, 8
    config = GGRConfig(
        backbone_type="sasrec",
        backbone_config={"hidden_size": 32, "num_layers": 1, "num_attention_heads": 2, "max_seq_len": length},
        num_items=num_items,
        priors=[],
        num_negatives=10,
    )
    model = GGRForRecommendation(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    model.train()
    for _ in range(150):
        loss = model(**planted_batch(num_items, 32, length, gen)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10

    model.eval()
    test = planted_batch(num_items, 64, length, torch.Generator().manual_seed(1))
    ids = test["input_ids"]
    last = (ids != 0).sum(1) - 1
    planted = ids[torch.arange(len(ids)), last] % num_items + 1
    scores, _ = model.score_items(ids, dense=True)
    scores[:, 0] = float("-inf")
    rank = (scores > scores.gather(1, planted[:, None])).sum(1)  # 0 = ranked first
    # random ranking puts the planted item at rank 14.5 on average; learned, it comes first
    assert float((rank == 0).float().mean()) > 0.9
