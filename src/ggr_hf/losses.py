"""GGR's training objective: per-head, per-offset InfoNCE with in-group negatives and weights.

    L = sum_p w_p sum_k w_k L_{k,p},    w_p = lam^p / sum_q lam^q,    w_k = |Y_k| / sum_j |Y_j|

`L_{k,p}` is the mean InfoNCE of head k over the targets at offset p that are compatible with it.
With the frequency weights the double sum is the mean over all (target, compatible head) pairs at
offset p, which is how it is computed; "uniform" weights give every head present the same weight.

Only the (position, offset, head) triples whose target is compatible with the head are scored: no
`batch x heads x items` tensor is built. `tests/ggr_reference.py` holds the plain loop version the
tests compare against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ggr_hf.errors import GGRInputError


def offset_weights(horizon: int, discount: float) -> torch.Tensor:
    """`w_p = lam^p / sum_q lam^q` for p = 1..horizon (`FloatTensor [horizon]`)."""
    p = torch.arange(1, horizon + 1, dtype=torch.float64)
    w = torch.tensor(discount, dtype=torch.float64) ** p
    return (w / w.sum()).float()


def negative_pool(head_item_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every head's items in one flat list, the pool `sample_negatives` draws in-group negatives from.

    Heads follow each other, and a head's items are in id order: head k's (j+1)-th item is
    `items[offsets[k] + j]`. Built with one pass over the mask (no sort); a caller whose mask does not
    change between steps can build it once and pass it to `sample_negatives`.

    Args:
        head_item_mask (`torch.BoolTensor` of shape `(num_items + 1, num_heads)`): row 0 is ignored.

    Returns:
        `tuple` of `torch.LongTensor`: `items` `(n,)`, `offsets` `(num_heads,)` and `counts` `(num_heads,)`.
    """
    pairs = head_item_mask[1:].T.nonzero()  # [n, 2]: (head, item id - 1), head-major
    heads = torch.arange(head_item_mask.shape[1] + 1, device=head_item_mask.device)
    # Where each head's part starts, found in the sorted head column (a boolean sum over the
    # catalogue costs more than the nonzero itself).
    bounds = torch.searchsorted(pairs[:, 0].contiguous(), heads)
    return pairs[:, 1] + 1, bounds[:-1], bounds[1:] - bounds[:-1]


