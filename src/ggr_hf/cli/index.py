"""`ggr-hf index build`: the approximate-retrieval index of a saved model, written beside it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ggr_hf.cli.common import positive_int
from ggr_hf.errors import GGRFileNotFoundError, GGRInputError


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Registers `index build`."""
    p = subparsers.add_parser("index", help="approximate-retrieval indexes (needs `pip install ggr-hf[ann]`)")
    sub = p.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    b = sub.add_parser(
        "build",
        help="build the faiss index of a saved model into MODEL/ann_index/",
        description="One faiss inverted-file index per prior group of the model's catalogue, sharing one "
        "coarse quantizer, written atomically to MODEL/ann_index/ (faiss files + a JSON manifest with the "
        "model's fingerprint, so that a stale index is refused). Approximates max fusion only.",
    )
    b.add_argument("--model", required=True, help="a saved model folder (any ggr-hf recommendation model)")
    b.add_argument(
        "--nlist", type=positive_int, help="inverted lists (default: from the catalogue size; 1 = exhaustive)"
    )
    b.add_argument("--nprobe", type=positive_int, help="lists searched per query (default: nlist / 16)")
    b.add_argument("--seed", type=int, default=0, help="seed of the k-means training sample (default 0)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing MODEL/ann_index/")
    b.set_defaults(run=run_build)


def run_build(args: argparse.Namespace) -> int:
    from ggr_hf.recommenders import load_recommender
    from ggr_hf.retrieval import ANN_INDEX_DIR, ApproximateIndex, import_faiss

    import_faiss()  # before the model loads: a missing dependency is the first thing to hear about
    model_dir = Path(args.model)
    if not model_dir.is_dir():
        raise GGRFileNotFoundError(f"--model {model_dir}: no such model folder")
    target = model_dir / ANN_INDEX_DIR
    if target.exists() and not args.overwrite:
        raise GGRInputError(f"{target} already exists; pass --overwrite to rebuild it")
    start = time.perf_counter()
    model = load_recommender(model_dir).eval()
    index = ApproximateIndex.build(model, nlist=args.nlist, nprobe=args.nprobe, seed=args.seed)
    index.save_pretrained(target, overwrite=args.overwrite)
    items = sum(int(i.ntotal) for i in index.indexes)
    print(
        f"wrote {target}: {len(index.groups)} groups ({index.fingerprint['num_heads']} heads), "
        f"{items:,} (item, group) entries, nlist {index.nlist}, nprobe {index.nprobe}, "
        f"{index.memory_bytes() / 2**20:,.1f} MiB, {time.perf_counter() - start:.1f} s"
    )
    return 0
