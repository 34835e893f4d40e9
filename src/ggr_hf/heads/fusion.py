"""Scoring the catalogue with many heads and fusing the scores (max or mean), with attribution.

`fuse_scores` scores each item only with the heads it is compatible with: head k multiplies its
query with the embeddings of its own items `Omega_k`, so the work is proportional to the number of
(item, head) pairs rather than to `num_heads x num_items`. `fuse_scores_dense` is the plain
reference (score everything, mask, reduce); the tests check that both agree.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
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


@dataclass
class FusionIndex:
    """The catalogue ordered by *compatibility signature* (the set of heads that may score an item),
    for exact fused top-k without a users x items score matrix.

    Items with the same signature form one contiguous block of `table`; a block is scored by exactly
    its compatible heads in one product, so the work is the useful work (2 x d FLOPs per compatible
    (user, head, item) triple) with no gather of embedding rows at query time, and each item's fused
    score is complete within its block.

    Attributes:
        order (`torch.LongTensor` of shape `(n,)`): item ids in block order (items no head may score,
            and the padding row, are left out).
        position (`torch.LongTensor` of shape `(num_items + 1,)`): each item id's index in `order`, -1
            where absent.
        table (`torch.FloatTensor` of shape `(n, hidden_size)`): `item_embeddings[order]`, contiguous.
        blocks (`list` of `(start, end, heads)`): each block's slice of `order` and its compatible
            heads (`torch.LongTensor` of shape `(h_b,)`).
        num_heads (`int`): the heads of the compatibility matrix it was built from.
    """

    order: torch.Tensor
    position: torch.Tensor
    table: torch.Tensor
    blocks: list[tuple[int, int, torch.Tensor]]
    num_heads: int


def build_fusion_index(item_embeddings: torch.Tensor, compatible: torch.Tensor) -> FusionIndex:
    """Orders the catalogue into signature blocks (see [`FusionIndex`]).

    Args:
        item_embeddings (`torch.FloatTensor` of shape `(num_items + 1, hidden_size)`): row 0 padding.
        compatible (`torch.BoolTensor` of shape `(num_items + 1, num_heads)`): item-head compatibility.
    """
    mask = compatible.clone()
    mask[0] = False
    signatures, signature_of = torch.unique(mask, dim=0, return_inverse=True)  # [S, H], [I+1]
    order = torch.argsort(signature_of, stable=True)
    order = order[signatures[signature_of[order]].any(1)]  # items some head may score
    counts = torch.bincount(signature_of[order], minlength=len(signatures)).tolist()
    blocks, start = [], 0
    for s, n in enumerate(counts):
        if n:
            blocks.append((start, start + n, signatures[s].nonzero(as_tuple=True)[0]))
            start += n
    position = torch.full((mask.shape[0],), -1, dtype=torch.long, device=order.device)
    position[order] = torch.arange(len(order), device=order.device)
    table = item_embeddings.index_select(0, order).contiguous()
    return FusionIndex(order=order, position=position, table=table, blocks=blocks, num_heads=mask.shape[1])


# Up to this many query rows (users x heads of a block), a CPU product goes through NumPy's BLAS.
_NUMPY_MAX_ROWS = 8
# Up to this many rows, one NumPy matrix-vector product per row beats its matrix-matrix product.
_NUMPY_ROWWISE = 3
# A chunk of a block holds at least this many items, and for few query rows up to this many scores:
# one user's request scores a million-item block in one product and one top-k.
_MIN_CHUNK_ITEMS = 32768
_CHUNK_SCORES = 1 << 21
# Chunk top-k lists held before they are merged (memory: batch_size x k x this).
_PENDING_CHUNKS = 16


def uses_numpy_product(rows: int, device: torch.device | str) -> bool:
    """Whether a product with `rows` query rows on `device` goes through NumPy (see `_block_scores`)."""
    return rows <= _NUMPY_MAX_ROWS and torch.device(device).type == "cpu"


def numpy_request(index: FusionIndex, batch_size: int, device: torch.device | str) -> bool:
    """Whether every block's product of a `fused_topk` over `batch_size` users goes through NumPy: then
    torch's own ops of the request are best run on one thread ([`single_threaded_torch`])."""
    heads = max((len(block_heads) for _, _, block_heads in index.blocks), default=1)
    return uses_numpy_product(batch_size * heads, device)


_threads_lock = threading.Lock()
_threads_users = 0
_threads_saved = 0


