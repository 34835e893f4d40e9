"""Model cards built from data: a [`GGRCardData`] filled from a saved model folder and the run
results its caller passes in, rendered through one template (`ggr_hf/resources/model_card_template.md`).

The card's YAML front matter is written by `huggingface_hub.ModelCard.from_template`: `library_name:
ggr-hf`, `tags`, `datasets`, `base_model`, evaluation results as `model-index`, and a `ggr_hf` block
(training settings, figures) that lets a later update keep what it is not given.

Inputs are arguments: this module reads the model folder's `config.json` and weight headers, never
looks for result files by name. Whoever ran the training (the CLI `card` command, the experiment
recipes) passes the metrics, training settings and figures.

Updating, not overwriting: the section between `<!-- ggr-hf:user-notes:start -->` and
`<!-- ggr-hf:user-notes:end -->` is the user's and is kept; metadata keys the card does not manage
(`license`, extra `tags`, ...) are kept; a card written by hand (without the markers) is kept whole
as the notes. Evaluation results, training settings, the data set and figures, when not given, are
taken from the previous card.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ggr_hf import __version__
from ggr_hf.configuration_ggr import GGRConfig
from ggr_hf.configuration_heads import HEADS_MODEL_TYPE, GGRHeadsConfig
from ggr_hf.errors import GGRInputError
from ggr_hf.heads.layout import build_head_layout
from ggr_hf.hub.io import CARD_NAME, read_config_dict, tensor_shapes

USER_NOTES_START = "<!-- ggr-hf:user-notes:start -->"
USER_NOTES_END = "<!-- ggr-hf:user-notes:end -->"
DEFAULT_USER_NOTES = "_Your notes here. This section is kept when the card is regenerated._"
LIBRARY_NAME = "ggr-hf"
BASE_TAGS = ("ggr-hf", "recommendation", "sequential-recommendation", "generative-recommendation")
TASK_TYPE = "recommendation"
TASK_NAME = "Next-item recommendation"

# Numeric entries of an evaluation JSON that are bookkeeping, not metrics.
_NON_METRIC_KEYS = frozenset(
    {"k", "epoch", "step", "steps", "num_users", "num_examples", "num_parameters", "num_heads", "seconds"}
)
# Training settings that say nothing about the model (where files went, how chatty the run was).
_SKIPPED_TRAINING_KEYS = frozenset({"output_dir", "progress", "log_every", "path", "save_best"})
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _md(value: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _is_repo_id(name: str | None) -> bool:
    """Whether `name` can be a Hub id (the Hub rejects other `base_model` values)."""
    return bool(name) and not os.path.isabs(name) and not name.startswith(".") and bool(_REPO_ID.match(name))


def metric_display_name(key: str) -> str:
    """`"ndcg@10_h1"` -> `"NDCG@10 (horizon 1)"`, `"new_interest_recall@10"` -> `"New-interest Recall@10"`."""
    horizon = None
    match = re.match(r"^(.*)_h(\d+)$", key)
    if match:
        key, horizon = match.group(1), match.group(2)
    prefix = ""
    if key.startswith("new_interest_"):
        prefix, key = "New-interest ", key[len("new_interest_") :]
    name, _, cutoff = key.partition("@")
    pretty = {"ndcg": "NDCG", "recall": "Recall", "entropy": "Entropy", "hr": "HR", "mrr": "MRR"}.get(
        name, name.replace("_", " ").capitalize()
    )
    text = f"{prefix}{pretty}" + (f"@{cutoff}" if cutoff else "")
    return text + (f" (horizon {horizon})" if horizon else "")


def load_metrics(
    source: dict[str, Any] | str | os.PathLike | None,
) -> tuple[dict[str, float], str | None, str | None]:
    """Reads evaluation results into `(metrics, split, dataset)`.

    Accepts a flat `{"recall@10": 0.05, ..., "split": "test"}` dict (or JSON file), or the trainer's
    `results.json` (`{"test": {...}, "validation": {...}, ...}`, whose `test` results are used, else
    `validation`). Metrics are the finite numeric entries other than bookkeeping such as `k`.

    Returns:
        `dict[str, float]` in the source's order, the split name (or `None`), the data set (or `None`).
    """
    if source is None:
        return {}, None, None
    path = None
    if not isinstance(source, dict):
        path = Path(source)
        try:
            source = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise GGRInputError(f"{path} is not valid JSON ({err})") from err
        if not isinstance(source, dict):
            raise GGRInputError(f"{path} must hold a JSON object of metrics")
    split = source.get("split") if isinstance(source.get("split"), str) else None
    dataset = source.get("dataset") if isinstance(source.get("dataset"), str) else None
    for name in ("test", "validation", "eval"):
        if isinstance(source.get(name), dict):
            metrics, _, inner_dataset = load_metrics(source[name])
            return metrics, split or name, dataset or inner_dataset
    metrics = {
        key: float(value)
        for key, value in source.items()
        if isinstance(value, (int, float))
        and not isinstance(value, bool)
        and key not in _NON_METRIC_KEYS
        and math.isfinite(float(value))
    }
    if path is not None and not metrics:
        # A file named on purpose that yields nothing would leave the card without results, silently.
        shown = {k: v for k, v in list(source.items())[:3]}
        raise GGRInputError(
            f'{path} holds no finite numeric metrics (e.g. {{"ndcg@10": 0.05}}), got {shown!r}; '
            "pass the JSON written by `ggr-hf evaluate --output` or a run's results.json"
        )
    return metrics, split, dataset


def load_training_args(source: dict[str, Any] | str | os.PathLike | None) -> dict[str, Any]:
    """Training settings from a dict or a JSON / YAML file (e.g. an `ExperimentConfig.to_dict()`)."""
    if source is None:
        return {}
    if isinstance(source, dict):
        return dict(source)
    path = Path(source)
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise GGRInputError(f"{path} is not valid {path.suffix.lstrip('.').upper()} ({err})") from err
    if not isinstance(data, dict):
        raise GGRInputError(f"{path} must hold a mapping of training settings")
    return data


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in d.items():
        name = f"{prefix}{key}"
        if key in _SKIPPED_TRAINING_KEYS:
            continue
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{name}."))
        elif value is not None and value != [] and value != {}:
            rows.append((name, value))
    return rows


def _yaml_safe(value: Any) -> Any:
    """Plain YAML types only (tuples, paths and other objects become lists and strings), without
    the settings the card leaves out (local paths among them)."""
    if isinstance(value, dict):
        return {str(k): _yaml_safe(v) for k, v in value.items() if k not in _SKIPPED_TRAINING_KEYS}
    if isinstance(value, (list, tuple)):
        return [_yaml_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


@dataclass
class GGRHeadRow:
    """One row of the card's heads table."""

    name: str
    prior_values: str
    parameters: int
    percent_of_backbone: float | None

    @property
    def parameters_text(self) -> str:
        return f"{self.parameters:,}"

    @property
    def percent_text(self) -> str:
        return "n/a" if self.percent_of_backbone is None else f"{self.percent_of_backbone:.2f}%"


