"""Tests for the HLLM backbone on tiny random Qwen2 / Qwen3 (and BERT) configs built locally, no download."""

from __future__ import annotations

import logging

import pytest
import safetensors.torch
import torch
from transformers import (
    AutoModel,
    BertConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
)

from ggr_hf.configuration_ggr import GGRConfig
from ggr_hf.modeling_ggr import GGRForRecommendation
from ggr_hf.models.hllm import (
    HLLMConfig,
    HLLMModel,
    build_item_texts,
    build_word_level_tokenizer,
    format_item_text,
)

NUM_ITEMS = 12
VOCAB = 200
GENRES = ["comedy", "drama", "horror", "romance"]
ITEMS = [
    {"title": f"movie number {i} " + " ".join(["long"] * (i % 5)), "genres": GENRES[: 1 + i % 3]}
    for i in range(NUM_ITEMS)
]


def qwen2(**kw) -> dict:
    args = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return Qwen2Config(**{**args, "vocab_size": VOCAB, **kw}).to_dict()


def qwen3(**kw) -> dict:
    args = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return Qwen3Config(**{**args, "head_dim": 8, "vocab_size": VOCAB, **kw}).to_dict()


def bert() -> dict:
    return BertConfig(
        hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, vocab_size=VOCAB
    ).to_dict()


LLMS = {"qwen2": qwen2, "qwen3": qwen3}


def item_texts(config: HLLMConfig) -> list[str]:
    return build_item_texts(ITEMS, config.item_text_fields, config.item_text_format)


def tokenizer_for(config: HLLMConfig, pad: bool = True) -> PreTrainedTokenizerFast:
    tok = build_word_level_tokenizer([config.item_prompt + t for t in item_texts(config)])
    if not pad:
        tok = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, unk_token="[UNK]")
        assert tok.pad_token is None
    return tok


def hllm_config(llm: str = "qwen2", **kw) -> HLLMConfig:
    kw.setdefault("item_llm", LLMS[llm]())
    kw.setdefault("max_seq_len", 8)
    kw.setdefault("max_item_text_len", 24)
    kw.setdefault("item_text_fields", ["title", "genres"])
    return HLLMConfig(num_items=NUM_ITEMS, **kw)


def make_hllm(llm: str = "qwen2", seed: int = 0, **kw) -> HLLMModel:
    torch.manual_seed(seed)
    config = hllm_config(llm, **kw)
    model = HLLMModel(config)
    model.set_item_texts(item_texts(config), tokenizer_for(config))
    return model


def make_ggr(llm: str = "qwen2", seed: int = 0, **kw) -> GGRForRecommendation:
    torch.manual_seed(seed)
    config = GGRConfig(
        backbone_type="hllm", backbone_config=hllm_config(llm, **kw), num_items=NUM_ITEMS, num_negatives=6
    )
    model = GGRForRecommendation(config)
    backbone = model.backbone
    backbone.set_item_texts(item_texts(backbone.config), tokenizer_for(backbone.config))
    return model


HISTORY = torch.tensor([[1, 2, 3, 4, 5, 0], [6, 7, 8, 9, 10, 11], [12, 3, 0, 0, 0, 0]])
TARGETS = torch.tensor([[2, 3, 4, 5, 6, 0], [7, 8, 9, 10, 11, 12], [3, 1, 0, 0, 0, 0]])


# ------------------------------------------------------------------------------------------------ config


def test_config_defaults_user_llm_to_item_llm_and_hidden_size():
    config = hllm_config("qwen3")
    assert config.user_llm == config.item_llm and config.user_llm is not config.item_llm
    assert config.hidden_size == 32
    ggr = GGRConfig(backbone_type="hllm", backbone_config=config, num_items=NUM_ITEMS)
    assert ggr.hidden_size == 32 and ggr.max_seq_len == 8
    # GGRConfig saves every backbone field; they rebuild the same HLLMConfig.
    again = HLLMConfig(**ggr.backbone_config)
    assert again.to_dict()["item_llm"] == config.to_dict()["item_llm"]


