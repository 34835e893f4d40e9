"""The ablation recipe: many prior configurations on one data set, over seeds, as a table and a plot.

An ablation file names a base experiment and a list of variants:

    base: ml100k_main.yaml          # an experiment YAML, relative to this file
    overrides: {training: {epochs: 15}}
    seeds: [0, 1, 2]
    split_k: 8
    variants:
      - name: HSTU
        model: {priors: []}
      - name: genre
        model: {priors: [{type: item, field: genres}]}
      - name: genre, mean fusion    # no training: the "genre" models evaluated with mean fusion
        eval_of: genre
        fusion: mean

Every trained variant is selected on validation NDCG@10 and evaluated once on test. The first
variant is the reference for the relative columns. The most-popular floor is always shown.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ggr_hf.experiments.config import ExperimentConfig, apply_overrides, experiment_config_from_dict
from ggr_hf.experiments.experiment import prepare_experiment
from ggr_hf.experiments.plots import (
    ACCURACY_DIVERSITY_PLOT,
    HEAD_CONTRIBUTIONS_PLOT,
    plot_accuracy_diversity,
    plot_head_shares,
)
from ggr_hf.experiments.runner import Report, check_seed_folders, run_seeds, slug
from ggr_hf.experiments.tables import (
    TABLE_METRICS,
    format_mean_std,
    markdown_table,
    mean_std,
    relative_change,
)
from ggr_hf.modeling_ggr import GGRForRecommendation

__all__ = ["AblationSpec", "Variant", "format_ablation_table", "load_ablation_spec", "run_ablation"]


@dataclass
class Variant:
    """One row of the ablation: a `model` override trained per seed, or (`eval_of`) the models of an
    earlier variant evaluated with another `fusion`."""

    name: str
    model: dict[str, Any] = field(default_factory=dict)
    eval_of: str | None = None
    fusion: str | None = None


@dataclass
class AblationSpec:
    """A parsed ablation file: the base experiment, the seeds and the variants in row order."""

    base: ExperimentConfig
    seeds: list[int]
    variants: list[Variant]
    source: str = ""


def load_ablation_spec(path: str | Path, overrides: list[str] | None = None) -> AblationSpec:
    """Reads an ablation YAML (see the module docstring); unknown keys are errors."""
    path = Path(path)
    d = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(d) - {"base", "overrides", "seeds", "split_k", "variants"})
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}")
    base_path = (path.parent / d["base"]).resolve()
    base = yaml.safe_load(base_path.read_text()) or {}
    for section, values in (d.get("overrides") or {}).items():
        base.setdefault(section, {}).update(values)
    if "split_k" in d:
        base.setdefault("data", {})["split_k"] = d["split_k"]
    base = apply_overrides(base, overrides)
    variants = []
    names: set[str] = set()
    for i, v in enumerate(d.get("variants") or []):
        extra = sorted(set(v) - {"name", "model", "eval_of", "fusion"})
        if extra or "name" not in v:
            raise ValueError(
                f"{path}: variants[{i}] needs 'name' and allows model, eval_of, fusion; got {extra}"
            )
        if v.get("eval_of") and v["eval_of"] not in names:
            raise ValueError(
                f"{path}: variants[{i}] ('{v['name']}') evaluates '{v['eval_of']}', defined later or never"
            )
        names.add(v["name"])
        variants.append(Variant(v["name"], dict(v.get("model") or {}), v.get("eval_of"), v.get("fusion")))
    if not variants:
        raise ValueError(f"{path}: no variants")
    return AblationSpec(
        base=experiment_config_from_dict(base, str(base_path)),
        seeds=list(d.get("seeds") or [0]),
        variants=variants,
        source=str(path),
    )


def run_ablation(spec: AblationSpec, output_dir: str | Path, report: Report | None = None) -> dict[str, Any]:
    """Trains and evaluates every variant for every seed; writes results.json, results.md and plots.

    Args:
        spec: the ablation.
        output_dir: where the results and figures go (runs in `runs/{variant}/seed{seed}`).
        report: called with one line per finished run (e.g. `print`).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    runs: dict[str, list[dict]] = {}
    popularity = None
    trained = [v for v in spec.variants if not v.eval_of]
    for variant in trained:
        cfg = spec.base.replace(model=variant.model, training={"save_best": False})
        check_seed_folders(cfg, spec.seeds, output_dir / "runs" / slug(variant.name))
    for variant in trained:
        cfg = spec.base.replace(model=variant.model, training={"save_best": False})
        exp = prepare_experiment(cfg)
        run_dir = output_dir / "runs" / slug(variant.name)
        for done in run_seeds(cfg, exp, spec.seeds, run_dir, label=variant.name, report=report):
            result, model = done.run.result, done.run.model
            popularity = popularity or result["popularity_test"]
            best_epoch = result["train"]["best_epoch"]
            runs.setdefault(variant.name, []).append(
                _record(done.seed, result["test"], model, best_epoch, done.seconds)
            )
            for other in spec.variants:
                if other.eval_of == variant.name:
                    t0 = time.time()
                    test = exp.evaluate(model, "test", fusion=other.fusion)
                    runs.setdefault(other.name, []).append(
                        _record(done.seed, test, model, best_epoch, time.time() - t0)
                    )
    results = {
        "source": spec.source,
        "seeds": spec.seeds,
        "split_k": spec.base.data.split_k,
        "dataset": spec.base.data.dataset,
        "popularity": popularity,
        "variants": [v.name for v in spec.variants],
        "runs": runs,
        "seconds": time.time() - start,
    }
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    (output_dir / "results.md").write_text(format_ablation_table(results) + "\n")
    plot_accuracy_diversity(results, output_dir / ACCURACY_DIVERSITY_PLOT)
    plot_head_shares(results, output_dir / HEAD_CONTRIBUTIONS_PLOT)
    return results


