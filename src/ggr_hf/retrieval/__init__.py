"""Approximate retrieval over a model's catalogue (optional dependency: `pip install ggr-hf[ann]`).

[`ApproximateIndex`] approximates the exact fused top-k (`score_items(topk=k)`, max fusion) with one
faiss inverted-file index per prior group; `ggr-hf index build --model DIR` builds it from a saved
model into `DIR/ann_index/`. faiss is imported only when an index is built, loaded or searched.
"""

from ggr_hf.retrieval.ann import (
    ANN_INDEX_DIR,
    MANIFEST_NAME,
    ApproximateIndex,
    GGRMissingDependencyError,
    import_faiss,
)

__all__ = ["ANN_INDEX_DIR", "MANIFEST_NAME", "ApproximateIndex", "GGRMissingDependencyError", "import_faiss"]