def sample_negatives(
    head_item_mask: torch.Tensor | None,
    num_items: int,
    num_negatives: int,
    generator: torch.Generator | None = None,
    pool: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Uniform negatives, from each head's own items (in-group) or from the whole catalogue.

    Args:
        head_item_mask (`torch.BoolTensor` of shape `(num_items + 1, num_heads)`, *optional*):
            Items each head may score. `None` gives one shared row of catalogue-wide negatives.
        num_items (`int`): catalogue size (ids `1..num_items`).
        num_negatives (`int`): negatives per row.
        pool (`tuple`, *optional*): `negative_pool(head_item_mask)`, when the caller keeps it; built
            here otherwise.

    Returns:
        `torch.LongTensor` of shape `(num_heads, num_negatives)`, or `(1, num_negatives)` without a
        mask. A head with no items gets catalogue-wide negatives (it has no positives either).
    """
    device = head_item_mask.device if head_item_mask is not None else torch.device("cpu")
    if head_item_mask is None:
        return torch.randint(1, num_items + 1, (1, num_negatives), generator=generator, device=device)
    items, offsets, counts = pool if pool is not None else negative_pool(head_item_mask)
    u = torch.rand((head_item_mask.shape[1], num_negatives), generator=generator, device=device)
    pick = (u * counts.clamp(min=1).unsqueeze(1)).long()  # [H, N]
    # A head without items indexes past its (empty) part; its row is replaced by the fallback below.
    negs = (
        items[(offsets.unsqueeze(1) + pick).clamp(max=max(items.numel() - 1, 0))] if items.numel() else pick
    )
    fallback = torch.randint(1, num_items + 1, negs.shape, generator=generator, device=device)
    return torch.where((counts > 0).unsqueeze(1), negs, fallback)


def gather_negatives(negatives: torch.Tensor) -> torch.Tensor:
    """Every process's negatives, concatenated in rank order: the release's cross-process sharing.

    Each process draws its own negatives; all of them then score the union, so a run on W processes
    contrasts every pair with `W` times as many negatives as one process draws (for the same cost in
    sampling). The result is identical on every rank. Outside an initialised `torch.distributed`
    process group (or with one process) the negatives are returned unchanged.

    Args:
        negatives (`torch.LongTensor` of shape `(num_rows, num_negatives)`): this process's draw; the
            same shape on every process (a collective with equal sizes).

    Returns:
        `torch.LongTensor` of shape `(num_rows, world_size * num_negatives)`: rank 0's columns first.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return negatives
    # Item ids carry no gradient, so a plain all_gather (no autograd-aware variant) is enough.
    parts = [torch.empty_like(negatives) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, negatives.contiguous())
    return torch.cat(parts, dim=1)


@dataclass
class LossOutput:
    loss: torch.Tensor
    num_pairs: int
    pairs_per_head: torch.Tensor


def infonce_loss(
    queries: torch.Tensor | Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    target_ids: torch.Tensor,
    compatible: torch.Tensor,
    embed: Callable[[torch.Tensor], torch.Tensor],
    negatives: torch.Tensor,
    logit_scale: torch.Tensor | float,
    weights_per_offset: torch.Tensor,
    prior_weighting: str = "frequency",
    false_negative_threshold: float = 0.99,
) -> LossOutput:
    """Per-head InfoNCE over the compatible (position, offset, head) triples.

    Args:
        queries: either `torch.FloatTensor` of shape `(batch_size, seq_len, num_heads, hidden_size)`
            (L2-normalised head queries), or a function `(b, t, k) -> (M, hidden_size)` computing the
            normalised queries of just the pairs needed, which avoids the dense tensor.
        target_ids (`torch.LongTensor` of shape `(batch_size, seq_len, horizon)`): the item at offset
            p+1 after each position, 0 where there is none.
        compatible (`torch.BoolTensor` of shape `(batch_size, seq_len, horizon, num_heads)`): True
            where the target exists and head k may learn it (its item group, segment, event, user).
        embed: maps item ids `(*)` to L2-normalised embeddings `(*, hidden_size)`.
        negatives (`torch.LongTensor` of shape `(num_heads, num_negatives)` or `(1, num_negatives)`):
            sampled negatives per head, or one row shared by all heads.
        logit_scale: multiplies the cosines.
        weights_per_offset (`torch.FloatTensor` of shape `(horizon,)`): `w_p`.
        prior_weighting: `"frequency"` or `"uniform"` (see the module docstring).
        false_negative_threshold: negatives with cosine to the positive above this are masked, as are
            negatives equal to the positive.

    Returns:
        `LossOutput` with the scalar loss (0 with a graph when no triple is compatible).
    """
    num_heads = compatible.shape[3]
    b, t, p, k = compatible.nonzero(as_tuple=True)  # M triples
    q = queries[b, t, k] if isinstance(queries, torch.Tensor) else queries(b, t, k)  # [M, d]
    if b.numel() == 0:
        # A zero that still reaches the queries' and the items' parameters (with zero gradients), so
        # that `backward` works and every DDP process reduces the same parameters.
        zero = (q.sum() + embed(target_ids[b, t, p]).sum() + torch.as_tensor(logit_scale).sum()) * 0.0
        return LossOutput(zero, 0, torch.zeros(num_heads, dtype=torch.long))
    pos_ids = target_ids[b, t, p]  # [M]
    pos_e = embed(pos_ids)  # [M, d]
    pos_logit = (q * pos_e).sum(-1)  # [M]
    neg_e = embed(negatives)  # [G, N, d]
    shared = negatives.shape[0] == 1
    row = torch.zeros_like(k) if shared else k

    losses, index = [], []
    for g in torch.unique(row).tolist():
        sel = (row == g).nonzero(as_tuple=True)[0]
        logits = (q[sel] @ neg_e[g].T) * logit_scale  # [Mg, N]
        with torch.no_grad():
            same = pos_ids[sel].unsqueeze(1) == negatives[g].unsqueeze(0)
            near = (pos_e[sel] @ neg_e[g].T) > false_negative_threshold
        # Masked after scaling: -inf times the scale would give a NaN gradient for a learned scale.
        logits = logits.masked_fill(same | near, float("-inf"))
        all_logits = torch.cat([(pos_logit[sel] * logit_scale).unsqueeze(1), logits], dim=1)
        losses.append(torch.logsumexp(all_logits, dim=1) - all_logits[:, 0])
        index.append(sel)
    loss_m = torch.cat(losses)
    idx = torch.cat(index)
    p_m, k_m = p[idx], k[idx]

    horizon = target_ids.shape[2]
    w_p = weights_per_offset.to(loss_m.device, loss_m.dtype)
    count_p = torch.bincount(p_m, minlength=horizon).to(loss_m.dtype)  # [P]
    if prior_weighting == "frequency":
        w_m = w_p[p_m] / count_p[p_m]
    elif prior_weighting == "uniform":
        pk = p_m * num_heads + k_m
        count_pk = torch.bincount(pk, minlength=horizon * num_heads).to(loss_m.dtype)
        heads_present = (count_pk.view(horizon, num_heads) > 0).sum(1).to(loss_m.dtype)  # [P]
        w_m = w_p[p_m] / (heads_present[p_m] * count_pk[pk])
    else:
        raise GGRInputError(f"prior_weighting must be 'frequency' or 'uniform', got {prior_weighting!r}")
    present = count_p > 0
    loss = (w_m * loss_m).sum() / w_p[present].sum()
    per_head = torch.bincount(k, minlength=num_heads)
    return LossOutput(loss, int(b.numel()), per_head)


def mix_in_positives(
    compatible: torch.Tensor,
    candidates: torch.Tensor,
    ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The release's positive mix-in (`pos_sample_mix_ratio`): a head also trains on a random share of
    the targets outside its item group.

    Args:
        compatible (`torch.BoolTensor` of shape `(batch_size, seq_len, horizon, num_heads)`): the pairs
            that train (the target is in the head's group and meets its other constraints).
        candidates (`torch.BoolTensor` of the same shape): the pairs that would train if every head
            scored every item (its other constraints: target present, segment, event, user group).
        ratio (`float`): probability that a candidate pair outside `compatible` trains too.
        generator (`torch.Generator`, *optional*): on `compatible`'s device.

    Returns:
        `torch.BoolTensor` of the same shape: `compatible` plus the drawn out-of-group pairs.
    """
    if ratio <= 0:
        return compatible
    u = torch.rand(compatible.shape, generator=generator, device=compatible.device)
    return compatible | (candidates & (u < ratio))


# Scores per chunk of positions in `fused_infonce_loss` (16M floats: 64 MB, and as much for its grad).
_FUSED_CHUNK_ELEMENTS = 1 << 24


def _pairs_by_negative(columns: torch.Tensor, filled: torch.Tensor, num_negatives: int) -> torch.Tensor:
    """For each negative, the columns of the (head, negative) score pairs that hold it.

    Args:
        columns (`torch.LongTensor` of shape `(C,)`): the negative each score column belongs to.
        filled (`torch.BoolTensor` of shape `(C,)`): False on padding columns.
        num_negatives (`int`): N.

    Returns:
        `torch.LongTensor` of shape `(N, K)`, K the most pairs of one negative; a negative with fewer
        pairs is padded with column `C` (the caller's `-inf` column).
    """
    held = filled.nonzero(as_tuple=True)[0]
    owner = columns[held]
    sort = torch.argsort(owner, stable=True)
    held, owner = held[sort], owner[sort]
    counts = torch.bincount(owner, minlength=num_negatives)
    width = max(int(counts.max()) if len(counts) else 0, 1)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(owner), device=owner.device) - starts[owner]
    slots = torch.full((num_negatives, width), len(columns), dtype=torch.long, device=columns.device)
    slots[owner, rank] = held
    return slots


def fused_infonce_loss(
    queries: torch.Tensor,
    target_ids: torch.Tensor,
    valid: torch.Tensor,
    head_item_mask: torch.Tensor,
    embed: Callable[[torch.Tensor], torch.Tensor],
    negatives: torch.Tensor,
    logit_scale: torch.Tensor | float,
    weights_per_offset: torch.Tensor,
    head_active: torch.Tensor | None = None,
    head_offsets: torch.Tensor | None = None,
    false_negative_threshold: float = 0.99,
) -> LossOutput:
    """InfoNCE of the *fused* score against catalogue-wide negatives: the calibration term.

    Inference ranks item `i` by `S(i) = max_k (scale * cos(q_k, e_i) + b_k)` over the active heads
    compatible with `i`. Per-head InfoNCE with in-group negatives never compares two heads' scores;
    this term does, on exactly the quantity inference ranks by:

        L_fused = sum_p w_p mean_{(m, p)} [ logsumexp(S(pos), S(neg_1), ..., S(neg_N)) - S(pos) ]

    Negatives are scored in a few batched products per chunk of positions: heads are bucketed by
    their number of compatible negatives (within a bucket the smallest is at least half the
    largest), each head scores its own compatible negatives padded to its bucket's width, and a
    scatter reduces the (head, negative) pairs to each negative's max. The work is at most twice the
    useful `positions x negatives x heads per item`. (One small product per compatibility signature
    spent far more on per-block copies than on products; the dense masked product over all heads
    did `heads / heads per item` times the work.) Memory is bounded by a chunk of
    `_FUSED_CHUNK_ELEMENTS` scores.

    Args:
        queries (`torch.FloatTensor` of shape `(M, num_heads, hidden_size)`): L2-normalised queries of
            every head at `M` positions.
        target_ids (`torch.LongTensor` of shape `(M, horizon)`): targets (0: none).
        valid (`torch.BoolTensor` of shape `(M, horizon)`)
        head_item_mask (`torch.BoolTensor` of shape `(num_items + 1, num_heads)`)
        embed: maps item ids `(*)` to L2-normalised embeddings `(*, hidden_size)`.
        negatives (`torch.LongTensor` of shape `(1, N)`): catalogue-wide negatives.
        logit_scale: multiplies the cosines.
        weights_per_offset (`torch.FloatTensor` of shape `(horizon,)`): `w_p`.
        head_active (`torch.BoolTensor` of shape `(M, num_heads)`, *optional*): heads serving each
            position's user (user priors). Default: all.
        head_offsets (`torch.FloatTensor` of shape `(num_heads,)`, *optional*): learned per-head
            offsets `b_k` added to the scaled scores.
        false_negative_threshold: negatives equal to the positive, or with cosine above this, are masked.

    Returns:
        `LossOutput` (pairs: the (position, offset) targets some active head may score).
    """
    m_count, num_heads, _ = queries.shape
    negs = negatives.reshape(-1)
    pos_e = embed(target_ids)  # [M, P, d]
    allowed = head_item_mask[target_ids] & valid.unsqueeze(-1)  # [M, P, H]
    if head_active is not None:
        allowed = allowed & head_active.unsqueeze(1)
    pos_all = torch.einsum("mhd,mpd->mph", queries, pos_e) * logit_scale  # [M, P, H]
    if head_offsets is not None:
        pos_all = pos_all + head_offsets
    pos = pos_all.masked_fill(~allowed, float("-inf")).amax(-1)  # [M, P]
    trains = allowed.any(-1)  # [M, P]
    if not bool(trains.any()):
        return LossOutput(queries.sum() * 0.0, 0, torch.zeros(num_heads, dtype=torch.long))

    neg_unit = embed(negs)  # [N, d]
    n_negs = len(negs)
    scaled = neg_unit * logit_scale
    compatible = head_item_mask[negs].T  # [H, N]
    counts = compatible.sum(1)
    # Heads sorted by their number of compatible negatives and cut into buckets whose smallest
    # count is at least half their largest: within a bucket each head's negatives are padded to the
    # bucket's width (`-inf` on the padding), so the products do at most twice the useful work.
    head_order = [h for h in torch.argsort(counts, descending=True, stable=True).tolist() if counts[h] > 0]
    bucket_heads: list[list[int]] = []
    for h in head_order:
        if not bucket_heads or 2 * int(counts[h]) < int(counts[bucket_heads[-1][0]]):
            bucket_heads.append([])
        bucket_heads[-1].append(h)
    buckets = []  # (heads [h_b], negatives of each head [h_b, d, w_b], bias [h_b, 1, w_b], columns [h_b * w_b])
    for members in bucket_heads:
        heads = torch.tensor(members, device=compatible.device)
        width = int(counts[heads[0]])
        cols = torch.argsort(compatible[heads].to(torch.int8), dim=1, descending=True, stable=True)[:, :width]
        filled = torch.arange(width, device=cols.device).unsqueeze(0) < counts[heads].unsqueeze(1)
        bias = torch.zeros((len(members), 1, width), dtype=scaled.dtype, device=scaled.device)
        if head_offsets is not None:
            bias = bias + head_offsets[heads].view(-1, 1, 1)
        bias = bias.masked_fill(~filled.unsqueeze(1), float("-inf"))
        buckets.append((heads, scaled[cols].transpose(1, 2), bias, cols.reshape(-1), filled.reshape(-1)))
    if not buckets:  # no head may score any of the negatives
        neg = queries.new_full((m_count, n_negs), float("-inf"))
    else:
        sizes = [len(members) for members in bucket_heads]
        order = torch.tensor(head_order, device=queries.device, dtype=torch.long)
        columns = torch.cat([bucket[3] for bucket in buckets])
        slots = _pairs_by_negative(columns, torch.cat([bucket[4] for bucket in buckets]), n_negs)
        chunk = max(1, _FUSED_CHUNK_ELEMENTS // int(columns.numel()))
        pieces = []
        for start in range(0, m_count, chunk):
            rows = min(chunk, m_count - start)
            # [H', m, d] in bucket order; `split` hands back its gradient in one piece.
            q_sorted = queries[start : start + rows].index_select(1, order).transpose(0, 1)
            scored = []
            for (heads, neg_e, bias, _, _), q in zip(buckets, torch.split(q_sorted, sizes), strict=True):
                block = torch.bmm(q, neg_e) + bias  # [h_b, m, w_b]
                if head_active is not None:
                    active = head_active[start : start + rows].index_select(1, heads)
                    block = block.masked_fill(~active.T.unsqueeze(-1), float("-inf"))
                scored.append(block.permute(1, 0, 2).reshape(rows, -1))
            # The fused score of negative n: the max over its (head, n) pairs, laid out as
            # (negative, pair) with a -inf column for the padding. A max over a dimension has a cheap
            # backward (to the argmax); `scatter_reduce(amax)`'s took a third of the term's step.
            scored.append(queries.new_full((rows, 1), float("-inf")))
            pieces.append(torch.cat(scored, 1)[:, slots].max(-1).values)  # [m, N]
        neg = torch.cat(pieces) if len(pieces) > 1 else pieces[0]  # [M, N]
    with torch.no_grad():
        same = target_ids.unsqueeze(-1) == negs.view(1, 1, -1)  # [M, P, N]
        near = torch.einsum("mpd,nd->mpn", pos_e, neg_unit) > false_negative_threshold
    neg_logits = neg.unsqueeze(1).expand(-1, target_ids.shape[1], -1).masked_fill(same | near, float("-inf"))
    m_idx, p_idx = trains.nonzero(as_tuple=True)
    logits = torch.cat([pos[m_idx, p_idx].unsqueeze(1), neg_logits[m_idx, p_idx]], dim=1)
    loss_m = torch.logsumexp(logits, dim=1) - logits[:, 0]

    horizon = target_ids.shape[1]
    w_p = weights_per_offset.to(loss_m.device, loss_m.dtype)
    count_p = torch.bincount(p_idx, minlength=horizon).to(loss_m.dtype)
    loss = (w_p[p_idx] / count_p[p_idx] * loss_m).sum() / w_p[count_p > 0].sum()
    per_head = allowed[m_idx, p_idx].sum(0)
    return LossOutput(loss, int(m_idx.numel()), per_head)
