"""`ggr-hf train`: one model from an experiment YAML, on one process or under a launcher."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ggr_hf.cli.common import add_set_flag, load_config

HEADLINE_METRICS = ("recall@10", "ndcg@10", "entropy@10", "new_interest_recall@10", "num_users")


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Registers `train`."""
    p = subparsers.add_parser(
        "train",
        help="train one model from an experiment YAML",
        description=(
            "Trains one model as the experiment YAML says, on one process or under `accelerate launch` "
            "(every process trains, the main one evaluates, writes and prints)."
        ),
    )
    p.add_argument("--config", required=True, help="experiment YAML (sections data, model, training)")
    p.add_argument("--output-dir", help="overrides training.output_dir")
    add_set_flag(p, "override a config value, parsed as YAML (repeatable), e.g. --set training.epochs=3")
    folder = p.add_mutually_exclusive_group()
    folder.add_argument(
        "--resume",
        "--resume-from-checkpoint",
        dest="resume",
        nargs="?",
        const="latest",
        metavar="latest|PATH",
        help="continue a killed or stopped run from its newest complete checkpoint (bare --resume, or "
        "'latest') or from a checkpoint folder (OUTPUT_DIR/checkpoints/checkpoint_N); refused when the "
        "model shape, batch size or data set changed or a checkpoint file is damaged; overrides "
        "training.resume_from_checkpoint (needs training.checkpoint_every_epochs > 0 in the run)",
    )
    folder.add_argument(
        "--overwrite",
        action="store_true",
        help="train into an output folder that already holds a run, replacing it "
        "(training.overwrite_output_dir)",
    )
    p.add_argument("--no-test", action="store_true", help="skip the test-split evaluation")
    p.set_defaults(run=run)


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline metrics, rounded."""
    return {
        k: round(metrics[k], 5) if isinstance(metrics[k], float) else metrics[k]
        for k in HEADLINE_METRICS
        if k in metrics
    }


def run(args: argparse.Namespace) -> int:
    from ggr_hf.experiments.experiment import launch_experiment

    cfg = load_config(args)
    training = {}
    if args.output_dir:
        training["output_dir"] = args.output_dir
    if args.resume:
        training["resume_from_checkpoint"] = args.resume
    if args.overwrite:
        training["overwrite_output_dir"] = True
    cfg = cfg.replace(training=training) if training else cfg
    out, is_main = launch_experiment(cfg, test=not args.no_test)
    if not is_main:
        return 0
    summary: dict[str, Any] = {"best_model": str(Path(cfg.training.output_dir) / "best")}
    if "test" in out:
        summary["test"] = headline(out["test"])
        summary["most_popular_test"] = headline(out["popularity_test"])
    else:
        summary["validation"] = out["validation"]
    summary["train"] = out["train"]
    print(json.dumps(summary, indent=2))
    return 0
