"""ComiRec-SA, ComiRec-DR and REMI: multi-interest retrieval baselines on a ggr-hf backbone.

ComiRec (Cen et al., "Controllable Multi-Interest Framework for Recommendation", KDD 2020) reads a
history `H = (h_1..h_n)` and extracts `K` interest vectors, either by self-attention (SA,
`A = softmax(w_2^T tanh(W_1 H^T))`, `V = A H`) or by dynamic routing (DR, capsules: `e_{j|i} = W e_i`,
routing logits refined by agreement for a few rounds, each interest squashed). Training picks, for each
target, the interest that scores it highest (a hard readout, no gradient through the choice) and trains
that interest with a sampled softmax. Retrieval scores the catalogue with every interest and merges the
lists by score, i.e. max fusion. REMI (Xie et al., RecSys 2023) keeps the model and changes the training:
interest-aware hard negatives (IHN) and routing regularisation (RR).

What this implementation does (the release's `code/REC/model/IDNet/comirec.py` / `remi.py` for the facts):

- The encoder is any ggr-hf backbone (`build_backbone`), HSTU by default as in the release; the interests
  are extracted from its L2-normalised per-position states.
- Extraction is causal and done at every position `t` over states `0..t` (the release unfolds one
  window per position for the same effect), so every position with a target trains, like GGR and HSTU.
  At inference the last real position is used.
- Loss: cosine scores times a learned logit scale, InfoNCE over the positive and catalogue-wide sampled
  negatives (negatives equal to the positive or with cosine above `false_negative_threshold` masked),
  mean over (position, target) pairs.
- REMI's IHN (`hard_negative_beta` > 0): a negative's term in the softmax denominator is weighted by
  `n * softmax_j(beta * s_j)`, `s_j` the scaled logit of negative j against the interest being trained
  (an importance-sampled estimate of a hardness-tilted negative distribution), exactly the release's
  log-space form. REMI's RR (`routing_reg_lambda` > 0): for each position, each interest's routing row is
  centred over the history, `C = D D^T / hidden_size`, and the penalty is `||diag(C)||^2`, averaged over
  the real positions and added with weight lambda (the release's normalisation by the hidden size).

Departures from the papers and the release, each deliberate:

1. Logit scale: a plain parameter initialised at `logit_scale_init` and clamped at `logit_scale_max`, as
   GGR's (the release learns its logarithm, clamped at log 100; ComiRec uses raw inner products).
2. Hard readout by cosine (the interest scored highest at inference is the one trained); the release
   and ComiRec take the argmax of raw inner products between unnormalised interests and item embeddings.
3. The encoder states are L2-normalised (the backbone contract); the release feeds HSTU's raw outputs to
   the attention network. ComiRec-SA's extra positional embedding before the attention is left out: the
   encoder already encodes positions.
4. ComiRec-DR: one `d x d` map per interest shared over positions (ComiRec's code has one per
   (position, interest), which does not carry to a causal window of varying length), routing logits
   start at zero (ComiRec draws them at random, which would make inference non-deterministic; the
   per-interest maps break the symmetry instead). Routing softmax over interests, squash, and no
   gradient through the intermediate rounds, as in ComiRec's code. The release has no DR.
5. IHN's `n` is the number of unmasked negatives of the pair (the release uses all drawn negatives,
   masked ones included).
6. Initialisation: the self-attention weights truncated-normal(0, 0.02) as the release; the DR maps
   Xavier-normal (ComiRec's TensorFlow default is Glorot-uniform).
7. RR also applies to ComiRec-DR's routing coefficients when `extractor="dr"` (the release has SA only);
   as in the release it is averaged over the real positions of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ggr_hf.baselines.configuration_comirec import ComiRecConfig, RemiConfig
from ggr_hf.configuration_utils import register_model_type
from ggr_hf.modeling_recommender import RecommenderMixin
from ggr_hf.models import build_backbone, register_backbone_models

__all__ = [
    "ComiRecDynamicRouting",
    "ComiRecForRecommendation",
    "ComiRecOutput",
    "ComiRecPreTrainedModel",
    "ComiRecSelfAttention",
    "RemiForRecommendation",
    "hard_negative_weights",
    "routing_regularization",
]


@dataclass
class ComiRecOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): the sampled-softmax loss (plus
            `routing_reg_lambda` times the routing regularisation), when `target_ids` are given.
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`): encoder states.
        head_states (`torch.FloatTensor` of shape `(batch_size, seq_len, num_interests, hidden_size)`,
            *optional*): L2-normalised interests at every position (`output_head_states` or no targets).
        routing (`torch.FloatTensor` of shape `(batch_size, seq_len, num_interests, seq_len)`, *optional*):
            the attention (SA) or routing coefficients (DR) of each position's interests over the history.
        routing_loss (`torch.FloatTensor` of shape `()`, *optional*): the routing regularisation (unweighted).
        num_pairs (`int`): number of (position, target) pairs the loss averages over.
    """

    loss: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    head_states: torch.FloatTensor | None = None
    routing: torch.FloatTensor | None = None
    routing_loss: torch.FloatTensor | None = None
    num_pairs: int | None = None


