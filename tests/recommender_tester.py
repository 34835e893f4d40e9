"""The shared tester every recommendation model passes: the scoring contract of
`ggr_hf.modeling_recommender` (GGR and the baselines alike).

A test class mixes in `RecommenderTesterMixin` and implements `make_model()`: a tiny model in eval
mode, built from a fixed seed, with `config.num_items >= 30` and `config.max_seq_len >= 8`. The
checks: the contract's fields; a finite loss with gradients and a positive pair count, the same for
the same negative seeds; score shapes; the exact fused top-k equals the dense ranking; excluded
items never come back; a user's scores do not depend on the rest of the batch or on right padding;
`recommend` returns distinct, non-history items each named by one of the model's queries; a
save / `from_pretrained` round trip (the class and `AutoModel`) gives identical scores from
safetensors only; and bad inputs raise `GGRInputError`.
"""

from __future__ import annotations

import torch
from transformers import AutoModel, PreTrainedModel

from ggr_hf.errors import GGRInputError
from ggr_hf.modeling_recommender import RecommenderMixin


class RecommenderTesterMixin:
    """Mix into a test class and implement `make_model`."""

    def make_model(self) -> RecommenderMixin:
        raise NotImplementedError

    # ------------------------------------------------------------------ inputs

    @staticmethod
    def histories(model, batch: int = 4, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids `(batch, max_seq_len)` with rows of decreasing length, and their times."""
        cfg = model.config
        gen = torch.Generator().manual_seed(seed)
        length = min(cfg.max_seq_len, 12)
        ids = torch.randint(1, cfg.num_items + 1, (batch, length), generator=gen)
        for row in range(1, batch):
            ids[row, max(1, length - 2 * row) :] = 0
        start = 1_600_000_000
        ts = (start + torch.cumsum(torch.randint(60, 5000, (batch, length), generator=gen), dim=1)) * (
            ids != 0
        )
        return ids, ts

    @staticmethod
    def batch(model, ids: torch.Tensor, ts: torch.Tensor) -> dict[str, torch.Tensor]:
        """A training batch as the collator builds it: each position's next item as its target."""
        horizon = model.config.horizon
        targets = torch.zeros(*ids.shape, horizon, dtype=torch.long)
        for p in range(horizon):
            shifted = torch.zeros_like(ids)
            shifted[:, : ids.shape[1] - 1 - p] = ids[:, 1 + p :]
            targets[..., p] = shifted
        nxt = torch.cat([ts[:, 1:], ts[:, -1:]], dim=1)
        return {
            "input_ids": ids,
            "timestamps": ts,
            "query_timestamps": torch.maximum(nxt, ts),
            "target_ids": targets,
        }

    # ------------------------------------------------------------------ the contract

    def test_contract_fields(self):
        model = self.make_model()
        assert isinstance(model, RecommenderMixin) and isinstance(model, PreTrainedModel)
        cfg = model.config
        for field in ("num_items", "max_seq_len", "horizon"):
            assert isinstance(getattr(cfg, field), int) and getattr(cfg, field) >= 1, field
        assert cfg.fusion in ("max", "mean")
        assert isinstance(cfg.exclude_history, bool)
        assert len(model.head_names) == model.num_heads >= 1
        assert all(isinstance(n, str) and n for n in model.head_names)

    def test_loss_gradients_and_seeded_negatives(self):
        model = self.make_model()
        ids, ts = self.histories(model)
        batch = self.batch(model, ids, ts)
        model.train()
        torch.manual_seed(0)
        out = model(**batch, negative_seeds=[3])
        assert out.loss.dim() == 0 and torch.isfinite(out.loss)
        assert isinstance(out.num_pairs, int) and out.num_pairs > 0
        out.loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads)
        model.eval()
        with torch.no_grad():
            torch.manual_seed(0)
            a = model(**batch, negative_seeds=[3]).loss
            torch.manual_seed(0)
            b = model(**batch, negative_seeds=[3]).loss
        torch.testing.assert_close(a, b)

    def test_score_shapes_and_exact_topk(self):
        model = self.make_model()
        ids, ts = self.histories(model)
        scores, heads = model.score_items(ids, ts)
        n = model.config.num_items + 1
        assert scores.shape == (ids.shape[0], n) and heads.shape == (ids.shape[0], n)
        dense, _ = model.score_items(ids, ts, dense=True)
        torch.testing.assert_close(scores, dense, rtol=1e-5, atol=1e-5)
        k = 7
        top_scores, top_items, top_heads = model.score_items(ids, ts, topk=k, exclude=ids)
        ref = dense.scatter(1, ids, float("-inf"))
        ref[:, 0] = float("-inf")
        ref_scores, _ = ref.topk(k, dim=1)
        torch.testing.assert_close(top_scores, ref_scores, rtol=1e-5, atol=1e-5)
        # the returned items carry the returned scores, and none of them is excluded
        torch.testing.assert_close(ref.gather(1, top_items), top_scores, rtol=1e-5, atol=1e-5)
        for row in range(ids.shape[0]):
            assert not set(top_items[row].tolist()) & set(ids[row][ids[row] != 0].tolist())
        assert bool(((top_heads >= 0) & (top_heads < model.num_heads)).all())

    def test_rows_independent_of_batch_and_padding(self):
        model = self.make_model()
        ids, ts = self.histories(model)
        together, _ = model.score_items(ids, ts)
        row = 2
        length = int((ids[row] != 0).sum())
        alone, _ = model.score_items(ids[row : row + 1, :length], ts[row : row + 1, :length])
        torch.testing.assert_close(together[row : row + 1], alone, rtol=1e-4, atol=1e-5)

    def test_recommend_names_a_query_and_excludes_history(self):
        model = self.make_model()
        history = [[1, 2, 3, 4], [5, 6]]
        rec = model.recommend(history, k=5)
        assert rec.item_ids.shape == (2, 5) and rec.scores.shape == (2, 5)
        for row, hist in enumerate(history):
            items = rec.item_ids[row].tolist()
            assert len(set(items)) == 5 and not set(items) & set(hist)
            assert all(1 <= i <= model.config.num_items for i in items)
            assert all(name in model.head_names for name in rec.head_names[row])
        assert bool((rec.scores[:, :-1] >= rec.scores[:, 1:]).all())

    def test_save_load_round_trip(self, tmp_path):
        model = self.make_model()
        ids, ts = self.histories(model)
        before, _ = model.score_items(ids, ts)
        model.save_pretrained(tmp_path)
        assert (tmp_path / "model.safetensors").is_file()
        assert not list(tmp_path.glob("*.bin"))
        for loader in (type(model), AutoModel):
            again = loader.from_pretrained(tmp_path).eval()
            assert type(again) is type(model)
            after, _ = again.score_items(ids, ts)
            torch.testing.assert_close(before, after)

    def test_bad_inputs_are_named(self):
        model = self.make_model()
        import pytest

        with pytest.raises(GGRInputError, match="k"):
            model.recommend([1, 2, 3], k=0)
        with pytest.raises(GGRInputError, match=str(model.config.num_items + 5)):
            model.recommend([1, model.config.num_items + 5], k=3)
        with pytest.raises(GGRInputError, match="k="):
            model.recommend([1, 2, 3], k=model.config.num_items)
