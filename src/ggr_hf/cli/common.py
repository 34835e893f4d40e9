"""Flags and loading shared by several `ggr-hf` commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ggr_hf.errors import GGRFileNotFoundError, GGRModelFolderError

if TYPE_CHECKING:
    from ggr_hf.experiments.config import ExperimentConfig
    from ggr_hf.experiments.experiment import Experiment
    from ggr_hf.modeling_recommender import RecommenderMixin


def _int_at_least(minimum: int, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a bad value is argparse's usage error, exit 2)."""
    return _int_at_least(1, text)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0, e.g. a seed (a bad value is argparse's usage error, exit 2)."""
    return _int_at_least(0, text)


def add_set_flag(parser: argparse.ArgumentParser, help: str = "override a config value") -> None:
    """`--set SECTION.KEY=VALUE`, repeatable, the value parsed as YAML."""
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help=help)


def load_config(args: argparse.Namespace) -> ExperimentConfig:
    """The experiment YAML named by `--config` with the `--set` overrides."""
    from ggr_hf.experiments.config import load_experiment_config

    return load_experiment_config(args.config, args.set)


def _experiment_for_model(model_dir: Path, config_path: str | None, overrides: list[str] | None):
    from ggr_hf.experiments.config import apply_overrides, experiment_config_from_dict, load_experiment_config
    from ggr_hf.experiments.experiment import EXPERIMENT_FILE

    if config_path:
        return load_experiment_config(config_path, overrides)
    if not model_dir.exists():
        raise GGRFileNotFoundError(
            f"model folder {model_dir} does not exist; pass a folder written by `ggr-hf train` (e.g. "
            "OUTPUT_DIR/best), or --config naming the data for a Hub model"
        )
    saved = model_dir / EXPERIMENT_FILE
    if not saved.is_file():
        raise GGRModelFolderError(
            f"{model_dir} has no {EXPERIMENT_FILE} (written by `ggr-hf train`); pass --config to name the data"
        )
    try:
        d = json.loads(saved.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GGRModelFolderError(f"{saved}: not valid JSON ({err}); pass --config to name the data") from err
    return experiment_config_from_dict(apply_overrides(d, overrides), str(saved))


def load_model_and_data(
    args: argparse.Namespace,
) -> tuple[ExperimentConfig, Experiment, RecommenderMixin]:
    """The saved model `args.model` and its experiment (data, split, priors), rebuilt from the
    `ggr_experiment.json` saved with it or from `--config`."""
    from ggr_hf.experiments.experiment import prepare_experiment
    from ggr_hf.recommenders import load_recommender

    model_dir = Path(args.model)
    cfg = _experiment_for_model(model_dir, args.config, args.set)
    exp = prepare_experiment(cfg)
    model = load_recommender(model_dir)
    if model.config.num_items != exp.bundle.num_items:
        raise GGRModelFolderError(
            f"the model has {model.config.num_items} items but the data set '{exp.bundle.name}' has "
            f"{exp.bundle.num_items}; use the data it was trained on"
        )
    return cfg, exp, model.eval()