@contextmanager
def single_threaded_torch(enabled: bool = True) -> Iterator[None]:
    """Runs torch's CPU ops on one thread inside the block (re-entrant, thread-safe: the first entrant
    saves the thread count, the last one out restores it).

    For a request whose catalogue product goes through NumPy's BLAS: torch's OpenMP workers keep
    spinning after each parallel region and take the cores NumPy's threads need, which tripled one
    user's latency at 100k items (`benchmarks/bench_serving.py`); the backbone forward of one history
    gains nothing from a second thread. The thread count is process-wide: other Python threads running
    torch ops meanwhile run them on one thread too.
    """
    global _threads_users, _threads_saved
    if not enabled:
        yield
        return
    with _threads_lock:
        if _threads_users == 0:
            _threads_saved = torch.get_num_threads()
            torch.set_num_threads(1)
        _threads_users += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0:
                torch.set_num_threads(_threads_saved)


def _block_scores(queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """`queries @ items.T`: `(r, d)` x `(n, d)` -> `(r, n)`.

    For a few query rows (one user's request) the product is bound by reading `items`; on the CPU,
    NumPy's OpenBLAS matrix-vector product streams the table at several times the speed of torch's
    MKL `mm`/`mv` on this machine, while OpenBLAS's matrix-matrix product with 2 to 8 rows is up to
    4x slower than its matrix-vector one per row (`benchmarks/bench_serving.py` and the figures in
    `benchmarks/README.md`). So such products go through NumPy, on the same memory (no copy), one
    matrix-vector product per row up to `_NUMPY_ROWWISE` rows. Gradients never flow here
    (`score_items` runs under `no_grad`); a tensor that needs them takes `torch.mm`.
    """
    if (
        uses_numpy_product(queries.shape[0], queries.device)
        and queries.dtype == torch.float32
        and items.dtype == torch.float32
        and not (torch.is_grad_enabled() and (queries.requires_grad or items.requires_grad))
    ):
        table, q = items.contiguous().numpy(), queries.contiguous().numpy()
        if len(q) > _NUMPY_ROWWISE:
            return torch.from_numpy(q @ table.T)
        out = np.empty((len(q), len(table)), dtype=np.float32)
        for row in range(len(q)):
            np.dot(table, q[row], out=out[row])
        return torch.from_numpy(out)
    return torch.mm(queries, items.T)


def _merge_topk(
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best `k` of several `(scores, items, heads)` lists, each `(batch_size, n_i)`."""
    if len(parts) == 1:
        return parts[0]
    scores = torch.cat([p[0] for p in parts], dim=1)
    best, keep = scores.topk(k, dim=1)
    items = torch.cat([p[1] for p in parts], dim=1).gather(1, keep)
    return best, items, torch.cat([p[2] for p in parts], dim=1).gather(1, keep)


def fused_topk(
    queries: torch.Tensor,
    index: FusionIndex,
    k: int,
    head_active: torch.Tensor | None = None,
    exclude: torch.Tensor | None = None,
    fusion: str = "max",
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The exact top-k of the fused scores, block by block with a running top-k.

    Gives the items, scores and attributions that `fuse_scores` (or `fuse_scores_dense`), the removal
    of `exclude` and a `topk` give (up to the order of equal scores), without materialising the
    `(batch_size, num_items)` scores: memory is `batch_size x max heads per item x chunk_size`.

    Args:
        queries (`torch.FloatTensor` of shape `(batch_size, num_heads, hidden_size)`): normalised head
            queries, times the logit scale if wanted.
        index (`FusionIndex`): from [`build_fusion_index`] on the same item embeddings.
        k (`int`): list length.
        head_active (`torch.BoolTensor` of shape `(batch_size, num_heads)`, *optional*): heads allowed
            for each user.
        exclude (`torch.LongTensor` of shape `(batch_size, n)`, *optional*): item ids to leave out
            (0 ignored), e.g. the history.
        fusion (`str`): `"max"` or `"mean"` over a user's active compatible heads.
        chunk_size (`int`, *optional*): items scored at once within a block. Default: 32,768, or more
            for few query rows, up to 2^21 scores per chunk (one user's request at a million items
            is one product and one top-k).

    Returns:
        scores (`torch.FloatTensor` of shape `(batch_size, k)`), item_ids (`torch.LongTensor` of shape
        `(batch_size, k)`) and head_index (`torch.LongTensor` of shape `(batch_size, k)`), best first;
        where fewer than `k` items can be recommended the tail holds `-inf`, item 0 and head -1.
    """
    if fusion not in ("max", "mean"):
        raise GGRInputError(f"fusion must be 'max' or 'mean', got {fusion!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise GGRInputError(f"k must be an integer >= 1, got {k!r}")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise GGRInputError(f"chunk_size must be an integer >= 1 or None, got {chunk_size!r}")
    _check_topk_tensors(queries, index, head_active, exclude)
    with single_threaded_torch(numpy_request(index, queries.shape[0], queries.device)):
        return _fused_topk(queries, index, k, head_active, exclude, fusion, chunk_size)


def check_exclude_ids(exclude: torch.Tensor, num_items: int) -> None:
    """`GGRInputError` naming the first id of `exclude` (any shape) outside `0..num_items`."""
    outside = (exclude < 0) | (exclude > num_items)
    if bool(outside.any()):
        raise GGRInputError(
            f"exclude: item id {int(exclude[outside][0])} is outside 0..{num_items} (0 is ignored)"
        )


def _check_topk_tensors(
    queries: torch.Tensor, index: FusionIndex, head_active: torch.Tensor | None, exclude: torch.Tensor | None
) -> None:
    """`GGRInputError` naming the tensor given to `fused_topk` that does not fit the index (a wrong
    shape would otherwise broadcast into a wrong list, not fail)."""
    expected = (index.num_heads, index.table.shape[1])
    if queries.dim() != 3 or tuple(queries.shape[1:]) != expected:
        raise GGRInputError(
            f"queries: expected (batch_size, num_heads, hidden_size) = (*, {expected[0]}, {expected[1]}) "
            f"for this index, got {tuple(queries.shape)}"
        )
    bsz = queries.shape[0]
    if head_active is not None and (
        head_active.dtype != torch.bool or tuple(head_active.shape) != (bsz, expected[0])
    ):
        raise GGRInputError(
            f"head_active: expected a bool tensor of shape {(bsz, expected[0])}, got "
            f"{head_active.dtype} {tuple(head_active.shape)}"
        )
    if exclude is not None:
        if exclude.dtype not in (torch.int32, torch.int64) or exclude.dim() != 2 or exclude.shape[0] != bsz:
            raise GGRInputError(
                f"exclude: expected integer item ids of shape ({bsz}, n), got {exclude.dtype} {tuple(exclude.shape)}"
            )
        check_exclude_ids(exclude, index.position.shape[0] - 1)


def _fused_topk(
    queries: torch.Tensor,
    index: FusionIndex,
    k: int,
    head_active: torch.Tensor | None,
    exclude: torch.Tensor | None,
    fusion: str,
    chunk_size: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`fused_topk` after its argument checks."""
    bsz, device = queries.shape[0], queries.device
    # Each chunk's top-k waits in `pending` and is merged a few chunks at a time: one merge per chunk
    # cost as much as the chunk's own top-k for one user's request. The first entry (all empty) pads
    # the result when fewer than k items can be recommended.
    pending = [
        (
            torch.full((bsz, k), float("-inf"), dtype=queries.dtype, device=device),
            torch.zeros((bsz, k), dtype=torch.long, device=device),
            torch.full((bsz, k), -1, dtype=torch.long, device=device),
        )
    ]
    # Each excluded item's place in the block order (-1: absent, never scored anyway).
    excluded = None if exclude is None else index.position.to(device)[exclude]  # [B, n]
    for start, end, heads in index.blocks:
        heads = heads.to(device)
        q = queries.index_select(1, heads)  # [B, h_b, d]
        active = None if head_active is None else head_active.index_select(1, heads).unsqueeze(-1)
        step = chunk_size or max(_MIN_CHUNK_ITEMS, _CHUNK_SCORES // (bsz * len(heads)))
        for lo in range(start, end, step):
            hi = min(end, lo + step)
            # One (B * h_b, d) x (d, n) product rather than h_b batched ones: the larger GEMM runs
            # closer to the machine's peak.
            s = _block_scores(q.reshape(-1, q.shape[-1]), index.table[lo:hi]).view(bsz, q.shape[1], -1)
            if active is not None:
                s = s.masked_fill(~active, float("-inf"))
            if s.shape[1] == 1:  # a single compatible head: no reduction, every item's head is that one
                top, arg = s[:, 0], None
            else:
                top, arg = s.max(dim=1)  # [B, n]; the attribution is the best head in both fusions
            if fusion == "mean":
                total = s.masked_fill(torch.isinf(s), 0.0).sum(1)
                count = float(s.shape[1]) if active is None else active.sum(1).to(s.dtype).clamp(min=1)
                top = torch.where(torch.isfinite(top), total / count, top)
            if excluded is not None:  # written in place: `top` is this chunk's own (or a view of `s`)
                rows, cols = ((excluded >= lo) & (excluded < hi)).nonzero(as_tuple=True)
                top[rows, excluded[rows, cols] - lo] = float("-inf")
            chunk_best, pick = top.topk(min(k, hi - lo), dim=1)
            chunk_head = heads[0].expand_as(pick) if arg is None else heads[arg.gather(1, pick)]
            pending.append((chunk_best, index.order[lo:hi].to(device)[pick], chunk_head))
            if len(pending) > _PENDING_CHUNKS:
                pending = [_merge_topk(pending, k)]
    best, best_item, best_head = _merge_topk(pending, k)
    missing = torch.isinf(best) & (best < 0)
    best_item = best_item.masked_fill(missing, 0)
    best_head = best_head.masked_fill(missing, -1)
    return best, best_item, best_head
