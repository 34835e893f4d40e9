"""Trains a GGR model from an experiment YAML on one process or many (`accelerate launch`).

The launcher config (how many processes, DDP / FSDP / DeepSpeed, mixed precision) is kept apart
from the experiment (data, model, training hyperparameters):

    accelerate launch --config_file recipes/accelerate_configs/ddp.yaml recipes/train.py \\
        --config recipes/configs/ml100k_quick.yaml --output-dir outputs/ddp

The same script runs with `python recipes/train.py ...` (one process) and with
`torchrun --nproc_per_node 2 recipes/train.py ...`. `training.batch_size` is per process: the
global batch is `batch_size x processes`. Only the main process evaluates and writes (eval log,
best model, results, model card). See docs/distributed.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from ggr_hf.training.config import ExperimentConfig, load_experiment_config
from ggr_hf.training.trainer import launch_experiment

logger = logging.getLogger("ggr_hf.recipes.train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="experiment YAML (sections data, model, training)")
    parser.add_argument("--output-dir", help="overrides training.output_dir")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one value, parsed as YAML (repeatable), e.g. --set training.epochs=3",
    )
    parser.add_argument(
        "--resume-from-checkpoint",
        metavar="DIR",
        help="a checkpoint folder (output_dir/checkpoints/epoch_N) or 'latest'; overrides "
        "training.resume_from_checkpoint",
    )
    parser.add_argument("--no-test", action="store_true", help="skip the test-split evaluation")
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace) -> ExperimentConfig:
    cfg = load_experiment_config(args.config, args.set)
    training = {}
    if args.output_dir:
        training["output_dir"] = args.output_dir
    if args.resume_from_checkpoint:
        training["resume_from_checkpoint"] = args.resume_from_checkpoint
    return cfg.replace(training=training) if training else cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # The launchers (accelerate launch, torchrun) set RANK; the accelerator is built later, from the
    # experiment's settings, so its state must not be created here first.
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    out, is_main = launch_experiment(cfg, test=not args.no_test)
    if is_main:
        summary = {"output_dir": cfg.training.output_dir, "train": out["train"]}
        summary["validation"] = out["validation"]
        if "test" in out:
            summary["test"] = {k: out["test"][k] for k in ("recall@10", "ndcg@10") if k in out["test"]}
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
