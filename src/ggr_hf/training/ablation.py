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
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ggr_hf.evaluation.evaluator import evaluate_model, evaluate_popularity
from ggr_hf.training.compare import TABLE_METRICS as METRICS
from ggr_hf.training.compare import _slug
from ggr_hf.training.config import ExperimentConfig, apply_overrides, experiment_config_from_dict
from ggr_hf.training.trainer import build_model, prepare_experiment, train

logger = logging.getLogger(__name__)


@dataclass
class Variant:
    name: str
    model: dict[str, Any] = field(default_factory=dict)
    eval_of: str | None = None
    fusion: str | None = None


@dataclass
class AblationSpec:
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


def run_ablation(spec: AblationSpec, output_dir: str | Path) -> dict:
    """Trains and evaluates every variant for every seed; writes results.json, results.md and plots."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    runs: dict[str, list[dict]] = {}
    trained: dict[str, list] = {}
    popularity = None
    for variant in spec.variants:
        if variant.eval_of:
            continue
        cfg = spec.base.replace(model=variant.model, training={"progress": False})
        exp = prepare_experiment(cfg)
        if popularity is None:
            popularity = evaluate_popularity(
                exp.split.item_popularity(), exp.split.test, item_categories=exp.item_categories
            )
        for seed in spec.seeds:
            t0 = time.time()
            run_dir = output_dir / "runs" / _slug(variant.name) / f"seed{seed}"
            scfg = cfg.replace(training={"seed": seed, "output_dir": str(run_dir), "save_best": False})
            model = build_model(exp, seed=seed)
            result = train(model, exp, scfg.training)
            test = evaluate_model(
                model, exp.split.test, item_categories=exp.item_categories, user_groups=exp.priors.user_groups
            )
            record = _record(seed, test, model, result.best_epoch, time.time() - t0)
            runs.setdefault(variant.name, []).append(record)
            trained.setdefault(variant.name, []).append((seed, model, exp))
            logger.warning(
                "%s seed %d: recall@10 %.4f (%.0f s)",
                variant.name,
                seed,
                test["recall@10"],
                record["seconds"],
            )
            for other in spec.variants:
                if other.eval_of == variant.name:
                    t1 = time.time()
                    test_o = evaluate_model(
                        model,
                        exp.split.test,
                        item_categories=exp.item_categories,
                        user_groups=exp.priors.user_groups,
                        fusion=other.fusion,
                    )
                    runs.setdefault(other.name, []).append(
                        _record(seed, test_o, model, result.best_epoch, time.time() - t1)
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
    plot_accuracy_diversity(results, output_dir / "accuracy_vs_diversity.png")
    plot_head_shares(results, output_dir / "head_contributions.png")
    return results


def _record(seed: int, test: dict, model, best_epoch: int, seconds: float) -> dict:
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


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if len(arr) == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def format_ablation_table(results: dict) -> str:
    """Markdown: MostPop, then each variant as mean +- std with the change against the first variant."""
    labels = [label for _, label in METRICS]
    lines = [
        "| Variant | heads | " + " | ".join(labels) + " | ΔRecall@10 | ΔNDCG@10 |",
        "|---|---|" + "---|" * (len(METRICS) + 2),
    ]
    pop = results["popularity"] or {}
    lines.append(
        "| MostPop (train popularity) | - | "
        + " | ".join(f"{pop.get(m, math.nan):.4f}" for m, _ in METRICS)
        + " | | |"
    )
    ref = None
    for name in results["variants"]:
        runs = results["runs"].get(name) or []
        if not runs:
            continue
        stats = {m: _mean_std([r["test"].get(m, math.nan) for r in runs]) for m, _ in METRICS}
        if ref is None:
            ref = stats
        delta = [
            f"{(stats[m][0] / ref[m][0] - 1) * 100:+.1f}%" if ref[m][0] else "n/a"
            for m in ("recall@10", "ndcg@10")
        ]
        cells = [f"{mean:.4f} ± {std:.4f}" for mean, std in stats.values()]
        lines.append(
            f"| {name} | {runs[0]['num_heads']} | " + " | ".join(cells) + " | " + " | ".join(delta) + " |"
        )
    lines.append("")
    lines.append(
        f"{results['dataset']}, test split with K={results['split_k']} targets per user, full ranking, history "
        f"suppressed, metrics at 10; mean ± std over seeds {results['seeds']}; checkpoints selected on validation "
        f"NDCG@10; Δ relative to the first row. {results['seconds'] / 60:.1f} min in all."
    )
    return "\n".join(lines)


def plot_accuracy_diversity(results: dict, path: str | Path) -> Path:
    """Recall@10 against H@10 per variant (mean with std error bars), MostPop as the floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    for name in results["variants"]:
        runs = results["runs"].get(name) or []
        if not runs:
            continue
        rx, sx = _mean_std([r["test"]["entropy@10"] for r in runs])
        ry, sy = _mean_std([r["test"]["recall@10"] for r in runs])
        ax.errorbar(rx, ry, xerr=sx, yerr=sy, fmt="o", capsize=3)
        ax.annotate(name, (rx, ry), textcoords="offset points", xytext=(4, 4), fontsize=7)
    pop = results.get("popularity")
    if pop:
        ax.scatter([pop["entropy@10"]], [pop["recall@10"]], marker="x", color="black")
        ax.annotate(
            "MostPop",
            (pop["entropy@10"], pop["recall@10"]),
            textcoords="offset points",
            xytext=(4, -10),
            fontsize=7,
        )
    ax.set_xlabel("diversity: genre entropy H@10 (bits)")
    ax.set_ylabel("accuracy: Recall@10")
    ax.set_title(f"{results['dataset']}, test split K={results['split_k']}, mean ± std over seeds")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_head_shares(results: dict, path: str | Path, max_variants: int = 4) -> Path | None:
    """Per-head contributions: the share of top-10 slots each head explains (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = []
    for name in results["variants"]:
        runs = results["runs"].get(name) or []
        if runs and runs[0].get("head_share@10") and 1 < len(runs[0]["head_share@10"]) <= 40:
            chosen.append(name)
    chosen = chosen[:max_variants]
    if not chosen:
        return None
    fig, axes = plt.subplots(len(chosen), 1, figsize=(9, 2.6 * len(chosen)), squeeze=False)
    for ax, name in zip(axes[:, 0], chosen):
        runs = results["runs"][name]
        heads = list(runs[0]["head_share@10"])
        share = np.mean([[r["head_share@10"].get(h, 0.0) for h in heads] for r in runs], axis=0)
        ax.bar(range(len(heads)), share)
        ax.set_xticks(range(len(heads)))
        ax.set_xticklabels(heads, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("share of top-10")
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
