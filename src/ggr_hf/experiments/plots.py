"""The ablation's figures: accuracy against diversity, and the heads' shares of the top-10."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ggr_hf.experiments.tables import mean_std

__all__ = [
    "ACCURACY_DIVERSITY_PLOT",
    "HEAD_CONTRIBUTIONS_PLOT",
    "plot_accuracy_diversity",
    "plot_head_shares",
]

ACCURACY_DIVERSITY_PLOT = "accuracy_vs_diversity.png"
HEAD_CONTRIBUTIONS_PLOT = "head_contributions.png"


def _pyplot():
    # Imported on use: matplotlib is slow to import and only the ablation draws.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_diversity(results: dict, path: str | Path) -> Path:
    """Recall@10 against H@10 per variant (mean with std error bars), MostPop as the floor."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    for name in results["variants"]:
        runs = results["runs"].get(name) or []
        if not runs:
            continue
        rx, sx = mean_std([r["test"]["entropy@10"] for r in runs])
        ry, sy = mean_std([r["test"]["recall@10"] for r in runs])
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
    plt = _pyplot()
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
