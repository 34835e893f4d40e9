"""`GGRForRecommendation`: a generative recommender backbone plus prior-conditioned heads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ggr_hf.configuration_ggr import GGRConfig
from ggr_hf.configuration_utils import register_model_type
from ggr_hf.errors import GGRDataError, GGRInputError
from ggr_hf.heads.adapter import GGRGroupEmbedding, GGRHeads, GGRZeroLinear
from ggr_hf.heads.layout import HeadLayout, build_head_layout
from ggr_hf.heads.switch import GGRPriorSwitch, switch_loss, switch_targets
from ggr_hf.hub.io import check_save_target
from ggr_hf.hub.loading import load_ggr, save_heads
from ggr_hf.hub.push import push_model_to_hub
from ggr_hf.losses import fused_infonce_loss, infonce_loss, mix_in_positives, negative_pool, offset_weights
from ggr_hf.modeling_inputs import user_groups_tensor
from ggr_hf.modeling_recommender import Recommendation, RecommenderMixin
from ggr_hf.models import build_backbone, register_backbone_models

__all__ = ["GGRForRecommendation", "GGRItemGroups", "GGROutput", "GGRPreTrainedModel", "Recommendation"]


@dataclass
class GGROutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): the weighted multi-head InfoNCE loss,
            returned when `target_ids` are given.
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`):
            backbone states `h_t`.
        head_states (`torch.FloatTensor` of shape `(batch_size, seq_len, num_heads, hidden_size)`):
            L2-normalised head queries `q_k`.
        num_pairs (`int`): number of (position, offset, head) triples the loss was computed on.
        calibration_loss (`torch.FloatTensor` of shape `()`, *optional*): the fused term (unweighted),
            with `calibration` `"fused"` / `"fused_offsets"` and an item-restricting prior.
        switch_loss (`torch.FloatTensor` of shape `()`, *optional*): the prior switch's loss (unweighted).
    """

    loss: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    head_states: torch.FloatTensor | None = None
    num_pairs: int | None = None
    calibration_loss: torch.FloatTensor | None = None
    switch_loss: torch.FloatTensor | None = None


# Added to the trainer's negative seeds for the other random draws of a step, so that each draw is a
# function of the step (reproducible) but none repeats another's stream.
_FUSED_NEGATIVE_SEED_SHIFT = 1_000_003
_MIXIN_SEED_SHIFT = 2_000_003


class GGRItemGroups(nn.Module):
    """Item-to-group membership of each item-restricting prior (persistent buffers, saved with the model)."""

    def __init__(self, num_items: int, group_sizes: list[int]):
        super().__init__()
        self.num_priors = len(group_sizes)
        for j, size in enumerate(group_sizes):
            self.register_buffer(f"prior_{j}", torch.zeros(num_items + 1, size, dtype=torch.bool))

    def membership(self, j: int) -> torch.Tensor:
        """`torch.BoolTensor [num_items + 1, num_groups_j]`."""
        return getattr(self, f"prior_{j}")


class GGRPreTrainedModel(PreTrainedModel):
    config_class = GGRConfig
    base_model_prefix = "ggr"
    main_input_name = "input_ids"

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, GGRZeroLinear):
            if self.config.head_init == "zero":
                init.zeros_(module.weight)
            else:
                # Truncated at two standard deviations; torch's default bounds (+-2 absolute), which
                # the release inherits, would truncate nothing at std 0.02.
                std = float(self.config.head_init_std)
                init.trunc_normal_(module.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, GGRGroupEmbedding):
            init.zeros_(module.weight)
        elif isinstance(module, GGRForRecommendation):
            init.constant_(module.logit_scale, float(self.config.logit_scale_init))
            if module.head_offset is not None:
                init.zeros_(module.head_offset)
        elif isinstance(module, GGRItemGroups):
            return  # data, not weights: set by `set_item_groups` or loaded from the checkpoint
        else:
            super()._init_weights(module)