@dataclass
class GGRCardData:
    """Everything a GGR model card shows, filled from a saved model folder and its training run.

    Build it with [`GGRCardData.from_model_dir`]; [`render_model_card`] turns it into a card.
    """

    model_name: str
    artifact: str  # "model" or "heads"
    backbone_type: str
    backbone_config: dict[str, Any]
    num_items: int
    hidden_size: int
    priors: list[dict[str, Any]]
    composition: str
    fusion: str
    heads: list[GGRHeadRow]
    head_parameters: int
    backbone_parameters: int | None = None
    base_model: str | None = None
    repo_id: str | None = None
    dataset_name: str | None = None
    dataset_split: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    training_args: dict[str, Any] = field(default_factory=dict)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (caption, file name beside the card)
    tags: list[str] = field(default_factory=list)
    license: str | None = None
    ggr_hf_version: str = __version__
    # "ggr" for GGR models and heads; a baseline's own type ("comirec", "remi", "dualvae", ...).
    model_type: str = "ggr"
    architecture: str = "GGRForRecommendation"

    # ------------------------------------------------------------------ building

    @classmethod
    def from_model_dir(
        cls,
        model_dir: str | os.PathLike,
        *,
        metrics: dict[str, float] | None = None,
        training_args: dict[str, Any] | None = None,
        dataset_name: str | None = None,
        dataset_split: str | None = None,
        figures: list[tuple[str, str]] | None = None,
        base_model: str | None = None,
        repo_id: str | None = None,
        model_name: str | None = None,
        tags: list[str] | None = None,
        license: str | None = None,
        config_path: str | os.PathLike | None = None,
        default_base_model: str | None = None,
    ) -> GGRCardData:
        """Reads the config and the weight shapes (headers only) of a full model or heads folder.

        Args:
            model_dir: a folder written by `save_pretrained` or `save_heads`.
            config_path: read this `config.json` instead of the folder's.
            default_base_model: the base model when neither `base_model` nor the config names one
                (e.g. the one a previous card recorded).
            The others: the run's results and settings (see [`render_model_card`]).
        """
        model_dir = Path(model_dir)
        config_dict = (
            json.loads(Path(config_path).read_text())
            if config_path is not None
            else read_config_dict(model_dir)
        )
        model_type = config_dict.get("model_type")
        shapes = tensor_shapes(model_dir)
        head_params = sum(_numel(s) for k, s in shapes.items() if k.startswith("heads."))
        if model_type == GGRConfig.model_type:
            config = GGRConfig.from_dict(config_dict)
            artifact, backbone_config = "model", dict(config.backbone_config)
            backbone_params: int | None = sum(
                _numel(s) for k, s in shapes.items() if k.startswith("backbone.")
            )
            settings = {"fusion": config.fusion}
            base_model = base_model or default_base_model
        elif model_type == HEADS_MODEL_TYPE:
            config = GGRHeadsConfig.from_dict(config_dict)
            artifact, backbone_config = "heads", {}
            backbone_params = config.base_num_parameters
            settings = config.settings
            base_model = base_model or config.base_model_name_or_path or default_base_model
        elif isinstance(config_dict.get("backbone_type"), str) and isinstance(
            config_dict.get("backbone_config"), dict
        ):
            # A baseline of the package (ComiRec, REMI, DualVAE, ...): a backbone sub-config plus the
            # model's own layers; read from the saved dictionary (the card needs no model class).
            return cls._baseline(
                model_dir,
                config_dict,
                shapes,
                model_name=model_name,
                repo_id=repo_id,
                metrics=metrics,
                training_args=training_args,
                dataset_name=dataset_name,
                dataset_split=dataset_split,
                figures=figures,
                tags=tags,
                license=license,
            )
        else:
            raise GGRInputError(
                f"{model_dir} holds a {model_type!r} model; cards are written for ggr-hf's recommendation "
                "models and GGR heads"
            )

        layout = build_head_layout(config.priors, config.composition)
        last_level = max(len(config.priors) - 1, 0) if config.composition == "hierarchical" else 0
        rows = []
        for k, (name, path) in enumerate(zip(layout.names, layout.paths)):
            own = sum(
                _numel(s) for key, s in shapes.items() if key.startswith(f"heads.levels.{last_level}.{k}.")
            )
            values = (
                ", ".join(f"{config.priors[p]['name']} = {config.priors[p]['values'][v]}" for p, v in path)
                or "(none)"
            )
            pct = 100.0 * own / backbone_params if backbone_params else None
            rows.append(GGRHeadRow(name=name, prior_values=values, parameters=own, percent_of_backbone=pct))
        return cls(
            model_name=model_name or (repo_id.split("/")[-1] if repo_id else model_dir.resolve().name),
            artifact=artifact,
            backbone_type=config.backbone_type,
            backbone_config=backbone_config,
            num_items=int(config.num_items),
            hidden_size=int(config.hidden_size),
            priors=list(config.priors),
            composition=config.composition,
            fusion=str(settings.get("fusion", "max")),
            heads=rows,
            head_parameters=int(head_params),
            backbone_parameters=int(backbone_params) if backbone_params else None,
            base_model=base_model,
            repo_id=repo_id,
            dataset_name=dataset_name,
            dataset_split=dataset_split,
            metrics=dict(metrics or {}),
            training_args=dict(training_args or {}),
            figures=list(figures or []),
            tags=list(tags or []),
            license=license,
        )

    @classmethod
    def _baseline(
        cls,
        model_dir: Path,
        config_dict: dict[str, Any],
        shapes: dict[str, list[int]],
        *,
        model_name: str | None,
        repo_id: str | None,
        **run: Any,
    ) -> GGRCardData:
        """The card data of a baseline model folder: no priors, its own layers counted as heads'."""
        backbone_config = dict(config_dict["backbone_config"])
        own = sum(_numel(s) for k, s in shapes.items() if not k.startswith("backbone."))
        backbone_params = sum(_numel(s) for k, s in shapes.items() if k.startswith("backbone."))
        architectures = config_dict.get("architectures") or [str(config_dict.get("model_type"))]
        return cls(
            model_name=model_name or (repo_id.split("/")[-1] if repo_id else model_dir.resolve().name),
            artifact="model",
            backbone_type=str(config_dict["backbone_type"]),
            backbone_config=backbone_config,
            num_items=int(config_dict.get("num_items", backbone_config.get("num_items", 0))),
            hidden_size=int(backbone_config.get("hidden_size", 0)),
            priors=[],
            composition="-",
            fusion=str(config_dict.get("fusion", "max")),
            heads=[],
            head_parameters=int(own),
            backbone_parameters=int(backbone_params) or None,
            repo_id=repo_id,
            metrics=dict(run.get("metrics") or {}),
            training_args=dict(run.get("training_args") or {}),
            dataset_name=run.get("dataset_name"),
            dataset_split=run.get("dataset_split"),
            figures=list(run.get("figures") or []),
            tags=list(run.get("tags") or []),
            license=run.get("license"),
            model_type=str(config_dict.get("model_type")),
            architecture=str(architectures[0]),
        )

    # ------------------------------------------------------------------ metadata

    def eval_results(self) -> list[EvalResult]:
        """One `EvalResult` per metric (the card's `model-index`); none without a data set."""
        if not self.dataset_name:
            return []
        return [
            EvalResult(
                task_type=TASK_TYPE,
                task_name=TASK_NAME,
                dataset_type=self.dataset_name,
                dataset_name=self.dataset_name,
                dataset_split=self.dataset_split,
                metric_type=key,
                metric_name=metric_display_name(key),
                metric_value=value,
            )
            for key, value in self.metrics.items()
        ]

    def to_model_card_data(self) -> ModelCardData:
        """The YAML front matter."""
        tags = list(dict.fromkeys([*BASE_TAGS, self.backbone_type, *self.tags]))
        if self.artifact == "heads":
            tags.append("ggr-heads")
        ggr_block: dict[str, Any] = {"version": self.ggr_hf_version, "artifact": self.artifact}
        if self.training_args:
            ggr_block["training"] = _yaml_safe(self.training_args)
        if self.dataset_name and not self.metrics:
            ggr_block["dataset"] = self.dataset_name
        if self.figures:
            ggr_block["figures"] = dict(self.figures)
        results = self.eval_results()
        return ModelCardData(
            library_name=LIBRARY_NAME,
            license=self.license,
            base_model=self.base_model if _is_repo_id(self.base_model) else None,
            datasets=[self.dataset_name] if self.dataset_name and _is_repo_id(self.dataset_name) else None,
            tags=tags,
            model_name=self.model_name if results else None,
            eval_results=results or None,
            ggr_hf=ggr_block,
        )

    # ------------------------------------------------------------------ text for the template

    @property
    def artifact_text(self) -> str:
        return "heads only" if self.artifact == "heads" else "full model (backbone and heads)"

    @property
    def backbone_label(self) -> str:
        return self.backbone_type.upper()

    @property
    def backbone_summary(self) -> str:
        cfg = self.backbone_config
        parts = []
        if "num_layers" in cfg:
            parts.append(_plural(cfg["num_layers"], "layer"))
        if "num_attention_heads" in cfg:
            parts.append(_plural(cfg["num_attention_heads"], "attention head"))
        if "max_seq_len" in cfg:
            parts.append(f"context {cfg['max_seq_len']}")
        if self.backbone_parameters:
            parts.append(f"{self.backbone_parameters:,} parameters")
        return ", ".join(parts) or "see its own card"

    @property
    def base_model_text(self) -> str:
        if self.base_model:
            return f"`{_md(self.base_model)}`"
        if self.artifact == "model":
            return "none recorded (the backbone is part of this model)"
        return "not recorded (pass the backbone explicitly)"

    @property
    def num_items_text(self) -> str:
        return f"{self.num_items:,}"

    @property
    def head_parameters_text(self) -> str:
        return f"{self.head_parameters:,}"

    @property
    def head_share_text(self) -> str:
        if not self.backbone_parameters:
            return ""
        share = 100.0 * self.head_parameters / self.backbone_parameters
        return f" ({share:.2f}% of the backbone's {self.backbone_parameters:,})"

    @property
    def fusion_text(self) -> str:
        return "its mean score" if self.fusion == "mean" else "its best (max) score"

    @property
    def load_id(self) -> str:
        return self.repo_id or "<path-or-repo-id>"

    @property
    def dataset_text(self) -> str:
        if not self.dataset_name:
            return "not recorded."
        split = f" (results on the `{self.dataset_split}` split)" if self.dataset_split else ""
        return f"**{_md(self.dataset_name)}**{split}."

    @property
    def prior_rows(self) -> list[dict[str, str]]:
        rows = []
        for p in self.priors:
            values = [str(v) for v in p.get("values", [])]
            shown = ", ".join(values[:12]) + (f", ... ({len(values)} in all)" if len(values) > 12 else "")
            rows.append({"name": _md(p.get("name", p["type"])), "type": p["type"], "groups": _md(shown)})
        return rows

    @property
    def head_rows(self) -> list[GGRHeadRow]:
        return [
            GGRHeadRow(_md(h.name), _md(h.prior_values), h.parameters, h.percent_of_backbone)
            for h in self.heads
        ]

    @property
    def training_rows(self) -> list[tuple[str, str]]:
        return [(key, _md(value)) for key, value in _flatten(self.training_args)]

    @property
    def metric_rows(self) -> list[tuple[str, str]]:
        return [(_md(metric_display_name(k)), f"{v:.4f}") for k, v in self.metrics.items()]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def load_template() -> str:
    """The packaged Jinja template (`ggr_hf/resources/model_card_template.md`)."""
    return (
        resources.files("ggr_hf").joinpath("resources", "model_card_template.md").read_text(encoding="utf-8")
    )


