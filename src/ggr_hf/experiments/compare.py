"""`compare`: several models on one data set, split protocols and seeds, in one table.

By default (the main job) plain HSTU against HSTU + the config's prior heads. With a models file
(`load_model_list`) any list of models: baselines (ComiRec, REMI, DualVAE, SASRec), plain backbones
and GGR configurations, each given by its whole `model:` section.

For each split protocol K, the data is split once; for each seed every model is trained with the
config's data and training settings, selected on validation NDCG@10 and evaluated once on test. The
table shows the most-popular floor (training popularity, history suppressed), mean +- std over seeds,
the relative change against the first model, parameters and training time; a plot shows diversity
(H@10) against accuracy (Recall@10) per split.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from ggr_hf.errors import GGRConfigError, GGRFileNotFoundError
from ggr_hf.experiments.config import ExperimentConfig, read_yaml_mapping
from ggr_hf.experiments.experiment import prepare_experiment
from ggr_hf.experiments.plots import plot_accuracy_diversity
from ggr_hf.experiments.runner import Report, check_seed_folders, run_seeds, slug
from ggr_hf.experiments.tables import (
    TABLE_METRICS,
    format_mean_std,
    markdown_table,
    mean_std,
    relative_change,
)
from ggr_hf.hub.io import write_text_atomic
from ggr_hf.priors import describe_prior

__all__ = ["describe_priors", "format_table", "load_model_list", "plot_comparison", "run_comparison"]

COMPARISON_PLOT = "accuracy_vs_diversity_k{k}.png"


def describe_priors(priors: list[dict]) -> str:
    """`item:genres + temporal:time/S=4`-style summary of prior specifications (each prior's plug-in
    describes itself)."""
    return " + ".join(describe_prior(p) for p in priors) if priors else "none"


def run_comparison(
    cfg: ExperimentConfig,
    seeds: list[int],
    split_ks: list[int],
    output_dir: str | Path,
    variants: dict[str, dict] | None = None,
    report: Report | None = None,
    models: dict[str, dict] | None = None,
) -> dict[str, Any]:
    """Trains every variant for every seed and split protocol; returns and writes the results.

    Args:
        cfg: the base experiment (data, model, training).
        seeds: training seeds (the same for every variant).
        split_ks: split protocols (targets per user: 1 = leave-one-out, 8 = the paper's K).
        output_dir: where `results.json` and `results.md` go (runs in `k{K}/{variant}/seed{seed}`).
        variants: name -> overrides of the `model` section. Default: `{"HSTU": {"priors": []},
            "HSTU + priors": {}}` (the config's own priors).
        report: called with one line per finished run (e.g. `print`).
        models: name -> a whole `model:` section replacing the config's (`load_model_list`); given,
            `variants` is ignored. The first model is the reference of the relative changes.
    """
    output_dir = Path(output_dir)
    if models:
        configs = {name: cfg.with_model(section) for name, section in models.items()}
    else:
        variants = variants or {
            "HSTU": {"priors": []},
            f"HSTU + {describe_priors(cfg.model.get('priors') or [])}": {},
        }
        configs = {name: cfg.replace(model=overrides) for name, overrides in variants.items()}
    results: dict[str, Any] = {
        "dataset": cfg.data.dataset,
        "seeds": seeds,
        "split_ks": split_ks,
        "variants": list(configs),
        "runs": {},
    }
    start = time.time()
    for k in split_ks:
        for name, vcfg in configs.items():
            check_seed_folders(vcfg.replace(data={"split_k": k}), seeds, output_dir / f"k{k}" / slug(name))
    for k in split_ks:
        runs: dict[str, list[dict]] = {}
        popularity = None
        for name, model_cfg in configs.items():
            vcfg = model_cfg.replace(data={"split_k": k})
            exp = prepare_experiment(vcfg)
            run_dir = output_dir / f"k{k}" / slug(name)
            for done in run_seeds(vcfg, exp, seeds, run_dir, label=f"K={k} {name}", report=report):
                runs.setdefault(name, []).append({"seed": done.seed, **done.run.result})
                popularity = done.run.result["popularity_test"]
        results["runs"][f"k{k}"] = {"popularity": popularity, "models": runs}
    results["seconds"] = time.time() - start
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(output_dir / "results.json", json.dumps(results, indent=2))
    write_text_atomic(output_dir / "results.md", format_table(results, cfg) + "\n")
    for k in split_ks:
        plot_comparison(results, k, output_dir / COMPARISON_PLOT.format(k=k))
    return results


def load_model_list(path: str | Path) -> dict[str, dict[str, Any]]:
    """Reads a models file for `compare`:

    ```yaml
    models:
      - name: SASRec
        config: ml100k_sasrec.yaml          # the model section of another experiment file
      - name: ComiRec-SA
        model: {model_type: comirec, extractor: sa, backbone_type: hstu, backbone_config: {...}}
    ```

    Each entry has a unique `name` and either `model` (a whole `model:` section) or `config` (an
    experiment file, relative to the models file, whose `model:` section is taken).

    Raises:
        `GGRConfigError`: naming the file, the entry and what is wrong.
    """
    path = Path(path)
    doc = read_yaml_mapping(path, "models file", "a 'models' list")
    if set(doc) != {"models"} or not isinstance(doc["models"], list) or not doc["models"]:
        raise GGRConfigError(
            f"{path}: expected one key 'models' holding a non-empty list, got keys {sorted(doc)}"
        )
    out: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(doc["models"]):
        where = f"{path}: models[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise GGRConfigError(f"{where} must be a mapping with a non-empty string 'name', got {entry!r}")
        name = entry["name"]
        if name in out:
            raise GGRConfigError(f"{where}: the name {name!r} is used twice; names label the table rows")
        extra = sorted(set(entry) - {"name", "model", "config"})
        if extra or ("model" in entry) == ("config" in entry):
            raise GGRConfigError(
                f"{where} ('{name}') needs exactly one of 'model' (a model section) or 'config' (an "
                f"experiment file){f'; unknown keys {extra}' if extra else ''}"
            )
        if "config" in entry:
            source = path.parent / str(entry["config"])
            try:
                section = read_yaml_mapping(source, "experiment file", "data, model and training").get(
                    "model"
                )
            except GGRFileNotFoundError as err:
                raise GGRFileNotFoundError(f"{where} ('{name}'): {err}") from None
            if not isinstance(section, dict):
                raise GGRConfigError(f"{where} ('{name}'): {source} has no 'model' mapping")
        else:
            section = entry["model"]
            if not isinstance(section, dict):
                raise GGRConfigError(f"{where} ('{name}').model must be a mapping, got {section!r}")
        out[name] = dict(section)
    return out


def plot_comparison(results: dict[str, Any], k: int, path: str | Path) -> Path:
    """Diversity (H@10) against accuracy (Recall@10) for every model on split K, MostPop as the floor."""
    block = results["runs"][f"k{k}"]
    view = {
        "dataset": results.get("dataset", ""),
        "split_k": k,
        "variants": list(block["models"]),
        "runs": block["models"],
        "popularity": block["popularity"],
    }
    return plot_accuracy_diversity(view, path)


def format_table(results: dict[str, Any], cfg: ExperimentConfig) -> str:
    """A Markdown table: MostPop, then each variant as mean +- std, with the change against the first."""
    rows = []
    for key, block in results["runs"].items():
        k = int(key[1:])
        split = f"K={k}" + (" (leave-one-out)" if k == 1 else "")
        pop = block["popularity"]
        cells = [f"{pop[m]:.4f}" if m in pop else "n/a" for m, _ in TABLE_METRICS]
        rows.append([split, "MostPop (train popularity)", *cells, "0", "-"])
        base_means: dict[str, float] = {}
        for i, (name, runs) in enumerate(block["models"].items()):
            cells = []
            for m, _ in TABLE_METRICS:
                mean, std = mean_std([r["test"].get(m, math.nan) for r in runs])
                cell = format_mean_std(mean, std)
                if i == 0:
                    base_means[m] = mean
                elif (change := relative_change(mean, base_means.get(m, 0.0))) is not None:
                    cell += f" ({change})"
                cells.append(cell)
            params = runs[0].get("num_parameters")
            minutes, _ = mean_std([r["train"]["seconds"] / 60 for r in runs if "train" in r])
            cells += [
                f"{params / 1e3:.0f}k" if params else "n/a",
                f"{minutes:.1f}" if minutes == minutes else "n/a",
            ]
            rows.append([split, f"{name} (n={len(runs)})", *cells])
    header = ["Split", "Model", *(label for _, label in TABLE_METRICS), "Params", "Train min"]
    lines = markdown_table(header, rows)
    lines.append("")
    lines.append(
        f"Test split, full ranking over all {cfg.data.dataset} items, history suppressed; "
        "checkpoints selected on validation NDCG@10; metrics at K=10 over the split's targets; "
        f"seeds {results['seeds']}; Params: trainable and frozen weights; Train min: mean training "
        f"time per run (with validation); {results['seconds'] / 60:.1f} min in all."
    )
    return "\n".join(lines)
