"""The `ggr-hf push` and `ggr-hf card` sub-commands.

`ggr_hf.cli` wires them in:

```python
from ggr_hf.hub_cli import add_hub_commands, run_hub_command

add_hub_commands(subparsers)  # adds "push" and "card"
...
if getattr(args, "hub_command", None):
    return run_hub_command(args)
```
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def add_hub_commands(subparsers: argparse._SubParsersAction) -> None:
    """Registers `push` and `card` on an `argparse` sub-parser collection.

    Each sets `hub_command` (`"push"` or `"card"`) in the parsed namespace for [`run_hub_command`].
    """
    push = subparsers.add_parser(
        "push",
        help="upload a saved GGR model (or its heads only) to the Hugging Face Hub, with its model card",
        description=(
            "Uploads MODEL (a folder written by training or save_pretrained, or a heads folder) in one "
            "commit, with an up-to-date README.md model card. Evaluation results, training settings and "
            "the accuracy vs diversity plot found beside MODEL fill the card."
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
    push.set_defaults(hub_command="push")

    card = subparsers.add_parser(
        "card",
        help="write or update MODEL/README.md, the model card",
        description=(
            "Writes MODEL/README.md from the model's config and weights and its training run. Inputs "
            "not given are read from the files beside MODEL (eval_results.json, results.json, "
            "training_args.json/yaml, accuracy_diversity.png) and from the previous card, whose "
            "user notes are kept."
        ),
    )
    card.add_argument("model", metavar="MODEL", help="saved model or heads folder")
    card.add_argument("--repo-id", help="Hub id shown in the card's loading snippet")
    _card_inputs(card)
    card.set_defaults(hub_command="card")


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


def _card_kwargs(args: argparse.Namespace) -> dict:
    kwargs = {
        "metrics": args.metrics,
        "training_args": args.training_args,
        "dataset_name": args.dataset,
        "dataset_split": args.split,
        "plot_path": args.plot,
        "license": args.license,
        "base_model": args.base_model,
    }
    return {k: v for k, v in kwargs.items() if v is not None}


def run_hub_command(args: argparse.Namespace) -> int:
    """Runs `push` or `card`. Returns the exit status; errors are printed, not raised."""
    try:
        if args.hub_command == "push":
            return _push(args)
        if args.hub_command == "card":
            return _card(args)
        raise ValueError(f"unknown hub command {args.hub_command!r}")
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"ggr-hf {args.hub_command}: error: {err}", file=sys.stderr)
        return 1


def _push(args: argparse.Namespace) -> int:
    from ggr_hf.hub import push_model_to_hub

    model = Path(args.model)
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
    from ggr_hf.hub import HEADS_MODEL_TYPE, read_config_dict
    from ggr_hf.modelcard import build_model_card

    model = Path(args.model)
    model_type = read_config_dict(model).get("model_type")
    kwargs = _card_kwargs(args)
    if args.repo_id:
        kwargs["repo_id"] = args.repo_id
    build_model_card(model, **kwargs)
    what = "heads card" if model_type == HEADS_MODEL_TYPE else "model card"
    print(f"wrote the {what} {model / 'README.md'}")
    return 0
