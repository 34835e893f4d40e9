"""The benchmarks' own correctness claims (never their timings): both forms compute the same thing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).parents[1] / "benchmarks" / "bench_heads.py"


def test_bench_heads_compares_equal_computations():
    spec = importlib.util.spec_from_file_location("bench_heads", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # The pair-only loss equals the dense-queries loss, and sparse fusion equals dense fusion (scores
    # and attributions), on every benchmark case at small sizes.
    assert module.check_agreement(quick=True).startswith("checked")
