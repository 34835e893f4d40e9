"""`ggr-hf compare`: plain backbone vs backbone + priors over seeds and split protocols."""

from __future__ import annotations

import argparse

from ggr_hf.cli.common import add_set_flag, load_config, non_negative_int, positive_int


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Registers `compare`."""
    p = subparsers.add_parser(
        "compare", help="plain backbone vs backbone + priors over seeds and split protocols"
    )
    p.add_argument("--config", required=True)
    p.add_argument("--output-dir", default="outputs/compare")
    p.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1, 2])
    p.add_argument("--split-ks", type=positive_int, nargs="+", default=[1, 8])
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the runs of an earlier invocation in --output-dir (otherwise an occupied run folder is an error)",
    )
    add_set_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ggr_hf.experiments.compare import format_table, run_comparison

    if args.overwrite:
        args.set = [*(args.set or []), "training.overwrite_output_dir=true"]
    cfg = load_config(args)
    results = run_comparison(cfg, args.seeds, args.split_ks, args.output_dir, report=print)
    print()
    print(format_table(results, cfg))
    return 0
