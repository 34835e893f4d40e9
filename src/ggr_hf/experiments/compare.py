"""The main job: plain HSTU against HSTU + prior heads, same backbone and seeds, K=1 and K=8.

For each split protocol K, the data is split once; for each seed the baseline (no priors) and the
GGR model (the config's priors) are trained with identical backbone settings, selected on
validation NDCG@10 and evaluated once on test. The table shows the most-popular floor (training
popularity, history suppressed), mean +- std over seeds and the relative change against the baseline.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from ggr_hf.experiments.config import ExperimentConfig
from ggr_hf.experiments.experiment import prepare_experiment
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

__all__ = ["describe_priors", "format_table", "run_comparison"]


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
    """
    output_dir = Path(output_dir)
    variants = variants or {
        "HSTU": {"priors": []},
        f"HSTU + {describe_priors(cfg.model.get('priors') or [])}": {},
    }
    results: dict[str, Any] = {"seeds": seeds, "split_ks": split_ks, "variants": list(variants), "runs": {}}
    start = time.time()
    for k in split_ks:
        for name, overrides in variants.items():
            vcfg = cfg.replace(data={"split_k": k}, model=overrides)
            check_seed_folders(vcfg, seeds, output_dir / f"k{k}" / slug(name))
    for k in split_ks:
        base = cfg.replace(data={"split_k": k})
        runs: dict[str, list[dict]] = {}
        popularity = None
        for name, overrides in variants.items():
            vcfg = base.replace(model=overrides)
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
    return results


def format_table(results: dict[str, Any], cfg: ExperimentConfig) -> str:
    """A Markdown table: MostPop, then each variant as mean +- std, with the change against the first."""
    rows = []
    for key, block in results["runs"].items():
        k = int(key[1:])
        split = f"K={k}" + (" (leave-one-out)" if k == 1 else "")
        pop = block["popularity"]
        cells = [f"{pop[m]:.4f}" if m in pop else "n/a" for m, _ in TABLE_METRICS]
        rows.append([split, "MostPop (train popularity)", *cells])
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
            rows.append([split, f"{name} (n={len(runs)})", *cells])
    lines = markdown_table(["Split", "Model", *(label for _, label in TABLE_METRICS)], rows)
    lines.append("")
    lines.append(
        f"Test split, full ranking over all {cfg.data.dataset} items, history suppressed; "
        "checkpoints selected on validation NDCG@10; metrics at K=10 over the split's targets; "
        f"seeds {results['seeds']}; {results['seconds'] / 60:.1f} min in all."
    )
    return "\n".join(lines)
