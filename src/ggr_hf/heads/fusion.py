"""Scoring the catalogue with many heads and fusing the scores (max or mean), with attribution.

`fuse_scores` scores each item only with the heads it is compatible with: head k multiplies its
query with the embeddings of its own items `Omega_k`, so the work is proportional to the number of
(item, head) pairs rather than to `num_heads x num_items`. `fuse_scores_dense` is the plain
reference (score everything, mask, reduce); the tests check that both agree.
"""

from __future__ import annotations

import torch

from ggr_hf.errors import GGRInputError


def fuse_scores(
    queries: torch.Tensor,
    item_embeddings: torch.Tensor,
    head_items: list[torch.Tensor | None],
    head_active: torch.Tensor | None = None,
    fusion: str = "max",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused item scores and, for each item, the head that gave its best score.

    Args:
        queries (`torch.FloatTensor` of shape `(batch_size, num_heads, hidden_size)`):
            L2-normalised head queries, already multiplied by the logit scale if wanted.
        item_embeddings (`torch.FloatTensor` of shape `(num_items + 1, hidden_size)`):
            L2-normalised item embeddings; row 0 is padding and always gets `-inf`.
        head_items (`list` of `num_heads` entries): the item ids head k may score
            (`torch.LongTensor` of shape `(n_k,)`), or `None` for every item.
        head_active (`torch.BoolTensor` of shape `(batch_size, num_heads)`, *optional*):
            Heads allowed for each user (user priors, oracle event heads). Default: all.
        fusion (`str`): `"max"` or `"mean"` over a user's active heads compatible with the item.

    Returns:
        scores (`torch.FloatTensor` of shape `(batch_size, num_items + 1)`): `-inf` where no active
            head is compatible with the item.
        head_index (`torch.LongTensor` of shape `(batch_size, num_items + 1)`): the head with the
            highest score for the item (-1 where none), the attribution of a recommendation.
    """
    bsz, num_heads, _ = queries.shape
    num_rows = item_embeddings.shape[0]
    best = torch.full((bsz, num_rows), float("-inf"), dtype=queries.dtype, device=queries.device)
    head_index = torch.full((bsz, num_rows), -1, dtype=torch.long, device=queries.device)
    if fusion == "mean":
        total = torch.zeros((bsz, num_rows), dtype=queries.dtype, device=queries.device)
        count = torch.zeros((bsz, num_rows), dtype=queries.dtype, device=queries.device)
    elif fusion != "max":
        raise GGRInputError(f"fusion must be 'max' or 'mean', got {fusion!r}")

    for k in range(num_heads):
        items = head_items[k]
        emb = item_embeddings if items is None else item_embeddings.index_select(0, items)
        s = queries[:, k] @ emb.T  # [B, n_k]
        if head_active is not None:
            active = head_active[:, k : k + 1]
            s = torch.where(active, s, torch.full_like(s, float("-inf")))
        if items is None:
            cur_best = best
            cur_idx = head_index
        else:
            cur_best = best.index_select(1, items)
            cur_idx = head_index.index_select(1, items)
        better = s > cur_best
        new_best = torch.where(better, s, cur_best)
        new_idx = torch.where(better, torch.full_like(cur_idx, k), cur_idx)
        if items is None:
            best, head_index = new_best, new_idx
        else:
            best[:, items] = new_best
            head_index[:, items] = new_idx
        if fusion == "mean":
            finite = torch.isfinite(s)
            contrib = torch.where(finite, s, torch.zeros_like(s))
            if items is None:
                total = total + contrib
                count = count + finite.to(count.dtype)
            else:
                total[:, items] += contrib
                count[:, items] += finite.to(count.dtype)

    if fusion == "mean":
        scores = torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("-inf")))
    else:
        scores = best
    scores[:, 0] = float("-inf")
    head_index[:, 0] = -1
    return scores, head_index


def fuse_scores_dense(
    queries: torch.Tensor,
    item_embeddings: torch.Tensor,
    compatible: torch.Tensor,
    head_active: torch.Tensor | None = None,
    fusion: str = "max",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference implementation of `fuse_scores` through a dense `(batch, heads, items)` tensor.

    Args:
        compatible (`torch.BoolTensor` of shape `(num_items + 1, num_heads)`): item-head compatibility.
        Other arguments and the return values as in `fuse_scores`.
    """
    s = torch.einsum("bhd,id->bhi", queries, item_embeddings)  # [B, H, I+1]
    allowed = compatible.T.unsqueeze(0).expand_as(s)
    if head_active is not None:
        allowed = allowed & head_active.unsqueeze(-1)
    masked = s.masked_fill(~allowed, float("-inf"))
    best, head_index = masked.max(dim=1)
    head_index = torch.where(torch.isfinite(best), head_index, torch.full_like(head_index, -1))
    if fusion == "mean":
        count = allowed.sum(1)
        total = s.masked_fill(~allowed, 0.0).sum(1)
        scores = torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("-inf")))
    else:
        scores = best
    scores[:, 0] = float("-inf")
    head_index[:, 0] = -1
    return scores, head_index
