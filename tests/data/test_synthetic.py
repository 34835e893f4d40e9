"""Tests for the synthetic data generator."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ggr_hf.data.movielens import AGE_BANDS
from ggr_hf.data.synthetic import SYNTHETIC_OCCUPATIONS, make_synthetic


def as_lists(bundle):
    return (
        bundle.sequences.to_dict(),
        bundle.items.to_dict(),
        bundle.users.to_dict(),
        bundle.event_names,
    )


def test_defaults_are_valid_and_fast():
    start = time.perf_counter()
    bundle = make_synthetic()
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, elapsed
    bundle.validate()
    assert bundle.name == "synthetic"
    assert bundle.num_users == 200 and bundle.num_items == 300
    lengths = [len(s) for s in bundle.sequences["item_ids"]]
    assert min(lengths) >= 20 and max(lengths) <= 60
    assert bundle.event_names is None and "event_ids" not in bundle.sequences.column_names
    assert bundle.items.column_names == ["item_id", "original_id", "title", "category", "genres"]
    assert bundle.items["original_id"][:2] == ["i1", "i2"]
    for cat, genres in zip(bundle.items["category"], bundle.items["genres"]):
        assert 1 <= len(genres) <= 2 and genres[0] == cat and len(set(genres)) == len(genres)
    assert {g for gs in bundle.items["genres"] for g in gs} == {f"cat{c}" for c in range(6)}
    for col in ("user_id", "original_id", "age", "gender", "occupation", "age_band"):
        assert col in bundle.users.column_names
    assert set(bundle.users["occupation"]) <= set(SYNTHETIC_OCCUPATIONS)
    assert set(bundle.users["age_band"]) <= set(AGE_BANDS)
    for ts in bundle.sequences["timestamps"]:
        assert all(b > a for a, b in zip(ts, ts[1:]))  # strictly increasing, random gaps
    assert bundle.sequences.features["item_ids"].feature.dtype == "int64"


def test_deterministic_for_a_seed_and_different_across_seeds():
    a, b, c = make_synthetic(seed=3), make_synthetic(seed=3), make_synthetic(seed=4)
    assert as_lists(a) == as_lists(b)
    assert a.sequences["item_ids"] != c.sequences["item_ids"]
    assert a.items["genres"] != c.items["genres"]


def test_events():
    bundle = make_synthetic(num_users=50, num_events=6, seed=1)
    bundle.validate()
    assert bundle.event_names == ["view", "like", "add_to_cart", "buy", "event4", "event5"]
    events = np.concatenate([np.asarray(e) for e in bundle.sequences["event_ids"]])
    assert events.min() >= 0 and events.max() < 6
    # The event follows the item's category: P(event | category) is far from uniform.
    cat_of = {i: int(c[3:]) for i, c in zip(bundle.items["item_id"], bundle.items["category"])}
    items = np.concatenate([np.asarray(s) for s in bundle.sequences["item_ids"]])
    cats = np.array([cat_of[int(i)] for i in items])
    assert np.mean(events == cats % 6) > 0.5


def test_planted_structure_is_measurable():
    bundle = make_synthetic(seed=0)
    category = {i: c for i, c in zip(bundle.items["item_id"], bundle.items["category"])}
    genres = {i: set(g) for i, g in zip(bundle.items["item_id"], bundle.items["genres"])}
    members = {}
    for i in sorted(category):
        members.setdefault(category[i], []).append(i)
    successor = {ids[k]: ids[(k + 1) % len(ids)] for ids in members.values() for k in range(len(ids))}

    pairs = [(a, b) for seq in bundle.sequences["item_ids"] for a, b in zip(seq, seq[1:])]
    same_cat = np.mean([category[a] == category[b] for a, b in pairs])
    # Chance that two random consecutive items share a genre.
    rng = np.random.default_rng(0)
    items = list(category)
    chance = np.mean([bool(genres[a] & genres[b]) for a, b in rng.choice(items, size=(2000, 2))])
    assert same_cat > 0.75 and same_cat > 3 * chance, (same_cat, chance)
    next_in_cycle = np.mean([successor[a] == b for a, b in pairs])
    assert next_in_cycle > 0.3, next_in_cycle  # a uniform guess would hit 1/300

    # Side information: the occupation follows the favourite category.
    fav = [f[0] for f in bundle.users["favorite_categories"]]
    occ = bundle.users["occupation"]
    expected = [SYNTHETIC_OCCUPATIONS[int(f[3:]) % len(SYNTHETIC_OCCUPATIONS)] for f in fav]
    assert np.mean([o == e for o, e in zip(occ, expected)]) > 0.7


def test_small_and_edge_sizes():
    bundle = make_synthetic(num_users=3, num_items=4, num_categories=1, min_len=1, max_len=1, seed=9)
    bundle.validate()
    assert [len(s) for s in bundle.sequences["item_ids"]] == [1, 1, 1]
    assert all(g == ["cat0"] for g in bundle.items["genres"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_items": 2, "num_categories": 3},
        {"min_len": 5, "max_len": 4},
        {"min_len": 0},
        {"num_users": 0},
        {"short_term_weight": 1.5},
        {"num_events": -1},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        make_synthetic(**kwargs)
