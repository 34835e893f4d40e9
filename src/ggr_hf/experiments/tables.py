"""Mean +- std over seeds and the Markdown tables of `compare` and `ablate`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "TABLE_METRICS",
    "format_mean_std",
    "markdown_row",
    "markdown_table",
    "mean_std",
    "relative_change",
]

# (metric key, column label) of the result tables.
TABLE_METRICS = (
    ("recall@10", "Recall@10"),
    ("ndcg@10", "NDCG@10"),
    ("entropy@10", "H@10"),
    ("new_interest_recall@10", "NI-Recall@10"),
)


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for one value) of the values that are not None
    or NaN; `(nan, nan)` when none is."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if len(arr) == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def format_mean_std(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


def relative_change(value: float, reference: float) -> str | None:
    """`+1.2%`-style change of `value` against `reference`; None when the reference is 0 or NaN."""
    if not reference or math.isnan(reference):
        return None
    return f"{(value / reference - 1) * 100:+.1f}%"


def markdown_row(cells: Sequence[str]) -> str:
    """`| a | b |`; an empty cell is `| |`."""
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table."""
    return [markdown_row(header), "|" + "---|" * len(header), *(markdown_row(r) for r in rows)]
