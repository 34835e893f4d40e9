"""Trains a GGR model from an experiment YAML on one process or many (`accelerate launch`).

The launcher config (how many processes, DDP / FSDP / DeepSpeed, mixed precision) is kept apart
from the experiment (data, model, training hyperparameters):

    accelerate launch --config_file recipes/accelerate_configs/ddp.yaml recipes/train.py \\
        --config recipes/configs/ml100k_quick.yaml --output-dir outputs/ddp

The same script runs with `python recipes/train.py ...` (one process) and with
`torchrun --nproc_per_node 2 recipes/train.py ...`. It is `ggr-hf --verbose train ...` (same flags:
`--config`, `--output-dir`, `--set`, `--resume [latest|PATH]`, `--overwrite`, `--no-test`), with the
logs on: the main process logs the run's set-up and progress. See docs/distributed.md.
"""

from __future__ import annotations

import sys

from ggr_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["--verbose", "train", *sys.argv[1:]]))
