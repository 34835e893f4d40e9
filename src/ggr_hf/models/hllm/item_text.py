"""Item text for the HLLM item LLM: fields to text, prompt / chat template, tokenization, offline tokenizer.

An item's text is built from some of its attributes (`item_text_fields`), then wrapped in an instruction
(`item_prompt`, optionally inside the tokenizer's chat template), tokenized and cut at `max_item_text_len`
tokens. [`HLLMModel.set_item_texts`] stores the result as buffers of the model, so a saved model carries
everything it needs to embed its catalogue.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "build_item_texts",
    "build_word_level_tokenizer",
    "format_item_text",
    "wrap_item_texts",
    "tokenize_item_texts",
]


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str) and not value.strip():
        return True
    return isinstance(value, (list, tuple)) and not any(not _is_missing(v) for v in value)


def _value_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v).strip() for v in value if not _is_missing(v))
    return str(value).strip()


def format_item_text(record: Mapping[str, Any], fields: Sequence[str], text_format: str = "release") -> str:
    """One item's attributes as text, without the prompt.

    Args:
        record: the item's attributes, e.g. a row of `RecDataBundle.items`.
        fields: attribute names, in order. Missing, `None`, NaN and empty values are skipped.
        text_format: `"release"` gives `"Title: Toy Story. Genres: Animation, Comedy."` (the released GGR
            code: capitalised key, `". "` between fields); `"hllm"` gives
            `"title: Toy Storygenres: Animation, Comedy"` (ByteDance HLLM: no separator).

    Returns:
        The text; `""` when every field is missing.
    """
    parts = []
    for key in fields:
        value = record.get(key)
        if _is_missing(value):
            continue
        if text_format == "release":
            parts.append(f"{key.capitalize()}: {_value_text(value)}. ")
        elif text_format == "hllm":
            parts.append(f"{key}: {_value_text(value)}")
        else:
            raise ValueError(f"text_format must be 'release' or 'hllm', got {text_format!r}")
    return "".join(parts).strip()


def build_item_texts(
    items: Any, fields: Sequence[str], text_format: str = "release", num_items: int | None = None
) -> list[str]:
    """The text of every item, row `i - 1` for internal item `i`.

    Args:
        items: a `datasets.Dataset` (e.g. `RecDataBundle.items`), a list of dicts, or a list of strings
            (taken as already formatted texts).
        fields: attribute names (see [`format_item_text`]).
        text_format: `"release"` or `"hllm"`.
        num_items: when given, the number of rows must match.

    Raises:
        `ValueError` when a field is absent from every item (most likely a misspelt name).
    """
    rows = list(items) if not hasattr(items, "to_list") else items.to_list()
    if num_items is not None and len(rows) != num_items:
        raise ValueError(f"got {len(rows)} items but the model has num_items={num_items} (row i-1 is item i)")
    if rows and isinstance(rows[0], str):
        return [str(r) for r in rows]
    if rows:
        columns = set().union(*(r.keys() for r in rows[:1000]))
        absent = [f for f in fields if f not in columns]
        if absent:
            raise ValueError(
                f"item text field(s) {absent} not found in the item table (columns: {sorted(columns)})"
            )
    return [format_item_text(r, fields, text_format) for r in rows]


def wrap_item_texts(
    texts: Sequence[str], tokenizer: Any, prompt: str, chat_template: bool
) -> tuple[list[str], bool]:
    """Puts the prompt before each text, inside the tokenizer's chat template when asked and available.

    Returns:
        The strings to tokenize, and whether they already hold the special tokens (chat template).
    """
    use_chat = bool(chat_template) and getattr(tokenizer, "chat_template", None) is not None
    if chat_template and not use_chat:
        logger.info("HLLM: the tokenizer has no chat template; item texts are encoded as plain prompt + text")
    if not use_chat:
        return [prompt + t for t in texts], False
    wrapped = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt + t}], tokenize=False, add_generation_prompt=True
        )
        for t in texts
    ]
    return wrapped, True


def tokenize_item_texts(
    texts: Sequence[str], tokenizer: Any, max_len: int, has_special_tokens: bool = False
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Tokenizes item texts into right-padded ids, cutting each at `max_len` tokens.

    Padding uses id 0 and the lengths; the tokenizer's pad token is never used, so a tokenizer without one
    (Llama, Qwen base models, a fresh word-level tokenizer) works unchanged.

    Args:
        texts: one string per item (already wrapped by [`wrap_item_texts`]).
        tokenizer: a transformers tokenizer (callable on a list of strings).
        max_len: longest kept token sequence; longer ones lose their right end.
        has_special_tokens: the strings already contain the special tokens (chat template), so the
            tokenizer must not add BOS / CLS again.

    Returns:
        token_ids (`torch.IntTensor` of shape `(len(texts), max_len)`), lengths (`torch.IntTensor` of shape
        `(len(texts),)`), and the number of texts that were cut.
    """
    if not texts:
        return torch.zeros(0, max_len, dtype=torch.int32), torch.zeros(0, dtype=torch.int32), 0
    encoded = tokenizer(list(texts), add_special_tokens=not has_special_tokens, truncation=False)["input_ids"]
    token_ids = torch.zeros(len(texts), max_len, dtype=torch.int32)
    lengths = torch.zeros(len(texts), dtype=torch.int32)
    cut = 0
    for i, ids in enumerate(encoded):
        if len(ids) > max_len:
            cut += 1
            ids = ids[:max_len]
        if ids:
            token_ids[i, : len(ids)] = torch.as_tensor(ids, dtype=torch.int32)
        lengths[i] = len(ids)
    return token_ids, lengths, cut


def build_word_level_tokenizer(
    texts: Iterable[str], vocab_size: int | None = None, lowercase: bool = True
) -> Any:
    """A word-level `PreTrainedTokenizerFast` built from the item texts, with no download.

    Meant for randomly initialised item LLMs (tests, CPU demos) that come without a tokenizer. Words are
    split on whitespace and punctuation; the vocabulary is `[PAD]` (id 0), `[UNK]` (id 1), then words by
    decreasing frequency (ties alphabetical), so it is the same for the same texts. It has no chat template.

    Args:
        texts: the strings that will be tokenized (prompt included).
        vocab_size: keep at most this many entries (special tokens included); rarer words map to `[UNK]`.
        lowercase: lower-case before splitting.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Whitespace()
    counts: Counter[str] = Counter()
    for t in texts:
        t = t.lower() if lowercase else t
        counts.update(w for w, _ in pre.pre_tokenize_str(t))
    words = sorted(counts, key=lambda w: (-counts[w], w))
    specials = ["[PAD]", "[UNK]"]
    if vocab_size is not None:
        words = words[: max(vocab_size - len(specials), 0)]
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="[UNK]"))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
