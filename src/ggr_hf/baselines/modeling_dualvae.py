"""`DualVAEForRecommendation`: DualVAE (Guo et al., "DualVAE: Dual Disentangled Variational
AutoEncoder for Recommendation", SDM 2024) adapted to sequences, as the GGR release's baseline.

The model, following the release (`code/REC/model/IDNet/dualvae.py`, "SeqDualVAE"):

- Aspect split. A shared linear map `W` turns a `d`-vector into `A` aspect vectors of size `K`
  (`num_aspects`, `latent_size`). A vector's aspect weights are
  `p_a = softmax_a(cos(v_a, c_a) / aspect_temperature)` against `A` learned aspect prototypes `c_a`.
- User side. The encoder's causal state `h_t` at every position is split into aspects and each aspect
  is weighted by its `p_a`. With `causal_pooling` (the release), aspect `a`'s input at position `t`
  is an attention pool of those weighted vectors over positions `0..t` (one learned score per
  position and aspect, softmax over the window). A posterior network shared by the aspects (Linear,
  LayerNorm, activation, dropout per hidden layer) gives `mu` and `std = softplus(.) + 1e-4` per
  aspect: `q(z_{t,a}) = N(mu, std^2)`. Training samples `z = mu + std * eps` and applies latent
  ("information") dropout; inference uses `mu`.
- Item side. Plain embeddings, as the release (no item VAE): item `i`'s aspect vectors
  `e_{i,a} = (W E_i)_a` from the encoder's item embedding `E_i`, with aspect weights `p_{i,a}`.
- Score. `s(t, i) = scale * sum_a p_{i,a} cos(z_{t,a}, e_{i,a})`. That is one dot product of
  concatenated vectors: the query is `scale * [z_a / |z_a|]_a` and the item row is
  `[p_{i,a} e_{i,a} / |e_{i,a}|]_a`, both of size `A * K`. So the scoring contract's query matrix has
  one query (Q = 1, named `"all aspects"`) and `item_table()` is `(num_items + 1, A * K)`; training
  and `score_items` compute the same number.
- Loss, at every position with a next-item target (`num_pairs` = those positions):
  `L = NCE + beta(step) * KL + gamma * CL + lambda * ORTHO`, where NCE is the sampled softmax of the
  positive against catalogue-wide negatives; KL is the Gaussian KL to `N(0, I)` summed over `K` and
  averaged over positions and aspects; `beta(step) = kl_beta * min(1, step / kl_anneal_steps)`
  with `step` the number of training-mode forward passes so far (incremented before use, so the
  first step already has `kl_beta / kl_anneal_steps`; outside training mode the full `kl_beta`
  applies, as in the release); CL is the aspect-level contrast
  `-log(exp(<z_a, e_a> / tau) / sum_{b != a} exp(<z_b, e_a> / tau))` between the normalised user and
  positive-item aspect vectors (tau = `contrastive_temperature`, the positive is left out of the
  denominator, as the release), averaged over positions and aspects; ORTHO is
  `|| C C^T - I ||_F` of the L2-normalised prototypes.

Departures from the release (each deliberate):

- Encoder. The release's DualVAE does not run HSTU: its sequence input is
  `Dropout(LayerNorm(item embedding + position embedding))`, its own item table. Here the input is
  any ggr-hf backbone's causal states and the item side reads that backbone's (L2-normalised) item
  embeddings: `backbone_type="hstu"` (the paper's "all baselines on HSTU") or
  `backbone_type="item_embedding"`, which is close to the release's own input (no LayerNorm).
- Pooling dropout. The release drops out inside the pooling scorer once per (window, position); here
  once per position, shared by the windows that contain it (the pooled values are otherwise equal).
  The pooling is computed as a masked `T x T` softmax instead of unfolded windows (same result).
- Negatives. `num_negatives` catalogue-wide ids per step through `draw_negatives` (seeded by the
  trainer), and a negative equal to the positive is masked, as in GGR; the release draws its
  negatives per batch row and does not mask.
- Logit scale. A plain learned scale clamped at `logit_scale_max` (GGR's parameterisation) rather
  than the release's `exp(log scale)` clamped to `[1, 100]`; same initial value (20).
- The contrastive term is computed in log space (`pos - logsumexp(neg)`) instead of
  `log(exp(pos) / (sum exp(neg) + 1e-10))`, which overflows less; equal up to the epsilon.
- The paper's DualVAE (not the release) also has an item-side VAE, a reconstruction likelihood of
  the user-item matrix and alternating optimisation; the release replaces them by the sampled softmax
  over next items, and so does this model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ggr_hf.baselines.configuration_dualvae import DualVAEConfig
from ggr_hf.configuration_utils import register_model_type
from ggr_hf.modeling_recommender import RecommenderMixin
from ggr_hf.models import build_backbone, register_backbone_models

__all__ = ["DualVAEForRecommendation", "DualVAEOutput", "DualVAEPreTrainedModel"]

# The release's floor on the posterior standard deviation and its log epsilon.
_STD_FLOOR = 1e-4
_EPS = 1e-10

_ACTIVATIONS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "silu": nn.SiLU, "relu": nn.ReLU}


@dataclass
class DualVAEOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): the total training objective, returned
            when `target_ids` are given.
        nce_loss, kl_loss, contrastive_loss, orthogonality_loss (`torch.FloatTensor` of shape `()`,
            *optional*): the unweighted terms (detached).
        kl_weight (`float`, *optional*): the KL weight this call used.
        num_pairs (`int`, *optional*): number of positions with a target the loss averages over.
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`):
            the encoder's states.
        user_latents (`torch.FloatTensor` of shape `(batch_size, seq_len, num_aspects, latent_size)`,
            *optional*): the posterior means (returned with `output_head_states` or without targets).
    """

    loss: torch.FloatTensor | None = None
    nce_loss: torch.FloatTensor | None = None
    kl_loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    orthogonality_loss: torch.FloatTensor | None = None
    kl_weight: float | None = None
    num_pairs: int | None = None
    last_hidden_state: torch.FloatTensor | None = None
    user_latents: torch.FloatTensor | None = None


