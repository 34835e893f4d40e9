"""Plain reference implementations the tests compare ggr-hf's optimised code against.

They live with the tests, not in the package: nothing in `ggr_hf` uses them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def infonce_loss_reference(
    queries: torch.Tensor,
    target_ids: torch.Tensor,
    compatible: torch.Tensor,
    embed: Callable[[torch.Tensor], torch.Tensor],
    negatives: torch.Tensor,
    logit_scale: float,
    weights_per_offset: torch.Tensor,
    prior_weighting: str = "frequency",
    false_negative_threshold: float = 0.99,
) -> torch.Tensor:
    """The formula `sum_p w_p sum_k w_k L_{k,p}` written as plain loops, for the tests."""
    bsz, seq_len, horizon, num_heads = compatible.shape
    per = {}
    for pp in range(horizon):
        for kk in range(num_heads):
            terms = []
            for bb in range(bsz):
                for tt in range(seq_len):
                    if not compatible[bb, tt, pp, kk]:
                        continue
                    y = target_ids[bb, tt, pp]
                    q = queries[bb, tt, kk]
                    e_pos = embed(y.view(1))[0]
                    negs = negatives[0 if negatives.shape[0] == 1 else kk]
                    logits = [float(q @ e_pos) * logit_scale]
                    for n in negs:
                        e_n = embed(n.view(1))[0]
                        if int(n) == int(y) or float(e_pos @ e_n) > false_negative_threshold:
                            continue
                        logits.append(float(q @ e_n) * logit_scale)
                    lg = torch.tensor(logits, dtype=torch.float64)
                    terms.append(float(torch.logsumexp(lg, 0) - lg[0]))
            if terms:
                per[(pp, kk)] = (sum(terms) / len(terms), len(terms))
    total, norm = 0.0, 0.0
    for pp in range(horizon):
        entries = {kk: v for (p2, kk), v in per.items() if p2 == pp}
        if not entries:
            continue
        if prior_weighting == "frequency":
            n_all = sum(n for _, n in entries.values())
            inner = sum(mean * n / n_all for mean, n in entries.values())
        else:
            inner = sum(mean for mean, _ in entries.values()) / len(entries)
        total += float(weights_per_offset[pp]) * inner
        norm += float(weights_per_offset[pp])
    return torch.tensor(total / norm, dtype=torch.float64)


def heads_forward_reference(heads, hidden: torch.Tensor) -> torch.Tensor:
    """A plain per-head loop computing what `GGRHeads.forward` computes, for the parity tests."""
    if heads.layout.is_backbone_only:
        return hidden.unsqueeze(-2)
    if heads.layout.composition != "hierarchical":
        return torch.stack([block(hidden) for block in heads.levels[0]], dim=-2)
    outs = [hidden]
    for level, blocks in enumerate(heads.levels):
        new = []
        for n, block in enumerate(blocks):
            x = outs[int(heads._parent_index[level][n])]
            if level > 0:
                x = x + heads.level_embeddings[level - 1].weight[int(heads._value_index[level][n])]
            new.append(block(x))
        outs = new
    return torch.stack(outs, dim=-2)


def merge_topk_lists(
    per_head_scores: list[torch.Tensor], per_head_items: list[torch.Tensor], k: int
) -> tuple[list[int], list[float], list[int]]:
    """The release's max fusion for one user: merge per-head top-k lists by score, keep first occurrences.

    Args:
        per_head_scores: per head, `torch.FloatTensor (k_h,)` sorted descending.
        per_head_items: per head, `torch.LongTensor (k_h,)` the matching item ids.
        k: length of the merged list.

    Returns:
        (item ids, scores, head indices) of the merged top-k.
    """
    entries = [
        (float(s), int(i), h)
        for h, (scores, items) in enumerate(zip(per_head_scores, per_head_items))
        for s, i in zip(scores.tolist(), items.tolist())
    ]
    # Highest score first; ties broken by lower item id, then lower head index, as fuse_scores + topk do.
    entries.sort(key=lambda e: (-e[0], e[1], e[2]))
    seen: set[int] = set()
    items_out, scores_out, heads_out = [], [], []
    for s, i, h in entries:
        if i in seen:
            continue
        seen.add(i)
        items_out.append(i)
        scores_out.append(s)
        heads_out.append(h)
        if len(items_out) == k:
            break
    return items_out, scores_out, heads_out
