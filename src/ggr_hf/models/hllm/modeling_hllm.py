"""HLLM: an item LLM that embeds item text and a user LLM that reads item embeddings (Chen et al., 2024).

Both LLMs are stock transformers models built with `AutoModel.from_config` (Qwen2, Qwen2.5, Qwen3, Llama,
TinyLlama, ...; a BERT-style encoder for the item side), so no model code is vendored and
`trust_remote_code` is never needed.

    item text  = prompt + "Key: value. ..."  (optionally in the tokenizer's chat template)
    e_i        = ItemLLM([tokens(text_i), ITEM]).last_hidden_state[ITEM]      (or the mean over tokens)
    h_1..h_T   = UserLLM(inputs_embeds = W e_{i_1}, ..., W e_{i_T})            (causal; W = identity or a
                                                                               projection between widths)
    score(i)   = cos(h_t, W e_i)

`HLLMModel` implements the backbone contract (`ggr_hf.models.backbone`): `forward(...).last_hidden_state`
(L2-normalised user states), `embed_items(ids)` and `all_item_embeddings()` (L2-normalised), and the
`prepare_from_items` data hook, so `GGRForRecommendation` puts its heads and InfoNCE loss on it unchanged.

Efficiency:
- a batch's items are encoded once: the unique ids of the history are encoded in `forward` and remembered
  for the rest of that training step, so the loss's targets are not encoded again; only new ids (the
  sampled negatives) go through the item LLM;
- items are sorted by text length and encoded in chunks of `item_batch_size`, each padded only to its own
  longest item (right padding; the item token sits right after each item's last real token);
- a table of all item embeddings is kept for evaluation and serving (and for training with a frozen item
  LLM). It is rebuilt whenever any item-LLM weight changed, detected through the parameters' in-place
  version counters (bumped by optimizer steps and `load_state_dict`).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init

from ggr_hf.models.backbone import GGRBackboneModel, GGRBackboneOutput
from ggr_hf.models.hllm.configuration_hllm import HLLMConfig, llm_kind
from ggr_hf.models.hllm.item_text import (
    build_item_texts,
    build_word_level_tokenizer,
    tokenize_item_texts,
    wrap_item_texts,
)

logger = logging.getLogger(__name__)


@dataclass
class HLLMModelOutput(GGRBackboneOutput):
    """HLLM's output: the backbone contract's `last_hidden_state` (see [`GGRBackboneOutput`])."""


class HLLMItemTexts(nn.Module):
    """The tokenized text of every item (persistent buffers: a saved model embeds its catalogue by itself).

    Row 0 is the padding item. `int32` keeps the table at 4 bytes per token (Pixel8M: 408k items x 256).
    """

    def __init__(self, num_items: int, max_len: int):
        super().__init__()
        self.register_buffer("token_ids", torch.zeros(num_items + 1, max_len, dtype=torch.int32))
        self.register_buffer("lengths", torch.zeros(num_items + 1, dtype=torch.int32))


class HLLMPreTrainedModel(GGRBackboneModel):
    config_class = HLLMConfig
    base_model_prefix = "hllm"
    # Items are encoded by the item LLM: reading the whole table is not free.
    item_table_is_cheap = False
    supports_gradient_checkpointing = True

    def _init_weights(self, module: nn.Module) -> None:
        # The two LLMs are PreTrainedModels: `initialize_weights` hands their modules to their own
        # `_init_weights`, so only HLLM's own parameters are handled here.
        if isinstance(module, HLLMItemTexts):
            return  # data, not weights: set by `set_item_texts` or loaded from the checkpoint
        if isinstance(module, HLLMModel):
            if module.item_token is not None:
                init.normal_(module.item_token, mean=0.0, std=self.config.initializer_range)
            return
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
            return
        super()._init_weights(module)


def _build_llm(config, attn_implementation: str, encoder: bool) -> PreTrainedModel:
    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation}
    if encoder:
        # The pooler is never used; leaving it in would give DDP parameters without gradients.
        kwargs["add_pooling_layer"] = False
    try:
        return AutoModel.from_config(config, **kwargs)
    except TypeError:
        kwargs.pop("add_pooling_layer", None)
        return AutoModel.from_config(config, **kwargs)


def _add_lora(llm: PreTrainedModel, config: HLLMConfig) -> PreTrainedModel:
    """Injects LoRA adapters into `llm` in place and freezes everything else in it.

    `inject_adapter_in_model` keeps the module tree (and so the state-dict keys) of the base model and adds
    `...q_proj.base_layer.weight` / `...q_proj.lora_A.default.weight`, so the adapters are saved and loaded with
    the rest of the GGR model.
    """
    from peft import LoraConfig, inject_adapter_in_model

    names = {name.rsplit(".", 1)[-1] for name, _ in llm.named_modules()}
    targets = [t for t in config.lora_target_modules if t in names]
    if not targets:
        raise ValueError(
            f"HLLMConfig.lora_target_modules {config.lora_target_modules} match no module of the "
            f"{llm.config.model_type} model; its linear layers are named e.g. "
            f"{sorted({n for n in names if 'proj' in n or n in ('query', 'key', 'value', 'dense')})[:8]}"
        )
    lora_config = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        bias="none",
    )
    llm = inject_adapter_in_model(lora_config, llm)
    for name, param in llm.named_parameters():
        param.requires_grad_("lora_" in name)
    # peft initialised the adapters (B = 0, so the adapted model starts equal to the base one). Marking them
    # keeps transformers' `initialize_weights`, which runs again in every enclosing `post_init`, from
    # redrawing B as a plain nn.Linear.
    for name, module in llm.named_modules():
        if ".lora_" in f".{name}":
            module._is_hf_initialized = True
            for p in module.parameters(recurse=False):
                p._is_hf_initialized = True
    return llm


def _enable_checkpointing(llm: PreTrainedModel) -> None:
    # The private setter is used instead of `activation_checkpointing_enable`, which would also hook the input
    # embeddings; HLLM feeds `inputs_embeds` (the user LLM has no word embeddings), and non-reentrant
    # checkpointing does not need inputs that require grad.
    llm._set_gradient_checkpointing(
        enable=True, gradient_checkpointing_func=functools.partial(checkpoint, use_reentrant=False)
    )


class HLLMModel(HLLMPreTrainedModel):
    """Item LLM + user LLM backbone: item ids (whose text is stored in the model) in, user states out.

    After construction the item texts must be set once with [`~HLLMModel.set_item_texts`] (or
    [`~HLLMModel.prepare_from_items`], which also copies in pretrained LLM weights); a model loaded with
    `from_pretrained` has them already.
    """

    def __init__(self, config: HLLMConfig):
        super().__init__(config)
        item_cfg = config.item_llm_config()
        user_cfg = config.user_llm_config()
        self.item_is_encoder = llm_kind(item_cfg.model_type) == "encoder"
        self.item_llm = _build_llm(item_cfg, config.llm_attn_implementation, encoder=self.item_is_encoder)
        self.user_llm = _build_llm(user_cfg, config.llm_attn_implementation, encoder=False)
        # HLLM drops the user LLM's word embeddings: it only ever reads item embeddings.
        self.user_llm.set_input_embeddings(None)

        item_width = int(item_cfg.hidden_size)
        if config.item_pooling == "item_token":
            self.item_token = nn.Parameter(torch.empty(item_width))
        else:
            self.register_parameter("item_token", None)
        if item_width != config.hidden_size:
            self.item_proj = nn.Linear(item_width, config.hidden_size, bias=False)
        else:
            self.item_proj = nn.Identity()
        self.item_texts = HLLMItemTexts(config.num_items, config.max_item_text_len)

        if config.lora_item:
            self.item_llm = _add_lora(self.item_llm, config)
        if config.lora_user:
            self.user_llm = _add_lora(self.user_llm, config)
        if config.freeze_item_llm:
            for p in self.item_llm.parameters():
                p.requires_grad_(False)
            if self.item_token is not None:
                self.item_token.requires_grad_(False)
        if config.gradient_checkpointing:
            _enable_checkpointing(self.user_llm)
            if not config.freeze_item_llm:
                _enable_checkpointing(self.item_llm)

        # Not state: the all-items table and the ids encoded in the current training step.
        self._item_cache: torch.Tensor | None = None
        self._item_cache_key: tuple | None = None
        self._step_memo: tuple | None = None
        self.post_init()

    # ------------------------------------------------------------------ item text

    def get_input_embeddings(self) -> nn.Module:
        """The item LLM's word embeddings (the user LLM has none)."""
        return self.item_llm.get_input_embeddings()

    def set_item_texts(self, texts: list[str], tokenizer: Any, allow_empty: bool = False) -> None:
        """Tokenizes and stores every item's text (with the configured prompt / chat template).

        Args:
            texts (`list[str]`): one text per item, `texts[i - 1]` for internal item `i`, without the prompt
                (see `item_text.build_item_texts`).
            tokenizer: the item LLM's tokenizer. It needs no pad token (padding is done with lengths).
            allow_empty (`bool`): accept items with an empty text; they are then embedded from the prompt
                alone, i.e. all alike. By default they are an error.
        """
        num_items = self.config.num_items
        if len(texts) != num_items:
            raise ValueError(f"got {len(texts)} item texts but num_items={num_items} (texts[i-1] is item i)")
        empty = [i + 1 for i, t in enumerate(texts) if not str(t).strip()]
        if empty and not allow_empty:
            raise ValueError(
                f"{len(empty)} item(s) have no text (e.g. item ids {empty[:5]}): fill item_text_fields "
                f"{self.config.item_text_fields} for them or pass allow_empty=True to embed them from the "
                "prompt alone"
            )
        if empty:
            logger.warning("HLLM: %d items have no text and are embedded from the prompt alone", len(empty))
        wrapped, special = wrap_item_texts(
            texts, tokenizer, self.config.item_prompt, self.config.item_chat_template
        )
        token_ids, lengths, cut = tokenize_item_texts(
            wrapped, tokenizer, self.config.max_item_text_len, has_special_tokens=special
        )
        if cut:
            logger.warning(
                "HLLM: %d of %d item texts are longer than max_item_text_len=%d tokens and were cut at the right",
                cut,
                num_items,
                self.config.max_item_text_len,
            )
        vocab = int(self.item_llm.get_input_embeddings().num_embeddings)
        if token_ids.numel() and int(token_ids.max()) >= vocab:
            raise ValueError(
                f"the tokenizer produced token id {int(token_ids.max())} but the item LLM has vocab_size={vocab}: "
                "use the item LLM's own tokenizer (or a larger vocab_size for a random model)"
            )
        if self.item_token is None and int(lengths.min()) == 0:
            raise ValueError("item_pooling='mean' needs at least one token per item; an item text is empty")
        buf = self.item_texts
        buf.token_ids.zero_()
        buf.token_ids[1:].copy_(token_ids.to(buf.token_ids.device))
        buf.lengths.zero_()
        buf.lengths[1:].copy_(lengths.to(buf.lengths.device))
        self.invalidate_item_cache()

    def load_item_tokenizer(self, texts: list[str] | None = None) -> Any:
        """The tokenizer named by `config.item_tokenizer` (or `item_llm_name_or_path`).

        `"word_level"` builds one from `texts` (prompt included) for randomly initialised item LLMs.
        """
        name = self.config.item_tokenizer or self.config.item_llm_name_or_path
        if name == "word_level":
            if texts is None:
                raise ValueError("item_tokenizer='word_level' is built from the item texts: pass them")
            prompt = self.config.item_prompt
            vocab = int(self.item_llm.get_input_embeddings().num_embeddings)
            tok = build_word_level_tokenizer([prompt + t for t in texts], vocab_size=vocab)
            return tok
        if name is None:
            raise ValueError(
                "no tokenizer: set HLLMConfig.item_tokenizer (a path, a Hub id or 'word_level') or "
                "item_llm_name_or_path, or pass a tokenizer"
            )
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(name)
        except Exception as err:
            raise ValueError(f"cannot load the item tokenizer from {name!r}: {err}") from err

    def load_pretrained_llms(self, **from_pretrained_kwargs) -> None:
        """Copies pretrained weights into the item / user LLM from `config.item_llm_name_or_path` /
        `config.user_llm_name_or_path` (local directories or Hub ids), keeping LoRA adapters and frozen flags.

        The checkpoints may be causal-LM checkpoints (`Qwen2ForCausalLM`): `AutoModel` keeps the base model.
        The user LLM's word embeddings are not used and are skipped.
        """
        for which, path in (
            ("item", self.config.item_llm_name_or_path),
            ("user", self.config.user_llm_name_or_path),
        ):
            if path is None:
                continue
            module = self.item_llm if which == "item" else self.user_llm
            try:
                pretrained = AutoModel.from_pretrained(path, **from_pretrained_kwargs)
            except Exception as err:
                raise ValueError(f"cannot load the {which} LLM weights from {path!r}: {err}") from err
            source = pretrained.state_dict()
            target = module.state_dict()
            mapped, missing = {}, []
            for key, value in target.items():
                if ".lora_" in key:
                    continue  # adapters start from peft's initialisation
                src = key.replace(".base_layer.", ".")
                if src not in source:
                    missing.append(src)
                    continue
                if tuple(source[src].shape) != tuple(value.shape):
                    raise ValueError(
                        f"{which} LLM weight {src}: shape {tuple(source[src].shape)} at {path!r} but "
                        f"{tuple(value.shape)} in the config; the config does not describe that checkpoint"
                    )
                mapped[key] = source[src].to(value.dtype)
            if missing:
                raise ValueError(f"{path!r} lacks {len(missing)} {which} LLM weights, e.g. {missing[:3]}")
            module.load_state_dict(mapped, strict=False)
            del pretrained, source
        self.invalidate_item_cache()

    def prepare_from_items(
        self,
        items: Any,
        tokenizer: Any | None = None,
        load_pretrained: bool = True,
        allow_empty: bool = False,
    ) -> None:
        """Everything a freshly built model needs before training: pretrained LLM weights and item texts.

        Args:
            items: the item table (`RecDataBundle.items`, a list of dicts, or a list of ready texts), row
                `i - 1` for item `i`; `config.item_text_fields` are read from it.
            tokenizer: the item tokenizer; by default [`~HLLMModel.load_item_tokenizer`].
            load_pretrained (`bool`): copy in weights from `*_llm_name_or_path` when set.
            allow_empty (`bool`): see [`~HLLMModel.set_item_texts`].
        """
        texts = build_item_texts(
            items, self.config.item_text_fields, self.config.item_text_format, num_items=self.config.num_items
        )
        if load_pretrained:
            self.load_pretrained_llms()
        if tokenizer is None:
            tokenizer = self.load_item_tokenizer(texts)
        self.set_item_texts(texts, tokenizer, allow_empty=allow_empty)

    # ------------------------------------------------------------------ item embeddings

    def _item_params(self) -> list[nn.Parameter]:
        params = list(self.item_llm.parameters())
        if self.item_token is not None:
            params.append(self.item_token)
        return params

    def item_llm_trainable(self) -> bool:
        """Whether any weight that shapes the item-LLM states can change (full, LoRA, not frozen)."""
        return any(p.requires_grad for p in self._item_params())

    def _item_state_key(self) -> tuple | None:
        """Identifies the current item-LLM weights and item texts: any in-place change (optimizer step,
        `load_state_dict`, `set_item_texts`) or new tensor changes it. `None` if it cannot be read."""
        try:
            versions = tuple((id(p), p._version) for p in self._item_params())
            texts = self.item_texts
            buffers = tuple((id(b), b._version) for b in (texts.token_ids, texts.lengths))
        except RuntimeError:  # inference tensors carry no version counter
            return None
        p0 = self.item_llm.get_input_embeddings().weight
        return versions, buffers, p0.device, p0.dtype

    def invalidate_item_cache(self) -> None:
        """Drops the all-items table and the current step's remembered item states."""
        self._item_cache, self._item_cache_key, self._step_memo = None, None, None

    def _check_texts(self) -> None:
        if int(self.item_texts.lengths[1:].max()) == 0:
            raise RuntimeError(
                "HLLMModel has no item texts: call set_item_texts(texts, tokenizer) or prepare_from_items(items) "
                "after building the model (a model loaded with from_pretrained has them)"
            )

    def encode_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Runs the item LLM on the given items (no cache), with gradient when grad mode is on.

        Args:
            item_ids (`torch.LongTensor` of shape `(n,)`): ids; 0 (padding) gives a zero row.

        Returns:
            `torch.FloatTensor` of shape `(n, item_hidden_size)`: raw item-LLM states (not projected, not
            normalised), in the item LLM's dtype.
        """
        self._check_texts()
        emb_layer = self.item_llm.get_input_embeddings()
        device, dtype = emb_layer.weight.device, emb_layer.weight.dtype
        item_ids = item_ids.to(device)
        out = torch.zeros(len(item_ids), emb_layer.embedding_dim, device=device, dtype=dtype)
        real = (item_ids != 0).nonzero(as_tuple=True)[0]
        if real.numel() == 0:
            return out
        ids = item_ids[real]
        lengths = self.item_texts.lengths[ids].long()
        # Longest first so that each chunk pads to a similar length.
        order = torch.argsort(lengths, descending=True, stable=True)
        states = []
        for chunk in order.split(self.config.item_batch_size):
            states.append(self._encode_chunk(ids[chunk], lengths[chunk]))
        encoded = torch.cat(states)[torch.argsort(order)]
        return out.index_copy(0, real, encoded.to(dtype))

    def _encode_chunk(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`(n,)` ids of similar length -> `(n, item_hidden_size)` states, each item alone in its row."""
        n = len(ids)
        width = int(lengths.max())
        use_token = self.item_token is not None
        total = width + (1 if use_token else 0)
        token_ids = self.item_texts.token_ids[ids, : max(width, 1)].long()  # [n, W]
        embeds = self.item_llm.get_input_embeddings()(token_ids)  # [n, W, h]
        if total > embeds.shape[1]:
            embeds = F.pad(embeds, (0, 0, 0, total - embeds.shape[1]))  # [n, W+1, h]
        embeds = embeds[:, :total]
        pos = torch.arange(total, device=ids.device).unsqueeze(0)  # [1, W+1]
        if use_token:
            # Right padding with the item token right after each item's last real token: with a causal LLM the
            # token sees exactly its own text, and no item ever attends to another row.
            at_token = (pos == lengths.unsqueeze(1)).unsqueeze(-1)  # [n, W+1, 1]
            embeds = torch.where(at_token, self.item_token.to(embeds.dtype), embeds)
            mask = pos <= lengths.unsqueeze(1)  # [n, W+1]
        else:
            mask = pos < lengths.unsqueeze(1)
        hidden = self.item_llm(
            inputs_embeds=embeds, attention_mask=mask.long(), use_cache=False
        ).last_hidden_state
        if use_token:
            return hidden[torch.arange(n, device=ids.device), lengths]  # [n, h]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)

    @torch.no_grad()
    def build_item_cache(self) -> torch.Tensor:
        """Computes (or returns, when still valid) the raw item-LLM states of the whole catalogue.

        Always in eval mode (no dropout), without gradient, `item_batch_size` items per pass.

        Returns:
            `torch.FloatTensor` of shape `(num_items + 1, item_hidden_size)`, row 0 zeros.
        """
        if self._cache_valid():
            return self._item_cache
        key = self._item_state_key()
        was_training = self.item_llm.training
        self.item_llm.eval()
        try:
            ids = torch.arange(self.config.num_items + 1, device=self.item_texts.lengths.device)
            self._item_cache = self.encode_items(ids)
            self._item_cache_key = key
        finally:
            self.item_llm.train(was_training)
        return self._item_cache

    def _cache_valid(self) -> bool:
        if self._item_cache is None:
            return False
        key = self._item_state_key()
        return key is not None and key == self._item_cache_key

    def _item_llm_states(self, unique_ids: torch.Tensor, remember: bool = False) -> torch.Tensor:
        """Raw item-LLM states of sorted unique ids, from the cache, this step's memo, or the item LLM."""
        trainable = self.item_llm_trainable()
        if not (torch.is_grad_enabled() and trainable):
            if self._cache_valid():
                return self._item_cache[unique_ids.to(self._item_cache.device)]
            if not trainable or not self.training:
                # Frozen item LLM: the table is computed once and serves every later step. In eval mode
                # (evaluation, serving) the whole table is about to be needed for scoring anyway.
                return self.build_item_cache()[unique_ids.to(self._item_cache.device)]
            return self.encode_items(unique_ids)
        key = self._item_state_key()
        memo = self._step_memo
        if remember or memo is None or memo[0] != key or key is None:
            states = self.encode_items(unique_ids)
            if remember:
                self._step_memo = (key, unique_ids, states)
            return states
        # Reuse what `forward` encoded in this step (same graph); encode only the ids it has not seen.
        _, memo_ids, memo_states = memo
        unique_ids = unique_ids.to(memo_ids.device)
        pos = torch.searchsorted(memo_ids, unique_ids).clamp(max=len(memo_ids) - 1)
        hit = memo_ids[pos] == unique_ids
        out = memo_states.new_zeros(len(unique_ids), memo_states.shape[-1])
        hit_idx = hit.nonzero(as_tuple=True)[0]
        miss_idx = (~hit).nonzero(as_tuple=True)[0]
        out = out.index_copy(0, hit_idx, memo_states[pos[hit_idx]])
        if miss_idx.numel():
            out = out.index_copy(0, miss_idx, self.encode_items(unique_ids[miss_idx]))
        return out

    def item_states(self, item_ids: torch.Tensor, remember: bool = False) -> torch.Tensor:
        """Item embeddings as the user LLM reads them (projected, not normalised).

        Args:
            item_ids (`torch.LongTensor` of any shape `(*)`): 0 gives a zero vector.
            remember (`bool`): keep the encoded states for the rest of this training step.

        Returns:
            `torch.FloatTensor` of shape `(*, hidden_size)`.
        """
        flat = item_ids.reshape(-1)
        unique_ids, inverse = torch.unique(flat, return_inverse=True)  # sorted
        states = self.item_proj(self._item_llm_states(unique_ids, remember=remember))  # [U, d]
        return states[inverse.to(states.device)].view(*item_ids.shape, -1)

    def embed_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        """L2-normalised item embeddings used for scoring; differentiable through the item LLM when it trains.

        Only the unique ids are encoded, and those already encoded by this step's `forward` are reused.

        Args:
            item_ids (`torch.LongTensor` of any shape `(*)`)

        Returns:
            `torch.FloatTensor` of shape `(*, hidden_size)`.
        """
        return F.normalize(self.item_states(item_ids), dim=-1)

    @torch.no_grad()
    def all_item_embeddings(self) -> torch.Tensor:
        """`torch.FloatTensor` of shape `(num_items + 1, hidden_size)`, L2-normalised, row 0 (padding) zeros.

        Served from the cached table, rebuilt first if any item-LLM weight changed since it was built.
        """
        table = self.build_item_cache()
        return F.normalize(self.item_proj(table), dim=-1)

    # ------------------------------------------------------------------ user model

    def forward(
        self,
        input_ids: torch.LongTensor,
        timestamps: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        query_timestamps: torch.LongTensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> HLLMModelOutput | tuple:
        """The backbone contract's forward ([`GGRBackboneModel.forward`]). HLLM reads no time:
        `timestamps` and `query_timestamps` are accepted and ignored."""
        mask = self.resolve_attention_mask(input_ids, attention_mask)
        ids = torch.where(mask, input_ids, torch.zeros_like(input_ids))
        user_dtype = next(self.user_llm.parameters()).dtype
        embeds = self.item_states(ids, remember=True).to(user_dtype)  # [B, T, d]
        hidden = self.user_llm(
            inputs_embeds=embeds, attention_mask=mask.long(), use_cache=False
        ).last_hidden_state  # [B, T, d]
        hidden = F.normalize(hidden, dim=-1)
        # `where`, not a product: a fully padded row may come out of the attention as NaN.
        hidden = torch.where(mask.unsqueeze(-1), hidden, torch.zeros_like(hidden))
        if return_dict is False:
            return (hidden,)
        return HLLMModelOutput(last_hidden_state=hidden)

    # ------------------------------------------------------------------ helpers

    @classmethod
    def from_llms(
        cls,
        item_llm: str,
        user_llm: str | None = None,
        *,
        num_items: int,
        items: Any | None = None,
        tokenizer: Any | None = None,
        **config_kwargs,
    ) -> HLLMModel:
        """Builds an HLLM backbone from pretrained LLMs in local directories (or Hub ids).

        Args:
            item_llm (`str`): path / Hub id of the item LLM (its tokenizer is used unless `tokenizer` is given).
            user_llm (`str`, *optional*): path / Hub id of the user LLM; defaults to `item_llm`.
            num_items (`int`): catalogue size.
            items: item table or texts for [`~HLLMModel.prepare_from_items`]; without it, call
                `set_item_texts` later.
            config_kwargs: other [`HLLMConfig`] fields.
        """
        config = HLLMConfig(num_items=num_items, item_llm=item_llm, user_llm=user_llm, **config_kwargs)
        model = cls(config)
        if items is not None:
            model.prepare_from_items(items, tokenizer=tokenizer, load_pretrained=True)
        else:
            model.load_pretrained_llms()
        return model
