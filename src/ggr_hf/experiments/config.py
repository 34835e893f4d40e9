"""Experiment configuration: a YAML file with `data`, `model` and `training` sections.

    data:      DataArguments        (which data set, the split K, the category column for metrics)
    model:     GGRConfig keyword arguments (backbone, priors, heads, loss); `num_items` comes from data
    training:  GGRTrainingArguments (optimiser, schedule, epochs, seeds, evaluation, output)

Values can be overridden from the command line with `--set section.key=value` (the value is parsed
as YAML: `--set training.epochs=3`). The whole config is checked when it is read, before any data is
loaded or any step is trained: unknown sections and keys, every `data`/`training` value against its
field's type (`epochs: 2.5` or `batch_size: "64"` are errors), the `model` section by building a
`GGRConfig`, and `training.selection_metric` against the metrics the evaluator computes. Every
failure is a `GGRConfigError` naming the file (or the `--set` override), the field and the value.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import functools
import logging
import math
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ggr_hf.data.timestamps import check_timestamp_unit
from ggr_hf.errors import GGRConfigError, GGRFileNotFoundError, GGRInputError
from ggr_hf.training.arguments import GGRTrainingArguments

logger = logging.getLogger(__name__)

__all__ = [
    "DataArguments",
    "ExperimentConfig",
    "apply_overrides",
    "evaluator_metric_names",
    "experiment_config_from_dict",
    "load_experiment_config",
    "read_yaml_mapping",
]


SECTIONS = ("data", "model", "training")

# YAML 1.1 reads a bare `no` as false; these string fields take it (their dataclass maps it back).
_YAML_BOOL_STRINGS = frozenset({"training.mixed_precision"})


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
        timestamp_unit: the unit of integer time columns read from raw files (`"s"`, `"ms"`, `"us"`,
            `"ns"` or `"auto"`, see `ggr_hf.data.timestamps`); for `"ml-100k"` and `"movielens"` only
            (a prepared folder was converted when prepared). `None`: the loader's default, `"auto"`.
    """

    dataset: str = "ml-100k"
    path: str | None = None
    split_k: int = 8
    min_seq_len: int = 0
    category_field: str | None = "genres"
    max_users: int | None = None
    synthetic: dict = field(default_factory=dict)
    timestamp_unit: str | None = None

    def __post_init__(self) -> None:
        if int(self.min_seq_len) < 0:
            raise GGRConfigError(f"data.min_seq_len must be >= 0, got {self.min_seq_len!r}")
        if self.max_users is not None and int(self.max_users) < 1:
            # 0 would read as "no limit" (a falsy cap) and silently keep every user.
            raise GGRConfigError(f"data.max_users must be >= 1 or null, got {self.max_users!r}")


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

    def with_model(self, model: dict[str, Any]) -> ExperimentConfig:
        """A copy whose whole `model:` section is `model` (checked as any experiment file's)."""
        d = self.to_dict()
        d["model"] = dict(model)
        return experiment_config_from_dict(d)

    def replace(self, **sections: dict[str, Any]) -> ExperimentConfig:
        """A copy with some fields of some sections changed, e.g. `replace(model={"priors": []})`."""
        d = self.to_dict()
        for section, values in sections.items():
            d[section].update(values)
        return experiment_config_from_dict(d)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML parse error in one line: what is wrong and where."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or " ".join(str(err).split())
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def _show(value: Any, limit: int = 80) -> str:
    """`repr(value)` cut to one short line (a message names the value, it does not dump it)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(tp: Any) -> str:
    """What an annotation asks for, in the words of an error message."""
    if tp is Any:
        return "any value"
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arm) for arm in typing.get_args(tp))
    base = origin or tp
    return {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        dict: "a mapping",
        list: "a list",
    }.get(base, getattr(base, "__name__", str(base)))


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """Whether `value` (as YAML or JSON read it) fits the annotation `tp`, and the value to keep:
    numbers declared `float` become floats, and so do YAML 1.1's `1e-3` strings (no dot, so YAML
    reads a string). bool is not an int here, and a float is never truncated to an int."""
    if tp is Any:
        return True, value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            ok, kept = _coerce(value, arm)
            if ok:
                return True, kept
        return False, value
    if tp is type(None):
        return value is None, value
    base = origin or tp
    if base is bool:
        return isinstance(value, bool), value
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return False, value
        try:
            number = float(value)
        except (ValueError, OverflowError):
            return False, value
        return math.isfinite(number), number
    if base in (list, dict):
        if not isinstance(value, base):
            return False, value
        args = typing.get_args(tp)
        if base is list and args:
            return all(_coerce(v, args[0])[0] for v in value), value
        if base is dict and len(args) == 2:
            return all(_coerce(k, args[0])[0] and _coerce(v, args[1])[0] for k, v in value.items()), value
        return True, value
    return isinstance(value, base), value


def _section(d: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    values = d.get(name)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise GGRConfigError(
            f"{source}: section '{name}' must be a mapping of key: value, got {_show(values)}"
        )
    return values


def _build(cls: type, values: dict[str, Any], section: str, source: str, origins: dict[str, str]) -> Any:
    """`cls(**values)` with every value checked against its field's annotation; errors name the
    field, the value and where it came from (the file, or the `--set` override)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in values if k not in fields)
    if unknown:
        raise GGRConfigError(
            f"{source}: unknown key(s) {unknown} in section '{section}'; allowed: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    clean = {}
    for key, value in values.items():
        name = f"{section}.{key}"
        where = origins.get(name, source)
        if name in _YAML_BOOL_STRINGS and isinstance(value, bool):
            # Left to the dataclass, which maps YAML's false back to "no" and rejects true.
            clean[key] = value
            continue
        ok, kept = _coerce(value, hints[key])
        if not ok:
            raise GGRConfigError(
                f"{where}: {name} must be {_describe(hints[key])}, got {_show(value)} ({type(value).__name__})"
            )
        clean[key] = kept
    try:
        return cls(**clean)
    except (TypeError, ValueError) as err:
        # The dataclass's own range checks start with `section.field` and name the value.
        message = " ".join(str(err).split())
        where = next((origins[n] for n in origins if message.startswith(f"{n} ")), source)
        raise GGRConfigError(f"{where}: {message}") from err


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """The Hub in offline mode for the early model check: reading a config never downloads (a
    backbone that names a Hub model reads its config.json from the local cache, if it is there)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _needs_files(err: BaseException) -> bool:
    """Whether `err` was caused by a file or download that is not available (an `OSError` in its chain)."""
    while err is not None:
        if isinstance(err, OSError):
            return True
        err = err.__cause__ or err.__context__
    return False


def _check_model(model: dict[str, Any], source: str, origins: dict[str, str]) -> None:
    """Builds the model's config (`GGRConfig`, or the class of `model.model_type`) from the `model:`
    section now, so that a bad model field fails before
    any data is loaded (`num_items` is a placeholder here: the data set gives it later). A backbone
    config that needs a file not at hand offline (a Hub model's config.json) is checked when the
    model is built; every other field is checked now."""
    if "num_items" in model:
        raise GGRConfigError(f"{source}: model.num_items is taken from the data set; remove it")
    keys = [k for k in model if not isinstance(k, str)]
    if keys:
        raise GGRConfigError(f"{source}: model keys must be field names (strings), got {_show(keys[0])}")
    # Imported here: reading a config must not load transformers for `import ggr_hf.experiments.config`.
    from ggr_hf.recommenders import DEFAULT_MODEL_TYPE, recommender_config_class

    fields = dict(model)
    model_type = fields.pop("model_type", DEFAULT_MODEL_TYPE)
    try:
        config_class = recommender_config_class(model_type)
    except GGRConfigError as err:
        raise GGRConfigError(f"{origins.get('model.model_type', source)}: {err}") from None
    try:
        with _hub_offline():
            try:
                config_class(num_items=1, **fields)
            except (TypeError, ValueError) as err:
                if not _needs_files(err) or "backbone_config" not in fields:
                    raise
                logger.info("%s: model.backbone_config is checked when the model is built (%s)", source, err)
                config_class(num_items=1, **{**fields, "backbone_config": None})
    except (TypeError, ValueError) as err:
        message = " ".join(str(err).split())
        prefix = config_class.__name__
        fields_at = {f"{prefix}.{name.removeprefix('model.')} ": where for name, where in origins.items()}
        where = next((where for field, where in fields_at.items() if message.startswith(field)), source)
        raise GGRConfigError(f"{where}: model: {message}") from err


@functools.lru_cache(maxsize=16)
def evaluator_metric_names(split_k: int, with_categories: bool = True) -> tuple[str, ...]:
    """The scalar metrics `ggr_hf.evaluation` reports on a split with `split_k` targets per user:
    `recall@K`, `ndcg@K` with their `_h{h}` horizons, and with item categories the entropy and
    new-interest metrics; `new_event_recall@K` on data sets with event types.

    Asked of the evaluator itself (the most-popular floor on a one-user split, with categories and
    event types), so that the list never drifts from what model selection can read.

    Args:
        split_k (`int`): targets per user in the validation split (`data.split_k`).
        with_categories (`bool`): whether `data.category_field` is set.

    Returns:
        `tuple[str, ...]`: the metric names, sorted.
    """
    import numpy as np
    import torch

    from ggr_hf.data.splits import EvalRows
    from ggr_hf.evaluation.evaluator import DEFAULT_KS, evaluate_popularity

    # Enough items that every cutoff K fits after the history and the targets.
    num_items = max(DEFAULT_KS) + split_k + 1
    rows = EvalRows(
        user_ids=np.zeros(1, dtype=np.int64),
        histories=[np.ones(1, dtype=np.int64)],
        history_timestamps=[np.zeros(1, dtype=np.int64)],
        targets=np.arange(2, 2 + split_k, dtype=np.int64)[None],
        target_timestamps=np.ones((1, split_k), dtype=np.int64),
        history_events=[np.zeros(1, dtype=np.int64)],
        target_events=np.ones((1, split_k), dtype=np.int64),
    )
    categories = None
    if with_categories:
        categories = torch.ones(num_items + 1, 1)
        categories[0] = 0  # the padding row
    metrics = evaluate_popularity(np.ones(num_items + 1, dtype=np.int64), rows, item_categories=categories)
    return tuple(sorted(k for k, v in metrics.items() if isinstance(v, float)))


def _check_selection_metric(data: DataArguments, training: GGRTrainingArguments, source: str) -> None:
    if data.split_k < 1:
        raise GGRConfigError(f"{source}: data.split_k must be >= 1, got {data.split_k!r}")
    names = evaluator_metric_names(data.split_k, data.category_field is not None)
    metric = training.selection_metric
    if metric not in names:
        close = difflib.get_close_matches(metric, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise GGRConfigError(
            f"{source}: training.selection_metric {metric!r} is not a metric the evaluator computes "
            f"(data.split_k={data.split_k}); {hint}choose one of {list(names)}"
        )


def _from_dict(d: Any, source: str, origins: dict[str, str]) -> ExperimentConfig:
    if not isinstance(d, dict):
        raise GGRConfigError(
            f"{source}: the top level must be a mapping with sections data, model, training; got {_show(d)}"
        )
    unknown = sorted(str(k) for k in d if k not in SECTIONS)
    if unknown:
        raise GGRConfigError(f"{source}: unknown section(s) {unknown}; expected data, model, training")
    model = dict(_section(d, "model", source))
    data = _build(DataArguments, _section(d, "data", source), "data", source, origins)
    training = _build(GGRTrainingArguments, _section(d, "training", source), "training", source, origins)
    _check_model(model, source, origins)
    if data.timestamp_unit is not None:
        try:
            check_timestamp_unit(data.timestamp_unit)
        except GGRInputError as err:
            raise GGRConfigError(f"{origins.get('data.timestamp_unit', source)}: data.{err}") from None
    _check_selection_metric(data, training, origins.get("training.selection_metric", source))
    return ExperimentConfig(data=data, model=model, training=training)


def experiment_config_from_dict(d: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Builds an `ExperimentConfig`, checking every field before anything is loaded or trained.

    Args:
        d (`dict`): the sections `data`, `model`, `training` (each optional).
        source (`str`): where `d` came from, for the messages (a file name).

    Raises:
        `GGRConfigError`: an unknown section or key, a value of the wrong type (an `int` field given
            `2.5` or `"64"`), a value out of range, a bad `model:` field (as `GGRConfig` reports it),
            or a `training.selection_metric` the evaluator does not compute; the message names
            `source`, `section.field` and the value.
    """
    return _from_dict(d, source, {})


def _split_override(item: Any) -> tuple[list[str], str]:
    """`"section.key.sub=value"` -> (`["section", "key", "sub"]`, `"value"`), or a `GGRConfigError`."""
    path, sep, raw = str(item).partition("=")
    keys = [k.strip() for k in path.split(".")]
    if not isinstance(item, str) or not sep or len(keys) < 2 or not all(keys):
        raise GGRConfigError(f"--set {_show(item)} must look like section.key=value, e.g. training.epochs=3")
    if keys[0] not in SECTIONS:
        raise GGRConfigError(f"--set {item!r}: unknown section {keys[0]!r}; expected data, model, training")
    if keys[0] != "model":
        cls = DataArguments if keys[0] == "data" else GGRTrainingArguments
        allowed = sorted(f.name for f in dataclasses.fields(cls))
        if keys[1] not in allowed:
            raise GGRConfigError(
                f"--set {item!r}: unknown key {keys[1]!r} in section '{keys[0]}'; allowed: {allowed}"
            )
    return keys, raw


def apply_overrides(d: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Applies `section.key=value` overrides (the value parsed as YAML) to a copy of a config dict.

    Raises:
        `GGRConfigError`: an override that is not `section.key=value`, names an unknown section or
            key, holds a value that is not valid YAML, or goes below a value that is not a mapping.
    """
    if not isinstance(d, dict):
        raise GGRConfigError(
            f"the config must be a mapping with sections data, model, training, got {_show(d)}"
        )
    d = copy.deepcopy(d)
    for item in overrides or []:
        keys, raw = _split_override(item)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise GGRConfigError(
                f"--set {item!r}: the value {raw!r} is not valid YAML ({_yaml_problem(err)}); "
                "quote it, e.g. --set 'section.key=\"text\"'"
            ) from err
        node = d
        for depth, key in enumerate(keys[:-1]):
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
            if not isinstance(node, dict):
                raise GGRConfigError(
                    f"--set {item!r}: {'.'.join(keys[: depth + 1])} is {_show(node)}, not a mapping"
                )
        node[keys[-1]] = value
    return d


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping (PyYAML keeps the last one
    silently, so `epochs: 1` above `epochs: 20` would be lost without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml_mapping(path: str | Path, what: str, expected: str) -> dict[str, Any]:
    """Reads a YAML file whose top level is a mapping (an empty file is an empty mapping).

    Args:
        path (`str` or `Path`): the file.
        what (`str`): what the file is, for the messages (e.g. `"experiment config"`).
        expected (`str`): what the top level holds, for the messages (e.g. `"sections data, model, training"`).

    Raises:
        `GGRFileNotFoundError`: `path` does not exist.
        `GGRConfigError`: `path` is a folder, not UTF-8, not valid YAML, or not a mapping.
    """
    path = Path(path)
    if not path.exists():
        raise GGRFileNotFoundError(f"{what} {path} does not exist; pass the path of a YAML file")
    if not path.is_file():
        raise GGRConfigError(f"{what} {path} is not a file; pass the path of a YAML file")
    try:
        d = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except UnicodeDecodeError as err:
        raise GGRConfigError(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start})") from err
    except yaml.YAMLError as err:
        raise GGRConfigError(f"{path}: not valid YAML ({_yaml_problem(err)})") from err
    except OSError as err:
        raise GGRConfigError(f"{path}: cannot be read ({err.strerror})") from err
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise GGRConfigError(f"{path}: the top level must be a mapping with {expected}")
    return d


def load_experiment_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Reads an experiment YAML file (see the module docstring) and applies the `--set` overrides.

    Raises:
        `GGRFileNotFoundError`: `path` does not exist.
        `GGRConfigError`: the file is not readable YAML, or any field is wrong (see
            `experiment_config_from_dict`); a value given by an override is named by that override.
    """
    path = Path(path)
    d = read_yaml_mapping(path, "experiment config", "sections data, model, training")
    origins = {}
    for item in overrides or []:
        keys, _ = _split_override(item)
        origins[".".join(keys[:2])] = f"--set {item!r}"
    return _from_dict(apply_overrides(d, overrides), str(path), origins)
