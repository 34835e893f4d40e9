"""`ggr-hf compare`: plain backbone vs backbone + priors over seeds and split protocols."""

from __future__ import annotations

import argparse

from ggr_hf.cli.common import add_set_flag, load_config, non_negative_int, positive_int


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Registers `compare`."""
    p = subparsers.add_parser(
        "compare",
        help="models side by side over seeds and split protocols (default: plain backbone vs backbone + priors)",
    )
    p.add_argument(
        "--config", required=True, help="experiment file: data, training and (by default) the model"
    )
    p.add_argument(
        "--models",
        help="models file (YAML 'models:' list of {name, model} or {name, config}): compare these models, "
        "each replacing the config's model section, instead of plain backbone vs backbone + priors",
    )
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
    from ggr_hf.experiments.compare import format_table, load_model_list, run_comparison

    if args.overwrite:
        args.set = [*(args.set or []), "training.overwrite_output_dir=true"]
    cfg = load_config(args)
    models = load_model_list(args.models) if args.models else None
    if models:
        # Every model section is checked before the first run starts.
        for section in models.values():
            cfg.with_model(section)
    results = run_comparison(cfg, args.seeds, args.split_ks, args.output_dir, report=print, models=models)
    print()
    print(format_table(results, cfg))
    return 0
