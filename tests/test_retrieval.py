"""Approximate retrieval (`ggr_hf.retrieval`): equal to the exact fused top-k when the search is
exhaustive, only compatible items always, save/load, stale-index refusal, missing faiss, the CLI."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ggr_hf.cli import EXIT_OK, EXIT_USAGE, main
from ggr_hf.configuration_ggr import GGRConfig
from ggr_hf.errors import GGRError, GGRFileNotFoundError, GGRInputError
from ggr_hf.heads.fusion import build_fusion_index, fused_topk
from ggr_hf.modeling_ggr import GGRForRecommendation

faiss = pytest.importorskip("faiss")

from ggr_hf.retrieval import ANN_INDEX_DIR, MANIFEST_NAME, ApproximateIndex  # noqa: E402
from ggr_hf.retrieval.ann import GGRMissingDependencyError, import_faiss  # noqa: E402

NUM_ITEMS = 150
GENRES = ["a", "b", "c", "d"]
TEMPORAL_ITEM = [
    {"type": "temporal", "segments": 2, "horizon": 2},
    {"type": "item", "field": "genres", "values": GENRES},
]


def _membership(seed: int = 0) -> torch.Tensor:
    """Multi-label genres; items 141-150 in no genre (no head may score them); genre "d" small."""
    gen = torch.Generator().manual_seed(seed)
    mem = torch.rand(NUM_ITEMS + 1, len(GENRES), generator=gen) < 0.4
    mem[:, 3] = False
    mem[[5, 17, 60], 3] = True
    mem[141:] = False
    mem[0] = False
    return mem


def _model(priors=None, seed: int = 0, **kwargs) -> GGRForRecommendation:
    torch.manual_seed(seed)
    backbone = {"hidden_size": 16, "max_seq_len": 8, "num_layers": 1, "attention_dim": 8, "linear_dim": 8}
    config = GGRConfig(
        num_items=NUM_ITEMS,
        backbone_config={**backbone, "dropout": 0.0},
        priors=TEMPORAL_ITEM if priors is None else priors,
        num_negatives=8,
        **kwargs,
    )
    model = GGRForRecommendation(config)
    if model.layout.item_prior_indices:
        model.set_item_groups("genres", _membership(seed))
    with torch.no_grad():
        for p in model.heads.parameters():
            p.normal_(0, 0.3)
    return model.eval()


def _histories(seed: int = 1, batch: int = 6):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, NUM_ITEMS + 1, (batch, 8), generator=gen)
    ids[1, 5:] = 0
    ids[2, 2:] = 0
    return ids


def _assert_same(approx, exact):
    (s1, i1, h1), (s2, i2, h2) = approx, exact
    assert torch.equal(i1, i2) and torch.equal(h1, h2)
    torch.testing.assert_close(s1, s2, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.mark.parametrize(("nlist", "nprobe"), [(1, 1), (8, 8)])
def test_exhaustive_search_equals_the_exact_topk(model, nlist, nprobe):
    ids = _histories()
    index = ApproximateIndex.build(model, nlist=nlist, nprobe=nprobe)
    # Genre "d" has 3 items: k = 40 is more than its group, 200 more than every scorable item.
    # Excluding each user's exact top 6 forces the over-fetch: every head's best items are removed.
    top6 = model.score_items(ids, topk=6)[1]
    for k in (1, 7, 40, 200):
        for exclude in (None, ids, top6):
            exact = model.score_items(ids, topk=k, exclude=exclude)
            _assert_same(index.search(model, ids, k, exclude=exclude), exact)
    assert sorted(h for g in index.groups for h in g) == list(range(model.num_heads))
    # Temporal x item: the two segments of a genre share its items, hence one index.
    assert len(index.groups) == len(GENRES)


def test_approximate_search_returns_only_compatible_items(model):
    ids = _histories(seed=3, batch=8)
    index = ApproximateIndex.build(model, nlist=16, nprobe=1)
    scores, items, heads = index.search(model, ids, 30, exclude=ids)
    mask = model.head_item_mask()
    found = heads >= 0
    assert found.any()
    assert bool(mask[items[found], heads[found]].all())
    assert not bool((items[found] > 140).any())  # items 141-150 are in no group
    for row, history in zip(items, ids):
        real = row[row > 0].tolist()
        assert len(real) == len(set(real)) and not set(real) & set(history.tolist())
    # The scores are the exact fused scores of the items returned.
    full, full_heads = model.score_items(ids)
    torch.testing.assert_close(scores[found], full.gather(1, items)[found])
    assert torch.equal(heads[found], full_heads.gather(1, items)[found])


def test_save_and_load_give_the_same_results(model, tmp_path):
    ids = _histories()
    index = ApproximateIndex.build(model, nlist=8, nprobe=2)
    target = index.save_pretrained(tmp_path / ANN_INDEX_DIR)
    names = sorted(p.name for p in target.iterdir())
    assert MANIFEST_NAME in names and all(n == MANIFEST_NAME or n.endswith(".faiss") for n in names)
    assert not list(tmp_path.glob(f".{ANN_INDEX_DIR}*"))  # no staging folder left behind
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    assert (
        manifest["nlist"] == 8
        and manifest["nprobe"] == 2
        and manifest["fingerprint"]["num_items"] == NUM_ITEMS
    )
    loaded = ApproximateIndex.from_pretrained(target)
    for k in (5, 50):
        a = index.search(model, ids, k, exclude=ids)
        b = loaded.search(model, ids, k, exclude=ids)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(GGRInputError, match="already exists"):
        index.save_pretrained(target)
    index.save_pretrained(target, overwrite=True)
    with pytest.raises(GGRFileNotFoundError, match="ggr-hf index build"):
        ApproximateIndex.from_pretrained(tmp_path / "nowhere")


def test_a_stale_index_is_refused(tmp_path):
    model = _model(seed=4)
    ids = _histories()
    index = ApproximateIndex.build(model, nlist=1)
    index.save_pretrained(tmp_path / "ann")
    with torch.no_grad():
        model.backbone.item_embeddings.weight[3].add_(0.5)  # "retrained": the item table changed
    with pytest.raises(GGRInputError, match="rebuild it"):
        index.search(model, ids, 5)
    with pytest.raises(GGRInputError, match="item_table_sha256"):
        ApproximateIndex.from_pretrained(tmp_path / "ann").search(model, ids, 5)
    other = _model(seed=4)
    other.set_item_groups("genres", _membership(seed=9))  # same weights, regrouped catalogue
    with pytest.raises(GGRInputError, match="head_item_mask_sha256"):
        ApproximateIndex.from_pretrained(tmp_path / "ann").search(other, ids, 5)


def test_only_max_fusion_is_supported():
    model = _model(fusion="mean")
    index = ApproximateIndex.build(model, nlist=1)
    ids = _histories()
    with pytest.raises(GGRInputError, match="max fusion only"):
        index.search(model, ids, 5)
    with pytest.raises(GGRInputError, match="max fusion only"):
        index.search(model, ids, 5, fusion="mean")
    _assert_same(index.search(model, ids, 5, fusion="max"), model.score_items(ids, topk=5, fusion="max"))


def test_bad_arguments_are_clear_errors(model):
    index = ApproximateIndex.build(model, nlist=1)
    ids = _histories()
    with pytest.raises(GGRInputError, match="k must be an integer"):
        index.search(model, ids, 0)
    with pytest.raises(GGRInputError, match="nprobe"):
        index.search(model, ids, 5, nprobe=0)
    with pytest.raises(GGRInputError, match="exclude: item id 999"):
        index.search(model, ids, 5, exclude=torch.full((len(ids), 2), 999))
    with pytest.raises(GGRInputError, match="nlist=500"):
        ApproximateIndex.build(model, nlist=500)


def test_inactive_heads_of_a_user_prior_are_never_searched(monkeypatch):
    priors = [*TEMPORAL_ITEM, {"type": "user", "field": "age", "values": ["young", "old"]}]
    model = _model(priors, composition="multiplicative")
    ids = _histories()
    groups = torch.tensor([[0], [1], [1], [0], [1], [0]])
    index = ApproximateIndex.build(model, nlist=4, nprobe=4)
    _, active = model.user_queries(ids, None, None, groups, None)
    assert active is not None and not bool(active.all())

    import faiss.contrib.ivf_tools as ivf_tools

    searched = []
    real = ivf_tools.search_preassigned

    def recording(index_ivf, xq, k, list_nos, coarse_dis=None):
        searched.append(len(xq))
        return real(index_ivf, xq, k, list_nos, coarse_dis)

    monkeypatch.setattr(ivf_tools, "search_preassigned", recording)
    result = index.search(model, ids, 12, user_groups=groups, exclude=ids)
    _assert_same(result, model.score_items(ids, user_groups=groups, topk=12, exclude=ids))
    # One search per head, with exactly the users for whom it is active.
    assert sorted(searched) == sorted(int(n) for n in active.sum(0) if n)
    heads = result[2]
    assert bool(active.gather(1, heads.clamp(min=0))[heads >= 0].all())


def test_missing_faiss_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    with pytest.raises(GGRMissingDependencyError, match=r"pip install ggr-hf\[ann\]"):
        import_faiss()
    with pytest.raises(GGRError, match=r"ggr-hf\[ann\]"):
        ApproximateIndex.from_tensors(torch.randn(5, 4), torch.ones(5, 2, dtype=torch.bool))
    assert main(["index", "build", "--model", str(tmp_path)]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install ggr-hf[ann]" in err[0]


def test_cli_builds_the_index_beside_the_model_and_refuses_to_overwrite(model, tmp_path, capsys):
    model.save_pretrained(tmp_path / "m")
    argv = ["index", "build", "--model", str(tmp_path / "m"), "--nlist", "8", "--nprobe", "8"]
    assert main(argv) == EXIT_OK
    target = tmp_path / "m" / ANN_INDEX_DIR
    assert (target / MANIFEST_NAME).is_file() and "wrote" in capsys.readouterr().out
    before = (target / MANIFEST_NAME).stat().st_mtime_ns
    assert main(argv) == EXIT_USAGE
    assert "--overwrite" in capsys.readouterr().err
    assert (target / MANIFEST_NAME).stat().st_mtime_ns == before
    assert main([*argv, "--overwrite"]) == EXIT_OK
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".")]
    loaded = GGRForRecommendation.from_pretrained(tmp_path / "m").eval()
    ids = _histories()
    index = ApproximateIndex.from_pretrained(target)
    _assert_same(index.search(loaded, ids, 9, exclude=ids), loaded.score_items(ids, topk=9, exclude=ids))
    assert main(["index", "build", "--model", str(tmp_path / "missing")]) == EXIT_USAGE


@given(
    num_heads=st.integers(1, 5),
    num_items=st.integers(1, 40),
    k=st.integers(1, 45),
    density=st.floats(0.0, 1.0),
    nlist=st.integers(1, 6),
    same_columns=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=25, deadline=None, derandomize=True, database=None)
def test_exhaustive_search_property(num_heads, num_items, k, density, nlist, same_columns, seed):
    gen = torch.Generator().manual_seed(seed)
    d, bsz = 4, 3
    table = torch.nn.functional.normalize(torch.randn(num_items + 1, d, generator=gen), dim=-1)
    compatible = torch.rand(num_items + 1, num_heads, generator=gen) < density
    if same_columns and num_heads > 1:
        compatible[:, -1] = compatible[:, 0]  # two heads, one group
    compatible[0] = False
    nlist = max(1, min(nlist, int(compatible.any(1).sum())))
    q = torch.randn(bsz, num_heads, d, generator=gen)
    active = torch.rand(bsz, num_heads, generator=gen) < 0.8
    exclude = torch.randint(0, num_items + 1, (bsz, 4), generator=gen)
    index = ApproximateIndex.from_tensors(table, compatible, nlist=nlist, nprobe=nlist, seed=seed)
    got = index.search_queries(q, table, compatible, k, active, exclude)
    want = fused_topk(q, build_fusion_index(table, compatible), k, active, exclude)
    _assert_same(got, want)
    found = got[2] >= 0
    assert bool(compatible[got[1][found], got[2][found]].all())


def test_bench_ann_measures_recall_against_the_exact_list():
    import argparse
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "bench_ann.py"
    spec = importlib.util.spec_from_file_location("bench_ann", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = argparse.Namespace(dim=8, item_clusters=16, query_noise=0.5, repeats=1)
    # Every list searched: the benchmark's own recall must be exactly 1.
    row = bench.run_case(args, 3000, nlist=8, nprobes=[1, 8])
    exhaustive = row["sweep"][-1]
    assert exhaustive["nprobe"] == 8 and exhaustive["recall_at_10"] == 1.0
    assert all(r["only_compatible_items"] for r in row["sweep"])
    assert row["sweep"][0]["recall_at_10"] <= 1.0 and row["groups"] == 8 and row["heads"] == 16