def test_config_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot load a transformers config"):
        HLLMConfig(item_llm=str(tmp_path / "does-not-exist"))
    with pytest.raises(ValueError, match="neither a causal LM"):
        HLLMConfig(item_llm={"model_type": "vit"}, user_llm=qwen2())
    with pytest.raises(ValueError, match="decoder-only causal LM"):
        HLLMConfig(item_llm=qwen2(), user_llm=bert())
    with pytest.raises(ValueError, match="model_type"):
        HLLMConfig(item_llm={"hidden_size": 4})
    with pytest.raises(ValueError, match="exclude each other"):
        hllm_config(freeze_item_llm=True, lora_item=True)
    with pytest.raises(ValueError, match="unknown field"):
        hllm_config(item_text_feilds=["title"])
    with pytest.raises(ValueError, match="user LLM's hidden size"):
        hllm_config(hidden_size=64)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        hllm_config(item_llm=qwen2(max_position_embeddings=4))
    with pytest.raises(ValueError, match="item_llm is not set"):
        HLLMModel(HLLMConfig(num_items=3))


def test_lora_targets_resolved_and_saved():
    config = hllm_config(lora_item=True)
    assert config.lora_target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ValueError, match="match no module"):
        HLLMModel(hllm_config(lora_user=True, lora_target_modules=["nonexistent"]))


# ------------------------------------------------------------------------------------------------ item text


def test_format_item_text_release_and_hllm():
    record = {"title": "Toy Story (1995)", "genres": ["Animation", "Comedy"], "tag": float("nan"), "x": ""}
    fields = ["title", "genres", "tag", "x"]
    assert (
        format_item_text(record, fields, "release") == "Title: Toy Story (1995). Genres: Animation, Comedy."
    )
    assert format_item_text(record, fields, "hllm") == "title: Toy Story (1995)genres: Animation, Comedy"
    assert format_item_text({"title": None}, ["title"]) == ""
    with pytest.raises(ValueError, match="not found in the item table"):
        build_item_texts([{"title": "a"}], ["titel"])


def test_item_without_text_is_an_error_unless_allowed(caplog):
    config = hllm_config()
    model = HLLMModel(config)
    texts = item_texts(config)
    texts[4] = "  "
    with pytest.raises(ValueError, match=r"no text \(e.g. item ids \[5\]\)"):
        model.set_item_texts(texts, tokenizer_for(config))
    with caplog.at_level(logging.WARNING):
        model.set_item_texts(texts, tokenizer_for(config), allow_empty=True)
    assert "no text" in caplog.text
    # Embedded from the prompt alone.
    assert int(model.item_texts.lengths[5]) == len(tokenizer_for(config)(config.item_prompt)["input_ids"])


def test_long_text_is_cut_and_logged(caplog):
    config = hllm_config(max_item_text_len=6)
    model = HLLMModel(config)
    with caplog.at_level(logging.WARNING):
        model.set_item_texts(item_texts(config), tokenizer_for(config))
    assert f"{NUM_ITEMS} of {NUM_ITEMS} item texts are longer" in caplog.text
    assert model.item_texts.lengths[1:].tolist() == [6] * NUM_ITEMS
    tok = tokenizer_for(config)
    full = tok(config.item_prompt + item_texts(config)[0])["input_ids"]
    assert model.item_texts.token_ids[1].tolist() == full[:6]  # the right end is cut


def test_tokenizer_without_pad_token_gives_the_same_buffers():
    config = hllm_config()
    a, b = HLLMModel(config), HLLMModel(config)
    a.set_item_texts(item_texts(config), tokenizer_for(config, pad=True))
    b.set_item_texts(item_texts(config), tokenizer_for(config, pad=False))
    assert torch.equal(a.item_texts.token_ids, b.item_texts.token_ids)
    assert torch.equal(a.item_texts.lengths, b.item_texts.lengths)
    assert a.item_texts.token_ids[0].abs().sum() == 0 and int(a.item_texts.lengths[0]) == 0


