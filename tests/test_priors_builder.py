import numpy as np
import pytest

from ggr_hf.data.splits import temporal_split
from ggr_hf.data.synthetic import make_synthetic
from ggr_hf.priors import item_cooccurrence_edges, leiden_communities
from ggr_hf.priors.builder import build_priors


@pytest.fixture(scope="module")
def synth():
    return make_synthetic(num_users=60, num_items=80, num_categories=4, seed=0)


def test_item_prior_membership_is_multilabel(synth):
    built = build_priors(synth, [{"type": "item", "field": "genres"}])
    mem = built.item_membership["genres"]
    assert built.specs[0]["values"] == sorted({g for gs in synth.items["genres"] for g in gs})
    for item, genres in enumerate(synth.items["genres"], start=1):
        names = [built.specs[0]["values"][j] for j in mem[item].nonzero().flatten().tolist()]
        assert sorted(names) == sorted(genres)
    assert not mem[0].any()


def test_mapping_table_and_its_errors(synth):
    mapping = {"cat0": "warm", "cat1": "warm", "cat2": ["cold", "warm"], "cat3": "cold"}
    built = build_priors(synth, [{"type": "item", "field": "genres", "mapping": mapping, "name": "temp"}])
    assert built.specs[0]["values"] == ["cold", "warm"]
    with pytest.raises(ValueError, match="'cat3' .* not in the prior's mapping"):
        build_priors(
            synth, [{"type": "item", "field": "genres", "mapping": {"cat0": "x", "cat1": "x", "cat2": "x"}}]
        )


def test_missing_column_names_the_prior(synth):
    with pytest.raises(ValueError, match="prior 0 \\('colour'\\).*no column 'colour'"):
        build_priors(synth, [{"type": "item", "field": "colour"}])


def test_items_without_a_group_error_or_join_other(synth):
    items = synth.items.map(lambda r: {"genres": [] if r["item_id"] == 3 else r["genres"]})
    from ggr_hf.data.schema import RecDataBundle

    b = RecDataBundle("x", synth.sequences, items, synth.users)
    with pytest.raises(ValueError, match="1 item rows have no value"):
        build_priors(b, [{"type": "item", "field": "genres"}])
    built = build_priors(b, [{"type": "item", "field": "genres", "missing": "other"}])
    assert built.specs[0]["values"][-1] == "other" and built.notes["genres"]["items_in_other"] == 1
    assert built.item_membership["genres"][3, -1]


def test_user_attribute_prior(synth):
    built = build_priors(synth, [{"type": "user", "field": "occupation"}])
    values = built.specs[0]["values"]
    assert [values[g] for g in built.user_groups[:, 0]] == list(synth.users["occupation"])


def test_leiden_is_deterministic_and_recovers_planted_communities():
    rng = np.random.default_rng(0)
    blocks = np.repeat(np.arange(3), 20)
    edges, weights = [], []
    for a in range(60):
        for b in range(a + 1, 60):
            p = 0.5 if blocks[a] == blocks[b] else 0.02
            if rng.random() < p:
                edges.append((a, b))
                weights.append(1.0)
    edges, weights = np.asarray(edges), np.asarray(weights)
    c1 = leiden_communities(60, edges, weights, resolution=1.0, seed=3)
    c2 = leiden_communities(60, edges, weights, resolution=1.0, seed=3)
    assert np.array_equal(c1, c2)
    # each planted block maps onto one community
    for blk in range(3):
        assert len(set(c1[blocks == blk])) == 1
    assert len(set(c1)) == 3


def test_graph_prior_reads_training_histories_only(synth):
    split = temporal_split(synth, k=2)
    built = build_priors(synth, [{"type": "graph", "resolution": 1.0, "seed": 0}], split)
    again = build_priors(synth, [{"type": "graph", "resolution": 1.0, "seed": 0}], split)
    assert np.array_equal(built.item_clusters["item_cluster"], again.item_clusters["item_cluster"])
    # The clusters are exactly Leiden on the co-occurrence graph of the training part: validation
    # and test items never shape them.
    edges, weights = item_cooccurrence_edges(split.train_items, synth.num_items)
    expected = leiden_communities(synth.num_items + 1, edges, weights, 1.0, 0)
    connected = np.zeros(synth.num_items + 1, dtype=bool)
    connected[edges.reshape(-1)] = True
    got = built.item_clusters["item_cluster"]
    assert np.array_equal(got[connected], expected[connected])
    full_edges, _ = item_cooccurrence_edges(
        [np.asarray(s) for s in synth.sequences["item_ids"]], synth.num_items
    )
    assert len(full_edges) > len(edges)
    assert built.item_membership["item_cluster"].sum(1)[1:].eq(1).all()


def test_graph_clusters_are_saved_as_an_item_column():
    from ggr_hf.experiments.config import experiment_config_from_dict
    from ggr_hf.experiments.experiment import prepare_experiment

    cfg = experiment_config_from_dict(
        {
            "data": {
                "dataset": "synthetic",
                "split_k": 2,
                "category_field": "item_cluster",
                "synthetic": {"num_users": 60, "num_items": 80, "num_categories": 4},
            },
            "model": {"priors": [{"type": "graph", "seed": 0}]},
        }
    )
    exp = prepare_experiment(cfg)
    column = exp.bundle.items["item_cluster"]
    values = exp.priors.specs[0]["values"]
    assert set(column) <= set(values)
    assert [values[c] for c in exp.priors.item_clusters["item_cluster"][1:]] == column
    assert exp.item_categories.shape == (81, len(set(column)))
