"""A small synthetic data set with planted structure, for tests, examples and smoke runs.

The generator plants three kinds of structure that a sequential recommender can pick up in a few
steps of training:

- **categories** (`genres`, like MovieLens' genres): every item has a primary category and, for about a
  third of the items, a second one; items of a category form a fixed *cycle* (in item id order);
- **short-term drift**: each user is "in" one category at a time; at each step the user stays in it with
  probability `short_term_weight`, else moves to one of their 1-2 favourite categories (mostly) or to a
  random one. The next item comes from the current category, and with probability `cycle_prob` it is
  the successor of the previous item in that category's cycle, so consecutive items share a category far
  more often than chance and the exact next item is often predictable;
- **user attributes**: `occupation` follows the first favourite category (with some noise), `age`
  follows it loosely, so side information carries signal too.

Optional event types (`num_events > 0`) depend on the category (each category has a preferred event).
"""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa

from ggr_hf.errors import GGRInputError

from .movielens_files import age_band
from .schema import RecDataBundle

__all__ = ["SYNTHETIC_EVENT_NAMES", "SYNTHETIC_OCCUPATIONS", "make_synthetic"]

SYNTHETIC_OCCUPATIONS = ("student", "engineer", "artist", "writer", "doctor")
SYNTHETIC_EVENT_NAMES = ("view", "like", "add_to_cart", "buy")
_START_TIME = 1_600_000_000  # 2020-09-13, seconds since the epoch


