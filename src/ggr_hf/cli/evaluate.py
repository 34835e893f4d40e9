"""`ggr-hf evaluate`: a saved model's metrics on its data set's test or validation split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ggr_hf.cli.common import add_set_flag, load_model_and_data


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Registers `evaluate`."""
    p = subparsers.add_parser("evaluate", help="evaluate a saved model on its data set")
    p.add_argument("model", help="folder written by `ggr-hf train` (e.g. OUT/best)")
    p.add_argument("--split", choices=["test", "validation"], default="test")
    p.add_argument("--output", help="write the metrics JSON here")
    p.add_argument("--config", help="experiment YAML naming the data (default: the one saved with the model)")
    add_set_flag(p)
    p.add_argument("--fusion", choices=["max", "mean"])
    p.add_argument(
        "--oracle-events",
        action="store_true",
        help="ORACLE setting: use only the heads of the true target event type",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg, exp, model = load_model_and_data(args)
    metrics = exp.evaluate(
        model, args.split, fusion=args.fusion, oracle_events=args.oracle_events, progress=True
    )
    metrics["split"] = args.split
    metrics["split_k"] = cfg.data.split_k
    metrics["dataset"] = cfg.data.dataset
    if args.oracle_events:
        metrics["setting"] = "ORACLE: heads chosen by the true target event type"
    metrics["most_popular"] = exp.popularity(args.split)
    text = json.dumps(metrics, indent=2)
    if args.output:
        Path(args.output).write_text(text)
    print(text)
    return 0
