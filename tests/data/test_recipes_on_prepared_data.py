"""Each data set's shipped recipe trains end to end on what `ggr-hf data prepare` writes.

Raw files are generated in each publisher's exact schema and layout (the row helpers of the per-data-set
tests), prepared through the real command line, then trained and evaluated with the shipped recipe:
its priors, composition, split K and loss settings, with only the scale shrunk (backbone width and
context, epochs, negatives, filters) so that the test runs in seconds on a CPU. The checks are the wiring
a user relies on: the paper's priors come out of the loaders' columns, and the trained model reloads and
explains its recommendations by those priors' heads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ggr_hf.cli import main as data_main
from ggr_hf.data.pixelrec import PIXELREC_CATEGORIES
from ggr_hf.experiments.config import load_experiment_config
from ggr_hf.experiments.experiment import prepare_experiment, run_experiment
from ggr_hf.modeling_ggr import GGRForRecommendation

from .test_ebnerd import ARTICLES, HISTORY, article, history_row
from .test_ebnerd import write as write_table
from .test_merrec import S, event, write_shard
from .test_pixelrec import ITEM_HEADER
from .test_pixelrec import write as write_text

CONFIGS = Path(__file__).parents[2] / "recipes" / "configs"
NUM_USERS, NUM_ITEMS, PER_USER = 24, 40, 24

# Only the scale changes; everything that defines the recipe (priors, composition, split, sampling,
# weights) is kept as shipped.
SMALL = [
    "model.backbone_config.hidden_size=16",
    "model.backbone_config.num_layers=1",
    "model.backbone_config.num_attention_heads=1",
    "model.backbone_config.attention_dim=8",
    "model.backbone_config.linear_dim=8",
    "model.backbone_config.max_seq_len=20",
    "model.num_negatives=16",
    "training.epochs=1",
    "training.batch_size=8",
    "training.eval_batch_size=32",
    "training.mixed_precision=no",
    "training.warmup_ratio=0.0",
]


def _histories(seed: int) -> list[list[int]]:
    """Per user, PER_USER item indices (0-based) drawn mostly from one of four item blocks."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(NUM_USERS):
        block = u % 4
        own = rng.integers(block * 10, block * 10 + 10, size=PER_USER)
        other = rng.integers(0, NUM_ITEMS, size=PER_USER)
        out.append(np.where(rng.random(PER_USER) < 0.8, own, other).tolist())
    return out


def _prepare(name: str, raw: Path, out: Path, *extra: str) -> None:
    code = data_main(["data", "prepare", name, "--raw", str(raw), "--out", str(out), "--no-progress", *extra])
    assert code == 0


def _train(recipe: str, bundle: Path, tmp_path: Path):
    cfg = load_experiment_config(
        CONFIGS / recipe, [f"data.path={bundle}", f"training.output_dir={tmp_path / 'run'}", *SMALL]
    )
    exp = prepare_experiment(cfg)
    result = run_experiment(cfg, exp)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["test"]["recall@10"] == pytest.approx(result["test"]["recall@10"])
    for metrics in (result["test"], result["popularity_test"]):
        assert 0.0 <= metrics["recall@10"] <= 1.0 and metrics["num_users"] > 0
    model = GGRForRecommendation.from_pretrained(tmp_path / "run" / "best")
    return cfg, exp, model


def test_merrec_recipe_event_prior(tmp_path):
    raw = tmp_path / "merrec"
    events = ["item_view", "item_like", "item_add_to_cart_tap", "offer_make", "buy_start", "buy_comp"]
    rng = np.random.default_rng(1)
    rows = []
    for u, items in enumerate(_histories(1)):
        for j, item in enumerate(items):
            kind = events[int(rng.choice(6, p=[0.6, 0.2, 0.08, 0.06, 0.03, 0.03]))]
            rows.append(event(1000 + u, (u * 1000 + j) * S, kind, 500 + item, c2=f"cat{item // 10}"))
    half = len(rows) // 2
    write_shard(raw / "20230501" / "part-000.parquet", rows[:half])
    write_shard(raw / "20230601" / "part-000.parquet", rows[half:])
    _prepare("merrec", raw, tmp_path / "bundle", "--min-events", "10")

    cfg, exp, model = _train("merrec_hstu.yaml", tmp_path / "bundle", tmp_path)
    assert cfg.data.split_k == 1
    assert exp.bundle.num_users == NUM_USERS and exp.bundle.event_names == events
    # The event prior: one head per MerRec event type, named by the loader's event names.
    assert model.config.priors[0]["type"] == "event"
    assert model.config.priors[0]["values"] == events
    assert model.num_heads == 6
    assert model.head_names == events
    rec = model.recommend(exp.bundle.sequences[0]["item_ids"][-10:], k=5)
    assert rec.item_ids.shape == (1, 5) and set(rec.head_names[0]) <= set(events)


