"""`ggr-hf ablate`: the ablation recipe, many prior configurations over seeds."""

from __future__ import annotations

import argparse
from pathlib import Path

from ggr_hf.cli.common import add_set_flag, non_negative_int


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Registers `ablate`."""
    p = subparsers.add_parser("ablate", help="the ablation recipe: many prior configurations over seeds")
    p.add_argument("--config", required=True, help="ablation YAML (base experiment + variants)")
    p.add_argument("--output-dir", default="outputs/ablation")
    p.add_argument("--seeds", type=non_negative_int, nargs="+")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the runs of an earlier invocation in --output-dir (otherwise an occupied run folder is an error)",
    )
    add_set_flag(p, "override the base experiment")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ggr_hf.experiments.ablation import format_ablation_table, load_ablation_spec, run_ablation
    from ggr_hf.experiments.plots import ACCURACY_DIVERSITY_PLOT, HEAD_CONTRIBUTIONS_PLOT

    if args.overwrite:
        args.set = [*(args.set or []), "training.overwrite_output_dir=true"]
    spec = load_ablation_spec(args.config, args.set)
    if args.seeds:
        spec.seeds = args.seeds
    results = run_ablation(spec, args.output_dir, report=print)
    out = Path(args.output_dir)
    print()
    print(format_ablation_table(results))
    print(f"plots: {out / ACCURACY_DIVERSITY_PLOT}, {out / HEAD_CONTRIBUTIONS_PLOT}")
    return 0