def _previous(existing: ModelCard | str | os.PathLike | None) -> ModelCard | None:
    if existing is None or isinstance(existing, ModelCard):
        return existing
    if not Path(existing).is_file():
        return None
    return ModelCard.load(existing, ignore_metadata_errors=True)


def user_notes_of(card: ModelCard | None) -> str | None:
    """The user-written notes of a card: the text between the markers, or a whole hand-written body."""
    if card is None:
        return None
    text = card.text
    start, end = text.find(USER_NOTES_START), text.find(USER_NOTES_END)
    if start >= 0 and end > start:
        return text[start + len(USER_NOTES_START) : end].strip("\n")
    body = text.strip()
    return body or None


def _previous_inputs(card: ModelCard | None) -> dict[str, Any]:
    """What the previous card recorded: metrics, data set and split, training settings, figures."""
    if card is None:
        return {}
    data = card.data.to_dict()
    out: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    for entry in data.get("model-index") or []:
        for result in entry.get("results") or []:
            dataset = result.get("dataset") or {}
            out.setdefault("dataset_name", dataset.get("name"))
            out.setdefault("dataset_split", dataset.get("split"))
            for metric in result.get("metrics") or []:
                if "type" in metric and isinstance(metric.get("value"), (int, float)):
                    metrics[str(metric["type"])] = float(metric["value"])
    if metrics:
        out["metrics"] = metrics
    block = data.get("ggr_hf") or {}
    if isinstance(block, dict):
        if isinstance(block.get("training"), dict):
            out["training_args"] = block["training"]
        if block.get("dataset"):
            out.setdefault("dataset_name", block["dataset"])
        if isinstance(block.get("figures"), dict):
            out["figures"] = dict(block["figures"])
        elif block.get("plot"):  # cards of ggr-hf 0.1.0 recorded one plot
            out["figures"] = {"Accuracy vs diversity": block["plot"]}
    if not out.get("dataset_name") and data.get("datasets"):
        out["dataset_name"] = data["datasets"][0]
    if data.get("base_model"):
        out["base_model"] = data["base_model"]
    return {k: v for k, v in out.items() if v}


