"""DualVAE adapted to sequences: the shared recommender contract, shapes, the loss terms, KL annealing,
training/inference agreement, saving, config errors, and learning a planted pattern."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel

from ggr_hf.baselines.configuration_dualvae import DualVAEConfig
from ggr_hf.baselines.modeling_dualvae import DualVAEForRecommendation
from ggr_hf.errors import GGRConfigError, GGRInputError
from tests.recommender_tester import RecommenderTesterMixin

HSTU = {"hidden_size": 16, "num_layers": 1, "num_attention_heads": 2, "max_seq_len": 12, "dropout": 0.0}
EMBEDDING = {"hidden_size": 16, "max_seq_len": 12, "dropout": 0.0}
SMALL = {"latent_size": 8, "num_aspects": 3, "num_negatives": 16, "encoder_hidden_sizes": [16]}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(backbone: dict | None = None, backbone_type: str = "hstu", **fields) -> DualVAEForRecommendation:
    torch.manual_seed(0)
    config = DualVAEConfig(
        num_items=40, backbone_type=backbone_type, backbone_config=backbone or HSTU, **{**SMALL, **fields}
    )
    return DualVAEForRecommendation(config).eval()


def training_batch(model, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    targets = torch.zeros(*ids.shape, 1, dtype=torch.long)
    targets[:, :-1, 0] = ids[:, 1:]
    return {"input_ids": ids, "target_ids": targets}


class TestDualVAEContract(RecommenderTesterMixin):
    def make_model(self):
        return tiny()


class TestDualVAEOnItemEmbeddingContract(RecommenderTesterMixin):
    def make_model(self):
        return tiny(EMBEDDING, backbone_type="item_embedding", causal_pooling=False)


def test_shapes():
    model = tiny()
    ids, ts = RecommenderTesterMixin.histories(model)
    out = model(ids, ts, output_head_states=True)
    a, k = model.config.num_aspects, model.config.latent_size
    assert out.user_latents.shape == (*ids.shape, a, k)
    assert out.last_hidden_state.shape == (*ids.shape, model.config.hidden_size)
    assert out.loss is None
    assert model.item_table().shape == (model.config.num_items + 1, a * k)
    q, active = model.user_queries(ids, ts, None, None, None)
    assert q.shape == (ids.shape[0], 1, a * k) and active is None
    assert model.head_names == ["all aspects"] and model.num_heads == 1
    batch = training_batch(model, ids)
    out = model(**batch, negative_seeds=[0])
    assert out.num_pairs == int(((batch["target_ids"][..., 0] > 0) & (ids != 0)).sum())
    for term in (out.nce_loss, out.kl_loss, out.contrastive_loss, out.orthogonality_loss):
        assert term.dim() == 0 and torch.isfinite(term)
    expected = (
        out.nce_loss
        + out.kl_weight * out.kl_loss
        + model.config.contrastive_gamma * out.contrastive_loss
        + model.config.orthogonality_weight * out.orthogonality_loss
    )
    torch.testing.assert_close(out.loss.detach(), expected)


def test_user_groups_refused():
    model = tiny()
    ids, ts = RecommenderTesterMixin.histories(model)
    with pytest.raises(GGRInputError, match="no user priors"):
        model.score_items(ids, ts, user_groups=torch.zeros(ids.shape[0], 1, dtype=torch.long))
    with pytest.raises(GGRInputError, match="no user priors"):
        model(ids, user_groups=torch.zeros(ids.shape[0], 1, dtype=torch.long))


def test_kl_annealing_schedule(tmp_path):
    model = tiny(kl_beta=0.5, kl_anneal_steps=10)
    assert model.kl_weight(0) == 0.0
    assert model.kl_weight(5) == pytest.approx(0.25)
    assert model.kl_weight(10) == pytest.approx(0.5) and model.kl_weight(25) == pytest.approx(0.5)
    assert tiny(kl_beta=0.5, kl_anneal_steps=0).kl_weight(0) == 0.5

    ids, _ = RecommenderTesterMixin.histories(model)
    batch = training_batch(model, ids)
    # Evaluation-mode passes do not advance the schedule (and use the full weight, as the release).
    with torch.no_grad():
        out = model(**batch, negative_seeds=[0])
    assert int(model.kl_step) == 0 and out.kl_weight == 0.5
    model.train()
    for step in range(1, 4):
        out = model(**batch, negative_seeds=[step])
        assert int(model.kl_step) == step and out.kl_weight == pytest.approx(0.05 * step)
    model.eval()
    model.save_pretrained(tmp_path)
    for loader in (DualVAEForRecommendation, AutoModel):
        again = loader.from_pretrained(tmp_path)
        assert int(again.kl_step) == 3 and again.kl_weight() == pytest.approx(0.15)
    again.train()
    assert again(**batch, negative_seeds=[9]).kl_weight == pytest.approx(0.2)


@pytest.mark.parametrize("backbone_type", ["hstu", "item_embedding"])
def test_score_items_equals_training_scoring(backbone_type):
    """With the auxiliary terms off, the eval-mode loss is the sampled softmax over the very scores
    `score_items` gives each prefix of the history."""
    backbone = HSTU if backbone_type == "hstu" else EMBEDDING
    model = tiny(backbone, backbone_type, kl_beta=0.0, contrastive_gamma=0.0, orthogonality_weight=0.0)
    ids, ts = RecommenderTesterMixin.histories(model, batch=3)
    batch = training_batch(model, ids)
    with torch.no_grad():
        out = model(**batch, negative_seeds=[5], output_head_states=True)
    negatives = model.draw_negatives(None, model.config.num_negatives, ids.device, [5])[0]
    losses = []
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            target = int(batch["target_ids"][b, t, 0])
            if target == 0 or ids[b, t] == 0:
                continue
            scores, _ = model.score_items(ids[b : b + 1, : t + 1])
            neg = scores[0, negatives].masked_fill(negatives == target, float("-inf"))
            logits = torch.cat([scores[0, target : target + 1], neg])
            losses.append(torch.logsumexp(logits, 0) - logits[0])
    assert len(losses) == out.num_pairs
    torch.testing.assert_close(out.loss, torch.stack(losses).mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.nce_loss, out.loss)

    # The same scores from the forward's latents: per-aspect normalised, concatenated, scaled.
    last = (ids != 0).sum(1) - 1
    mu = out.user_latents[torch.arange(ids.shape[0]), last]
    query = torch.nn.functional.normalize(mu, dim=-1).flatten(-2) * model.current_logit_scale()
    scores, _ = model.score_items(ids)
    torch.testing.assert_close(scores[:, 1:], (query @ model.item_table().T)[:, 1:], rtol=1e-5, atol=1e-5)


def test_save_load_identical_scores(tmp_path):
    model = tiny(causal_pooling=False, activation="relu", encoder_hidden_sizes=[16, 8])
    ids, ts = RecommenderTesterMixin.histories(model)
    before, _ = model.score_items(ids, ts)
    model.save_pretrained(tmp_path)
    again = DualVAEForRecommendation.from_pretrained(tmp_path).eval()
    assert again.config.encoder_hidden_sizes == [16, 8] and again.config.causal_pooling is False
    torch.testing.assert_close(before, again.score_items(ids, ts)[0])


@pytest.mark.parametrize(
    "field, value",
    [
        ("latent_size", 0),
        ("num_aspects", 1.5),
        ("num_negatives", 0),
        ("kl_anneal_steps", -1),
        ("kl_beta", -0.1),
        ("contrastive_gamma", "high"),
        ("orthogonality_weight", None),
        ("aspect_temperature", 0.0),
        ("contrastive_temperature", -1.0),
        ("dropout", 1.0),
        ("latent_dropout", 2.0),
        ("activation", "gelu"),
        ("encoder_hidden_sizes", []),
        ("causal_pooling", "yes"),
        ("fusion", "sum"),
        ("exclude_history", 1),
        ("logit_scale_init", 0.0),
        ("logit_scale_max", 10.0),
    ],
)
def test_bad_config_fields_are_named(field, value):
    with pytest.raises(GGRConfigError, match=f"DualVAEConfig.{field}"):
        DualVAEConfig(num_items=10, backbone_config=HSTU, **{field: value})


def test_unknown_config_key_is_named():
    with pytest.raises(GGRConfigError, match="latent_dim"):
        DualVAEConfig(num_items=10, latent_dim=4)


def test_learns_a_planted_next_item():
    """Histories follow a fixed successor of each item; after a short training the loss has fallen and
    the planted successor ranks far above a random item's expected rank."""
    num_items = 30
    torch.manual_seed(0)
    successor = torch.randperm(num_items) + 1  # successor[i - 1] follows item i
    gen = torch.Generator().manual_seed(1)
    starts = torch.randint(1, num_items + 1, (64,), generator=gen)
    rows = [starts]
    for _ in range(9):
        rows.append(successor[rows[-1] - 1])
    ids = torch.stack(rows, dim=1)  # [64, 10]
    torch.manual_seed(0)
    model = DualVAEForRecommendation(
        DualVAEConfig(num_items=num_items, backbone_config=HSTU, **{**SMALL, "kl_anneal_steps": 50})
    )
    batch = training_batch(model, ids)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for step in range(60):
        loss = model(**batch, negative_seeds=[step]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    scores, _ = model.score_items(ids[:, :5])
    planted = successor[ids[:, 4] - 1]
    rank = (scores[:, 1:] > scores.gather(1, planted.unsqueeze(1))).sum(1).float()  # 0 = best
    assert float(rank.mean()) < num_items / 5  # random ranking: about num_items / 2
