import datasets
import numpy as np
import pytest
import torch

from ggr_hf.data.collator import TrainingWindows, eval_batches
from ggr_hf.data.schema import RecDataBundle
from ggr_hf.data.splits import temporal_split


def bundle_of(seqs: list[list[int]]) -> RecDataBundle:
    n_items = max(max(s) for s in seqs)
    sequences = datasets.Dataset.from_dict(
        {
            "user_id": list(range(len(seqs))),
            "item_ids": seqs,
            "timestamps": [[100 * (i + 1) for i in range(len(s))] for s in seqs],
        }
    )
    items = datasets.Dataset.from_dict(
        {
            "item_id": list(range(1, n_items + 1)),
            "original_id": [str(i) for i in range(1, n_items + 1)],
            "title": [f"t{i}" for i in range(1, n_items + 1)],
        }
    )
    return RecDataBundle("toy", sequences, items)


def test_split_last_k_test_k_before_validation():
    b = bundle_of([[1, 2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3], [1, 2, 3, 4]])
    s = temporal_split(b, k=2)
    # users need more than 2k = 4 items: user 2 (4 items) is dropped and counted
    assert s.dropped_users == 1 and s.train_user_ids.tolist() == [0, 1]
    assert s.train_items[0].tolist() == [1, 2, 3]
    assert s.validation.histories[0].tolist() == [1, 2, 3] and s.validation.targets[0].tolist() == [4, 5]
    assert s.test.histories[0].tolist() == [1, 2, 3, 4, 5] and s.test.targets[0].tolist() == [6, 7]
    assert s.train_items[1].tolist() == [7] and s.test.targets[1].tolist() == [4, 3]
    assert s.item_popularity()[[1, 2, 3, 7]].tolist() == [1, 1, 1, 1]


def test_leave_one_out_and_min_len():
    b = bundle_of([[1, 2, 3, 4, 5, 6], [2, 3, 4]])
    s = temporal_split(b, k=1, min_len=4)
    assert s.dropped_users == 1
    assert s.test.targets.tolist() == [[6]] and s.validation.targets.tolist() == [[5]]
    with pytest.raises(ValueError, match="no user has more than"):
        temporal_split(b, k=3)


def test_windows_cover_training_items_and_targets_stay_in_training():
    b = bundle_of([list(range(1, 13))])  # 12 items; k=1 -> train 1..10
    s = temporal_split(b, k=1)
    w = TrainingWindows(s, max_seq_len=4, horizon=2)
    spans = sorted((int(a), int(c)) for _, a, c in w.windows)
    assert spans == [(0, 1), (1, 5), (5, 9)]  # inputs are positions 0..8; position 9 has no target
    batch = w.collate([w[i] for i in range(len(w))])
    row = [i for i in range(len(w)) if w.windows[i][1] == 5][0]
    assert batch["input_ids"][row].tolist() == [6, 7, 8, 9]
    assert batch["target_ids"][row, :, 0].tolist() == [7, 8, 9, 10]
    assert batch["target_ids"][row, :, 1].tolist() == [8, 9, 10, 0]  # item 11 is validation: never a target
    assert batch["query_timestamps"][row].tolist() == [700, 800, 900, 1000]
    assert int(batch["target_ids"].max()) <= 10


def test_eval_batches_keep_the_last_items_and_the_full_history():
    b = bundle_of([list(range(1, 13)), [3, 4, 5, 6, 7]])
    s = temporal_split(b, k=1)
    batch = next(eval_batches(s.test, max_seq_len=4, batch_size=8))
    assert batch["input_ids"].tolist() == [[8, 9, 10, 11], [3, 4, 5, 6]]
    assert batch["history"][0].tolist() == list(range(1, 12))
    assert batch["targets"].tolist() == [[12], [7]]
    assert batch["query_timestamps"].tolist() == [1200, 500]
    assert isinstance(batch["input_ids"], torch.Tensor) and np.all(batch["index"].numpy() == [0, 1])