def _merge_metadata(old: ModelCard | None, new: ModelCardData) -> ModelCardData:
    """New metadata over the old: keys the card does not manage stay, tags are united."""
    if old is None:
        return new
    old_data, new_data = old.data.to_dict(), new.to_dict()
    merged = {**old_data, **{k: v for k, v in new_data.items() if v is not None}}
    merged["tags"] = list(dict.fromkeys([*(new_data.get("tags") or []), *(old_data.get("tags") or [])]))
    if "model-index" not in new_data:
        merged.pop("model-index", None)  # results are re-rendered from data; stale ones go
    return ModelCardData(**merged)


def _dataset_from_training(training_args: dict[str, Any]) -> str | None:
    for section in (training_args.get("data"), training_args):
        if isinstance(section, dict):
            for key in ("dataset_name", "dataset"):
                if isinstance(section.get(key), str):
                    return section[key]
    return None


# Image formats a Hub model card (Markdown) displays.
FIGURE_SUFFIXES = frozenset({".png", ".svg", ".jpg", ".jpeg", ".gif", ".webp"})


def _figure_files(figures: dict[str, str | os.PathLike]) -> list[tuple[str, str]]:
    """`(caption, file name)` of each figure; two figures may not share a file name beside the card."""
    names = [(str(caption), Path(path).name) for caption, path in figures.items()]
    for caption, path in figures.items():
        if Path(path).suffix.lower() not in FIGURE_SUFFIXES:
            raise GGRInputError(
                f"figure {caption!r}: {path} is not an image the card can show; pass a "
                f"{', '.join(sorted(FIGURE_SUFFIXES))} file"
            )
    seen: dict[str, str] = {}
    for caption, name in names:
        if name in seen:
            raise GGRInputError(f"figures {seen[name]!r} and {caption!r} have the same file name {name!r}")
        seen[name] = caption
    return names


