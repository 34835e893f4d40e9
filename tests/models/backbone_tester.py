"""The shared tester every backbone passes: the contract of `ggr_hf.models.backbone`.

A test class mixes in `BackboneTesterMixin` and implements `make_backbone()` (a tiny model in eval
mode, dropout off, built from a fixed seed). The checks: it subclasses `GGRBackboneModel` and its
config carries `num_items`, `hidden_size`, `max_seq_len`; output shapes and unit norms; padded
positions are zero; causality; a user's states do not depend on the other rows of the batch nor on
extra right padding; too-long inputs are an error; `all_item_embeddings` agrees with `embed_items`;
a save / `AutoModel.from_pretrained` round trip gives identical outputs; and the backbone carries
GGR heads (loss, save, reload, recommend) when named in a `GGRConfig`.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel

from ggr_hf.configuration_ggr import GGRConfig
from ggr_hf.errors import GGRInputError
from ggr_hf.modeling_ggr import GGRForRecommendation
from ggr_hf.models.backbone import GGRBackboneModel


class BackboneTesterMixin:
    """Mix into a test class and implement `make_backbone`."""

    def make_backbone(self) -> GGRBackboneModel:
        raise NotImplementedError

    # ------------------------------------------------------------------ inputs

    def inputs(self, model: GGRBackboneModel, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids `(batch, max_seq_len)` with rows of decreasing length, and their times."""
        cfg = model.config
        gen = torch.Generator().manual_seed(1)
        length = cfg.max_seq_len
        ids = torch.randint(1, cfg.num_items + 1, (batch, length), generator=gen)
        for row in range(1, batch):
            ids[row, max(1, length - 2 * row) :] = 0
        ts = torch.cumsum(torch.randint(1, 5000, (batch, length), generator=gen), dim=1) * (ids != 0)
        return ids, ts

    @staticmethod
    def states(model: GGRBackboneModel, ids: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(ids, timestamps=ts).last_hidden_state

    # ------------------------------------------------------------------ the contract

    def test_contract_and_config_fields(self):
        model = self.make_backbone()
        assert isinstance(model, GGRBackboneModel)
        for field in ("num_items", "hidden_size", "max_seq_len"):
            assert isinstance(getattr(model.config, field), int), field
        assert isinstance(type(model).item_table_is_cheap, bool)

    def test_shapes_norms_and_zero_padding(self):
        model = self.make_backbone()
        ids, ts = self.inputs(model)
        out = self.states(model, ids, ts)
        assert out.shape == (*ids.shape, model.config.hidden_size)
        real = ids != 0
        torch.testing.assert_close(out[real].norm(dim=-1), torch.ones(int(real.sum())), atol=1e-4, rtol=0)
        assert torch.all(out[~real] == 0)
        with torch.no_grad():
            table = model.all_item_embeddings()
            some = model.embed_items(ids)
        assert table.shape == (model.config.num_items + 1, model.config.hidden_size)
        assert some.shape == (*ids.shape, model.config.hidden_size)
        torch.testing.assert_close(some[real], table[ids[real]], atol=1e-5, rtol=1e-4)

    def test_inputs_embeds_are_the_history_rows(self):
        # Backbones that declare `accepts_inputs_embeds` give the same states from the history's rows
        # looked up by the caller (GGR's one-lookup training step) and refuse rows of another shape.
        model = self.make_backbone()
        if not type(model).accepts_inputs_embeds:
            pytest.skip(f"{type(model).__name__} takes no inputs_embeds")
        ids, ts = self.inputs(model)
        with torch.no_grad():
            rows = model.get_input_embeddings()(ids)
            given = model(ids, timestamps=ts, inputs_embeds=rows).last_hidden_state
            torch.testing.assert_close(given, self.states(model, ids, ts))
            with pytest.raises(GGRInputError, match="inputs_embeds"):
                model(ids, timestamps=ts, inputs_embeds=rows[:, :-1])

    def test_causal(self):
        model = self.make_backbone()
        ids, ts = self.inputs(model, batch=1)
        cut = ids.shape[1] // 2
        changed = ids.clone()
        changed[0, cut:] = (changed[0, cut:] % model.config.num_items) + 1  # other real items
        a, b = self.states(model, ids, ts), self.states(model, changed, ts)
        torch.testing.assert_close(a[0, :cut], b[0, :cut], atol=1e-5, rtol=1e-4)
        assert not torch.allclose(a[0, cut:], b[0, cut:])

    def test_rows_independent_of_batch_and_right_padding(self):
        model = self.make_backbone()
        ids, ts = self.inputs(model)
        batch = self.states(model, ids, ts)
        for row in range(len(ids)):
            n = int((ids[row] != 0).sum())
            alone = self.states(model, ids[row : row + 1, :n], ts[row : row + 1, :n])
            torch.testing.assert_close(batch[row, :n], alone[0], atol=1e-5, rtol=1e-4)

    def test_too_long_input_is_an_error(self):
        model = self.make_backbone()
        ids = torch.ones(1, model.config.max_seq_len + 1, dtype=torch.long)
        try:
            model(ids)
        except ValueError as err:
            assert "max_seq_len" in str(err)
        else:
            raise AssertionError("an input longer than max_seq_len must raise ValueError")

    def test_save_load_round_trip(self, tmp_path):
        model = self.make_backbone()
        ids, ts = self.inputs(model)
        model.save_pretrained(tmp_path)
        assert (tmp_path / "model.safetensors").is_file()
        loaded = AutoModel.from_pretrained(tmp_path).eval()
        assert type(loaded) is type(model)
        torch.testing.assert_close(self.states(loaded, ids, ts), self.states(model, ids, ts))
        with torch.no_grad():
            torch.testing.assert_close(loaded.all_item_embeddings(), model.all_item_embeddings())

    def test_carries_ggr_heads(self, tmp_path):
        backbone = self.make_backbone()
        priors = [{"type": "temporal", "segments": 2, "horizon": 2}]
        config = GGRConfig(
            backbone_type=backbone.config.model_type,
            backbone_config=backbone.config,
            num_items=backbone.config.num_items,
            priors=priors,
            num_negatives=4,
        )
        model = GGRForRecommendation(config)
        model.backbone.load_state_dict(backbone.state_dict())
        ids, ts = self.inputs(model.backbone)
        targets = torch.stack([ids.roll(-1, 1), ids.roll(-2, 1)], dim=-1) * (ids != 0).unsqueeze(-1)
        loss = model(ids, timestamps=ts, target_ids=targets).loss
        assert torch.isfinite(loss)
        model.eval().save_pretrained(tmp_path)
        again = GGRForRecommendation.from_pretrained(tmp_path).eval()
        a = model.recommend(ids[:1, :3].tolist(), k=3)
        b = again.recommend(ids[:1, :3].tolist(), k=3)
        assert a.item_ids.tolist() == b.item_ids.tolist() and a.head_names == b.head_names
