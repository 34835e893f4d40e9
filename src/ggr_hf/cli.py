"""The `ggr-hf` command line: train, evaluate, recommend, compare, data, push, card."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

EXPERIMENT_FILE = "ggr_experiment.json"


def _load_config(args: argparse.Namespace):
    from ggr_hf.training.config import load_experiment_config

    return load_experiment_config(args.config, args.set)


def cmd_train(args: argparse.Namespace) -> int:
    from ggr_hf.training.trainer import launch_experiment

    cfg = _load_config(args)
    if args.output_dir:
        cfg = cfg.replace(training={"output_dir": args.output_dir})
    # Also the entry point under `accelerate launch -m ggr_hf.cli train ...`: every process trains,
    # the main one prints.
    out, is_main = launch_experiment(cfg)
    if not is_main:
        return 0
    best = Path(cfg.training.output_dir) / "best"
    print(
        json.dumps(
            {
                "best_model": str(best),
                "test": _headline(out["test"]),
                "most_popular_test": _headline(out["popularity_test"]),
                "train": out["train"],
            },
            indent=2,
        )
    )
    return 0


def _headline(metrics: dict) -> dict:
    keys = ("recall@10", "ndcg@10", "entropy@10", "new_interest_recall@10", "num_users")
    return {
        k: round(metrics[k], 5) if isinstance(metrics[k], float) else metrics[k] for k in keys if k in metrics
    }


def _experiment_for_model(model_dir: Path, config_path: str | None, overrides: list[str] | None):
    from ggr_hf.training.config import apply_overrides, experiment_config_from_dict, load_experiment_config

    if config_path:
        return load_experiment_config(config_path, overrides)
    saved = model_dir / EXPERIMENT_FILE
    if not saved.is_file():
        raise FileNotFoundError(
            f"{model_dir} has no {EXPERIMENT_FILE} (written by `ggr-hf train`); pass --config to name the data"
        )
    return experiment_config_from_dict(apply_overrides(json.loads(saved.read_text()), overrides), str(saved))


def _load_model_and_data(args: argparse.Namespace):
    """The saved model and its experiment (data, split, priors) rebuilt from `ggr_experiment.json`."""
    from ggr_hf.modeling_ggr import GGRForRecommendation
    from ggr_hf.training.trainer import prepare_experiment

    model_dir = Path(args.model)
    cfg = _experiment_for_model(model_dir, args.config, args.set)
    exp = prepare_experiment(cfg)
    model = GGRForRecommendation.from_pretrained(str(model_dir))
    if model.config.num_items != exp.bundle.num_items:
        raise ValueError(
            f"the model has {model.config.num_items} items but the data set '{exp.bundle.name}' has "
            f"{exp.bundle.num_items}; use the data it was trained on"
        )
    return cfg, exp, model.eval()


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ggr_hf.evaluation.evaluator import evaluate_model, evaluate_popularity

    cfg, exp, model = _load_model_and_data(args)
    rows = exp.split.test if args.split == "test" else exp.split.validation
    metrics = evaluate_model(
        model,
        rows,
        item_categories=exp.item_categories,
        user_groups=exp.priors.user_groups,
        fusion=args.fusion,
        oracle_events=args.oracle_events,
        progress=True,
    )
    metrics["split"] = args.split
    metrics["split_k"] = cfg.data.split_k
    metrics["dataset"] = cfg.data.dataset
    if args.oracle_events:
        metrics["setting"] = "ORACLE: heads chosen by the true target event type"
    metrics["most_popular"] = evaluate_popularity(
        exp.split.item_popularity(), rows, item_categories=exp.item_categories
    )
    text = json.dumps(metrics, indent=2)
    if args.output:
        Path(args.output).write_text(text)
    print(text)
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    _, exp, model = _load_model_and_data(args)
    bundle = exp.bundle
    user_table = bundle.users
    originals = [
        str(x) for x in (user_table["original_id"] if user_table is not None else range(bundle.num_users))
    ]
    if str(args.user) not in originals:
        raise ValueError(f"user {args.user!r} is not in the data set '{bundle.name}'")
    uid = originals.index(str(args.user))
    row = bundle.sequences[uid]
    groups = None
    if exp.priors.user_groups is not None:
        groups = [exp.priors.user_groups[uid].tolist()]
    rec = model.recommend([row["item_ids"]], k=args.k, timestamps=[row["timestamps"]], user_groups=groups)
    titles, orig = bundle.items["title"], bundle.items["original_id"]
    print(f"user {args.user}: {len(row['item_ids'])} items in history; top {args.k}:")
    print(f"{'rank':>4}  {'item':>8}  {'score':>7}  {'explained by':<28} title")
    for rank, (item, score, head) in enumerate(
        zip(rec.item_ids[0].tolist(), rec.scores[0].tolist(), rec.head_names[0]), start=1
    ):
        print(f"{rank:>4}  {orig[item - 1]:>8}  {score:7.3f}  {head:<28} {titles[item - 1]}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ggr_hf.training.compare import format_table, run_comparison

    cfg = _load_config(args)
    cfg = cfg.replace(training={"progress": False})
    results = run_comparison(cfg, args.seeds, args.split_ks, args.output_dir)
    print(format_table(results, cfg))
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from ggr_hf.training.ablation import format_ablation_table, load_ablation_spec, run_ablation

    spec = load_ablation_spec(args.config, args.set)
    if args.seeds:
        spec.seeds = args.seeds
    results = run_ablation(spec, args.output_dir)
    print(format_ablation_table(results))
    print(
        f"plots: {Path(args.output_dir) / 'accuracy_vs_diversity.png'}, {Path(args.output_dir) / 'head_contributions.png'}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ggr-hf", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one model from an experiment YAML")
    p.add_argument("--config", required=True, help="experiment YAML (sections data, model, training)")
    p.add_argument("--output-dir", help="overrides training.output_dir")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a saved model on its data set")
    p.add_argument("model", help="folder written by `ggr-hf train` (e.g. OUT/best)")
    p.add_argument("--split", choices=["test", "validation"], default="test")
    p.add_argument("--output", help="write the metrics JSON here")
    p.add_argument("--config", help="experiment YAML naming the data (default: the one saved with the model)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    p.add_argument("--fusion", choices=["max", "mean"])
    p.add_argument(
        "--oracle-events",
        action="store_true",
        help="ORACLE setting: use only the heads of the true target event type",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("recommend", help="top-k items for one user, each with the head that explains it")
    p.add_argument("model")
    p.add_argument("--user", required=True, help="the user's original id in the data set")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--config")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("compare", help="plain backbone vs backbone + priors over seeds and split protocols")
    p.add_argument("--config", required=True)
    p.add_argument("--output-dir", default="outputs/compare")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--split-ks", type=int, nargs="+", default=[1, 8])
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("ablate", help="the ablation recipe: many prior configurations over seeds")
    p.add_argument("--config", required=True, help="ablation YAML (base experiment + variants)")
    p.add_argument("--output-dir", default="outputs/ablation")
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override the base experiment")
    p.set_defaults(func=cmd_ablate)

    from ggr_hf.data.cli import add_data_commands
    from ggr_hf.hub_cli import add_hub_commands

    add_data_commands(sub)
    add_hub_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.command == "data":
        from ggr_hf.data.cli import run_data_command

        return run_data_command(args)
    if getattr(args, "hub_command", None):
        from ggr_hf.hub_cli import run_hub_command

        return run_hub_command(args)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, OSError) as err:
        # A user mistake (bad config, missing file, wrong data) is reported in one line, not a traceback.
        print(f"ggr-hf {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
