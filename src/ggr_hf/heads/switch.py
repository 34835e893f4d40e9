"""The prior switch of the released code (`prior_switch` in `code/REC/model/IDNet/hstu.py`).

Per group of every item-restricting prior (a category, a graph cluster), a logistic classifier
predicts whether the next `horizon` targets fall in that group. `"state"` reads the backbone state
`h_t` (the release's `in`); `"state_query"` reads `h_t` and the (unnormalised) query of the group's
first head (the release's `in_out`, where the group's segment-0 head is used). Trained with
class-balanced binary cross-entropy; at inference its probabilities can switch off the heads of
groups predicted absent, or calibrate max fusion (`score + log p`).

Groups are numbered across the item-restricting priors in config order (prior 0's groups first).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ggr_hf.heads.layout import HeadLayout


class GGRPriorSwitch(nn.Module):
    """One logistic classifier per item group: `logit_g = w_g . h + u_g . q_{head(g)} + b_g`.

    Args:
        layout (`HeadLayout`): the model's heads (which head serves each group for `"state_query"`).
        group_sizes (`list[int]`): number of groups of each item-restricting prior, in config order.
        hidden_size (`int`)
        use_query (`bool`): also read the group's head query (`"state_query"`).
    """

    def __init__(self, layout: HeadLayout, group_sizes: list[int], hidden_size: int, use_query: bool):
        super().__init__()
        self.num_groups = sum(group_sizes)
        self.state = nn.Linear(hidden_size, self.num_groups)
        self.query = nn.Linear(hidden_size, self.num_groups, bias=False) if use_query else None
        # Per group: the prior (layout index) and value it stands for, and its first head. Derived
        # from the config, so rebuilt exactly by `__init__` and never saved.
        prior_of, value_of, head_of = [], [], []
        for i, size in zip(layout.item_prior_indices, group_sizes):
            for v in range(size):
                prior_of.append(i)
                value_of.append(v)
                heads = (layout.head_values[:, i] == v).nonzero(as_tuple=True)[0]
                head_of.append(int(heads[0]) if len(heads) else 0)
        # Plain CPU tensors, not buffers: a model built under a meta-device context (from_pretrained)
        # must still get real values.
        self.group_prior = torch.tensor(prior_of, dtype=torch.long, device="cpu")
        self.group_value = torch.tensor(value_of, dtype=torch.long, device="cpu")
        self.group_head = torch.tensor(head_of, dtype=torch.long, device="cpu")

    @property
    def uses_query(self) -> bool:
        return self.query is not None

    def forward(self, hidden: torch.Tensor, group_queries: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            hidden (`torch.FloatTensor` of shape `(*, hidden_size)`): backbone states.
            group_queries (`torch.FloatTensor` of shape `(*, num_groups, hidden_size)`, *optional*):
                each group's head query (`"state_query"` only).

        Returns:
            `torch.FloatTensor` of shape `(*, num_groups)`: the logits.
        """
        logits = self.state(hidden)
        if self.query is not None:
            logits = logits + (group_queries * self.query.weight).sum(-1)
        return logits

    def head_log_prob(self, logits: torch.Tensor, head_values: torch.Tensor) -> torch.Tensor:
        """`log p` of each head's item group(s) (summed over item priors; 0 for a head constraining none).

        Args:
            logits (`torch.FloatTensor` of shape `(batch_size, num_groups)`)
            head_values (`torch.LongTensor` of shape `(num_heads, num_priors)`)

        Returns:
            `torch.FloatTensor` of shape `(batch_size, num_heads)`.
        """
        return F.logsigmoid(logits) @ self.head_group_matrix(head_values).to(logits.dtype)

    def head_group_matrix(self, head_values: torch.Tensor) -> torch.Tensor:
        """`torch.BoolTensor [num_groups, num_heads]`: whether head k is restricted to group g."""
        values = head_values[:, self.group_prior.to(head_values.device)]  # [H, G]
        return (values == self.group_value.to(head_values.device)).T

    def head_active(self, logits: torch.Tensor, head_values: torch.Tensor, threshold: float) -> torch.Tensor:
        """Gating: heads all of whose item groups are predicted present (probability >= `threshold`).
        Every user keeps at least the most probable group of each item prior, so that some head of the
        prior always serves them.

        Returns:
            `torch.BoolTensor` of shape `(batch_size, num_heads)`.
        """
        present = torch.sigmoid(logits) >= threshold  # [B, G]
        prior = self.group_prior.to(logits.device)
        for i in torch.unique(prior).tolist():
            cols = (prior == i).nonzero(as_tuple=True)[0]
            best = cols[logits[:, cols].argmax(1)]  # [B]
            present[torch.arange(len(best), device=logits.device), best] = True
        absent = (~present).to(logits.dtype) @ self.head_group_matrix(head_values).to(logits.dtype)
        return absent == 0


def switch_targets(
    memberships: list[torch.Tensor], target_ids: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Whether any valid target falls in each group: the switch's labels.

    Args:
        memberships (`list` of `torch.BoolTensor` of shape `(num_items + 1, num_groups_j)`): the item
            groups of each item-restricting prior, in config order.
        target_ids (`torch.LongTensor` of shape `(*, horizon)`)
        valid (`torch.BoolTensor` of shape `(*, horizon)`)

    Returns:
        `torch.BoolTensor` of shape `(*, num_groups)`.
    """
    parts = [(m[target_ids] & valid.unsqueeze(-1)).any(-2) for m in memberships]
    return torch.cat(parts, dim=-1)


def switch_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Class-balanced binary cross-entropy, averaged over groups.

    Each group's positives weigh `n_neg / n_pos` (counted in the batch), so that a rare group is not
    learnt as "always absent". The release weighs them `(1 - p) / p` with `p` the group's share of all
    category counts in the data set; the batch count needs no data statistics in the model.

    Args:
        logits (`torch.FloatTensor` of shape `(M, num_groups)`)
        labels (`torch.BoolTensor` of shape `(M, num_groups)`)
    """
    y = labels.to(logits.dtype)
    n_pos = y.sum(0)
    pos_weight = (len(y) - n_pos) / n_pos.clamp(min=1)
    per = F.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight, reduction="none")
    return per.mean()