def _record(seed: int, test: dict, model: GGRForRecommendation, best_epoch: int, seconds: float) -> dict:
    return {
        "seed": seed,
        "test": {k: v for k, v in test.items() if k != "head_share@10"},
        "head_share@10": test.get("head_share@10"),
        "num_heads": model.num_heads,
        "head_parameters": int(sum(p.numel() for p in model.heads.parameters())),
        "backbone_parameters": int(sum(p.numel() for p in model.backbone.parameters())),
        "best_epoch": best_epoch,
        "seconds": seconds,
    }


def format_ablation_table(results: dict[str, Any]) -> str:
    """Markdown: MostPop, then each variant as mean +- std with the change against the first variant."""
    pop = results["popularity"] or {}
    rows = [
        [
            "MostPop (train popularity)",
            "-",
            *(f"{pop.get(m, math.nan):.4f}" for m, _ in TABLE_METRICS),
            "",
            "",
        ]
    ]
    ref = None
    for name in results["variants"]:
        runs = results["runs"].get(name) or []
        if not runs:
            continue
        stats = {m: mean_std([r["test"].get(m, math.nan) for r in runs]) for m, _ in TABLE_METRICS}
        ref = ref or stats
        delta = [relative_change(stats[m][0], ref[m][0]) or "n/a" for m in ("recall@10", "ndcg@10")]
        cells = [format_mean_std(mean, std) for mean, std in stats.values()]
        rows.append([name, str(runs[0]["num_heads"]), *cells, *delta])
    header = ["Variant", "heads", *(label for _, label in TABLE_METRICS), "ΔRecall@10", "ΔNDCG@10"]
    lines = markdown_table(header, rows)
    lines.append("")
    lines.append(
        f"{results['dataset']}, test split with K={results['split_k']} targets per user, full ranking, history "
        f"suppressed, metrics at 10; mean ± std over seeds {results['seeds']}; checkpoints selected on validation "
        f"NDCG@10; Δ relative to the first row. {results['seconds'] / 60:.1f} min in all."
    )
    return "\n".join(lines)