def test_token_ids_beyond_vocab_and_wrong_count_raise():
    config = hllm_config(item_llm=qwen2(vocab_size=5))
    model = HLLMModel(config)
    with pytest.raises(ValueError, match="vocab_size=5"):
        model.set_item_texts(item_texts(config), tokenizer_for(config))
    with pytest.raises(ValueError, match="num_items"):
        model.set_item_texts(item_texts(config)[:3], tokenizer_for(config))


def test_chat_template_is_applied_when_the_tokenizer_has_one():
    config = hllm_config()
    tok = tokenizer_for(config)
    tok.chat_template = "{% for m in messages %}user {{ m['content'] }} {% endfor %}assistant"
    model = HLLMModel(config)
    model.set_item_texts(item_texts(config), tok)
    expected = tok(f"user {config.item_prompt}{item_texts(config)[0]} assistant", add_special_tokens=False)
    n = int(model.item_texts.lengths[1])
    assert model.item_texts.token_ids[1, :n].tolist() == expected["input_ids"][:n]


def test_texts_must_be_set_before_encoding():
    model = HLLMModel(hllm_config())
    with pytest.raises(RuntimeError, match="set_item_texts"):
        model.embed_items(torch.tensor([1, 2]))


# ------------------------------------------------------------------------------------------------ item embeddings


@pytest.mark.parametrize("llm", ["qwen2", "qwen3"])
def test_item_embeddings_deterministic_and_batch_order_independent(llm):
    model = make_hllm(llm, item_batch_size=3).eval()
    ids = torch.arange(1, NUM_ITEMS + 1)
    with torch.no_grad():
        base = model.encode_items(ids)
        again = model.encode_items(ids)
        perm = torch.randperm(NUM_ITEMS, generator=torch.Generator().manual_seed(1))
        permuted = model.encode_items(ids[perm])
        alone = torch.cat([model.encode_items(ids[i : i + 1]) for i in range(NUM_ITEMS)])
    assert torch.equal(base, again)
    torch.testing.assert_close(permuted, base[perm], atol=1e-5, rtol=1e-5)
    # Each item alone (no padding at all) equals the padded batch: nothing leaks between rows.
    torch.testing.assert_close(alone, base, atol=1e-5, rtol=1e-5)
    assert model.encode_items(torch.tensor([0, 3]))[0].abs().sum() == 0  # padding id -> zeros
    emb = model.embed_items(torch.tensor([[1, 2], [0, 3]]))
    assert emb.shape == (2, 2, 32)
    torch.testing.assert_close(emb[0, 0].norm(), torch.tensor(1.0))


def test_encoder_item_llm_with_mean_pooling_and_projection():
    model = make_hllm(item_llm=bert(), user_llm=qwen2(), item_pooling="mean", item_batch_size=4).eval()
    assert model.item_token is None and isinstance(model.item_proj, torch.nn.Linear)
    ids = torch.arange(1, NUM_ITEMS + 1)
    with torch.no_grad():
        base = model.encode_items(ids)
        alone = torch.cat([model.encode_items(ids[i : i + 1]) for i in range(NUM_ITEMS)])
    torch.testing.assert_close(alone, base, atol=1e-5, rtol=1e-5)
    assert model.all_item_embeddings().shape == (NUM_ITEMS + 1, 32)
    assert model(HISTORY).last_hidden_state.shape == (3, 6, 32)


