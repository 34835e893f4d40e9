"""Configuration of the HLLM backbone (an item LLM and a user LLM, both stock transformers models)."""

from __future__ import annotations

import copy
from typing import Any

from transformers import AutoConfig, PretrainedConfig

from ggr_hf.configuration_utils import check_numbers, check_positive_ints, reject_unknown_keys
from ggr_hf.errors import GGRConfigError

# Keys of a nested transformers config that say where or how it was saved, not what the model is.
# `dtype` is dropped on purpose: the precision is chosen when the GGR model is loaded or by accelerate's
# mixed precision, not by whatever dtype the pretrained checkpoint happened to be stored in.
_NESTED_DROP = ("transformers_version", "_name_or_path", "dtype", "torch_dtype", "_commit_hash")

ITEM_TEXT_FORMATS = ("release", "hllm")
ITEM_POOLINGS = ("item_token", "mean")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")

# The released GGR code wraps each item's text in this instruction (and the tokenizer's chat template);
# ByteDance HLLM uses "Compress the following sentence into embedding: " without a chat template.
RELEASE_ITEM_PROMPT = "Summarize item description into embedding: "
HLLM_ITEM_PROMPT = "Compress the following sentence into embedding: "


def llm_kind(model_type: str) -> str:
    """`"decoder"` for causal LMs, `"encoder"` for masked-LM encoders (BERT, MiniLM, ...), else `"other"`.

    Encoder families such as BERT also appear in transformers' causal-LM mapping (`BertLMHeadModel`), but
    `AutoModel` builds them bidirectional, so the masked-LM mapping is checked first.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "decoder"
    return "other"


def _resolve_llm(
    field: str, value: dict[str, Any] | str | PretrainedConfig | None
) -> tuple[dict[str, Any] | None, str | None]:
    """Turns a path / Hub id / config object / dict into a plain config dict; returns it and the path (if any)."""
    if value is None:
        return None, None
    path = None
    if isinstance(value, str):
        path = value
        try:
            value = AutoConfig.from_pretrained(path)
        except Exception as err:  # OSError, ValueError, EnvironmentError from hub / config parsing
            raise GGRConfigError(
                f"HLLMConfig.{field}: cannot load a transformers config from {path!r} (neither a local model "
                f"directory with a config.json nor a reachable Hub id): {err}"
            ) from err
    if isinstance(value, PretrainedConfig):
        value = value.to_dict()
    if not isinstance(value, dict):
        raise GGRConfigError(
            f"HLLMConfig.{field} must be a path, a Hub id, a transformers config or its dict, got {type(value).__name__}"
        )
    value = copy.deepcopy(value)
    if "model_type" not in value:
        raise GGRConfigError(
            f"HLLMConfig.{field} needs a 'model_type' (e.g. the output of Qwen2Config(...).to_dict())"
        )
    for key in _NESTED_DROP:
        value.pop(key, None)
    return value, path


def build_llm_config(config_dict: dict[str, Any]) -> PretrainedConfig:
    """Rebuilds a transformers config from its dict without any download."""
    d = dict(config_dict)
    model_type = d.pop("model_type")
    return AutoConfig.for_model(model_type, **d)


class HLLMConfig(PretrainedConfig):
    r"""
    Configuration of [`HLLMModel`] (Chen et al., 2024, "HLLM: Enhancing Sequential Recommendations via
    Hierarchical Large Language Models"): an item LLM turns each item's text into an embedding, a user LLM
    reads the sequence of item embeddings (`inputs_embeds`) and predicts the next one.

    Both LLMs are stock transformers models, built with `AutoModel.from_config` from the nested config dicts
    saved here, so a saved GGR model rebuilds without any download nor `trust_remote_code`. Pretrained
    weights are copied in once, before training, by [`HLLMModel.load_pretrained_llms`] from
    `item_llm_name_or_path` / `user_llm_name_or_path`.

    Where the released GGR code and ByteDance's HLLM differ, the default is the released code's value.

    Args:
        num_items (`int`, *optional*, defaults to 1):
            Number of real items (ids `1..num_items`; 0 is padding). Set by `GGRConfig`.

        > The two LLMs

        item_llm (`dict`, `str` or `PretrainedConfig`, *optional*):
            The item LLM: a transformers config dict (`Qwen2Config(...).to_dict()`), a config object, or a local
            path / Hub id whose `config.json` is read now (and remembered in `item_llm_name_or_path`). A
            decoder (Qwen2, Qwen2.5, Qwen3, Llama, TinyLlama, ...) or an encoder (BERT, MiniLM, ...). Required
            to build a model; `None` is only accepted so that the bare class can be instantiated.
        user_llm (`dict`, `str` or `PretrainedConfig`, *optional*):
            The user LLM, same forms; it must be a decoder-only causal LM. Defaults to a copy of a decoder
            `item_llm`'s architecture (separate weights, as in HLLM). Its word embeddings are dropped: it only
            reads `inputs_embeds`.
        item_llm_name_or_path (`str`, *optional*):
            Where the item LLM's pretrained weights (and tokenizer) come from; filled when `item_llm` is a path.
        user_llm_name_or_path (`str`, *optional*):
            Same for the user LLM; defaults to `item_llm_name_or_path` when `user_llm` is not given.
        hidden_size (`int`, *optional*):
            Width of the user states and of the scoring embeddings: always the user LLM's hidden size (given
            back by `to_dict`; a different value is an error). Item embeddings are projected to it by a
            bias-free linear layer when the item LLM is wider or narrower.
        max_seq_len (`int`, *optional*, defaults to 50):
            Longest history the user LLM reads (context 10-50 in the paper).
        llm_attn_implementation (`str`, *optional*, defaults to `"sdpa"`):
            Attention kernel of both LLMs (`"sdpa"`, `"eager"`, `"flash_attention_2"`, ...).

        > Item text

        max_item_text_len (`int`, *optional*, defaults to 256):
            Maximum tokens of an item's prompt + text (the learned item token comes on top). Longer texts are
            cut at the right end (as the released code does) and the number of cut items is logged.
        item_text_fields (`list[str]`, *optional*, defaults to `["title"]`):
            Item attributes written into the text, in order (e.g. `["title", "genres"]`). Missing, `None`,
            NaN and empty values are skipped; list values are joined with `", "`.
        item_text_format (`str`, *optional*, defaults to `"release"`):
            `"release"`: `"Title: Toy Story. Genres: Animation, Comedy."` (the released GGR code);
            `"hllm"`: `"title: Toy Storygenres: Animation, Comedy"` (ByteDance HLLM, no separator).
        item_prompt (`str`, *optional*, defaults to `"Summarize item description into embedding: "`):
            Instruction put before the text (the released code's; HLLM's is
            `"Compress the following sentence into embedding: "`).
        item_chat_template (`bool`, *optional*, defaults to `True`):
            Wrap `prompt + text` as a user message in the tokenizer's chat template with the generation prompt
            (the released code). Tokenizers without a chat template fall back to plain `prompt + text`.
        item_tokenizer (`str`, *optional*):
            Tokenizer used by [`HLLMModel.prepare_from_items`]: a path / Hub id, `"word_level"` (a word-level
            vocabulary built from the item texts, for randomly initialised LLMs without a tokenizer), or
            `None` for the tokenizer at `item_llm_name_or_path`.
        item_pooling (`str`, *optional*, defaults to `"item_token"`):
            `"item_token"`: a learned token is appended after the text and its last hidden state is the item
            embedding (HLLM and the released code); `"mean"`: the mean of the last hidden states over the text
            tokens, no extra token (sentence-transformers pooling, the natural choice for a pretrained MiniLM).
        item_batch_size (`int`, *optional*, defaults to 64):
            Items per item-LLM forward pass. Items are sorted by length first, so each pass pads little.

        > Training modes

        freeze_item_llm (`bool`, *optional*, defaults to `False`):
            Freeze the item LLM (and item token): item embeddings come from a cached table computed once.
        lora_item (`bool`, *optional*, defaults to `False`):
            Train LoRA adapters on the item LLM instead of all its weights.
        lora_user (`bool`, *optional*, defaults to `False`):
            Train LoRA adapters on the user LLM instead of all its weights.
        lora_r (`int`, *optional*, defaults to 8)
        lora_alpha (`int`, *optional*, defaults to 16)
        lora_dropout (`float`, *optional*, defaults to 0.0)
        lora_target_modules (`list[str]`, *optional*):
            Module names LoRA wraps. Defaults to peft's choice for each LLM's architecture (e.g.
            `["q_proj", "v_proj"]` for Qwen2, `["query", "value"]` for BERT), resolved and saved here so that
            a later peft release cannot change a saved model's layout.
        gradient_checkpointing (`bool`, *optional*, defaults to `False`):
            Activation checkpointing (non-reentrant) in the trainable LLMs.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the item token and of the projection at initialisation.
    """

    model_type = "hllm"

    def __init__(
        self,
        num_items: int = 1,
        # The two LLMs
        item_llm: dict[str, Any] | str | PretrainedConfig | None = None,
        user_llm: dict[str, Any] | str | PretrainedConfig | None = None,
        item_llm_name_or_path: str | None = None,
        user_llm_name_or_path: str | None = None,
        hidden_size: int | None = None,
        max_seq_len: int = 50,
        llm_attn_implementation: str = "sdpa",
        # Item text
        max_item_text_len: int = 256,
        item_text_fields: list[str] | tuple[str, ...] = ("title",),
        item_text_format: str = "release",
        item_prompt: str = RELEASE_ITEM_PROMPT,
        item_chat_template: bool = True,
        item_tokenizer: str | None = None,
        item_pooling: str = "item_token",
        item_batch_size: int = 64,
        # Training modes
        freeze_item_llm: bool = False,
        lora_item: bool = False,
        lora_user: bool = False,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.0,
        lora_target_modules: list[str] | None = None,
        gradient_checkpointing: bool = False,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        self.num_items = num_items
        self.item_llm, item_path = _resolve_llm("item_llm", item_llm)
        user_given = user_llm is not None
        self.user_llm, user_path = _resolve_llm("user_llm", user_llm)
        self.item_llm_name_or_path = item_llm_name_or_path or item_path
        self.user_llm_name_or_path = user_llm_name_or_path or user_path
        if (
            not user_given
            and self.item_llm is not None
            and llm_kind(self.item_llm["model_type"]) == "decoder"
        ):
            # HLLM's usual setting: the same architecture (and checkpoint) for both, trained separately.
            self.user_llm = copy.deepcopy(self.item_llm)
            self.user_llm_name_or_path = self.user_llm_name_or_path or self.item_llm_name_or_path
        derived = (
            int(self.user_llm["hidden_size"]) if self.user_llm and "hidden_size" in self.user_llm else None
        )
        if hidden_size is not None and derived is not None and int(hidden_size) != derived:
            raise GGRConfigError(
                f"HLLMConfig.hidden_size is the user LLM's hidden size ({derived}); got {hidden_size}. "
                "Change user_llm instead."
            )
        self.hidden_size = derived if derived is not None else hidden_size
        self.max_seq_len = max_seq_len
        self.llm_attn_implementation = llm_attn_implementation

        self.max_item_text_len = max_item_text_len
        if isinstance(item_text_fields, str):
            item_text_fields = [item_text_fields]
        self.item_text_fields = list(item_text_fields)
        self.item_text_format = item_text_format
        self.item_prompt = item_prompt
        self.item_chat_template = item_chat_template
        self.item_tokenizer = item_tokenizer
        self.item_pooling = item_pooling
        self.item_batch_size = item_batch_size

        self.freeze_item_llm = freeze_item_llm
        self.lora_item = lora_item
        self.lora_user = lora_user
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.lora_target_modules = list(lora_target_modules) if lora_target_modules is not None else None
        self.gradient_checkpointing = gradient_checkpointing
        self.initializer_range = initializer_range
        reject_unknown_keys("HLLMConfig", kwargs)
        super().__init__(**kwargs)
        self.validate_fields()
        if (self.lora_item or self.lora_user) and self.lora_target_modules is None:
            self.lora_target_modules = self._default_lora_targets()

    def _default_lora_targets(self) -> list[str]:
        """peft's default LoRA targets for each LLM that gets adapters (their union, in order)."""
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as LORA_TARGETS

        targets: list[str] = []
        for enabled, llm in ((self.lora_item, self.item_llm), (self.lora_user, self.user_llm)):
            if not enabled or llm is None:
                continue
            names = LORA_TARGETS.get(llm["model_type"])
            if names is None:
                raise GGRConfigError(
                    f"HLLMConfig.lora_target_modules: peft has no default for model_type {llm['model_type']!r}; "
                    "name the modules (e.g. ['q_proj', 'v_proj'])"
                )
            targets += [n for n in names if n not in targets]
        return targets

    def item_llm_config(self) -> PretrainedConfig:
        """The item LLM's transformers config."""
        if self.item_llm is None:
            raise GGRConfigError(
                "HLLMConfig.item_llm is not set: give a transformers config dict (e.g. Qwen2Config(...).to_dict()) "
                "or a local path / Hub id of a causal LM"
            )
        return build_llm_config(self.item_llm)

    def user_llm_config(self) -> PretrainedConfig:
        """The user LLM's transformers config."""
        if self.user_llm is None:
            raise GGRConfigError(
                "HLLMConfig.user_llm is not set (it only defaults to item_llm when item_llm is a decoder): give a "
                "decoder-only causal LM config dict, path or Hub id"
            )
        return build_llm_config(self.user_llm)

    @property
    def item_hidden_size(self) -> int:
        return int(self.item_llm_config().hidden_size)

    def validate_fields(self) -> None:
        """Raises `GGRConfigError` (a `ValueError`) naming the first invalid field."""

        def choice(name: str, options: tuple[str, ...]) -> None:
            if getattr(self, name) not in options:
                raise GGRConfigError(
                    f"HLLMConfig.{name} must be one of {list(options)}, got {getattr(self, name)!r}"
                )

        check_positive_ints(
            self, ("num_items", "max_seq_len", "max_item_text_len", "item_batch_size", "lora_r", "lora_alpha")
        )
        choice("item_text_format", ITEM_TEXT_FORMATS)
        choice("item_pooling", ITEM_POOLINGS)
        choice("llm_attn_implementation", ATTN_IMPLEMENTATIONS)
        check_numbers(self, fractions=("lora_dropout",), positive=("initializer_range",))
        if not self.item_text_fields or not all(isinstance(f, str) and f for f in self.item_text_fields):
            raise GGRConfigError(
                f"HLLMConfig.item_text_fields must be non-empty names, got {self.item_text_fields!r}"
            )
        if self.freeze_item_llm and self.lora_item:
            raise GGRConfigError(
                "HLLMConfig.freeze_item_llm and lora_item exclude each other: a frozen item LLM trains nothing"
            )
        if self.item_llm is not None:
            kind = llm_kind(self.item_llm["model_type"])
            if kind == "other":
                raise GGRConfigError(
                    f"HLLMConfig.item_llm: model_type {self.item_llm['model_type']!r} is neither a causal LM nor a "
                    "text encoder that transformers knows (AutoModelForCausalLM / AutoModelForMaskedLM)"
                )
        if self.user_llm is not None:
            kind = llm_kind(self.user_llm["model_type"])
            if kind != "decoder":
                raise GGRConfigError(
                    f"HLLMConfig.user_llm must be a decoder-only causal LM (Qwen2, Qwen3, Llama, ...); model_type "
                    f"{self.user_llm['model_type']!r} is {'a bidirectional encoder' if kind == 'encoder' else 'not a causal LM'}, "
                    "which would let each position see the items it has to predict"
                )
            max_pos = self.user_llm.get("max_position_embeddings")
            if max_pos is not None and self.max_seq_len > int(max_pos):
                raise GGRConfigError(
                    f"HLLMConfig.max_seq_len ({self.max_seq_len}) exceeds the user LLM's max_position_embeddings ({max_pos})"
                )