# ---------------------------------------------------------------------- interest extractors


class ComiRecSelfAttention(nn.Module):
    """ComiRec-SA: `a_{j,k} = w_k^T tanh(W_1 h_j + b_1)`, softmax over the allowed history positions j,
    interest `k` = the attention-weighted sum of the states."""

    def __init__(self, hidden_size: int, attention_size: int, num_interests: int, dropout: float):
        super().__init__()
        # Raw parameters rather than nn.Linear, so that the composite init does not treat them as
        # the backbone's linear layers.
        self.w1 = nn.Parameter(torch.empty(hidden_size, attention_size))
        self.b1 = nn.Parameter(torch.empty(attention_size))
        self.w2 = nn.Parameter(torch.empty(attention_size, num_interests))
        self.dropout = nn.Dropout(dropout)

    def forward(self, states: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            states (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`)
            allowed (`torch.BoolTensor` of shape `(batch_size, num_queries, seq_len)`): which history
                positions each query position reads (causal and not padding).

        Returns:
            interests `(batch_size, num_queries, num_interests, hidden_size)` and the attention
            `(batch_size, num_queries, num_interests, seq_len)` (rows sum to 1 over allowed positions).
        """
        # The logits of an item do not depend on the query position: computed once per item.
        logits = self.dropout(torch.tanh(states @ self.w1 + self.b1)) @ self.w2  # [B, T, K]
        logits = logits.transpose(1, 2).unsqueeze(1)  # [B, 1, K, T]
        keep = allowed.unsqueeze(2)  # [B, S, 1, T]
        logits = logits.masked_fill(~keep, float("-inf"))
        # A query position reading nothing (an all-padding row) gets zero weights, not NaN.
        weights = torch.where(keep.any(-1, keepdim=True), torch.softmax(logits, dim=-1), 0.0)
        interests = torch.einsum("bskj,bjd->bskd", weights, states)
        return interests, weights


def squash(z: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Capsule squash `|z|^2 / (1 + |z|^2) * z / |z|` over the last dimension."""
    norm_sq = (z * z).sum(-1, keepdim=True)
    return z * (norm_sq / (1.0 + norm_sq) / torch.sqrt(norm_sq + eps))


class ComiRecDynamicRouting(nn.Module):
    """ComiRec-DR: capsule routing with one bilinear map per interest (`e_{k|j} = W_k h_j`), routing
    logits starting at zero, softmax over interests, squash, `iterations` rounds of agreement."""

    def __init__(self, hidden_size: int, num_interests: int, iterations: int):
        super().__init__()
        self.maps = nn.Parameter(torch.empty(num_interests, hidden_size, hidden_size))
        self.iterations = iterations

    def forward(self, states: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            states (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`)
            allowed (`torch.BoolTensor` of shape `(batch_size, num_queries, seq_len)`)

        Returns:
            interests `(batch_size, num_queries, num_interests, hidden_size)` (squashed capsules) and the
            final routing coefficients `(batch_size, num_queries, num_interests, seq_len)`.
        """
        votes = torch.einsum("bjd,ked->bjke", states, self.maps)  # [B, T, K, d]
        # As ComiRec's code: the intermediate rounds only decide the coupling, without gradient.
        fixed_votes = votes.detach()
        keep = allowed.unsqueeze(2).to(states.dtype)  # [B, S, 1, T]
        bsz, num_queries, seq_len = allowed.shape
        logits = states.new_zeros(bsz, num_queries, self.maps.shape[0], seq_len)
        for round_index in range(self.iterations):
            coupling = torch.softmax(logits, dim=2) * keep  # softmax over interests
            last = round_index == self.iterations - 1
            interests = squash(torch.einsum("bskj,bjkd->bskd", coupling, votes if last else fixed_votes))
            if not last:
                logits = logits + torch.einsum("bjkd,bskd->bskj", fixed_votes, interests)
        return interests, coupling


# ---------------------------------------------------------------------- REMI's two training terms


def hard_negative_weights(
    neg_logits: torch.Tensor, beta: float, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """REMI's interest-aware importance weights of uniformly sampled negatives.

    With uniform samples, `sum_j w_j exp(s_j)` with `w_j = n * softmax_j(beta * s_j)` estimates the
    denominator under the hardness-tilted distribution `q(j) ~ exp(beta * s_j)`; `beta = 0` gives
    `w_j = 1` (the plain sampled softmax).

    Args:
        neg_logits (`torch.FloatTensor` of shape `(num_pairs, num_negatives)`): scaled logits of the
            negatives against the interest being trained for each pair.
        beta (`float`): hardness, >= 0.
        valid (`torch.BoolTensor` of the same shape, *optional*): unmasked negatives; masked ones get 0.

    Returns:
        `torch.FloatTensor` of shape `(num_pairs, num_negatives)`: the weights (each row sums to the
        number of its valid negatives).
    """
    return _log_hard_negative_weights(neg_logits, beta, valid).exp()


def _log_hard_negative_weights(
    neg_logits: torch.Tensor, beta: float, valid: torch.Tensor | None = None
) -> torch.Tensor:
    if valid is None:
        valid = torch.ones_like(neg_logits, dtype=torch.bool)
    count = valid.sum(-1, keepdim=True).clamp(min=1).to(neg_logits.dtype)
    tilted = (beta * neg_logits).masked_fill(~valid, float("-inf"))
    log_softmax = tilted - torch.logsumexp(tilted, dim=-1, keepdim=True).clamp(
        min=torch.finfo(tilted.dtype).min
    )
    return (torch.log(count) + log_softmax).masked_fill(~valid, float("-inf"))


def routing_regularization(routing: torch.Tensor, allowed: torch.Tensor, hidden_size: int) -> torch.Tensor:
    """REMI's routing regulariser `||diag(C)||^2` per query position.

    Each interest's routing row is centred over the allowed history positions (`D = A - mean(A)`, zero
    outside), `C = D D^T / hidden_size`, and the penalty is the squared norm of C's diagonal, i.e. the sum
    over interests of their routing variance squared: zero when every interest spreads evenly over the
    history (or reads one item), positive when an interest concentrates on a few items.

    Args:
        routing (`torch.FloatTensor` of shape `(..., num_interests, seq_len)`)
        allowed (`torch.BoolTensor` of shape `(..., seq_len)`): the history positions each query reads.
        hidden_size (`int`): the release's normalisation of `C`.

    Returns:
        `torch.FloatTensor` of shape `(...)`.
    """
    keep = allowed.unsqueeze(-2).to(routing.dtype)  # [..., 1, T]
    count = keep.sum(-1, keepdim=True).clamp(min=1.0)
    masked = routing * keep
    centred = (masked - masked.sum(-1, keepdim=True) / count) * keep
    variances = (centred * centred).sum(-1) / hidden_size  # diag(C): [..., K]
    return (variances * variances).sum(-1)


# ---------------------------------------------------------------------- the model


class ComiRecPreTrainedModel(PreTrainedModel):
    config_class = ComiRecConfig
    base_model_prefix = "comirec"
    main_input_name = "input_ids"

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, ComiRecSelfAttention):
            # The release: truncated normal (0, 0.02) on the attention network, truncated at 2 std.
            for param in (module.w1, module.b1, module.w2):
                init.trunc_normal_(param, mean=0.0, std=0.02, a=-0.04, b=0.04)
        elif isinstance(module, ComiRecDynamicRouting):
            for k in range(module.maps.shape[0]):
                init.xavier_normal_(module.maps[k])
        elif isinstance(module, ComiRecForRecommendation):
            init.constant_(module.logit_scale, float(self.config.logit_scale_init))
        else:
            super()._init_weights(module)


class ComiRecForRecommendation(RecommenderMixin, ComiRecPreTrainedModel):
    """ComiRec-SA / ComiRec-DR on a ggr-hf encoder (see the module docstring): `num_interests` interest
    vectors per position, hard-readout sampled-softmax training, max-fused retrieval; REMI's hard
    negatives and routing regularisation when their config fields are set."""

    def __init__(self, config: ComiRecConfig):
        super().__init__(config)
        self.backbone = build_backbone(config.get_backbone_config())
        if config.extractor == "sa":
            self.extractor = ComiRecSelfAttention(
                config.hidden_size, config.attention_size, config.num_interests, config.interest_dropout
            )
        else:
            self.extractor = ComiRecDynamicRouting(
                config.hidden_size, config.num_interests, config.routing_iterations
            )
        self.logit_scale = nn.Parameter(
            torch.tensor(float(config.logit_scale_init)), requires_grad=bool(config.learnable_logit_scale)
        )
        self.post_init()

    # ------------------------------------------------------------------ the scoring contract

    @property
    def head_names(self) -> list[str]:
        return [f"interest {k}" for k in range(self.config.num_interests)]

    @property
    def num_heads(self) -> int:
        return int(self.config.num_interests)

    def item_table(self) -> torch.Tensor:
        """`(num_items + 1, hidden_size)`: the encoder's L2-normalised item embeddings."""
        return self.backbone.all_item_embeddings()

    def scoring_tensors(self) -> list[torch.Tensor]:
        """The encoder's weights: all the item table depends on."""
        return [*self.backbone.parameters(), *self.backbone.buffers()]

    def current_logit_scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=float(self.config.logit_scale_max))

    def extract_interests(
        self, states: torch.Tensor, allowed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Interests of the query positions described by `allowed`.

        Args:
            states (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`): encoder states.
            allowed (`torch.BoolTensor` of shape `(batch_size, num_queries, seq_len)`): the history
                positions each query position reads.

        Returns:
            L2-normalised interests `(batch_size, num_queries, num_interests, hidden_size)` and the
            routing / attention matrix `(batch_size, num_queries, num_interests, seq_len)`.
        """
        interests, routing = self.extractor(states, allowed)
        return F.normalize(interests, dim=-1), routing

    @staticmethod
    def causal_allowed(attention_mask: torch.Tensor) -> torch.Tensor:
        """`(batch_size, seq_len, seq_len)`: position t reads the real positions j <= t."""
        seq_len = attention_mask.shape[1]
        causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=attention_mask.device).tril()
        return causal.unsqueeze(0) & attention_mask.bool().unsqueeze(1)

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
    ) -> ComiRecOutput | tuple:
        """
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`):
                internal item ids, right-padded with 0, oldest first.
            timestamps (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*): seconds.
            attention_mask (`torch.Tensor` of shape `(batch_size, seq_len)`, *optional*).
            query_timestamps (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*):
                request time of each position's prediction (see the backbone's `forward`).
            target_ids (`torch.LongTensor` of shape `(batch_size, seq_len, horizon)` or
                `(batch_size, seq_len)`, *optional*): the next item after each position (0: none); only
                offset 0 is trained. Given, the loss is computed.
            target_event_ids: ignored (no event prior).
            user_groups: must be `None` (no user priors).
            output_head_states (`bool`): also return every position's interests and routing (always
                returned without `target_ids`).
            negative_seeds (`list[int]`, *optional*): draw the step's negatives from generators seeded with
                these (one draw of `num_negatives` each); the trainer passes them.
            gather_negatives (`bool`): every process scores the union of all processes' negatives.
        """
        self.refuse_user_groups(user_groups)
        if attention_mask is None:
            attention_mask = input_ids != 0
        attention_mask = attention_mask.bool()
        hidden = self.backbone(
            input_ids=input_ids,
            timestamps=timestamps,
            attention_mask=attention_mask,
            query_timestamps=query_timestamps,
        ).last_hidden_state  # [B, T, d]
        allowed = self.causal_allowed(attention_mask)  # [B, T, T]
        interests, routing = self.extract_interests(hidden, allowed)  # [B, T, K, d], [B, T, K, T]

        loss, routing_loss, num_pairs = None, None, None
        if target_ids is not None:
            if target_ids.dim() == 3:
                target_ids = target_ids[..., 0]
            loss, num_pairs = self._interest_loss(
                interests, target_ids, attention_mask, negative_seeds, gather_negatives
            )
            if self.config.routing_reg_lambda > 0:
                per_position = routing_regularization(routing, allowed, self.config.hidden_size)  # [B, T]
                weights = attention_mask.to(per_position.dtype)
                routing_loss = (per_position * weights).sum() / weights.sum().clamp(min=1.0)
                loss = loss + self.config.routing_reg_lambda * routing_loss

        keep_states = output_head_states or target_ids is None
        head_states = interests if keep_states else None
        routing_out = routing if keep_states else None
        if return_dict is False:
            return tuple(v for v in (loss, hidden, head_states, routing_out) if v is not None)
        return ComiRecOutput(
            loss=loss,
            last_hidden_state=hidden,
            head_states=head_states,
            routing=routing_out,
            routing_loss=routing_loss,
            num_pairs=num_pairs,
        )

    def _interest_loss(
        self,
        interests: torch.Tensor,
        target_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        negative_seeds: list[int] | None,
        gather: bool,
    ) -> tuple[torch.Tensor, int]:
        """Hard-readout sampled softmax (with REMI's hard-negative weights when `hard_negative_beta` > 0).

        Args:
            interests (`torch.FloatTensor` of shape `(batch_size, seq_len, num_interests, hidden_size)`):
                L2-normalised interests at every position.
            target_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`): next item (0: none).

        Returns:
            The mean loss over (position, target) pairs and their number.
        """
        b, t = ((target_ids > 0) & attention_mask).nonzero(as_tuple=True)
        scale = self.current_logit_scale()
        if b.numel() == 0:
            return interests.sum() * 0.0 + scale * 0.0, 0
        pos_ids = target_ids[b, t]
        pos_e = self.backbone.embed_items(pos_ids)  # [M, d]
        candidates = interests[b, t]  # [M, K, d]
        with torch.no_grad():
            chosen = torch.einsum("mkd,md->mk", candidates, pos_e).argmax(-1)  # [M]
        q = candidates[torch.arange(len(chosen), device=chosen.device), chosen]  # [M, d]
        negatives = self.draw_negatives(
            None, self.config.num_negatives, interests.device, negative_seeds, gather
        )[0]  # [N]
        neg_e = self.backbone.embed_items(negatives)  # [N, d]
        pos_logit = (q * pos_e).sum(-1) * scale  # [M]
        neg_logits = (q @ neg_e.T) * scale  # [M, N]
        with torch.no_grad():
            valid = (pos_ids.unsqueeze(1) != negatives.unsqueeze(0)) & (
                (pos_e @ neg_e.T) <= self.config.false_negative_threshold
            )
        # Masked after scaling: -inf times a learned scale would give NaN gradients.
        neg_logits = neg_logits + _log_hard_negative_weights(
            neg_logits, float(self.config.hard_negative_beta), valid
        )
        all_logits = torch.cat([pos_logit.unsqueeze(1), neg_logits], dim=1)
        loss = (torch.logsumexp(all_logits, dim=1) - pos_logit).mean()
        return loss, int(b.numel())

    # ------------------------------------------------------------------ inference

    def user_queries(
        self,
        input_ids: torch.Tensor,
        timestamps: torch.Tensor | None,
        query_timestamps: torch.Tensor | None,
        user_groups: torch.Tensor | list | None,
        target_event: torch.Tensor | None,
    ) -> tuple[torch.Tensor, None]:
        """The interests at each history's last real position, normalised and times the logit scale:
        `(batch_size, num_interests, hidden_size)`; every interest serves every user (`None`).
        `target_event` is ignored; `user_groups` must be `None`."""
        self.refuse_user_groups(user_groups)
        hidden, attention_mask, last = self.request_states(input_ids, timestamps, query_timestamps)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        allowed = (positions.unsqueeze(0) <= last.unsqueeze(1)) & attention_mask  # [B, T]
        interests, _ = self.extract_interests(hidden, allowed.unsqueeze(1))  # [B, 1, K, d]
        return interests[:, 0] * self.current_logit_scale(), None


class RemiForRecommendation(ComiRecForRecommendation):
    """REMI: ComiRec trained with interest-aware hard negatives and routing regularisation (the defaults
    of [`RemiConfig`]); the model and its inference are ComiRec's."""

    config_class = RemiConfig


# `AutoModel.from_pretrained` on a saved folder works once this module is loaded.
register_backbone_models()
register_model_type(ComiRecConfig.model_type, ComiRecConfig, ComiRecForRecommendation)
register_model_type(RemiConfig.model_type, RemiConfig, RemiForRecommendation)
