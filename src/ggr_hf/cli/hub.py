"""`ggr-hf push` and `ggr-hf card`: publish a saved model with its model card.

The card layer takes its inputs as arguments; this module finds, for the inputs not given as flags,
the files a training run writes beside a saved model (see `find_card_inputs`). The model of a
training run that did not finish (no `run_complete.json` beside it, see `ggr_hf.hub.runs`) is
refused unless `--allow-incomplete`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ggr_hf.cli.evaluate import check_model_folder

__all__ = ["add_parsers", "find_card_inputs"]

# Relative to the model folder (`OUT/best`): what `ggr-hf train` writes there and in `OUT`;
# `eval_results.json` is a plain `{metric: value}` evaluation (`ggr-hf evaluate --output`).
METRICS_FILES = ("eval_results.json", "results.json", "../results.json")
TRAINING_ARGS_FILES = (
    "training_args.json",
    "training_args.yaml",
    "ggr_experiment.json",
    "../training_args.json",
    "../training_args.yaml",
)
# Caption -> candidate files (the names the ablation writes), beside the model or in its run folder.
FIGURES = {
    "Accuracy vs diversity": ("accuracy_vs_diversity.png", "accuracy_vs_diversity.svg"),
    "Head contributions": ("head_contributions.png", "head_contributions.svg"),
}


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Registers `push` and `card`."""
    push = subparsers.add_parser(
        "push",
        help="upload a saved GGR model (or its heads only) to the Hugging Face Hub, with its model card",
        description=(
            "Uploads MODEL (a folder written by training or save_pretrained, or a heads folder) in one "
            "commit, with an up-to-date README.md model card. Evaluation results, training settings and "
            "the figures found beside MODEL fill the card."
        ),
    )
    push.add_argument("model", metavar="MODEL", help="saved model or heads folder")
    push.add_argument("--repo-id", required=True, help="Hub repo, 'namespace/name' (created if missing)")
    push.add_argument("--heads-only", action="store_true", help="upload only the adapter heads (no backbone)")
    push.add_argument("--private", action="store_true", default=None, help="create the repo private")
    push.add_argument("--token", help="Hub token (default: the logged-in one)")
    push.add_argument("--revision", help="branch to commit to (created if missing)")
    push.add_argument("--commit-message", help="commit message")
    push.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    _card_inputs(push)
    push.set_defaults(run=_push)

    card = subparsers.add_parser(
        "card",
        help="write or update MODEL/README.md, the model card",
        description=(
            "Writes MODEL/README.md from the model's config and weights and its training run. Inputs "
            "not given are read from the files beside MODEL (eval_results.json, results.json, "
            "training_args.json/yaml or ggr_experiment.json, accuracy_vs_diversity.png, "
            "head_contributions.png) and from the previous card, whose user notes are kept."
        ),
    )
    card.add_argument("model", metavar="MODEL", help="saved model or heads folder")
    card.add_argument("--repo-id", help="Hub id shown in the card's loading snippet")
    _card_inputs(card)
    card.set_defaults(run=_card)


def _card_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", type=Path, help="evaluation results JSON")
    parser.add_argument("--training-args", type=Path, help="training settings, JSON or YAML")
    parser.add_argument("--dataset", help="data set name (a Hub dataset id where there is one)")
    parser.add_argument("--split", help="split the results are on (default: from the metrics file)")
    parser.add_argument("--plot", type=Path, help="accuracy vs diversity plot (PNG or SVG)")
    parser.add_argument("--license", help="license of the model, e.g. apache-2.0")
    parser.add_argument(
        "--base-model",
        help="Hub id of the backbone (or full model) the heads load onto; the card's base_model",
    )
    parser.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="use the model of a training run that did not finish (refused by default)",
    )


def _first_file(model_dir: Path, names: tuple[str, ...]) -> Path | None:
    return next((p for p in ((model_dir / n).resolve() for n in names) if p.is_file()), None)


def find_card_inputs(model_dir: str | Path) -> dict[str, Any]:
    """The card inputs a training run left beside `model_dir`: `metrics`, `training_args` (paths)
    and `figures` (caption -> path); only what exists is returned."""
    model_dir = Path(model_dir)
    found: dict[str, Any] = {}
    for key, names in (("metrics", METRICS_FILES), ("training_args", TRAINING_ARGS_FILES)):
        if (path := _first_file(model_dir, names)) is not None:
            found[key] = path
    figures = {}
    for caption, names in FIGURES.items():
        if (path := _first_file(model_dir, names + tuple(f"../{n}" for n in names))) is not None:
            figures[caption] = path
    if figures:
        found["figures"] = figures
    return found


def _card_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The card inputs: the flags given, then the files found beside the model."""
    kwargs = find_card_inputs(args.model)
    given = {
        "metrics": args.metrics,
        "training_args": args.training_args,
        "dataset_name": args.dataset,
        "dataset_split": args.split,
        "license": args.license,
        "base_model": args.base_model,
    }
    kwargs.update({k: v for k, v in given.items() if v is not None})
    if args.plot is not None:
        kwargs["figures"] = {**kwargs.get("figures", {}), "Accuracy vs diversity": args.plot}
    return kwargs


def _push(args: argparse.Namespace) -> int:
    from ggr_hf.hub.push import push_model_to_hub
    from ggr_hf.hub.runs import require_complete_run

    model = check_model_folder(args.model)
    require_complete_run(model, "push", args.allow_incomplete)
    info = push_model_to_hub(
        model,
        args.repo_id,
        heads_only=args.heads_only,
        private=args.private,
        token=args.token,
        revision=args.revision,
        commit_message=args.commit_message,
        card_data=_card_kwargs(args),
        create_pr=args.create_pr,
        base_model_name_or_path=args.base_model,
    )
    url = getattr(info, "pr_url", None) or getattr(info, "commit_url", None) or args.repo_id
    print(f"pushed {model} to {url}")
    return 0


def _card(args: argparse.Namespace) -> int:
    from ggr_hf.configuration_heads import HEADS_MODEL_TYPE
    from ggr_hf.hub.card import build_model_card
    from ggr_hf.hub.io import read_config_dict
    from ggr_hf.hub.runs import require_complete_run

    model = check_model_folder(args.model)
    require_complete_run(model, "card", args.allow_incomplete)
    model_type = read_config_dict(model).get("model_type")
    kwargs = _card_kwargs(args)
    if args.repo_id:
        kwargs["repo_id"] = args.repo_id
    build_model_card(model, **kwargs)
    what = "heads card" if model_type == HEADS_MODEL_TYPE else "model card"
    print(f"wrote the {what} {model / 'README.md'}")
    return 0
