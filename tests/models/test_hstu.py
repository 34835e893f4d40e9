import torch

from ggr_hf.models.hstu.configuration_hstu import HSTUConfig
from ggr_hf.models.hstu.modeling_hstu import HSTUModel, HSTURelativeBias


def tiny_hstu(**kw):
    torch.manual_seed(0)
    cfg = HSTUConfig(
        num_items=30,
        hidden_size=16,
        num_layers=2,
        num_attention_heads=2,
        attention_dim=8,
        linear_dim=8,
        max_seq_len=10,
        dropout=0.0,
        **kw,
    )
    return HSTUModel(cfg).eval()


def test_shapes_and_unit_norm():
    model = tiny_hstu()
    ids = torch.randint(1, 31, (4, 10))
    ids[1, 6:] = 0
    out = model(ids, timestamps=torch.arange(10).repeat(4, 1) * 60).last_hidden_state
    assert out.shape == (4, 10, 16)
    norms = out.norm(dim=-1)
    assert torch.allclose(norms[ids != 0], torch.ones_like(norms[ids != 0]), atol=1e-5)
    assert torch.all(out[1, 6:] == 0)  # padded positions hold zeros
    assert model.all_item_embeddings().shape == (31, 16)


def test_causal_later_items_never_change_earlier_outputs():
    model = tiny_hstu()
    ids = torch.randint(1, 31, (2, 10))
    ts = torch.cumsum(torch.randint(1, 1000, (2, 10)), 1)
    base = model(ids, timestamps=ts).last_hidden_state
    changed = ids.clone()
    changed[:, 6:] = torch.randint(1, 31, (2, 4))
    out = model(changed, timestamps=ts).last_hidden_state
    assert torch.allclose(out[:, :6], base[:, :6], atol=1e-6)
    assert not torch.allclose(out[:, 6:], base[:, 6:])


def test_padding_and_batch_do_not_change_a_users_output():
    model = tiny_hstu()
    ids = torch.tensor([[3, 4, 5, 6]])
    ts = torch.tensor([[10, 100, 1000, 10000]])
    alone = model(ids, timestamps=ts).last_hidden_state
    padded = torch.tensor([[3, 4, 5, 6, 0, 0], [7, 8, 9, 10, 11, 12]])
    padded_ts = torch.tensor([[10, 100, 1000, 10000, 0, 0], [1, 2, 3, 4, 5, 6]])
    out = model(padded, timestamps=padded_ts).last_hidden_state
    assert torch.allclose(out[0, :4], alone[0], atol=1e-5)


def test_time_buckets_follow_the_log_formula():
    bias = HSTURelativeBias(HSTUConfig(num_items=3, max_seq_len=4))
    dt = torch.tensor([0, 1, 2, 10, 1000, -1000, 10**12])
    expected = [
        0,
        0,
        int(torch.log(torch.tensor(2.0)) / 0.301),
        int(torch.log(torch.tensor(10.0)) / 0.301),
        int(torch.log(torch.tensor(1000.0)) / 0.301),
        int(torch.log(torch.tensor(1000.0)) / 0.301),
        91,
    ]
    assert bias.bucketize(dt).tolist() == expected


def test_time_bias_changes_output():
    model = tiny_hstu()
    with torch.no_grad():
        for block in model.blocks:
            block.relative_bias.time_weight.normal_(0, 1.0)
    ids = torch.randint(1, 31, (1, 6))
    a = model(ids, timestamps=torch.tensor([[0, 1, 2, 3, 4, 5]])).last_hidden_state
    b = model(
        ids, timestamps=torch.tensor([[0, 10**5, 2 * 10**5, 3 * 10**5, 4 * 10**5, 5 * 10**5]])
    ).last_hidden_state
    assert not torch.allclose(a, b)


def test_save_load_round_trip(tmp_path):
    model = tiny_hstu()
    model.save_pretrained(tmp_path)
    loaded = HSTUModel.from_pretrained(tmp_path).eval()
    ids = torch.randint(1, 31, (2, 7))
    assert torch.equal(model(ids).last_hidden_state, loaded(ids).last_hidden_state)
