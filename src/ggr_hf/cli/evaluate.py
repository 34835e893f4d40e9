"""`ggr-hf evaluate`: a saved model's metrics on its data set's test or validation split.

The model of a training run that did not finish (no `run_complete.json` beside it, see
`ggr_hf.hub.runs`) is refused unless `--allow-incomplete`; the metrics JSON (`--output`) is written
to a temporary name and moved.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ggr_hf.cli.common import add_set_flag, load_model_and_data
from ggr_hf.errors import GGRFileNotFoundError, GGRInputError, GGRModelFolderError


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Registers `evaluate`."""
    p = subparsers.add_parser("evaluate", help="evaluate a saved model on its data set")
    p.add_argument("model", help="folder written by `ggr-hf train` (e.g. OUT/best)")
    p.add_argument("--split", choices=["test", "validation"], default="test")
    p.add_argument(
        "--output", metavar="FILE", help="write the metrics JSON to this file (replaced if it exists)"
    )
    p.add_argument("--config", help="experiment YAML naming the data (default: the one saved with the model)")
    add_set_flag(p)
    p.add_argument("--fusion", choices=["max", "mean"])
    p.add_argument(
        "--oracle-events",
        action="store_true",
        help="ORACLE setting: use only the heads of the true target event type",
    )
    p.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="evaluate the model of a training run that did not finish (refused by default)",
    )
    p.set_defaults(run=run)


def check_model_folder(model: str | Path) -> Path:
    """`model` as a folder, or the error a CLI command reports: missing, or a file.

    Raises:
        `GGRFileNotFoundError`: the folder does not exist. `GGRModelFolderError`: it is a file.
    """
    path = Path(model)
    if path.is_file():
        raise GGRModelFolderError(
            f"{model} is a file, not a model folder: pass the folder holding config.json"
        )
    if not path.is_dir():
        raise GGRFileNotFoundError(f"model folder {model} does not exist: check the path")
    return path


def check_output_file(value: str | None, flag: str = "--output") -> Path | None:
    """The file a command writes its results to: an existing folder there, or a file where its
    parent folder should be, is an error before any work is done.

    Raises:
        `GGRInputError`: naming the flag and the path.
    """
    if value is None:
        return None
    path = Path(value)
    if path.is_dir():
        raise GGRInputError(
            f"{flag} {value} is a folder: pass a file name, e.g. {path / 'eval_results.json'}"
        )
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise GGRInputError(f"{flag} {value}: {parent} is a file, not a folder: pass another path")
    return path


def run(args: argparse.Namespace) -> int:
    from ggr_hf.hub.io import write_text_atomic
    from ggr_hf.hub.runs import require_complete_run

    model_dir = check_model_folder(args.model)
    output = check_output_file(args.output)
    if not args.allow_incomplete:
        # With --allow-incomplete, `from_pretrained` warns that the run did not finish.
        require_complete_run(model_dir, "evaluate")
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
    if output is not None:
        write_text_atomic(output, text)
    print(text)
    return 0
