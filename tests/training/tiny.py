"""The tiny synthetic experiment (and one-thread fixture) the training, checkpoint and resume tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Imported by a test module, runs its tests on one thread: the models are tiny, and several
    threads only contend for the (shared) cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_experiment(
    output_dir: Path, *, hidden_size: int = 16, dropout: float = 0.0, data_seed: int = 0, **training: Any
) -> dict:
    """An experiment dict: 40 synthetic users, 50 items, a 1-layer HSTU with genre heads, checkpoints
    every epoch on the CPU; `training` overrides or adds training fields (e.g. `epochs`)."""
    return {
        "data": {
            "dataset": "synthetic",
            "split_k": 1,
            "synthetic": {
                "num_users": 40,
                "num_items": 50,
                "num_categories": 4,
                "min_len": 12,
                "max_len": 20,
                "seed": data_seed,
            },
        },
        "model": {
            "backbone_config": {
                "hidden_size": hidden_size,
                "num_layers": 1,
                "max_seq_len": 10,
                "dropout": dropout,
            },
            "priors": [{"type": "item", "field": "genres"}],
            "num_negatives": 8,
        },
        "training": {
            "batch_size": 8,
            "learning_rate": 3e-3,
            "eval_batch_size": 64,
            "checkpoint_every_epochs": 1,
            "cpu": True,
            "progress": False,
            "output_dir": str(output_dir),
            **training,
        },
    }
