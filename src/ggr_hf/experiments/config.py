"""Experiment configuration: a YAML file with `data`, `model` and `training` sections.

    data:      DataArguments        (which data set, the split K, the category column for metrics)
    model:     GGRConfig keyword arguments (backbone, priors, heads, loss); `num_items` comes from data
    training:  GGRTrainingArguments (optimiser, schedule, epochs, seeds, evaluation, output)

Unknown keys in any section are errors naming the key. Values can be overridden from the command
line with `--set section.key=value` (the value is parsed as YAML: `--set training.epochs=3`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ggr_hf.training.arguments import GGRTrainingArguments

__all__ = [
    "DataArguments",
    "ExperimentConfig",
    "apply_overrides",
    "experiment_config_from_dict",
    "load_experiment_config",
]


@dataclass
class DataArguments:
    """Where the data comes from and how it is split.

    Args:
        dataset: a name of the data-set registry (`ggr_hf.data.registry`): `"ml-100k"` (the embedded
            real MovieLens-100K), `"movielens"` (MovieLens files in `path`: RecBole atomic, GroupLens
            ML-100K or ML-1M), `"synthetic"` (planted structure, for tests), `"bundle"` (a folder
            written by `ggr-hf data prepare`), or a prepared set's name with its folder in `path`.
        path: folder for `"movielens"`, `"bundle"` and the prepared sets.
        split_k: targets per user in validation and test (1 = leave-one-out; the paper uses 8).
        min_seq_len: users need more than `max(min_seq_len, 2 * split_k)` items.
        category_field: item column used for entropy H@K and new-interest metrics.
        max_users: keep only the first N users (smoke tests).
        synthetic: keyword arguments of `make_synthetic`.
    """

    dataset: str = "ml-100k"
    path: str | None = None
    split_k: int = 8
    min_seq_len: int = 0
    category_field: str | None = "genres"
    max_users: int | None = None
    synthetic: dict = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    """One experiment: where the data comes from, the model's `GGRConfig` keyword arguments (without
    `num_items`, which the data gives) and the training loop's settings."""

    data: DataArguments = field(default_factory=DataArguments)
    model: dict[str, Any] = field(default_factory=dict)
    training: GGRTrainingArguments = field(default_factory=GGRTrainingArguments)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": dataclasses.asdict(self.data),
            "model": copy.deepcopy(self.model),
            "training": dataclasses.asdict(self.training),
        }

    def replace(self, **sections: dict[str, Any]) -> ExperimentConfig:
        """A copy with some fields of some sections changed, e.g. `replace(model={"priors": []})`."""
        d = self.to_dict()
        for section, values in sections.items():
            d[section].update(values)
        return experiment_config_from_dict(d)


def _build(cls, values: dict[str, Any], section: str, source: str):
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(
            f"{source}: unknown key(s) {unknown} in section '{section}'; allowed: {sorted(allowed)}"
        )
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    clean = {}
    for k, v in values.items():
        # YAML reads 1e-3 as a string; coerce numbers declared as float.
        if types[k] in ("float", float) and isinstance(v, str):
            try:
                v = float(v)
            except ValueError as err:
                raise ValueError(f"{source}: {section}.{k} must be a number, got {v!r}") from err
        clean[k] = v
    return cls(**clean)


def experiment_config_from_dict(d: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Builds an `ExperimentConfig`, rejecting unknown sections and keys."""
    unknown = sorted(set(d) - {"data", "model", "training"})
    if unknown:
        raise ValueError(f"{source}: unknown section(s) {unknown}; expected data, model, training")
    model = dict(d.get("model") or {})
    if "num_items" in model:
        raise ValueError(f"{source}: model.num_items is taken from the data set; remove it")
    return ExperimentConfig(
        data=_build(DataArguments, dict(d.get("data") or {}), "data", source),
        model=model,
        training=_build(GGRTrainingArguments, dict(d.get("training") or {}), "training", source),
    )


def apply_overrides(d: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Applies `section.key=value` overrides (value parsed as YAML) to a config dict."""
    d = copy.deepcopy(d)
    for item in overrides or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"override {item!r} must look like section.key=value")
        path, raw = item.split("=", 1)
        value = yaml.safe_load(raw)
        keys = path.split(".")
        node = d.setdefault(keys[0], {})
        for key in keys[1:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return d


def load_experiment_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Reads an experiment YAML file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"experiment config {path} does not exist")
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(d, dict):
        raise ValueError(f"{path}: the top level must be a mapping with data, model, training")
    return experiment_config_from_dict(apply_overrides(d, overrides), source=str(path))
