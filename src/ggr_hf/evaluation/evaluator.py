"""Full-ranking evaluation of GGR models and of the most-popular floor, with the paper's metrics."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ggr_hf.data.collator import eval_batches
from ggr_hf.data.splits import EvalRows
from ggr_hf.errors import GGRInputError
from ggr_hf.evaluation.metrics import aggregate, compute_ranking_metrics, new_event_mask

DEFAULT_KS = (5, 10, 50, 200)


def _run(
    scorer: Callable[[dict], tuple[torch.Tensor, torch.Tensor | None]],
    rows: EvalRows,
    *,
    max_seq_len: int,
    item_categories: torch.Tensor | None,
    ks: tuple[int, ...],
    batch_size: int,
    exclude_history: bool,
    user_groups: np.ndarray | None,
    head_names: list[str] | None,
    progress: bool,
    desc: str,
) -> dict[str, float]:
    per_user: dict[str, list[torch.Tensor]] = {}
    head_counts = None if head_names is None else torch.zeros(len(head_names), dtype=torch.long)
    num_rows = None
    batches = eval_batches(rows, max_seq_len, batch_size, user_groups)
    total = (len(rows) + batch_size - 1) // batch_size
    for batch in tqdm(batches, total=total, desc=desc, disable=not progress, leave=False):
        scores, head_index = scorer(batch)
        scores = scores.float().cpu()
        num_rows = scores.shape[1]
        if exclude_history:
            scores = scores.scatter(1, batch["history"], float("-inf"))
        scores[:, 0] = float("-inf")
        kmax = min(max(max(ks), 50), num_rows - 1)
        topk = scores.topk(kmax, dim=1).indices  # [B, kmax]
        if head_index is not None and head_counts is not None:
            top10 = head_index.cpu().gather(1, topk[:, :10]).reshape(-1)
            head_counts += torch.bincount(top10[top10 >= 0], minlength=len(head_names))
        use_ks = tuple(k for k in ks if k <= kmax)
        m = compute_ranking_metrics(
            topk,
            batch["targets"],
            ks=use_ks,
            item_categories=item_categories,
            history=batch["history"] if item_categories is not None else None,
            entropy_ks=tuple(k for k in (10, 50) if k <= kmax) if item_categories is not None else (),
        )
        if "target_events" in batch:
            # New-interest by event type: targets with an interaction type absent from the history.
            new_ev = new_event_mask(batch["history_events"], batch["target_events"])
            for k in use_ks:
                r = m[f"recall@{k}"].clone()
                r[~new_ev] = float("nan")
                m[f"new_event_recall@{k}"] = r
        for key, val in m.items():
            per_user.setdefault(key, []).append(val)
    merged = {k: torch.cat(v) for k, v in per_user.items()}
    out = aggregate(merged)
    if head_counts is not None and head_counts.sum() > 0:
        share = head_counts.double() / head_counts.sum()
        out["head_share@10"] = {name: float(s) for name, s in zip(head_names, share)}
    return out


@torch.no_grad()
def evaluate_model(
    model,
    rows: EvalRows,
    *,
    item_categories: torch.Tensor | None = None,
    ks: tuple[int, ...] = DEFAULT_KS,
    batch_size: int = 256,
    user_groups: np.ndarray | None = None,
    fusion: str | None = None,
    oracle_events: bool = False,
    exclude_history: bool | None = None,
    progress: bool = False,
) -> dict:
    """Full-ranking metrics of a recommendation model (GGR or a baseline: `ggr_hf.modeling_recommender`) on one split.

    Args:
        model: the model (put in eval mode here and left so).
        rows (`EvalRows`): histories and targets of the split.
        item_categories (`torch.FloatTensor` of shape `(num_items + 1, C)`, *optional*): multi-hot
            categories for entropy H@K and new-interest metrics.
        ks: cutoffs K.
        user_groups (`np.ndarray [num_users, num_user_priors]`, *optional*): for user priors.
        fusion: `"max"` / `"mean"`; defaults to the model config's.
        oracle_events (`bool`): the ORACLE setting of the released MerRec runs: only the heads of the
            first test target's true event type are used. Report it only as such.
        exclude_history: defaults to `model.config.exclude_history`.

    Returns:
        `dict` with `recall@K`, `ndcg@K` (and `_h{h}` horizons), `entropy@10/50`,
        `new_interest_recall@K`, `num_users`, `head_share@10` (share of top-10 slots per head); for a
        GGR model with a prior switch also `switch_accuracy` (share of (user, group) decisions right at
        `config.switch_threshold`), `switch_balanced_accuracy` (per group the mean of the true-positive
        and true-negative rates, averaged over the groups where both classes occur: chance is 0.5
        whatever the class balance) and `switch_positive_rate` (share of (user, group) labels that are
        positive). The switch's labels are whether one of the user's first `config.horizon` targets of
        the split falls in the group: what it is trained to predict.
    """
    model.eval()
    device = model.device
    if exclude_history is None:
        exclude_history = bool(model.config.exclude_history)

    def scorer(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        target_event = batch["target_events"][:, 0].to(device) if oracle_events else None
        ug = batch["user_groups"].to(device) if "user_groups" in batch else None
        return model.score_items(
            batch["input_ids"].to(device),
            batch["timestamps"].to(device),
            query_timestamps=batch["query_timestamps"].to(device),
            user_groups=ug,
            target_event=target_event,
            fusion=fusion,
        )

    if oracle_events and rows.target_events is None:
        raise GGRInputError("oracle_events needs a data set with event types")
    switch = (
        SwitchCounts(float(model.config.switch_threshold))
        if getattr(model, "switch", None) is not None
        else None
    )
    score = scorer
    if switch is not None:

        def score(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
            probs, labels = model.switch_predictions(
                batch["input_ids"].to(device),
                batch["timestamps"].to(device),
                batch["query_timestamps"].to(device),
                target_ids=batch["targets"].to(device),
            )
            switch.add(probs, labels)
            return scorer(batch)

    out = _run(
        score,
        rows,
        max_seq_len=model.config.max_seq_len,
        item_categories=item_categories,
        ks=ks,
        batch_size=batch_size,
        exclude_history=exclude_history,
        user_groups=user_groups,
        head_names=model.head_names,
        progress=progress,
        desc="evaluate",
    )
    if switch is not None:
        out.update(switch.metrics())
    return out


class SwitchCounts:
    """Confusion counts of the prior switch per group, accumulated over evaluation batches."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.counts: torch.Tensor | None = None  # [4, G]: tp, fn, fp, tn

    def add(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """`probs` `(batch_size, num_groups)`, `labels` `(batch_size, num_groups)` bool."""
        pred = (probs >= self.threshold).cpu()
        y = labels.cpu()
        batch = torch.stack([(pred & y).sum(0), (~pred & y).sum(0), (pred & ~y).sum(0), (~pred & ~y).sum(0)])
        self.counts = batch if self.counts is None else self.counts + batch

    def metrics(self) -> dict[str, float]:
        if self.counts is None:
            return {}
        tp, fn, fp, tn = self.counts.double()
        pos, neg = tp + fn, fp + tn
        both = (pos > 0) & (neg > 0)
        balanced = ((tp / pos.clamp(min=1) + tn / neg.clamp(min=1)) / 2)[both]
        total = float(self.counts.sum())
        return {
            "switch_accuracy": float((tp + tn).sum()) / total,
            "switch_balanced_accuracy": float(balanced.mean()) if bool(both.any()) else float("nan"),
            "switch_positive_rate": float(pos.sum()) / total,
        }


def evaluate_popularity(
    popularity: np.ndarray,
    rows: EvalRows,
    *,
    item_categories: torch.Tensor | None = None,
    ks: tuple[int, ...] = DEFAULT_KS,
    batch_size: int = 1024,
    exclude_history: bool = True,
) -> dict:
    """The most-popular floor: items ranked by training-interaction count, history suppressed.

    Args:
        popularity (`np.ndarray [num_items + 1]`): training counts (`SplitData.item_popularity()`).
    """
    # Scores are minus the popularity rank, ties broken by item id, so the ranking is deterministic
    # and exact in float32.
    pop = np.asarray(popularity, dtype=np.int64)
    order = np.lexsort((np.arange(len(pop)), -pop))
    rank = np.empty(len(pop), dtype=np.int64)
    rank[order] = np.arange(len(pop))
    base = -torch.as_tensor(rank, dtype=torch.float32)

    def scorer(batch: dict) -> tuple[torch.Tensor, None]:
        return base.unsqueeze(0).expand(len(batch["targets"]), -1).clone(), None

    return _run(
        scorer,
        rows,
        max_seq_len=1,
        item_categories=item_categories,
        ks=ks,
        batch_size=batch_size,
        exclude_history=exclude_history,
        user_groups=None,
        head_names=None,
        progress=False,
        desc="popularity",
    )