def make_synthetic(
    num_users: int = 200,
    num_items: int = 300,
    num_categories: int = 6,
    min_len: int = 20,
    max_len: int = 60,
    seed: int = 0,
    *,
    short_term_weight: float = 0.85,
    cycle_prob: float = 0.6,
    second_category_prob: float = 0.3,
    num_events: int = 0,
) -> RecDataBundle:
    """Generates a synthetic `RecDataBundle` with planted, learnable structure (see the module docstring).

    Args:
        num_users (`int`, *optional*, defaults to 200): number of users (one sequence each).
        num_items (`int`, *optional*, defaults to 300): number of items, internal ids `1 .. num_items`.
        num_categories (`int`, *optional*, defaults to 6): number of categories `cat0 .. cat{C-1}`.
        min_len (`int`, *optional*, defaults to 20): shortest sequence.
        max_len (`int`, *optional*, defaults to 60): longest sequence (inclusive).
        seed (`int`, *optional*, defaults to 0): the same seed always gives the same data.
        short_term_weight (`float`, *optional*, defaults to 0.85):
            probability of staying in the current short-term category at each step.
        cycle_prob (`float`, *optional*, defaults to 0.6):
            probability that the next item is the successor of the previous one in the category's cycle
            (when the previous item belongs to the current category); otherwise a popularity-weighted
            item of the category is drawn.
        second_category_prob (`float`, *optional*, defaults to 0.3): share of items with two categories.
        num_events (`int`, *optional*, defaults to 0):
            number of event types; when positive, `sequences` gets an `event_ids` column and the bundle
            `event_names` (`view`, `like`, `add_to_cart`, `buy`, then `event4`, ...).

    Returns:
        `RecDataBundle` named `"synthetic"`: `sequences` (`user_id`, `item_ids`, `timestamps`, optional
        `event_ids`), `items` (`item_id`, `original_id` like `"i17"`, `title`, `category` (the primary
        category), `genres` (1-2 category names)) and `users` (`user_id`, `original_id` like `"u3"`,
        `age`, `gender`, `occupation`, `age_band`, `favorite_categories`).
    """
    for name, value in (
        ("num_users", num_users),
        ("num_items", num_items),
        ("num_categories", num_categories),
        ("min_len", min_len),
        ("max_len", max_len),
        ("seed", seed),
        ("num_events", num_events),
    ):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise GGRInputError(
                f"synthetic: {name} must be an integer, got {value!r} ({type(value).__name__})"
            )
    if num_users < 1 or num_categories < 1 or num_items < num_categories:
        raise GGRInputError(
            "synthetic: need num_users >= 1, num_categories >= 1 and num_items >= num_categories, got "
            f"num_users={num_users}, num_categories={num_categories}, num_items={num_items}"
        )
    if not 1 <= min_len <= max_len:
        raise GGRInputError(
            f"synthetic: need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}"
        )
    if num_events < 0:
        raise GGRInputError(f"synthetic: num_events must be >= 0, got {num_events}")
    for name, p in (
        ("short_term_weight", short_term_weight),
        ("cycle_prob", cycle_prob),
        ("second_category_prob", second_category_prob),
    ):
        if not isinstance(p, (int, float, np.number)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
            raise GGRInputError(f"synthetic: {name} must be a number in [0, 1], got {p!r}")
    rng = np.random.default_rng(seed)
    cat_names = [f"cat{c}" for c in range(num_categories)]

    # Items: a balanced, shuffled primary category; a second category for some items.
    primary = rng.permutation(np.arange(num_items) % num_categories)
    second = np.where(
        (rng.random(num_items) < second_category_prob) & (num_categories > 1),
        (primary + rng.integers(1, max(num_categories, 2), num_items)) % num_categories,
        -1,
    )
    members = [np.flatnonzero(primary == c) + 1 for c in range(num_categories)]  # internal ids, sorted
    successor = np.zeros(num_items + 1, dtype=np.int64)
    for ids in members:
        successor[ids] = np.roll(ids, -1)
    # Mild popularity within each category (Zipf-like over a random ranking).
    pop_cdf = []
    for ids in members:
        w = np.cumsum(1.0 / np.sqrt(1.0 + rng.permutation(len(ids))))
        pop_cdf.append(w / w[-1])

    # Users: 1-2 favourite categories; side information follows the first one.
    n_fav = rng.integers(1, 3, num_users) if num_categories > 1 else np.ones(num_users, dtype=np.int64)
    favorites = [rng.choice(num_categories, size=int(k), replace=False) for k in n_fav]
    fav0 = np.array([f[0] for f in favorites])
    occ_idx = np.where(
        rng.random(num_users) < 0.8,
        fav0 % len(SYNTHETIC_OCCUPATIONS),
        rng.integers(0, len(SYNTHETIC_OCCUPATIONS), num_users),
    )
    ages = np.clip(16 + 8 * (fav0 % 6) + rng.integers(0, 10, num_users), 13, 80).astype(np.int64)
    genders = rng.choice(np.array(["F", "M"]), num_users)

    # Event types: each category prefers one event (with prob 0.6), else event 0 ("view") or a random one.
    lengths = rng.integers(min_len, max_len + 1, num_users)
    item_seqs, time_seqs, event_seqs = [], [], []
    for u in range(num_users):
        n = int(lengths[u])
        stay = rng.random(n) < short_term_weight
        go_fav = rng.random(n) < 0.7
        use_cycle = rng.random(n) < cycle_prob
        rand_cat = rng.integers(0, num_categories, n)
        fav_pick = rng.integers(0, len(favorites[u]), n)
        draw = rng.random(n)
        seq = np.empty(n, dtype=np.int64)
        cat = int(favorites[u][0])
        prev = 0
        for t in range(n):
            if t > 0 and not stay[t]:
                cat = int(favorites[u][fav_pick[t]]) if go_fav[t] else int(rand_cat[t])
            if prev and primary[prev - 1] == cat and use_cycle[t]:
                item = int(successor[prev])
            else:
                ids = members[cat]
                item = int(ids[min(int(np.searchsorted(pop_cdf[cat], draw[t], side="right")), len(ids) - 1)])
            seq[t] = item
            prev = item
        gaps = 1 + rng.exponential(3600.0, n).astype(np.int64)
        start = _START_TIME + int(rng.integers(0, 30 * 86400))
        item_seqs.append(seq)
        time_seqs.append(start + np.cumsum(gaps))
        if num_events:
            cats = primary[seq - 1]
            preferred = cats % num_events
            r = rng.random(n)
            ev = np.where(r < 0.6, preferred, np.where(r < 0.85, 0, rng.integers(0, num_events, n)))
            event_seqs.append(ev.astype(np.int64))

    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    seq_cols = {
        "user_id": pa.array(np.arange(num_users, dtype=np.int64)),
        "item_ids": pa.ListArray.from_arrays(offsets, pa.array(np.concatenate(item_seqs))),
        "timestamps": pa.ListArray.from_arrays(offsets, pa.array(np.concatenate(time_seqs).astype(np.int64))),
    }
    event_names = None
    if num_events:
        seq_cols["event_ids"] = pa.ListArray.from_arrays(offsets, pa.array(np.concatenate(event_seqs)))
        event_names = [
            SYNTHETIC_EVENT_NAMES[k] if k < len(SYNTHETIC_EVENT_NAMES) else f"event{k}"
            for k in range(num_events)
        ]

    genres = [
        [cat_names[p]] + ([cat_names[s]] if s >= 0 else []) for p, s in zip(primary.tolist(), second.tolist())
    ]
    items = pa.table(
        {
            "item_id": pa.array(np.arange(1, num_items + 1, dtype=np.int64)),
            "original_id": pa.array([f"i{i}" for i in range(1, num_items + 1)], pa.string()),
            "title": pa.array(
                [f"Item {i} ({', '.join(g)})" for i, g in enumerate(genres, start=1)], pa.string()
            ),
            "category": pa.array([cat_names[p] for p in primary.tolist()], pa.string()),
            "genres": pa.array(genres, pa.list_(pa.string())),
        }
    )
    users = pa.table(
        {
            "user_id": pa.array(np.arange(num_users, dtype=np.int64)),
            "original_id": pa.array([f"u{u}" for u in range(num_users)], pa.string()),
            "age": pa.array(ages),
            "gender": pa.array(genders.tolist(), pa.string()),
            "occupation": pa.array([SYNTHETIC_OCCUPATIONS[o] for o in occ_idx.tolist()], pa.string()),
            "age_band": pa.array([age_band(a) for a in ages.tolist()], pa.string()),
            "favorite_categories": pa.array(
                [[cat_names[c] for c in f.tolist()] for f in favorites], pa.list_(pa.string())
            ),
        }
    )
    return RecDataBundle(
        name="synthetic",
        sequences=datasets.Dataset(pa.table(seq_cols)),
        items=datasets.Dataset(items),
        users=datasets.Dataset(users),
        event_names=event_names,
    )
