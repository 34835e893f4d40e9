"""Prior-conditioned adapter heads (Medusa-style residual blocks) and their compositions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ggr_hf.heads.layout import HeadLayout


class GGRZeroLinear(nn.Linear):
    """The adapter weight `W_k`. Its own class so that `_init_weights` can zero it.

    transformers' default `_init_weights` redraws every `nn.Linear` (at construction and for keys
    missing from a checkpoint), which would silently turn an identity head into a random one.
    """


class GGRGroupEmbedding(nn.Module):
    """Learned embedding of a prior's groups, added to a child's input in the hierarchical composition.

    Zero at initialisation so that hierarchical heads, like the others, start as the backbone output.
    """

    def __init__(self, num_groups: int, hidden_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_groups, hidden_size))


class GGRAdapterBlock(nn.Module):
    """One head's adapter: `q = x + SiLU(W x + b)`.

    With `W = 0` and no bias (the default) the block is the identity, so every head starts equal to
    the backbone output.
    """

    def __init__(self, hidden_size: int, bias: bool = False):
        super().__init__()
        self.adapter = GGRZeroLinear(hidden_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x`: `(*, hidden_size)` -> `(*, hidden_size)`."""
        return x + F.silu(self.adapter(x))


def _stacked_blocks(blocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """Applies block `n` to `x[..., n, :]` for every `n` in one batched product.

    Args:
        blocks: `N` independent `GGRAdapterBlock`s.
        x (`torch.FloatTensor` of shape `(*, N, hidden_size)`)

    Returns:
        `torch.FloatTensor` of shape `(*, N, hidden_size)`, equal to `[blocks[n](x[..., n, :])]`.
    """
    weight = torch.stack([b.adapter.weight for b in blocks])  # [N, d_out, d_in]
    out = torch.einsum("...nd,ned->...ne", x, weight)
    if blocks[0].adapter.bias is not None:
        out = out + torch.stack([b.adapter.bias for b in blocks])
    return x + F.silu(out)


def _apply_by_node(blocks: nn.ModuleList, x: torch.Tensor, node: torch.Tensor) -> torch.Tensor:
    """Applies `blocks[node[m]]` to row `x[m]`, one matrix product per node present.

    Args:
        x (`torch.FloatTensor` of shape `(M, hidden_size)`)
        node (`torch.LongTensor` of shape `(M,)`)
    """
    order = torch.argsort(node, stable=True)
    counts = torch.bincount(node, minlength=len(blocks)).tolist()
    parts = torch.split(x.index_select(0, order), counts)
    out = torch.cat([blocks[n](part) for n, part in enumerate(parts) if counts[n]] or [x[:0]])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order), device=order.device)
    return out.index_select(0, inverse)


class GGRHeads(nn.Module):
    """All heads of a GGR model, composed as the config asks.

    - multiplicative / additive: one independent block per head, applied to the backbone state;
    - hierarchical: levels follow the order of `config.priors` (first = coarsest). A node at level
      `l` with path `(v_0, ..., v_l)` computes `Block_{v_0..v_l}(z_parent + e^{(l)}_{v_l})`, where
      `e^{(l)}` is a learned embedding of level `l`'s groups shared by all parents (the released
      code's two-level form `head_{s,c} = Block_{c,s}(g_c + e_s)`); the root's input is `h`. Upper
      levels are shared by their children, which shrinks rare combinations toward their parent.
    - no priors: the identity ("backbone" head), no parameters.
    """

    def __init__(self, layout: HeadLayout, hidden_size: int, bias: bool = False):
        super().__init__()
        self.layout = layout
        self.hidden_size = hidden_size
        self.levels = nn.ModuleList()
        self.level_embeddings = nn.ModuleList()
        self._parent_index: list[torch.Tensor] = []
        self._value_index: list[torch.Tensor] = []
        # For each level, the node on each head's path (the head itself on the last level).
        self._leaf_node: list[torch.Tensor] = []
        if layout.is_backbone_only:
            return
        if layout.composition != "hierarchical":
            self.levels.append(nn.ModuleList([GGRAdapterBlock(hidden_size, bias) for _ in layout.paths]))
            self._leaf_node.append(torch.arange(layout.num_heads, device="cpu"))
            return
        # Nodes of level l are the distinct path prefixes of length l + 1, in product order, so the
        # last level's nodes are exactly the heads in layout order.
        depth = len(layout.priors)
        prev: list[tuple[int, ...]] = [()]
        for level in range(depth):
            nodes = [tuple(v for _, v in path[: level + 1]) for path in layout.paths]
            node_pos = {n: i for i, n in enumerate(dict.fromkeys(nodes))}
            self._leaf_node.append(torch.tensor([node_pos[n] for n in nodes], dtype=torch.long, device="cpu"))
            nodes = list(node_pos)
            self.levels.append(nn.ModuleList([GGRAdapterBlock(hidden_size, bias) for _ in nodes]))
            parent_pos = {p: i for i, p in enumerate(prev)}
            self._parent_index.append(
                torch.tensor([parent_pos[n[:-1]] for n in nodes], dtype=torch.long, device="cpu")
            )
            self._value_index.append(torch.tensor([n[-1] for n in nodes], dtype=torch.long, device="cpu"))
            if level > 0:
                num_values = len(layout.priors[level]["values"])
                self.level_embeddings.append(GGRGroupEmbedding(num_values, hidden_size))
            prev = nodes

    @property
    def num_heads(self) -> int:
        return self.layout.num_heads

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """
        Args:
            hidden (`torch.FloatTensor` of shape `(*, hidden_size)`): backbone states `h`.

        Returns:
            `torch.FloatTensor` of shape `(*, num_heads, hidden_size)`: the head queries `q_k`
            (not normalised; scoring normalises them).
        """
        if self.layout.is_backbone_only:
            return hidden.unsqueeze(-2)
        if self.layout.composition != "hierarchical":
            x = hidden.unsqueeze(-2).expand(*hidden.shape[:-1], self.num_heads, self.hidden_size)
            return _stacked_blocks(self.levels[0], x)
        z = hidden.unsqueeze(-2)  # [*, 1, d]: the root
        for level, blocks in enumerate(self.levels):
            parent = self._parent_index[level].to(hidden.device)
            x = z.index_select(-2, parent)  # [*, nodes, d]
            if level > 0:
                emb = self.level_embeddings[level - 1].weight
                x = x + emb.index_select(0, self._value_index[level].to(hidden.device))
            z = _stacked_blocks(blocks, x)
        return z

    def forward_selected(self, hidden: torch.Tensor, head_index: torch.Tensor) -> torch.Tensor:
        """Computes one head per row: only the (position, head) pairs the loss needs.

        Args:
            hidden (`torch.FloatTensor` of shape `(M, hidden_size)`): backbone state of each pair.
            head_index (`torch.LongTensor` of shape `(M,)`): the head of each pair.

        Returns:
            `torch.FloatTensor` of shape `(M, hidden_size)`, equal to `forward(hidden)[m, head_index[m]]`.
        """
        if self.layout.is_backbone_only:
            return hidden
        z = hidden
        for level, blocks in enumerate(self.levels):
            node = self._leaf_node[level].to(hidden.device)[head_index]  # [M]
            x = z
            if level > 0:
                value = self._value_index[level].to(hidden.device)[node]
                x = x + self.level_embeddings[level - 1].weight[value]
            z = _apply_by_node(blocks, x, node)
        return z