def test_item_cache_matches_fresh_computation_and_is_rebuilt_after_a_step():
    model = make_hllm().eval()
    table = model.all_item_embeddings()
    with torch.no_grad():
        fresh = torch.nn.functional.normalize(model.encode_items(torch.arange(NUM_ITEMS + 1)), dim=-1)
    torch.testing.assert_close(table, fresh, atol=1e-5, rtol=1e-5)
    assert model.build_item_cache() is model.build_item_cache()  # reused while nothing changed

    # One optimizer step on the item LLM: the table must follow.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    model.embed_items(torch.tensor([1, 2, 3])).sum().backward()
    opt.step()
    model.eval()
    after = model.all_item_embeddings()
    with torch.no_grad():
        fresh_after = torch.nn.functional.normalize(model.encode_items(torch.arange(NUM_ITEMS + 1)), dim=-1)
    assert not torch.allclose(after, table)
    torch.testing.assert_close(after, fresh_after, atol=1e-5, rtol=1e-5)


def test_frozen_item_llm_uses_the_cache_during_training():
    model = make_hllm(freeze_item_llm=True).train()
    assert not model.item_llm_trainable()
    states = model.item_states(torch.tensor([[1, 2], [3, 0]]))
    assert not states.requires_grad  # served from the table, no item-LLM graph
    cache = model._item_cache
    assert cache is not None and cache.shape == (NUM_ITEMS + 1, 32)
    model.embed_items(torch.tensor([4, 5]))
    assert model._item_cache is cache  # not recomputed
    model.eval()
    with torch.no_grad():
        fresh = model.encode_items(torch.arange(NUM_ITEMS + 1))
    torch.testing.assert_close(cache, fresh, atol=1e-5, rtol=1e-5)


def test_training_step_reuses_forward_items_and_stays_differentiable():
    model = make_hllm().eval()  # eval: no dropout, so memo and fresh agree exactly
    calls = []
    original = model.encode_items
    model.encode_items = lambda ids: calls.append(ids.clone()) or original(ids)
    model(HISTORY)
    emb = model.embed_items(torch.tensor([2, 3, 12]))  # all seen by forward
    assert len(calls) == 1 and emb.requires_grad
    model.embed_items(torch.tensor([2, 11, 7]))
    model.embed_items(torch.tensor([[0, 9], [2, 4]]))
    assert len(calls) == 1
    unseen = torch.tensor([1, 2])
    model.forward(torch.tensor([[5, 6]]))
    model.embed_items(unseen)
    assert calls[-1].tolist() == [1, 2]  # only ids that forward did not encode
    with torch.no_grad():
        fresh = torch.nn.functional.normalize(original(torch.tensor([2, 3, 12])), dim=-1)
    torch.testing.assert_close(emb, fresh, atol=1e-6, rtol=1e-6)
    emb.sum().backward()
    assert model.item_token.grad is not None and model.item_token.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------ user model


@pytest.mark.parametrize("llm", ["qwen2", "qwen3"])
def test_user_model_is_causal_and_ignores_padding(llm):
    model = make_hllm(llm).eval()
    base = model(HISTORY).last_hidden_state
    changed = HISTORY.clone()
    changed[1, 3:] = torch.tensor([1, 2, 3])
    out = model(changed).last_hidden_state
    torch.testing.assert_close(out[1, :3], base[1, :3], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[1, 3:], base[1, 3:])
    torch.testing.assert_close(out[0], base[0], atol=1e-5, rtol=1e-5)
    # Padding: a row alone, without any padding, gives the same states; padded positions are zeros.
    alone = model(HISTORY[2:3, :2]).last_hidden_state
    torch.testing.assert_close(alone[0], base[2, :2], atol=1e-5, rtol=1e-5)
    assert base[2, 2:].abs().sum() == 0 and base[0, 5].abs().sum() == 0
    torch.testing.assert_close(base[1].norm(dim=-1), torch.ones(6))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.ones(1, 9, dtype=torch.long))


# ------------------------------------------------------------------------------------------------ training modes


