"""The main job: plain HSTU against HSTU + prior heads, same backbone and seeds, K=1 and K=8.

For each split protocol K, the data is split once; for each seed the baseline (no priors) and the
GGR model (the config's priors) are trained with identical backbone settings, selected on
validation NDCG@10 and evaluated once on test. The table shows the most-popular floor (training
popularity, history suppressed), mean +- std over seeds and the relative change against the baseline.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from ggr_hf.training.config import ExperimentConfig
from ggr_hf.training.trainer import prepare_experiment, run_experiment

logger = logging.getLogger(__name__)

TABLE_METRICS = (
    ("recall@10", "Recall@10"),
    ("ndcg@10", "NDCG@10"),
    ("entropy@10", "H@10"),
    ("new_interest_recall@10", "NI-Recall@10"),
)


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def describe_priors(priors: list[dict]) -> str:
    if not priors:
        return "none"
    return " + ".join(
        f"{p['type']}:{p.get('field') or p.get('name')}"
        + (f"/S={p['segments']}" if p["type"] == "temporal" else "")
        for p in priors
    )


def run_comparison(
    cfg: ExperimentConfig,
    seeds: list[int],
    split_ks: list[int],
    output_dir: str | Path,
    variants: dict[str, dict] | None = None,
) -> dict:
    """Trains every variant for every seed and split protocol; returns and writes the results.

    Args:
        cfg: the base experiment (data, model, training).
        seeds: training seeds (the same for every variant).
        split_ks: split protocols (targets per user: 1 = leave-one-out, 8 = the paper's K).
        output_dir: where `results.json` and `results.md` go (runs in sub-folders).
        variants: name -> overrides of the `model` section. Default: `{"HSTU": {"priors": []},
            "HSTU + priors": {}}` (the config's own priors).
    """
    output_dir = Path(output_dir)
    variants = variants or {
        "HSTU": {"priors": []},
        f"HSTU + {describe_priors(cfg.model.get('priors') or [])}": {},
    }
    results: dict = {"seeds": seeds, "split_ks": split_ks, "variants": list(variants), "runs": {}}
    start = time.time()
    for k in split_ks:
        base = cfg.replace(data={"split_k": k})
        runs: dict[str, list[dict]] = {}
        popularity = None
        for name, overrides in variants.items():
            vcfg = base.replace(model=overrides)
            exp = prepare_experiment(vcfg)
            for seed in seeds:
                run_dir = output_dir / f"k{k}" / _slug(name) / f"seed{seed}"
                scfg = vcfg.replace(training={"seed": seed, "output_dir": str(run_dir)})
                t0 = time.time()
                out = run_experiment(scfg, exp=exp)
                logger.warning(
                    "K=%d %s seed %d: test recall@10 %.4f ndcg@10 %.4f (%.0f s)",
                    k,
                    name,
                    seed,
                    out["test"]["recall@10"],
                    out["test"]["ndcg@10"],
                    time.time() - t0,
                )
                runs.setdefault(name, []).append({"seed": seed, **out})
                popularity = out["popularity_test"]
        results["runs"][f"k{k}"] = {"popularity": popularity, "models": runs}
    results["seconds"] = time.time() - start
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    table = format_table(results, cfg)
    (output_dir / "results.md").write_text(table + "\n")
    return results


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()


def format_table(results: dict, cfg: ExperimentConfig) -> str:
    """A Markdown table: MostPop, then each variant as mean +- std, with the change against the first."""
    head = "| Split | Model | " + " | ".join(label for _, label in TABLE_METRICS) + " |"
    lines = [head, "|" + "---|" * (2 + len(TABLE_METRICS))]
    for key, block in results["runs"].items():
        k = int(key[1:])
        split = f"K={k}" + (" (leave-one-out)" if k == 1 else "")
        pop = block["popularity"]
        cells = [f"{pop[m]:.4f}" if m in pop else "n/a" for m, _ in TABLE_METRICS]
        lines.append(f"| {split} | MostPop (train popularity) | " + " | ".join(cells) + " |")
        names = list(block["models"])
        base_means = {}
        for i, name in enumerate(names):
            runs = block["models"][name]
            cells = []
            for m, _ in TABLE_METRICS:
                mean, std = _mean_std([r["test"].get(m, math.nan) for r in runs])
                cell = f"{mean:.4f} ± {std:.4f}"
                if i == 0:
                    base_means[m] = mean
                elif base_means.get(m):
                    cell += f" ({(mean / base_means[m] - 1) * 100:+.1f}%)"
                cells.append(cell)
            lines.append(f"| {split} | {name} (n={len(runs)}) | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Test split, full ranking over all {cfg.data.dataset} items, history suppressed; "
        "checkpoints selected on validation NDCG@10; metrics at K=10 over the split's targets; "
        f"seeds {results['seeds']}; {results['seconds'] / 60:.1f} min in all."
    )
    return "\n".join(lines)
