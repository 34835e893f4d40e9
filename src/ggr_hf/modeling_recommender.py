"""The scoring contract every recommendation model of ggr-hf keeps, and the inference built on it.

GGR (`GGRForRecommendation`) and the baselines (`SASRec` through a backbone, ComiRec-SA/DR, REMI,
DualVAE) are different models with one interface, so that training, evaluation, `recommend`, the CLI
and `compare` never branch on which model they hold. A model is a transformers `PreTrainedModel`
that mixes in [`RecommenderMixin`] and provides:

- a config with `num_items` (real items `1..num_items`, 0 is padding), `max_seq_len`, `horizon`
  (targets per position the training windows carry; 1 for next-item models), `exclude_history` and
  `fusion` (`"max"` or `"mean"`: how the queries' scores combine);
- `forward(input_ids, timestamps=None, attention_mask=None, query_timestamps=None, target_ids=None,
  target_event_ids=None, user_groups=None, negative_seeds=None, gather_negatives=False, **kwargs)`:
  with `target_ids` `(batch_size, seq_len, horizon)` it returns an output whose `loss` is the
  training objective (negatives drawn as [`RecommenderMixin.draw_negatives`] does, so a step's
  negatives depend on the seeds the trainer passes, never on the global RNG);
- `user_queries(input_ids, timestamps, query_timestamps, user_groups, target_event)`: for each history
  the scaled query vectors `(batch_size, num_queries, hidden_size)` (GGR's heads, ComiRec's interests,
  one vector for a single-query model) and which queries serve each user (`None`: all);
- `item_table()`: the item embeddings the queries score, `(num_items + 1, hidden_size)`;
- `head_item_mask()`: which items each query may score, `(num_items + 1, num_queries)` (row 0 False);
- `head_names` (one readable name per query: the explanation `recommend` returns) and `num_heads`;
- `scoring_tensors()`: the tensors `item_table()` and `head_item_mask()` are computed from (the
  fused top-k index is rebuilt when one of them changes);
- `prepare_from_items(items)`: a hook reading the item table before training (no-op by default).

The mixin turns these into `score_items` (full catalogue or exact fused top-k) and `recommend`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ggr_hf.configuration_utils import FUSIONS
from ggr_hf.errors import GGRInputError
from ggr_hf.heads.fusion import (
    FusionIndex,
    build_fusion_index,
    check_exclude_ids,
    fuse_scores,
    fuse_scores_dense,
    fused_topk,
    numpy_request,
    single_threaded_torch,
)
from ggr_hf.hub.io import check_save_target
from ggr_hf.losses import gather_negatives, negative_pool, sample_negatives
from ggr_hf.modeling_inputs import check_integer_tensor, check_item_ids, is_integer, pad_histories
from ggr_hf.models.backbone import request_query_timestamps


@dataclass
class Recommendation:
    """Top-k recommendations for a batch of users.

    Attributes:
        item_ids (`torch.LongTensor` of shape `(batch_size, k)`): internal item ids, best first.
        scores (`torch.FloatTensor` of shape `(batch_size, k)`): fused scores.
        head_index (`torch.LongTensor` of shape `(batch_size, k)`): the head (or interest) that
            explains each item.
        head_names (`list[list[str]]`): readable names of those heads, e.g. `"Comedy"`, `"interest 2"`.
    """

    item_ids: torch.Tensor
    scores: torch.Tensor
    head_index: torch.Tensor
    head_names: list[list[str]]


class RecommenderMixin:
    """Inference shared by every ggr-hf recommendation model (see the module docstring for what a
    model provides)."""

    _fusion_index_cache: tuple[tuple, FusionIndex] | None = None

    # ------------------------------------------------------------------ what a model provides

    def user_queries(
        self,
        input_ids: torch.Tensor,
        timestamps: torch.Tensor | None,
        query_timestamps: torch.Tensor | None,
        user_groups: Any,
        target_event: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scaled query vectors `(batch_size, num_queries, hidden_size)` at each history's end and the
        queries active for each user `(batch_size, num_queries)` (or `None`: all)."""
        raise NotImplementedError

    def item_table(self) -> torch.Tensor:
        """`(num_items + 1, hidden_size)`: the item embeddings the queries score."""
        raise NotImplementedError

    def head_item_mask(self) -> torch.Tensor:
        """`torch.BoolTensor [num_items + 1, num_queries]`: the items each query may score. Default:
        every query scores every real item."""
        mask = torch.ones(self.config.num_items + 1, self.num_heads, dtype=torch.bool, device=self.device)
        mask[0] = False
        return mask

    def scoring_tensors(self) -> list[torch.Tensor]:
        """Tensors `item_table()` and `head_item_mask()` depend on. Default: every parameter and buffer."""
        return [*self.parameters(), *self.buffers()]

    def prepare_from_items(self, items: Any) -> None:
        """Reads the item table (a `datasets.Dataset`, one row per item in id order) before training.
        Default: the backbone's hook when the model has one."""
        backbone = getattr(self, "backbone", None)
        if backbone is not None:
            backbone.prepare_from_items(items)

    # ------------------------------------------------------------------ saving and loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained` reading safetensors only (a folder with pickle weights
        only is refused: pickle can run code)."""
        if kwargs.get("use_safetensors") is False:
            raise GGRInputError(
                "ggr-hf models load from safetensors only; convert the weights with save_pretrained"
            )
        kwargs["use_safetensors"] = True
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, refusing a path that is a file (transformers only logs
        it and returns without saving)."""
        check_save_target(save_directory)
        return super().save_pretrained(save_directory, *args, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs):
        """Uploads the model with its model card in one commit; see [`ggr_hf.hub.push.push_model_to_hub`]
        (`private`, `token`, `revision`, `commit_message`, ...)."""
        from ggr_hf.hub.push import push_model_to_hub

        return push_model_to_hub(self, repo_id, **kwargs)

    # ------------------------------------------------------------------ shared training helper

    def draw_negatives(
        self,
        head_item_mask: torch.Tensor | None,
        num_negatives: int,
        device: torch.device,
        seeds: list[int] | None = None,
        gather: bool = False,
        pool: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The sampled negatives of one training step.

        Args:
            head_item_mask (`torch.BoolTensor` of shape `(num_items + 1, num_heads)`, *optional*): draw
                each head's negatives from its own items; `None`: one row from the whole catalogue.
            num_negatives (`int`): negatives per draw.
            device (`torch.device`): where the loss is computed.
            seeds (`list[int]`, *optional*): one draw per seed, each from a generator seeded with it,
                concatenated; reproducible whatever else used the RNG. `None`: one draw from the global RNG.
            gather (`bool`): all processes score the union of every process's negatives, as the
                release does ([`ggr_hf.losses.gather_negatives`]; needs an initialised process group).
            pool (`tuple`, *optional*): `ggr_hf.losses.negative_pool(head_item_mask)`, for a caller that
                keeps it between steps; otherwise built once here for all the draws.

        Returns:
            `torch.LongTensor` of shape `(num_heads, n)`, or `(1, n)` for catalogue-wide sampling, with
            `n = max(len(seeds), 1) * num_negatives`, times the number of processes with `gather`.
        """
        sample_device = head_item_mask.device if head_item_mask is not None else torch.device("cpu")
        if head_item_mask is not None and pool is None:
            pool = negative_pool(head_item_mask)
        generators = [None]
        if seeds is not None:
            generators = [torch.Generator(device=sample_device).manual_seed(int(seed)) for seed in seeds]
        draws = [
            sample_negatives(head_item_mask, self.config.num_items, num_negatives, generator=g, pool=pool)
            for g in generators
        ]
        # Moved before the gather: NCCL only gathers tensors on the GPU.
        negatives = torch.cat(draws, dim=1).to(device)
        return gather_negatives(negatives) if gather else negatives

    # ------------------------------------------------------------------ inference

    def head_items(self) -> list[torch.Tensor | None]:
        """Per query, the item ids it may score (`None`: every item)."""
        mask = self.head_item_mask()
        if bool(mask[1:].all()):
            return [None] * self.num_heads
        return [mask[:, k].nonzero(as_tuple=True)[0] for k in range(self.num_heads)]

    def last_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Each history's last real position `(batch_size,)`, refusing an all-padding row."""
        lengths = (input_ids != 0).sum(1)
        if (lengths == 0).any():
            raise GGRInputError("every history needs at least one item (a row of input_ids is all padding)")
        return lengths - 1

    def request_states(
        self,
        input_ids: torch.Tensor,
        timestamps: torch.Tensor | None,
        query_timestamps: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The backbone's states for scoring at a request: the request time applies to each history's
        last real position, earlier positions use the next event (models with a `backbone`).

        Returns:
            `last_hidden_state` `(batch_size, seq_len, hidden_size)`, the attention mask
            `(batch_size, seq_len)` and each history's last real position `(batch_size,)`.
        """
        attention_mask = input_ids != 0
        last = self.last_positions(input_ids)
        q_ts = None
        if query_timestamps is not None and timestamps is not None:
            q_ts = request_query_timestamps(timestamps, attention_mask, query_timestamps)
        hidden = self.backbone(
            input_ids=input_ids, timestamps=timestamps, attention_mask=attention_mask, query_timestamps=q_ts
        ).last_hidden_state
        return hidden, attention_mask, last

    @staticmethod
    def refuse_user_groups(user_groups: Any) -> None:
        """Models without user priors take no `user_groups`."""
        if user_groups is not None:
            raise GGRInputError("user_groups: this model has no user priors; leave user_groups out")

    def fusion_index(self) -> FusionIndex:
        """The catalogue in compatibility-signature blocks for exact fused top-k, built once and
        rebuilt when any backbone weight or item-group table changed (tracked through the tensors'
        in-place version counters, which optimizer steps and `load_state_dict` bump). It holds a
        reordered copy of the item table."""
        key = tuple((t.data_ptr(), t._version) for t in self.scoring_tensors())
        if self._fusion_index_cache is None or self._fusion_index_cache[0] != key:
            with torch.no_grad():
                index = build_fusion_index(self.item_table(), self.head_item_mask())
            self._fusion_index_cache = (key, index)
        return self._fusion_index_cache[1]

    @torch.no_grad()
    def score_items(
        self,
        input_ids: torch.LongTensor,
        timestamps: torch.LongTensor | None = None,
        query_timestamps: torch.LongTensor | None = None,
        user_groups: torch.LongTensor | None = None,
        target_event: torch.LongTensor | None = None,
        exclude: torch.LongTensor | None = None,
        fusion: str | None = None,
        dense: bool = False,
        topk: int | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Scores the whole catalogue for each history (or, with `topk`, returns only the best items).

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`): histories, right-padded.
            timestamps (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*)
            query_timestamps (`torch.LongTensor` of shape `(batch_size,)`, *optional*): request time.
            user_groups (`torch.LongTensor` of shape `(batch_size, num_user_priors)`, *optional*)
            target_event (`torch.LongTensor` of shape `(batch_size,)`, *optional*): the ORACLE
                setting: only the true target event's heads. Leave it out for honest evaluation.
            exclude (`torch.LongTensor` of shape `(batch_size, n)`, *optional*): item ids to remove
                (0 ignored), e.g. the full history.
            fusion (`str`, *optional*): `"max"` or `"mean"`; defaults to `config.fusion`.
            dense (`bool`): use the dense reference implementation.
            topk (`int`, *optional*): return the exact top-`topk` of the fused scores instead, computed
                block by block over the catalogue ([`~ggr_hf.heads.fusion.fused_topk`]) without a
                `(batch_size, num_items)` score matrix.

        Returns:
            scores (`torch.FloatTensor` of shape `(batch_size, num_items + 1)`), head_index
            (`torch.LongTensor` of the same shape); with `topk`: scores, item ids and head indices of
            shape `(batch_size, topk)`, best first (`-inf`, item 0, head -1 where fewer items can be
            recommended).

        Raises:
            `GGRInputError`: an argument of the wrong type or shape, an item id outside
                `0..num_items` (0 only as right padding), a history without items, `user_groups`
                missing (or given) for a model with (or without) user priors or outside their groups.
        """
        check_integer_tensor("input_ids", input_ids, (-1, -1))
        bsz, seq_len = input_ids.shape
        if bsz == 0 or seq_len == 0:
            raise GGRInputError(
                f"input_ids: expected (batch_size, seq_len) with both > 0, got {(bsz, seq_len)}"
            )
        check_item_ids("input_ids", input_ids, self.config.num_items)
        if not bool((input_ids[:, 0] != 0).all()):
            user = int((input_ids[:, 0] == 0).nonzero()[0, 0])
            raise GGRInputError(f"input_ids: user {user} has no items (the row is all padding)")
        check_integer_tensor("timestamps", timestamps, (bsz, seq_len))
        check_integer_tensor("query_timestamps", query_timestamps, (bsz,))
        check_integer_tensor("target_event", target_event, (bsz,))
        check_integer_tensor("exclude", exclude, (bsz, -1))
        if exclude is not None:
            check_exclude_ids(exclude, self.config.num_items)
        if topk is not None and (not is_integer(topk) or int(topk) < 1):
            raise GGRInputError(f"topk must be an integer >= 1 or None, got {topk!r}")
        if fusion is not None and fusion not in FUSIONS:
            raise GGRInputError(f"fusion must be one of {list(FUSIONS)} or None, got {fusion!r}")
        fusion = fusion or self.config.fusion
        if topk is not None:
            index = self.fusion_index()
            # The forward of a request whose retrieval runs through NumPy stays on one thread too.
            with single_threaded_torch(numpy_request(index, bsz, input_ids.device)):
                q, active = self.user_queries(
                    input_ids, timestamps, query_timestamps, user_groups, target_event
                )
                return fused_topk(q, index, int(topk), active, exclude, fusion)
        q, active = self.user_queries(input_ids, timestamps, query_timestamps, user_groups, target_event)
        items = self.item_table()  # [I+1, d]
        if dense:
            scores, head_index = fuse_scores_dense(q, items, self.head_item_mask(), active, fusion)
        else:
            scores, head_index = fuse_scores(q, items, self.head_items(), active, fusion)
        if exclude is not None:
            scores = scores.scatter(1, exclude, float("-inf"))
            scores[:, 0] = float("-inf")
        return scores, head_index

    @torch.no_grad()
    def recommend(
        self,
        history: list[int] | list[list[int]] | torch.Tensor,
        k: int = 10,
        timestamps: list[int] | list[list[int]] | torch.Tensor | None = None,
        user_groups: list[int] | list[list[int]] | torch.Tensor | None = None,
        exclude_history: bool | None = None,
        fusion: str | None = None,
    ) -> Recommendation:
        """Top-k items for one or more histories, each explained by the head that scored it.

        Args:
            history: internal item ids, oldest first (one list, a list of lists, or a padded
                `(batch_size, seq_len)` tensor). Only the last `max_seq_len` items are read; all of
                them are excluded when `exclude_history`.
            k (`int`): number of recommendations.
            timestamps: matching event times in integer seconds, optional (the same structure).
            user_groups: per user, the group index in each user prior (models with user priors):
                `(batch_size, num_user_priors)`, or one list for a single user.
            exclude_history (`bool`, *optional*): defaults to `config.exclude_history`.
            fusion (`str`, *optional*): defaults to `config.fusion`.

        Returns:
            `Recommendation` with `(batch_size, k)` item ids, scores and heads.

        Raises:
            `GGRInputError`: `k` not an integer >= 1, or more than the items that can be recommended
                to a user (the catalogue minus the excluded history and the items no head serving
                the user scores); an item id that is not an integer in `1..num_items` (naming the
                user, the position and the value); timestamps of another length than the history
                or not in seconds (outside 1970..2100); `user_groups` of the wrong shape or outside
                the model's user-prior groups.
        """
        if not is_integer(k) or int(k) < 1:
            raise GGRInputError(f"recommend: k must be an integer >= 1, got {k!r}")
        k = int(k)
        if exclude_history is not None and not isinstance(exclude_history, bool):
            raise GGRInputError(
                f"recommend: exclude_history must be true, false or None, got {exclude_history!r}"
            )
        device = self.device
        ids, ts = pad_histories(history, timestamps, self.config.num_items)
        full = ids.to(device)
        ids, ts = _last_window(ids, ts, self.config.max_seq_len)
        ids, ts = ids.to(device), (ts.to(device) if ts is not None else None)
        exclude_history = self.config.exclude_history if exclude_history is None else exclude_history
        top_scores, top_items, top_heads = self.score_items(
            ids,
            ts,
            user_groups=user_groups,
            exclude=full if exclude_history else None,
            fusion=fusion,
            topk=k,
        )
        # -inf marks a slot no item can fill: the rest of the catalogue is padding, the excluded
        # history, or items no active head scores (fewer than k finite means exactly that many exist).
        available = torch.isfinite(top_scores).sum(1)
        if k > int(available.min()):
            user = int(available.argmin())
            raise GGRInputError(
                f"recommend: k={k} is more than the {int(available[user])} items that can be recommended "
                f"to user {user} (of the catalogue's {self.config.num_items}, the others are in the "
                "excluded history or outside every head that serves the user); lower k"
            )
        head_names = self.head_names
        names = [[head_names[h] if h >= 0 else "" for h in row] for row in top_heads.tolist()]
        return Recommendation(top_items, top_scores, top_heads, names)


def _last_window(
    ids: torch.Tensor, ts: torch.Tensor | None, max_len: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Keeps each row's last `max_len` real items, still right-padded."""
    lengths = (ids != 0).sum(1)
    if int(lengths.max()) <= max_len and ids.shape[1] <= max_len:
        return ids, ts
    width = min(max_len, int(lengths.max()))
    start = (lengths - width).clamp(min=0)
    cols = start.unsqueeze(1) + torch.arange(width).unsqueeze(0)  # [B, W]
    keep = torch.arange(width).unsqueeze(0) < lengths.clamp(max=width).unsqueeze(1)
    cols = cols.clamp(max=ids.shape[1] - 1)
    out_ids = torch.where(keep, ids.gather(1, cols), torch.zeros_like(cols))
    out_ts = None if ts is None else torch.where(keep, ts.gather(1, cols), torch.zeros_like(cols))
    return out_ids, out_ts
