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

from ggr_hf.configuration_ggr import FUSIONS
from ggr_hf.errors import GGRConfigError
from ggr_hf.experiments.config import (
    ExperimentConfig,
    apply_overrides,
    experiment_config_from_dict,
    read_yaml_mapping,
)
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
from ggr_hf.modeling_recommender import RecommenderMixin

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


def _check_variant(path: Path, i: int, v: Any, names: set[str]) -> Variant:
    if not isinstance(v, dict):
        raise GGRConfigError(f"{path}: variants[{i}] must be a mapping with 'name', got {v!r}")
    extra = sorted(str(k) for k in set(v) - {"name", "model", "eval_of", "fusion"})
    if extra or "name" not in v:
        raise GGRConfigError(
            f"{path}: variants[{i}] needs 'name' and allows model, eval_of, fusion; got {extra}"
        )
    name = v["name"]
    if not isinstance(name, str) or not name:
        raise GGRConfigError(f"{path}: variants[{i}].name must be a non-empty string, got {name!r}")
    if name in names:
        raise GGRConfigError(
            f"{path}: variants[{i}]: the name {name!r} is used twice; names label the table's rows"
        )
    if not isinstance(v.get("model") or {}, dict):
        raise GGRConfigError(f"{path}: variants[{i}] ('{name}').model must be a mapping, got {v['model']!r}")
    if v.get("eval_of") and v["eval_of"] not in names:
        raise GGRConfigError(
            f"{path}: variants[{i}] ('{name}') evaluates '{v['eval_of']}', defined later or never"
        )
    if v.get("fusion") not in (None, *FUSIONS):
        raise GGRConfigError(
            f"{path}: variants[{i}] ('{name}').fusion must be one of {list(FUSIONS)}, got {v['fusion']!r}"
        )
    return Variant(name, dict(v.get("model") or {}), v.get("eval_of"), v.get("fusion"))


def load_ablation_spec(path: str | Path, overrides: list[str] | None = None) -> AblationSpec:
    """Reads an ablation YAML (see the module docstring), checking everything before any training:
    the base experiment, and the base with each variant's `model` (named `variants[i]`).

    Raises:
        `GGRFileNotFoundError`: the file or its base experiment does not exist.
        `GGRConfigError`: an unknown key, a value of the wrong type, or a variant's bad model field.
    """
    path = Path(path)
    d = read_yaml_mapping(path, "ablation config", "keys base, overrides, seeds, split_k, variants")
    unknown = sorted(str(k) for k in set(d) - {"base", "overrides", "seeds", "split_k", "variants"})
    if unknown:
        raise GGRConfigError(
            f"{path}: unknown key(s) {unknown}; allowed: base, overrides, seeds, split_k, variants"
        )
    if not isinstance(d.get("base"), str):
        raise GGRConfigError(
            f"{path}: base must name an experiment YAML (relative to this file), got {d.get('base')!r}"
        )
    base_path = (path.parent / d["base"]).resolve()
    base = read_yaml_mapping(base_path, f"{path}: base experiment", "sections data, model, training")
    extra = d.get("overrides") or {}
    if not isinstance(extra, dict) or not all(isinstance(x, dict) for x in extra.values()):
        raise GGRConfigError(f"{path}: overrides must map sections to mappings of key: value, got {extra!r}")
    for section, values in extra.items():
        base.setdefault(section, {}).update(values)
    if "split_k" in d:
        base.setdefault("data", {})["split_k"] = d["split_k"]
    base = apply_overrides(base, overrides)
    seeds = d.get("seeds") or [0]
    if not isinstance(seeds, list) or not all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds
    ):
        raise GGRConfigError(f"{path}: seeds must be a list of integers >= 0, got {seeds!r}")
    if not isinstance(d.get("variants") or [], list):
        raise GGRConfigError(
            f"{path}: variants must be a list of mappings with 'name', got {d['variants']!r}"
        )
    variants: list[Variant] = []
    names: set[str] = set()
    for i, v in enumerate(d.get("variants") or []):
        variants.append(_check_variant(path, i, v, names))
        names.add(variants[-1].name)
    if not variants:
        raise GGRConfigError(f"{path}: no variants; list at least one under 'variants'")
    base_config = experiment_config_from_dict(base, str(base_path))
    for i, variant in enumerate(variants):
        d_variant = base_config.to_dict()
        d_variant["model"].update(variant.model)
        experiment_config_from_dict(d_variant, f"{path}: variants[{i}] ('{variant.name}')")
    return AblationSpec(base=base_config, seeds=list(seeds), variants=variants, source=str(path))


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


def _record(seed: int, test: dict, model: RecommenderMixin, best_epoch: int, seconds: float) -> dict:
    return {
        "seed": seed,
        "test": {k: v for k, v in test.items() if k != "head_share@10"},
        "head_share@10": test.get("head_share@10"),
        "num_heads": model.num_heads,
        # Everything on top of the encoder counts as the model's own (GGR's heads, ComiRec's extractor).
        "head_parameters": int(
            sum(p.numel() for n, p in model.named_parameters() if not n.startswith("backbone."))
        ),
        "backbone_parameters": int(
            sum(p.numel() for n, p in model.named_parameters() if n.startswith("backbone."))
        ),
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