def render_model_card(
    model_dir: str | os.PathLike,
    *,
    metrics: dict[str, Any] | str | os.PathLike | None = None,
    training_args: dict[str, Any] | str | os.PathLike | None = None,
    dataset_name: str | None = None,
    figures: dict[str, str | os.PathLike] | None = None,
    base_model: str | None = None,
    dataset_split: str | None = None,
    repo_id: str | None = None,
    model_name: str | None = None,
    tags: list[str] | None = None,
    license: str | None = None,
    existing: ModelCard | str | os.PathLike | None = None,
    config_path: str | os.PathLike | None = None,
) -> ModelCard:
    """Renders the card of a saved model or heads folder without writing it.

    Args:
        model_dir: the saved folder (its `config.json` and weight headers are read).
        metrics: evaluation results, a dict or a JSON file (see [`load_metrics`]). They fill the
            `model-index` metadata and the evaluation table.
        training_args: training settings, a dict or a JSON / YAML file (nested sections are shown
            as `section.key`).
        dataset_name: the data set (a Hub dataset id where there is one, e.g. `"ml-1m"`); defaults
            to the one in `metrics` or `training_args`.
        figures (`dict[str, str | os.PathLike]`, *optional*): caption -> image file. Each is embedded
            under its caption by its file name, the name it has beside the card ([`build_model_card`]
            copies it there). Without figures, those of the previous card that are beside
            `model_dir` are kept.
        base_model: the backbone's Hub id; defaults to a heads artifact's `base_model_name_or_path`.
        dataset_split: the split of the results; defaults to the one in `metrics`.
        repo_id: the Hub id, for the card's name and loading snippet.
        model_name: the card's title; defaults to the repo name, else the folder's name.
        tags, license: extra metadata.
        existing: the previous card (a `ModelCard` or a path); its user notes and unmanaged
            metadata are kept, and it fills what is not given here.
        config_path: read this `config.json` instead of `model_dir`'s.

    Returns:
        `huggingface_hub.ModelCard`.
    """
    previous = _previous(existing)
    before = _previous_inputs(previous)
    metric_values, split, metrics_dataset = load_metrics(metrics)
    train = load_training_args(training_args) or before.get("training_args", {})
    if not metric_values and metrics is None:
        metric_values = before.get("metrics", {})
        split = split or before.get("dataset_split")
    dataset_name = (
        dataset_name or metrics_dataset or _dataset_from_training(train) or before.get("dataset_name")
    )
    if figures is not None:
        figure_files = _figure_files(figures)
    else:
        figure_files = [
            (str(caption), str(name))
            for caption, name in before.get("figures", {}).items()
            if (Path(model_dir) / str(name)).is_file()
        ]
    card = GGRCardData.from_model_dir(
        model_dir,
        metrics=metric_values,
        training_args=train,
        dataset_name=dataset_name,
        dataset_split=dataset_split or split,
        figures=figure_files,
        base_model=base_model,
        default_base_model=before.get("base_model"),
        repo_id=repo_id,
        model_name=model_name,
        tags=tags,
        license=license,
        config_path=config_path,
    )
    metadata = _merge_metadata(previous, card.to_model_card_data())
    return ModelCard.from_template(
        metadata,
        template_str=load_template(),
        card=_TemplateView(card),
        user_notes=user_notes_of(previous) or DEFAULT_USER_NOTES,
    )