class DualVAEPosterior(nn.Module):
    """The user side after the encoder: aspect split, causal attention pooling, Gaussian posterior.

    Args:
        config ([`DualVAEConfig`])
    """

    def __init__(self, config: DualVAEConfig):
        super().__init__()
        k = config.latent_size
        act = _ACTIVATIONS[config.activation]
        pool_hidden = max(16, k // 2)
        self.pool_scorer = nn.Sequential(
            nn.Linear(k, pool_hidden),
            act(),
            nn.Dropout(config.dropout),
            nn.Linear(pool_hidden, 1, bias=False),
        )
        layers: list[nn.Module] = []
        sizes = [k, *config.encoder_hidden_sizes]
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            # LayerNorm eps as the release (1e-12).
            layers += [
                nn.Linear(n_in, n_out),
                nn.LayerNorm(n_out, eps=1e-12),
                act(),
                nn.Dropout(config.dropout),
            ]
        self.encoder = nn.Sequential(*layers)
        self.mean = nn.Linear(sizes[-1], k)
        self.std = nn.Linear(sizes[-1], k)
        self.causal_pooling = bool(config.causal_pooling)

    def pool(self, weighted: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Causal attention pooling of each aspect.

        Args:
            weighted (`torch.FloatTensor` of shape `(batch_size, seq_len, num_aspects, latent_size)`):
                aspect vectors times their aspect weights.
            attention_mask (`torch.BoolTensor` of shape `(batch_size, seq_len)`)

        Returns:
            `torch.FloatTensor` of the same shape: position `t` pools positions `0..t`.
        """
        seq_len = weighted.shape[1]
        scores = self.pool_scorer(weighted).squeeze(-1).transpose(1, 2)  # [B, A, T]
        causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=weighted.device).tril()
        allowed = causal.unsqueeze(0) & attention_mask.bool().unsqueeze(1)  # [B, T(query), T(key)]
        logits = scores.unsqueeze(2).expand(-1, -1, seq_len, -1)  # [B, A, T, T]
        logits = logits.masked_fill(~allowed.unsqueeze(1), torch.finfo(logits.dtype).min)
        # A window without real items (a padded first position) pools nothing.
        weights = torch.softmax(logits, dim=-1) * allowed.unsqueeze(1)
        return torch.einsum("batj,bjak->btak", weights, weighted)

    def forward(
        self, weighted: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            weighted (`torch.FloatTensor` of shape `(batch_size, seq_len, num_aspects, latent_size)`)
            attention_mask (`torch.BoolTensor` of shape `(batch_size, seq_len)`)

        Returns:
            mu, std (`torch.FloatTensor` of shape `(batch_size, seq_len, num_aspects, latent_size)`).
        """
        x = self.pool(weighted, attention_mask) if self.causal_pooling else weighted
        h = self.encoder(x)
        return self.mean(h), F.softplus(self.std(h)) + _STD_FLOOR


class DualVAEPreTrainedModel(PreTrainedModel):
    config_class = DualVAEConfig
    base_model_prefix = "dualvae"
    main_input_name = "input_ids"

    def _init_weights(self, module: nn.Module) -> None:
        # Everything of the model's own is initialised here, at the root (visited after its children),
        # with the release's schemes; the backbone initialises itself.
        if not isinstance(module, DualVAEForRecommendation):
            return
        init.trunc_normal_(module.aspect_projection.weight, mean=0.0, std=0.02)
        init.trunc_normal_(module.aspect_projection.bias, mean=0.0, std=0.02)
        init.kaiming_uniform_(module.aspect_prototypes, a=math.sqrt(5))
        for sub in module.posterior.modules():
            if isinstance(sub, nn.Linear):
                init.xavier_uniform_(sub.weight)
                if sub.bias is not None:
                    init.zeros_(sub.bias)
            elif isinstance(sub, nn.LayerNorm):
                init.ones_(sub.weight)
                init.zeros_(sub.bias)
        init.constant_(module.logit_scale, float(self.config.logit_scale_init))


class DualVAEForRecommendation(RecommenderMixin, DualVAEPreTrainedModel):
    """DualVAE adapted to sequences on a ggr-hf encoder (see the module docstring)."""

    def __init__(self, config: DualVAEConfig):
        super().__init__(config)
        self.backbone = build_backbone(config.get_backbone_config())
        self.aspect_projection = nn.Linear(config.hidden_size, config.query_size)
        self.aspect_prototypes = nn.Parameter(torch.empty(config.num_aspects, config.latent_size))
        self.posterior = DualVAEPosterior(config)
        self.latent_dropout = nn.Dropout(config.latent_dropout)
        self.logit_scale = nn.Parameter(
            torch.tensor(float(config.logit_scale_init)), requires_grad=bool(config.learnable_logit_scale)
        )
        # Training-mode forward passes so far: drives the KL annealing and is saved with the weights,
        # so that a resumed or reloaded model continues the schedule.
        self.register_buffer("kl_step", torch.zeros((), dtype=torch.long))
        self.post_init()

    # ------------------------------------------------------------------ the contract's small parts

    @property
    def head_names(self) -> list[str]:
        return ["all aspects"]

    @property
    def num_heads(self) -> int:
        return 1

    def current_logit_scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=float(self.config.logit_scale_max))

    def scoring_tensors(self) -> list[torch.Tensor]:
        """What `item_table()` reads: the backbone, the aspect map and the prototypes (not `kl_step`)."""
        return [
            *self.backbone.parameters(),
            *self.backbone.buffers(),
            *self.aspect_projection.parameters(),
            self.aspect_prototypes,
        ]

    def kl_weight(self, step: int | None = None) -> float:
        """The annealed KL weight `kl_beta * min(1, step / kl_anneal_steps)`.

        Args:
            step (`int`, *optional*): the training step; defaults to the `kl_step` buffer.
        """
        step = int(self.kl_step) if step is None else int(step)
        beta = float(self.config.kl_beta)
        steps = int(self.config.kl_anneal_steps)
        return beta if steps == 0 else beta * min(1.0, step / steps)

    # ------------------------------------------------------------------ aspects

    def aspects(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Splits vectors into aspects and weighs them against the aspect prototypes.

        Args:
            vectors (`torch.FloatTensor` of shape `(*, hidden_size)`): encoder states or item embeddings.

        Returns:
            aspect vectors `(*, num_aspects, latent_size)` and aspect weights `(*, num_aspects)`
            (a softmax over the aspects of the cosine with each prototype over `aspect_temperature`).
        """
        cfg = self.config
        split = self.aspect_projection(vectors).unflatten(-1, (cfg.num_aspects, cfg.latent_size))
        cos = (F.normalize(split, dim=-1) * F.normalize(self.aspect_prototypes, dim=-1)).sum(-1)
        return split, torch.softmax(cos / float(cfg.aspect_temperature), dim=-1)

    def item_aspects(self, item_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised item aspect vectors and their weighted form (the scored rows).

        Args:
            item_embeddings (`torch.FloatTensor` of shape `(*, hidden_size)`)

        Returns:
            normalised aspect vectors `(*, num_aspects, latent_size)` and the same times each
            aspect's weight.
        """
        split, probs = self.aspects(item_embeddings)
        unit = F.normalize(split, dim=-1)
        return unit, unit * probs.unsqueeze(-1)

    def user_posterior(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The Gaussian posterior of every position's aspect latents.

        Args:
            hidden (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`): encoder states.
            attention_mask (`torch.BoolTensor` of shape `(batch_size, seq_len)`)

        Returns:
            mu, std (`torch.FloatTensor` of shape `(batch_size, seq_len, num_aspects, latent_size)`).
        """
        split, probs = self.aspects(hidden)
        return self.posterior(split * probs.unsqueeze(-1), attention_mask)

    def item_table(self) -> torch.Tensor:
        """`(num_items + 1, num_aspects * latent_size)`: each item's aspect-weighted, per-aspect
        normalised aspect vectors, concatenated."""
        return self.item_aspects(self.backbone.all_item_embeddings())[1].flatten(-2)

    # ------------------------------------------------------------------ forward and loss

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
    ) -> DualVAEOutput | tuple:
        """
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`):
                internal item ids, right-padded with 0, oldest first.
            timestamps (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*): seconds.
            attention_mask (`torch.Tensor` of shape `(batch_size, seq_len)`, *optional*).
            query_timestamps (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*):
                request time of each position's prediction.
            target_ids (`torch.LongTensor` of shape `(batch_size, seq_len, horizon)`, *optional*):
                the next item after each position in `[..., 0]` (0: none). Given, the loss is computed.
            target_event_ids: ignored (no event prior).
            user_groups: must be `None` (no user priors).
            output_head_states (`bool`): also return the posterior means `user_latents`.
            negative_seeds (`list[int]`, *optional*): seeds of the step's negatives (see
                `RecommenderMixin.draw_negatives`); default: the global RNG.
            gather_negatives (`bool`): every process scores the union of all processes' negatives.

        Returns:
            [`DualVAEOutput`], or a tuple of its non-`None` fields when `return_dict=False`.
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
        mu, std = self.user_posterior(hidden, attention_mask)  # [B, T, A, K]

        out = DualVAEOutput(last_hidden_state=hidden)
        if output_head_states or target_ids is None:
            out.user_latents = mu
        if target_ids is not None:
            self._loss(out, mu, std, target_ids, attention_mask, negative_seeds, gather_negatives)
        if return_dict is False:
            return out.to_tuple()
        return out

    def _loss(
        self,
        out: DualVAEOutput,
        mu: torch.Tensor,
        std: torch.Tensor,
        target_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        negative_seeds: list[int] | None,
        gather: bool,
    ) -> None:
        """Fills the loss fields of `out` (see the module docstring for the terms)."""
        cfg = self.config
        if self.training:
            # Counted before use, as the release: step n of training uses n / kl_anneal_steps.
            self.kl_step += 1
        beta = self.kl_weight() if self.training else float(cfg.kl_beta)
        targets = target_ids[..., 0] if target_ids.dim() == 3 else target_ids  # [B, T]
        valid = (targets > 0) & attention_mask
        b, t = valid.nonzero(as_tuple=True)  # M positions
        mu_m, std_m = mu[b, t], std[b, t]  # [M, A, K]
        z = mu_m
        if self.training:
            z = self.latent_dropout(mu_m + torch.randn_like(std_m) * std_m)
        user = F.normalize(z, dim=-1)  # [M, A, K]

        embed = self.backbone.embed_items
        pos_unit, pos_rows = self.item_aspects(embed(targets[b, t]))  # [M, A, K]
        negatives = self.draw_negatives(None, cfg.num_negatives, mu.device, negative_seeds, gather)[0]  # [N]
        neg_rows = self.item_aspects(embed(negatives))[1]  # [N, A, K]

        scale = self.current_logit_scale()
        pos_logit = (user * pos_rows).sum((-2, -1)) * scale  # [M]
        neg_logits = (user.flatten(-2) @ neg_rows.flatten(-2).T) * scale  # [M, N]
        # Masked after scaling: -inf times a learned scale would give a NaN gradient.
        neg_logits = neg_logits.masked_fill(
            targets[b, t].unsqueeze(1) == negatives.unsqueeze(0), float("-inf")
        )
        logits = torch.cat([pos_logit.unsqueeze(1), neg_logits], dim=1)
        m = int(b.numel())
        nce = (torch.logsumexp(logits, dim=1) - logits[:, 0]).sum() / max(m, 1)

        kl = -0.5 * (1 + 2.0 * torch.log(std_m + _EPS) - mu_m.pow(2) - std_m.pow(2))  # [M, A, K]
        kl = kl.sum(-1).sum() / max(m * cfg.num_aspects, 1)

        contrastive = self.contrastive_loss(user, pos_unit)
        ortho = self.orthogonality_loss()
        loss = (
            nce
            + beta * kl
            + float(cfg.contrastive_gamma) * contrastive
            + float(cfg.orthogonality_weight) * ortho
        )
        out.loss = loss
        out.nce_loss, out.kl_loss = nce.detach(), kl.detach()
        out.contrastive_loss, out.orthogonality_loss = contrastive.detach(), ortho.detach()
        out.kl_weight = beta
        out.num_pairs = m

    def contrastive_loss(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """The aspect-level contrast: each positive item aspect against the same user aspect (positive)
        and the user's other aspects (negatives).

        Args:
            user (`torch.FloatTensor` of shape `(M, num_aspects, latent_size)`): normalised user latents.
            item (`torch.FloatTensor` of shape `(M, num_aspects, latent_size)`): normalised aspect
                vectors of the positive items.

        Returns:
            `torch.FloatTensor` of shape `()`: the mean over positions and aspects (0 without positions).
        """
        if user.shape[0] == 0:
            return user.sum() * 0.0
        tau = float(self.config.contrastive_temperature)
        pos = (item * user).sum(-1) / tau  # [M, A]
        sim = (item @ user.transpose(1, 2)) / tau  # [M, A(item), A(user)]
        eye = torch.eye(sim.shape[-1], dtype=torch.bool, device=sim.device)
        neg = torch.logsumexp(sim.masked_fill(eye, float("-inf")), dim=-1)  # [M, A]
        return (neg - pos).mean()

    def orthogonality_loss(self) -> torch.Tensor:
        """`|| C C^T - I ||_F` of the L2-normalised aspect prototypes `C` `(num_aspects, latent_size)`."""
        unit = F.normalize(self.aspect_prototypes, dim=-1)
        gram = unit @ unit.T
        return torch.linalg.matrix_norm(gram - torch.eye(gram.shape[0], device=gram.device, dtype=gram.dtype))

    # ------------------------------------------------------------------ inference (the scoring contract)

    def user_queries(
        self,
        input_ids: torch.Tensor,
        timestamps: torch.Tensor | None,
        query_timestamps: torch.Tensor | None,
        user_groups: torch.Tensor | list | None,
        target_event: torch.Tensor | None,
    ) -> tuple[torch.Tensor, None]:
        """The scaled query at each history's end `(batch_size, 1, num_aspects * latent_size)`: the
        posterior means, L2-normalised per aspect and concatenated; every query is active (`None`).
        `target_event` is ignored; `user_groups` must be `None`."""
        self.refuse_user_groups(user_groups)
        hidden, attention_mask, last = self.request_states(input_ids, timestamps, query_timestamps)
        mu, _ = self.user_posterior(hidden, attention_mask)
        mu = mu[torch.arange(len(last), device=mu.device), last]  # [B, A, K]
        query = F.normalize(mu, dim=-1).flatten(-2) * self.current_logit_scale()
        return query.unsqueeze(1), None


# `AutoModel.from_pretrained` on a ggr-hf folder works once the model module is loaded.
register_backbone_models()
register_model_type(DualVAEConfig.model_type, DualVAEConfig, DualVAEForRecommendation)