def _ebnerd_raw(tmp_path: Path) -> Path:
    raw = tmp_path / "ebnerd_small"
    categories = ["nyheder", "krimi", "sport", "underholdning"]
    write_table(
        raw / "articles.parquet",
        [
            article(9000 + i, f"title {i}", "", [f"topic {i % 3}"], 100 + i // 10, categories[i // 10])
            for i in range(NUM_ITEMS)
        ],
        ARTICLES,
    )
    rows = [
        history_row(70 + u, [(9000 + item, u * 1000 + j) for j, item in enumerate(items)])
        for u, items in enumerate(_histories(2))
    ]
    write_table(raw / "train" / "history.parquet", rows, HISTORY)
    return raw


def test_ebnerd_recipe_graph_clusters_and_time(tmp_path):
    raw = _ebnerd_raw(tmp_path)
    _prepare("ebnerd", raw, tmp_path / "bundle", "--min-clicks", "10")

    cfg, exp, model = _train("ebnerd_hstu.yaml", tmp_path / "bundle", tmp_path)
    assert cfg.data.split_k == 8
    graph, temporal = model.config.priors
    assert graph["type"] == "graph" and temporal == {**temporal, "type": "temporal", "segments": 8}
    # Leiden on the training co-occurrence graph finds the four planted article blocks (up to names):
    # articles of one block share a cluster far more often than not.
    clusters = exp.priors.item_clusters[graph["name"]][1:]
    same_block = np.equal.outer(np.arange(NUM_ITEMS) // 10, np.arange(NUM_ITEMS) // 10)
    same_cluster = np.equal.outer(clusters, clusters)
    assert (same_cluster & same_block).sum() / same_block.sum() > 0.6
    assert 2 <= len(graph["values"]) <= 10
    # The clusters are saved as an item column beside the loader's category group.
    assert set(exp.bundle.items["category_group"]) == {"news", "crime", "sport", "entertainment"}
    assert model.num_heads == len(graph["values"]) + 8  # additive: one head per cluster and per segment


def test_ebnerd_recipe_user_clusters(tmp_path):
    raw = _ebnerd_raw(tmp_path)
    _prepare("ebnerd", raw, tmp_path / "bundle", "--min-clicks", "10")

    _, exp, model = _train("ebnerd_hstu_user_clusters.yaml", tmp_path / "bundle", tmp_path)
    (user,) = model.config.priors
    assert user["type"] == "user" and user["source"] == "graph"
    groups = exp.priors.user_groups[:, 0]
    assert groups.shape == (NUM_USERS,) and model.num_heads == len(user["values"]) >= 2
    # Users were generated in four interest blocks (user u reads block u % 4 mostly); users of one
    # block share a cluster far more often than not.
    block = np.arange(NUM_USERS) % 4
    same_block = np.equal.outer(block, block)
    assert (np.equal.outer(groups, groups) & same_block).sum() / same_block.sum() > 0.6


def test_pixel8m_recipe_categories_and_time(tmp_path):
    raw = tmp_path / "PixelRec"
    tags = ["Daily Life", "Comedy", "Online Games", "Music Mix"]
    lines = ["item_id,user_id,timestamp"]
    for u, items in enumerate(_histories(3)):
        lines += [f"i{item},u{u},{u * 1000 + j}" for j, item in enumerate(items)]
    write_text(raw / "pixelrec_interaction" / "Pixel8M.csv", "\n".join(lines) + "\n")
    info = [ITEM_HEADER] + [
        f"i{i},1,1,1,1,1,1,1,title {i},{tags[i // 10]},description {i}" for i in range(NUM_ITEMS)
    ]
    write_text(raw / "pixelrec_iteminfo" / "item_info.csv", "\n".join(info) + "\n")
    _prepare("pixelrec", raw, tmp_path / "bundle", "--variant", "Pixel8M")

    cfg, exp, model = _train("pixel8m_hstu.yaml", tmp_path / "bundle", tmp_path)
    assert cfg.data.split_k == 8 and exp.bundle.name == "pixel8m"
    item, temporal = model.config.priors
    assert item["type"] == "item" and item["field"] == "categories" and temporal["segments"] == 8
    # Tags reach the paper's 8 categories through the packaged mapping table (Comedy is multi-label).
    assert set(item["values"]) <= set(PIXELREC_CATEGORIES) | {"other"}
    assert {"Real life", "Entertainment", "Gaming", "Music"} <= set(item["values"])
    assert model.config.composition == "hierarchical"