def _step(model: GGRForRecommendation, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)  # the same negatives
    out = model(HISTORY, target_ids=TARGETS)
    out.loss.backward()
    return out.loss.detach()


@pytest.mark.parametrize("llm", ["qwen2", "qwen3"])
def test_lora_training_step_changes_adapters_and_not_frozen_weights(llm):
    model = make_ggr(llm, lora_item=True, lora_user=True).train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("item_llm" in n and "lora_B" in n for n in trainable)
    assert any("user_llm" in n and "lora_B" in n for n in trainable)
    assert not any(("item_llm" in n or "user_llm" in n) and "lora_" not in n for n in trainable)
    assert all(p.abs().sum() == 0 for n, p in model.named_parameters() if "lora_B" in n)  # starts as identity
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    _step(model)
    opt.step()
    for n, p in model.named_parameters():
        if "lora_B" in n:
            assert not torch.equal(p, before[n]), n
        elif not p.requires_grad:
            assert torch.equal(p, before[n]), n


def test_frozen_item_llm_training_step_changes_only_the_user_side():
    model = make_ggr(freeze_item_llm=True).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    _step(model)
    opt.step()
    for n, p in model.named_parameters():
        if "item_llm" in n or n.endswith("item_token"):
            assert torch.equal(p, before[n]), n
    assert not torch.equal(
        model.backbone.user_llm.layers[0].mlp.up_proj.weight,
        before["backbone.user_llm.layers.0.mlp.up_proj.weight"],
    )


