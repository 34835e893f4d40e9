"""Experiment configuration: a YAML file with `data`, `model` and `training` sections.

    data:      DataArguments        (which data set, the split K, the category column for metrics)
    model:     GGRConfig keyword arguments (backbone, priors, heads, loss); `num_items` comes from data
    training:  TrainingArguments    (optimiser, schedule, epochs, seeds, evaluation, output)

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


@dataclass
class DataArguments:
    """Where the data comes from and how it is split.

    Args:
        dataset: `"ml-100k"` (the embedded real MovieLens-100K), `"movielens"` (MovieLens files in
            `path`: RecBole atomic, GroupLens ML-100K or ML-1M), `"synthetic"` (planted structure, for
            tests), or `"bundle"` (a folder written by `ggr-hf data prepare`).
        path: folder for `"movielens"` / `"bundle"`.
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
class TrainingArguments:
    """The training loop's settings (AdamW, cosine schedule with warm-up, model selection).

    Args:
        output_dir: where metrics JSON files and the best model (`best/`) are written.
        epochs: passes over the training windows.
        max_steps: stop after this many optimiser steps (-1: no limit).
        batch_size: training windows per step (per process).
        eval_batch_size: users per evaluation batch.
        learning_rate, weight_decay, adam_beta1, adam_beta2: AdamW (HSTU reference: 1e-3, betas 0.9/0.98).
        warmup_ratio: share of the steps with linear warm-up before the cosine decay.
        seed: seeds Python, numpy and torch (data order, negatives, dropout).
        eval_every_epochs: validation frequency.
        patience: stop after this many evaluations without improvement (0: never).
        selection_metric: validation metric that picks the best checkpoint (the paper: NDCG@10).
        mixed_precision: `"no"`, `"bf16"` or `"fp16"` (accelerate).
        cpu: force the CPU even when a GPU is present.
        log_every: steps between loss logs.
        save_best: write the best model with `save_pretrained` to `output_dir/best`.
        progress: show progress bars.
        gather_negatives: with several processes, each draws its own `model.num_negatives` (times
            `negative_draws`) and every process scores the union (all-gather), as the release does:
            W processes contrast each pair with W times as many negatives. Off: each process scores
            only its own draw. No effect with one process.
        negative_draws: independent draws of `model.num_negatives` negatives per process and step,
            concatenated. Negatives come from generators seeded by (seed, step, draw index), so one
            process with `negative_draws: W` scores exactly the negatives that W gathering processes
            with `negative_draws: 1` score (the single-process reference of a distributed run).
        pair_weighted_loss: with several processes, scale each process's loss by its share of the
            global batch's (position, offset, head) pairs, so that DDP's average of the gradients is
            the gradient of the loss over the global batch (exact with one offset, `horizon == 1`, and
            `prior_weighting: frequency`, where the loss is a mean over pairs). Off: the plain average
            of per-process means, which over-weights the pairs of a process with fewer of them.
        checkpoint_every_epochs: save the full training state (model, optimiser, scheduler, RNG
            states, data position, best model so far) with `accelerator.save_state` to
            `output_dir/checkpoints/epoch_N` every this many epochs (0: never).
        resume_from_checkpoint: a folder written by `checkpoint_every_epochs`, or `"latest"` (the
            newest under `output_dir/checkpoints`): training continues with the next epoch, as the
            uninterrupted run would have (same data order, negatives, schedule and RNG states).
    """

    output_dir: str = "outputs/run"
    epochs: int = 20
    max_steps: int = -1
    batch_size: int = 64
    eval_batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    warmup_ratio: float = 0.1
    seed: int = 0
    eval_every_epochs: int = 1
    patience: int = 0
    selection_metric: str = "ndcg@10"
    mixed_precision: str = "no"
    cpu: bool = False
    log_every: int = 50
    save_best: bool = True
    progress: bool = True
    # Distributed training and checkpoints (docs/distributed.md).
    gather_negatives: bool = True
    negative_draws: int = 1
    pair_weighted_loss: bool = True
    checkpoint_every_epochs: int = 0
    resume_from_checkpoint: str | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "eval_every_epochs", "negative_draws"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"training.{name} must be >= 1, got {getattr(self, name)!r}")
        if int(self.checkpoint_every_epochs) < 0:
            raise ValueError(
                f"training.checkpoint_every_epochs must be >= 0, got {self.checkpoint_every_epochs!r}"
            )
        if not 0 <= float(self.warmup_ratio) < 1:
            raise ValueError(f"training.warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if float(self.learning_rate) <= 0:
            raise ValueError(f"training.learning_rate must be > 0, got {self.learning_rate!r}")
        if self.mixed_precision is False:
            # YAML reads a bare `no` (as in `--set training.mixed_precision=no`) as false.
            object.__setattr__(self, "mixed_precision", "no")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(
                f"training.mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}"
            )


@dataclass
class ExperimentConfig:
    data: DataArguments = field(default_factory=DataArguments)
    model: dict[str, Any] = field(default_factory=dict)
    training: TrainingArguments = field(default_factory=TrainingArguments)

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
        training=_build(TrainingArguments, dict(d.get("training") or {}), "training", source),
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