class _TemplateView:
    """`GGRCardData` with its table rows already escaped for Markdown (templates have no filters)."""

    def __init__(self, card: GGRCardData):
        self._card = card

    def __getattr__(self, name: str) -> Any:
        if name == "priors":
            return self._card.prior_rows
        if name == "heads":
            return self._card.head_rows
        if name == "figures":
            return [(_md(caption).replace("]", "\\]"), file) for caption, file in self._card.figures]
        return getattr(self._card, name)


def build_model_card(
    model_dir: str | os.PathLike,
    *,
    metrics: dict[str, Any] | str | os.PathLike | None = None,
    training_args: dict[str, Any] | str | os.PathLike | None = None,
    dataset_name: str | None = None,
    figures: dict[str, str | os.PathLike] | None = None,
    base_model: str | None = None,
    **render_kwargs,
) -> ModelCard:
    """Writes or updates `model_dir/README.md` from the model and the results passed in.

    Inputs not given are taken from the previous card (`model_dir/README.md`, unless `existing` is
    passed). Figures are copied next to the card under their own file names. The card is written to
    a temporary file renamed into place, so a crash leaves the old card whole.

    Args:
        model_dir: a folder written by `save_pretrained` or `save_heads`.
        metrics, training_args, dataset_name, figures, base_model, render_kwargs: see
            [`render_model_card`] (`dataset_split`, `repo_id`, `model_name`, `tags`, `license`,
            `existing`, `config_path`).

    Returns:
        `huggingface_hub.ModelCard`: the card written.
    """
    model_dir = Path(model_dir)
    card_path = model_dir / CARD_NAME
    render_kwargs.setdefault("existing", card_path if card_path.is_file() else None)
    card = render_model_card(
        model_dir,
        metrics=metrics,
        training_args=training_args,
        dataset_name=dataset_name,
        figures=figures,
        base_model=base_model,
        **render_kwargs,
    )
    for path in (figures or {}).values():
        target = model_dir / Path(path).name
        if Path(path).resolve() != target.resolve():
            shutil.copyfile(path, target)
    tmp = card_path.with_name(f".{CARD_NAME}.tmp")
    tmp.write_text(str(card), encoding="utf-8")
    os.replace(tmp, card_path)
    return card