@pytest.mark.parametrize("llm", ["qwen2", "qwen3"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(llm):
    plain = make_ggr(llm).train()
    ckpt = make_ggr(llm, gradient_checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    assert ckpt.backbone.user_llm.gradient_checkpointing and ckpt.backbone.item_llm.gradient_checkpointing
    loss_a, loss_b = _step(plain), _step(ckpt)
    torch.testing.assert_close(loss_a, loss_b, atol=1e-6, rtol=1e-6)
    grads_a = {n: p.grad for n, p in plain.named_parameters() if p.grad is not None}
    grads_b = {n: p.grad for n, p in ckpt.named_parameters() if p.grad is not None}
    assert grads_a.keys() == grads_b.keys()
    for n in grads_a:
        torch.testing.assert_close(grads_a[n], grads_b[n], atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------------ save / load


@pytest.mark.parametrize(("llm", "lora"), [("qwen2", False), ("qwen3", True)])
def test_save_load_gives_identical_scores(tmp_path, llm, lora):
    model = make_ggr(llm, lora_item=lora, lora_user=lora)
    # Make the adapters non-trivial so that the round trip is tested on real values.
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    _step(model)
    opt.step()
    model.eval()
    scores, heads = model.score_items(HISTORY)
    model.save_pretrained(tmp_path)
    loaded = GGRForRecommendation.from_pretrained(tmp_path).eval()
    assert loaded.backbone.config.lora_item == lora
    assert torch.equal(loaded.backbone.item_texts.token_ids, model.backbone.item_texts.token_ids)
    again, heads2 = loaded.score_items(HISTORY)
    assert torch.equal(again, scores) and torch.equal(heads2, heads)
    rec_a, rec_b = model.recommend([[1, 2, 3]], k=5), loaded.recommend([[1, 2, 3]], k=5)
    assert torch.equal(rec_a.item_ids, rec_b.item_ids)
    if lora:
        keys = set(loaded.state_dict())
        assert any("lora_A.default" in k for k in keys) and any("base_layer" in k for k in keys)


def test_load_pretrained_llms_from_a_local_causal_lm_checkpoint(tmp_path):
    torch.manual_seed(3)
    Qwen2ForCausalLM(Qwen2Config(**{k: v for k, v in qwen2().items() if k != "model_type"})).save_pretrained(
        tmp_path / "tiny-qwen2"
    )
    path = str(tmp_path / "tiny-qwen2")
    config = HLLMConfig(num_items=NUM_ITEMS, item_llm=path, max_seq_len=8, lora_item=True)
    assert config.item_llm_name_or_path == path and config.user_llm_name_or_path == path
    model = HLLMModel(config)
    model.load_pretrained_llms()
    reference = Qwen2ForCausalLM.from_pretrained(path).model
    ref = reference.layers[1].self_attn.q_proj.weight
    torch.testing.assert_close(model.item_llm.layers[1].self_attn.q_proj.base_layer.weight, ref)
    torch.testing.assert_close(model.user_llm.layers[1].self_attn.q_proj.weight, ref)
    torch.testing.assert_close(model.item_llm.embed_tokens.weight, reference.embed_tokens.weight)
    assert model.item_llm.layers[1].self_attn.q_proj.lora_B.default.weight.abs().sum() == 0
    assert not model.item_llm.layers[1].self_attn.q_proj.base_layer.weight.requires_grad

    bad = HLLMModel(
        HLLMConfig(num_items=3, item_llm=qwen2(), item_llm_name_or_path=str(tmp_path / "missing"))
    )
    with pytest.raises(ValueError, match="cannot load the item LLM weights"):
        bad.load_pretrained_llms()
    wrong = HLLMModel(
        HLLMConfig(num_items=3, item_llm=qwen2(hidden_size=16, head_dim=4), item_llm_name_or_path=path)
    )
    with pytest.raises(ValueError, match="shape"):
        wrong.load_pretrained_llms()


def test_bf16_autocast_training_step_and_bf16_scores():
    model = make_ggr(lora_user=True).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(HISTORY, target_ids=TARGETS)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    half = make_ggr().to(torch.bfloat16).eval()
    scores, _ = half.score_items(HISTORY)
    assert scores.dtype == torch.bfloat16 and torch.isfinite(scores[:, 1:]).all()


def test_standalone_backbone_round_trip_through_auto_model(tmp_path):
    import ggr_hf.auto  # noqa: F401  (registers model_type "hllm" with AutoModel)

    model = make_hllm("qwen3", lora_item=True).eval()
    states = model(HISTORY).last_hidden_state
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, HLLMModel)
    assert torch.equal(loaded(HISTORY).last_hidden_state, states)
    assert torch.equal(loaded.all_item_embeddings(), model.all_item_embeddings())


def test_heads_artifact_works_on_an_hllm_backbone(tmp_path):
    """The heads package is backbone-agnostic: genre heads saved from an HLLM model load back onto it."""
    torch.manual_seed(0)
    config = GGRConfig(
        backbone_type="hllm",
        backbone_config=hllm_config("qwen2"),
        num_items=NUM_ITEMS,
        num_negatives=6,
        priors=[{"type": "item", "field": "genres", "values": ["x", "y"]}],
    )
    model = GGRForRecommendation(config)
    model.backbone.set_item_texts(item_texts(model.backbone.config), tokenizer_for(model.backbone.config))
    membership = torch.zeros(NUM_ITEMS + 1, 2, dtype=torch.bool)
    membership[1 : NUM_ITEMS // 2 + 1, 0] = True
    membership[NUM_ITEMS // 2 :, 1] = True
    model.set_item_groups("genres", membership)
    with torch.no_grad():
        for p in model.heads.parameters():
            p.normal_(0, 0.3)
    model.eval()
    scores, heads = model.score_items(HISTORY)
    model.save_pretrained(tmp_path / "full")
    model.save_heads(tmp_path / "heads", base_model_name_or_path=str(tmp_path / "full"))
    assert not any(
        k.startswith("backbone.")
        for k in safetensors.torch.load_file(tmp_path / "heads" / "model.safetensors")
    )
    loaded = GGRForRecommendation.from_pretrained(tmp_path / "heads").eval()
    again, heads2 = loaded.score_items(HISTORY)
    assert torch.equal(again, scores) and torch.equal(heads2, heads)
