"""`ggr-hf recommend`: top-k items for one user, each with the head that explains it."""

from __future__ import annotations

import argparse

from ggr_hf.cli.common import add_set_flag, load_model_and_data, positive_int
from ggr_hf.errors import GGRInputError


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Registers `recommend`."""
    p = subparsers.add_parser(
        "recommend", help="top-k items for one user, each with the head that explains it"
    )
    p.add_argument("model")
    p.add_argument("--user", required=True, help="the user's original id in the data set")
    p.add_argument("--k", type=positive_int, default=10, help="number of recommendations (default 10)")
    p.add_argument("--config")
    add_set_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    _, exp, model = load_model_and_data(args)
    bundle = exp.bundle
    user_table = bundle.users
    originals = [
        str(x) for x in (user_table["original_id"] if user_table is not None else range(bundle.num_users))
    ]
    if str(args.user) not in originals:
        raise GGRInputError(
            f"--user {args.user!r} is not in the data set '{bundle.name}'; pass a user's original id"
        )
    uid = originals.index(str(args.user))
    row = bundle.sequences[uid]
    groups = None
    if exp.priors.user_groups is not None:
        groups = [exp.priors.user_groups[uid].tolist()]
    rec = model.recommend([row["item_ids"]], k=args.k, timestamps=[row["timestamps"]], user_groups=groups)
    titles, orig = bundle.items["title"], bundle.items["original_id"]
    print(f"user {args.user}: {len(row['item_ids'])} items in history; top {args.k}:")
    print(f"{'rank':>4}  {'item':>8}  {'score':>7}  {'explained by':<28} title")
    for rank, (item, score, head) in enumerate(
        zip(rec.item_ids[0].tolist(), rec.scores[0].tolist(), rec.head_names[0]), start=1
    ):
        print(f"{rank:>4}  {orig[item - 1]:>8}  {score:7.3f}  {head:<28} {titles[item - 1]}")
    return 0