class GGRForRecommendation(RecommenderMixin, GGRPreTrainedModel):
    """A backbone (HSTU, ...) with one adapter head per prior value, trained with compatibility masks,
    in-group negatives and weighted multi-step losses, fused by max score at inference.

    With no priors it is the plain backbone trained with catalogue-wide negatives: the baseline.
    """

    def __init__(self, config: GGRConfig):
        super().__init__(config)
        self.layout: HeadLayout = build_head_layout(config.priors, config.composition)
        # The composite-model idiom: the backbone is whatever AutoModel builds for the sub-config.
        self.backbone = build_backbone(config.get_backbone_config())
        self.heads = GGRHeads(self.layout, config.hidden_size, bias=config.head_bias)
        group_sizes = [len(config.priors[i]["values"]) for i in self.layout.item_prior_indices]
        self.item_groups = GGRItemGroups(config.num_items, group_sizes)
        self.logit_scale = nn.Parameter(
            torch.tensor(float(config.logit_scale_init)), requires_grad=bool(config.learnable_logit_scale)
        )
        # Calibration of max fusion (see `GGRConfig.calibration`): learned per-head score offsets, and
        # the prior switch (one classifier per item group).
        self.head_offset = None
        if config.calibration == "fused_offsets":
            self.head_offset = nn.Parameter(torch.zeros(self.layout.num_heads))
        self.switch = None
        if config.switch != "none":
            self.switch = GGRPriorSwitch(
                self.layout, group_sizes, config.hidden_size, use_query=config.switch == "state_query"
            )
        # The head layout (each head's value in each prior) is derived from the config, not a
        # weight or buffer: it is rebuilt exactly by `__init__` and never needs restoring after load.
        self._head_values_on: dict[torch.device, torch.Tensor] = {}
        self._training_mask_cache: tuple[tuple, torch.Tensor, tuple] | None = None
        self.post_init()

    # ------------------------------------------------------------------ Hub: loading, heads, push

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, heads=None, **kwargs):
        """Loads a full GGR model, a heads-only artifact (with the base it records), or a backbone /
        full model plus `heads=...` (see [`ggr_hf.hub.loading.load_ggr`]). Missing or unexpected keys are
        errors unless `strict=False`; heads on another item vocabulary or hidden size raise."""
        return load_ggr(pretrained_model_name_or_path, *model_args, heads=heads, model_class=cls, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, refusing a path that is a file (transformers only logs
        it and returns without saving)."""
        check_save_target(save_directory)
        return super().save_pretrained(save_directory, *args, **kwargs)

    def save_heads(self, save_directory, **kwargs):
        """Writes the heads-only artifact (no backbone file); see [`ggr_hf.hub.loading.save_heads`]."""
        return save_heads(self, save_directory, **kwargs)

    def push_to_hub(self, repo_id: str, *, heads_only: bool = False, **kwargs):
        """Uploads the model (or its heads only) with its model card; see
        [`ggr_hf.hub.push.push_model_to_hub`] (`private`, `token`, `revision`, `commit_message`, ...)."""
        return push_model_to_hub(self, repo_id, heads_only=heads_only, **kwargs)

    # ------------------------------------------------------------------ priors and compatibility

    @property
    def head_names(self) -> list[str]:
        return list(self.layout.names)

    @property
    def num_heads(self) -> int:
        return self.layout.num_heads

    def set_item_groups(self, prior_name: str, membership: torch.Tensor) -> None:
        """Stores which items belong to each group of an item-restricting prior.

        Args:
            prior_name (`str`): the prior's `name` in the config.
            membership (`torch.BoolTensor` of shape `(num_items + 1, num_groups)`): row 0 is padding.
        """
        names = [self.config.priors[i]["name"] for i in self.layout.item_prior_indices]
        if prior_name not in names:
            raise GGRInputError(f"no item-restricting prior named {prior_name!r}; the model has {names}")
        j = names.index(prior_name)
        buf = self.item_groups.membership(j)
        if tuple(membership.shape) != tuple(buf.shape):
            raise GGRInputError(
                f"membership for prior {prior_name!r} has shape {tuple(membership.shape)}, expected {tuple(buf.shape)}"
            )
        empty = (~membership[1:].any(0)).nonzero(as_tuple=True)[0].tolist()
        if empty:
            values = self.config.priors[self.layout.item_prior_indices[j]]["values"]
            raise GGRDataError(f"prior {prior_name!r}: groups with no items: {[values[e] for e in empty]}")
        buf.copy_(membership.to(buf.device, torch.bool))

    def head_values(self, device: torch.device | None = None) -> torch.Tensor:
        """`torch.LongTensor [num_heads, num_priors]`: each head's value in each prior (-1: any),
        on `device` (default: the model's)."""
        device = torch.device(device) if device is not None else self.logit_scale.device
        if device not in self._head_values_on:
            self._head_values_on[device] = self.layout.head_values.to(device)
        return self._head_values_on[device]

    def head_item_mask(self) -> torch.Tensor:
        """`torch.BoolTensor [num_items + 1, num_heads]`: the items each head may score (Omega_k)."""
        num_rows = self.config.num_items + 1
        device = self.logit_scale.device
        mask = torch.ones(num_rows, self.num_heads, dtype=torch.bool, device=device)
        values = self.head_values(device)
        for j, i in enumerate(self.layout.item_prior_indices):
            groups = values[:, i]  # [H]
            member = self.item_groups.membership(j)[:, groups.clamp(min=0)]  # [I+1, H]
            mask &= member | (groups < 0).unsqueeze(0)
        mask[0] = False
        return mask

    def _training_mask(self) -> torch.Tensor:
        """`head_item_mask()` for the training loss, kept between steps with the in-group negatives'
        pool (`ggr_hf.losses.negative_pool`): both depend only on the item-group buffers (tracked
        through their data pointers and in-place version counters, which `set_item_groups`,
        `load_state_dict` and moves bump), and rebuilding them takes two passes over a heads x
        catalogue table every step. Only `forward` uses them, and nothing there writes to them."""
        key = (self.logit_scale.device, *((b.data_ptr(), b._version) for b in self.item_groups.buffers()))
        if self._training_mask_cache is None or self._training_mask_cache[0] != key:
            mask = self.head_item_mask()
            pool = negative_pool(mask) if self.item_groups.num_priors > 0 else None
            self._training_mask_cache = (key, mask, pool)
        return self._training_mask_cache[1]

    def head_active(
        self, user_groups: torch.Tensor | None = None, target_event: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Heads allowed for each user: those of the user's groups and, in the oracle setting, the
        true target event type (as the priors' plug-ins decide).

        Args:
            user_groups (`torch.LongTensor` of shape `(batch_size, num_user_priors)`, *optional*)
            target_event (`torch.LongTensor` of shape `(batch_size,)`, *optional*): oracle only.

        Returns:
            `torch.BoolTensor [batch_size, num_heads]` or `None` when every head is allowed.
        """
        context = self.layout.context(user_groups=user_groups, target_event=target_event)
        return self.layout.active_heads(context, self.head_values())

    def compatibility(
        self,
        target_ids: torch.Tensor,
        valid: torch.Tensor,
        target_event_ids: torch.Tensor | None = None,
        user_groups: torch.Tensor | None = None,
        head_item_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Which (position, offset, head) triples train: the target exists, is one of the head's items,
        and matches the head's other prior constraints (offset segment, event type, user group).

        Args:
            target_ids (`torch.LongTensor` of shape `(batch_size, seq_len, horizon)`)
            valid (`torch.BoolTensor` of shape `(batch_size, seq_len, horizon)`)
            target_event_ids (`torch.LongTensor` of shape `(batch_size, seq_len, horizon)`, *optional*)
            user_groups (`torch.LongTensor` of shape `(batch_size, num_user_priors)`, *optional*)

        Returns:
            `torch.BoolTensor` of shape `(batch_size, seq_len, horizon, num_heads)`.
        """
        if head_item_mask is None:
            head_item_mask = self.head_item_mask()
        compat = head_item_mask[target_ids] & valid.unsqueeze(-1)  # [B, T, P, H]
        context = self.layout.context(
            horizon=target_ids.shape[-1], target_event_ids=target_event_ids, user_groups=user_groups
        )
        pairs = self.layout.pair_mask(context, self.head_values(target_ids.device))
        return compat if pairs is None else compat & pairs

    # ------------------------------------------------------------------ forward and loss

    def current_logit_scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=float(self.config.logit_scale_max))

    def _training_negatives(
        self,
        head_item_mask: torch.Tensor,
        device: torch.device,
        seeds: list[int] | None = None,
        gather: bool = False,
    ) -> torch.Tensor:
        """The negatives of one training step (`forward`'s `negative_seeds` / `gather_negatives`).

        Args:
            head_item_mask (`torch.BoolTensor` of shape `(num_items + 1, num_heads)`): items per head.
            device (`torch.device`): where the loss is computed.
            seeds (`list[int]`, *optional*): one draw of `config.num_negatives` per seed, each from a
                generator seeded with it, concatenated; reproducible whatever else used the RNG.
                `None`: one draw from the global RNG.
            gather (`bool`): all processes score the union of every process's negatives, as the
                release does (`ggr_hf.losses.gather_negatives`; needs an initialised process group).

        Returns:
            `torch.LongTensor` of shape `(num_heads, n)`, or `(1, n)` for catalogue-wide sampling, with
            `n = max(len(seeds), 1) * num_negatives`, times the number of processes with `gather`.
        """
        # Heads that do not restrict items (temporal, event, user, the backbone) draw from the
        # whole catalogue, so in-group sampling only matters with an item-restricting prior.
        in_group = self.config.negative_sampling == "in_group" and self.item_groups.num_priors > 0
        mask = head_item_mask if in_group else None
        cache = self._training_mask_cache
        # The kept pool only belongs to the kept mask (a caller may pass a mask of its own).
        pool = cache[2] if in_group and cache is not None and cache[1] is head_item_mask else None
        return self.draw_negatives(mask, self.config.num_negatives, device, seeds, gather, pool=pool)

    def _step_item_embeddings(
        self,
        compat: torch.Tensor,
        input_ids: torch.Tensor,
        target_ids: torch.Tensor,
        *negatives: torch.Tensor | None,
    ) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor | None]:
        """The normalised item embeddings a training step reads, as a function of item ids `(*)` ->
        `(*, hidden_size)`, and the history's raw rows for the backbone's `inputs_embeds`
        `(batch_size, seq_len, hidden_size)` (or `None`: the backbone looks the history up itself).

        Every lookup of an `nn.Embedding` makes its backward build a dense gradient of the whole table
        (zero-filled, then summed with the others): at a million items the history's, positives',
        negatives' and calibration negatives' lookups cost more than the model
        (`benchmarks/bench_train_scale.py`). So the step's distinct items (history, targets, every set
        of negatives) are looked up once, for backbones that take `inputs_embeds` (ID backbones);
        others look up the targets and negatives once and the history themselves. With more training
        pairs than items (small catalogues), normalising the whole table once is cheaper still (ID
        backbones; same values).
        """
        backbone = self.backbone
        if backbone.item_table_is_cheap and int(compat.sum()) > self.config.num_items:
            table = backbone.all_item_embeddings()  # [I+1, d]

            def embed(ids: torch.Tensor) -> torch.Tensor:
                return table[ids]

            return embed, None
        parts = [target_ids.reshape(-1), *(n.reshape(-1) for n in negatives if n is not None)]
        with_history = backbone.accepts_inputs_embeds
        if with_history:
            parts.append(input_ids.reshape(-1))
        unique = torch.unique(torch.cat(parts))  # sorted
        inputs_embeds = None
        if with_history:
            raw = backbone.item_embeddings(unique)  # [U, d]
            rows = F.normalize(raw, dim=-1)  # what `embed_items` gives for these ids
            inputs_embeds = raw[torch.searchsorted(unique, input_ids.contiguous())]
        else:
            rows = backbone.embed_items(unique)  # [U, d]

        def embed_step(ids: torch.Tensor) -> torch.Tensor:
            return rows[torch.searchsorted(unique, ids.contiguous())]

        return embed_step, inputs_embeds

    def forward(
        self,
        input_ids: torch.LongTensor,
        timestamps: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        query_timestamps: torch.LongTensor | None = None,
        target_ids: torch.LongTensor | None = None,
        target_event_ids: torch.LongTensor | None = None,
        user_groups: torch.LongTensor | None = None,
        output_head_states: bool = False,
        negative_seeds: list[int] | None = None,
        gather_negatives: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> GGROutput | tuple:
        """
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`):
                internal item ids, right-padded with 0, oldest first.
            timestamps (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*): seconds.
            attention_mask (`torch.Tensor` of shape `(batch_size, seq_len)`, *optional*).
            query_timestamps (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*):
                request time of each position's prediction (see `HSTUModel.forward`).
            target_ids (`torch.LongTensor` of shape `(batch_size, seq_len, horizon)`, *optional*):
                the next `horizon` items after each position (0: none). Given, the loss is computed.
            target_event_ids (`torch.LongTensor` of shape `(batch_size, seq_len, horizon)`, *optional*):
                event type of each target, for an event prior.
            user_groups (`torch.LongTensor` of shape `(batch_size, num_user_priors)`, *optional*):
                each user's group in each user prior.
            output_head_states (`bool`): also return every head's query at every position
                (always returned when no `target_ids` are given).
            negative_seeds (`list[int]`, *optional*): draw the step's negatives from generators
                seeded with these (one draw of `num_negatives` each), so that they depend on the step
                and rank only; the trainer passes them. Default: the global RNG.
            gather_negatives (`bool`): every process scores the union of all processes' negatives
                (all-gather, as the release does); needs an initialised process group.
        """
        if attention_mask is None:
            attention_mask = input_ids != 0
        loss, num_pairs, calibration_loss, sw_loss = None, None, None, None
        inputs_embeds = None
        if target_ids is not None:
            # What the loss needs besides the states (pairs, negatives, item embeddings) comes first:
            # on a large catalogue the history is looked up together with the step's other items.
            if target_ids.dim() == 2:
                target_ids = target_ids.unsqueeze(-1)
            if target_event_ids is not None and target_event_ids.dim() == 2:
                target_event_ids = target_event_ids.unsqueeze(-1)
            valid = (target_ids > 0) & attention_mask.bool().unsqueeze(-1)
            mask = self._training_mask()
            compat = self.compatibility(target_ids, valid, target_event_ids, user_groups, head_item_mask=mask)
            ratio = float(self.config.positive_mixin_ratio)
            if ratio > 0 and self.training and self.item_groups.num_priors > 0:
                # Every pair the head's other constraints allow, as if it scored every item.
                candidates = self.compatibility(
                    target_ids, valid, target_event_ids, user_groups, head_item_mask=torch.ones_like(mask)
                )
                compat = mix_in_positives(
                    compat,
                    candidates,
                    ratio,
                    self._step_generator(negative_seeds, _MIXIN_SEED_SHIFT, mask.device),
                )
            # The trainer passes `negative_seeds` (negatives as a function of the step, not of the
            # global RNG) and `gather_negatives` (share them across processes); see the helper.
            negatives = self._training_negatives(mask, input_ids.device, negative_seeds, gather_negatives)
            fused_negatives = None
            if self._fused_term_active():
                fused_negatives = self.draw_negatives(
                    None,
                    self.config.num_negatives,
                    input_ids.device,
                    None
                    if negative_seeds is None
                    else [s + _FUSED_NEGATIVE_SEED_SHIFT for s in negative_seeds],
                    gather_negatives,
                )
            embed, inputs_embeds = self._step_item_embeddings(
                compat, input_ids, target_ids, negatives, fused_negatives
            )
        hidden = self.backbone(
            input_ids=input_ids,
            timestamps=timestamps,
            attention_mask=attention_mask,
            query_timestamps=query_timestamps,
            **({} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}),
        ).last_hidden_state  # [B, T, d]
        queries = None
        if output_head_states or target_ids is None:
            queries = F.normalize(self.heads(hidden), dim=-1)  # [B, T, H, d]

        def pair_queries(b: torch.Tensor, t: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            # Only the (position, head) pairs with a compatible target are computed: no
            # batch x positions x heads tensor during training.
            return F.normalize(self.heads.forward_selected(hidden[b, t], k), dim=-1)

        if target_ids is not None:
            out = infonce_loss(
                pair_queries,
                target_ids,
                compat,
                embed,
                negatives,
                self.current_logit_scale(),
                offset_weights(target_ids.shape[-1], self.config.offset_discount),
                prior_weighting=self.config.prior_weighting,
                false_negative_threshold=self.config.false_negative_threshold,
            )
            loss, num_pairs = out.loss, out.num_pairs
            # Positions with at least one target: the calibration and switch terms read only these.
            b, t = valid.any(-1).nonzero(as_tuple=True)
            if fused_negatives is not None:
                active = self.head_active(user_groups)
                fused = fused_infonce_loss(
                    F.normalize(self.heads(hidden[b, t]), dim=-1),
                    target_ids[b, t],
                    valid[b, t],
                    mask,
                    embed,
                    fused_negatives,
                    self.current_logit_scale(),
                    offset_weights(target_ids.shape[-1], self.config.offset_discount),
                    head_active=None if active is None else active[b],
                    head_offsets=self.head_offset,
                    false_negative_threshold=self.config.false_negative_threshold,
                )
                calibration_loss = fused.loss
                # Counted per training pair of the main loss (whose mean the trainer weights by
                # `num_pairs` across processes), so that N processes train exactly as one does.
                per_pair = fused.num_pairs / num_pairs if num_pairs else 1.0
                loss = loss + float(self.config.calibration_loss_weight) * per_pair * calibration_loss
            if self.switch is not None:
                labels = switch_targets(self._memberships(), target_ids[b, t], valid[b, t])
                sw_loss = switch_loss(self._switch_logits(hidden[b, t]), labels)
                loss = loss + float(self.config.switch_loss_weight) * sw_loss

        if return_dict is False:
            return tuple(v for v in (loss, hidden, queries) if v is not None)
        return GGROutput(
            loss=loss,
            last_hidden_state=hidden,
            head_states=queries,
            num_pairs=num_pairs,
            calibration_loss=calibration_loss,
            switch_loss=sw_loss,
        )

    # ------------------------------------------------------------------ calibration and prior switch

    def _fused_term_active(self) -> bool:
        """The fused calibration term trains only models with an item-restricting prior: without one
        every head already scores the whole catalogue against catalogue-wide negatives."""
        return (
            self.config.calibration in ("fused", "fused_offsets")
            and float(self.config.calibration_loss_weight) > 0
            and self.item_groups.num_priors > 0
        )

    @staticmethod
    def _step_generator(seeds: list[int] | None, shift: int, device: torch.device) -> torch.Generator | None:
        """A generator for one step's extra random draw (`None`: the global RNG), as the negatives do."""
        if seeds is None:
            return None
        return torch.Generator(device=device).manual_seed(int(seeds[0]) + shift)

    def _memberships(self) -> list[torch.Tensor]:
        return [self.item_groups.membership(j) for j in range(self.item_groups.num_priors)]

    def _switch_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The prior switch's logits `(M, num_groups)` from backbone states `(M, hidden_size)`."""
        group_queries = None
        if self.switch.uses_query:
            num_groups = self.switch.num_groups
            heads = self.switch.group_head.to(hidden.device).repeat(len(hidden))  # [M * G]
            rows = hidden.repeat_interleave(num_groups, dim=0)  # [M * G, d]
            group_queries = self.heads.forward_selected(rows, heads).view(len(hidden), num_groups, -1)
        return self.switch(hidden, group_queries)

    @torch.no_grad()
    def switch_predictions(
        self,
        input_ids: torch.Tensor,
        timestamps: torch.Tensor | None = None,
        query_timestamps: torch.Tensor | None = None,
        target_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The prior switch at each history's end, for evaluation.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`): histories, right-padded.
            timestamps, query_timestamps: as in `score_items`.
            target_ids (`torch.LongTensor` of shape `(batch_size, n)`, *optional*): the next items (0:
                none); the first `config.horizon` of them are what the switch predicts.

        Returns:
            probabilities (`torch.FloatTensor` of shape `(batch_size, num_groups)`) and, with
            `target_ids`, the labels (`torch.BoolTensor` of the same shape: a target in the group).
        """
        if self.switch is None:
            raise GGRInputError("this model has no prior switch (GGRConfig.switch is 'none')")
        h = self._last_states(input_ids, timestamps, query_timestamps)
        probs = torch.sigmoid(self._switch_logits(h))
        if target_ids is None:
            return probs, None
        targets = target_ids[:, : self.config.horizon].to(h.device)
        return probs, switch_targets(self._memberships(), targets, targets > 0)

    # ------------------------------------------------------------------ inference (the scoring contract)

    @property
    def has_score_bias(self) -> bool:
        """Whether head scores carry an additive term (`calibration` `"fused_offsets"` or `"switch"`)."""
        return self.config.calibration in ("fused_offsets", "switch")

    def item_table(self) -> torch.Tensor:
        """`(num_items + 1, hidden_size)`: the backbone's L2-normalised item embeddings; with a score
        bias (`has_score_bias`) one more column of ones, `(num_items + 1, hidden_size + 1)`.

        The column makes `q . e` exactly `scale * cos(q_k, e_i) + b_k` when `user_queries` appends
        `b_k` to each query, so fusion (dense, sparse and the blockwise top-k) needs no change."""
        items = self.backbone.all_item_embeddings()
        if self.has_score_bias:
            items = torch.cat([items, items.new_ones(items.shape[0], 1)], dim=1)
        return items

    def scoring_tensors(self) -> list[torch.Tensor]:
        """The backbone's weights and the item-group tables (what the fused top-k index depends on)."""
        return [*self.backbone.parameters(), *self.backbone.buffers(), *self.item_groups.buffers()]

    def _last_states(
        self,
        input_ids: torch.Tensor,
        timestamps: torch.Tensor | None,
        query_timestamps: torch.Tensor | None,
    ) -> torch.Tensor:
        """Backbone state at each user's last real position: `(batch_size, hidden_size)`."""
        hidden, _, last = self.request_states(input_ids, timestamps, query_timestamps)
        return hidden[torch.arange(len(last), device=hidden.device), last]

    def user_queries(
        self,
        input_ids: torch.Tensor,
        timestamps: torch.Tensor | None,
        query_timestamps: torch.Tensor | None,
        user_groups: torch.Tensor | list | None,
        target_event: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scaled, normalised head queries at each history's end `(batch_size, num_heads, hidden_size)`
        and the heads active for each user `(batch_size, num_heads)` (or `None`: all). `user_groups`
        is checked against the model's user priors (see `recommend`).

        With a score bias (`has_score_bias`) each query gets one more entry, the head's additive term
        (its learned offset, or `log p` of its item group under the prior switch), matching the ones
        column of `item_table`. With `switch_gating` the heads of groups the switch predicts absent
        are inactive."""
        user_groups = user_groups_tensor(self.layout, user_groups, input_ids.shape[0], input_ids.device)
        h = self._last_states(input_ids, timestamps, query_timestamps)  # [B, d]
        q = F.normalize(self.heads(h), dim=-1) * self.current_logit_scale()  # [B, H, d]
        active = self.head_active(user_groups, target_event)
        logits = self._switch_logits(h) if self.switch is not None else None  # [B, G]
        if logits is not None and self.config.switch_gating:
            gate = self.switch.head_active(
                logits, self.head_values(h.device), float(self.config.switch_threshold)
            )
            active = gate if active is None else active & gate
        if self.has_score_bias:
            if self.config.calibration == "switch":
                bias = self.switch.head_log_prob(logits, self.head_values(h.device))  # [B, H]
            else:
                bias = self.head_offset.unsqueeze(0).expand(len(h), -1)
            q = torch.cat([q, bias.unsqueeze(-1).to(q.dtype)], dim=-1)  # [B, H, d + 1]
        return q, active


# `AutoModel.from_pretrained` on a ggr-hf folder works once the model module is loaded.
register_backbone_models()
register_model_type(GGRConfig.model_type, GGRConfig, GGRForRecommendation)
