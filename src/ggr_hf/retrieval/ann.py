"""Approximate fused top-k with faiss: one inverted-file index per prior group, exact re-ranking.

What it approximates is [`~ggr_hf.heads.fusion.fused_topk`] with `fusion="max"`: for each user, the
`k` items with the highest `max` over the user's active heads compatible with the item of
`query_h . item`, each explained by the head that gave it.

How:

- **Groups.** A group is a distinct item set of `head_item_mask()` (one column, e.g. the items of
  category "Comedy"); the heads sharing that column (e.g. "Comedy / short-term" and "Comedy /
  long-term" under a temporal x item prior) share the group's index. One index per group rather than
  per head: heads of the same category in different segments score the same items, so a per-head index
  would store them once per segment; one per compatibility signature (as `FusionIndex` blocks) would
  store each item once but split a category into many small indexes, each searched by every head of the
  signature (92 signatures for 8 categories and 1-3 categories per item, against 8 groups).
- **One coarse quantizer.** The groups share one k-means quantizer (`nlist` centroids, trained on a
  sample of the scorable items): each item is assigned to its list once, each query to its `nprobe`
  lists once, and every group's `IndexIVFFlat` (inner product) is searched with those precomputed lists
  (`faiss.contrib.ivf_tools`). With `nlist=1`, or `nprobe = nlist`, every list is scanned: the search
  is exhaustive and the result equals the exact one.
- **Merge and re-rank.** Each active head searches its group for its top `k + n` items (`n`: the
  most excluded ids of any user, so that removing the history afterwards still leaves `k`); the
  candidates of all heads are merged, deduplicated and scored *exactly* with every active compatible
  head from the model's item table, as the exact fusion does. The returned scores and attributions are
  therefore the exact ones for the items returned; only which items are found is approximate. (An
  item found by one head but scored higher by another whose search missed it still gets its true score
  and head.) With an exhaustive search the candidates hold the exact top-k: an item in it, best scored by
  head `h`, is among `h`'s top `k + n` in its group, since every item above it there has a fused score at
  least as high.

faiss is an optional dependency (`pip install ggr-hf[ann]`), imported only when an index is built,
loaded or searched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ggr_hf.errors import (
    GGRFileNotFoundError,
    GGRInputError,
    GGRMissingDependencyError,
    GGRModelFolderError,
)
from ggr_hf.hub.io import check_save_target, staging_dir
from ggr_hf.modeling_inputs import check_integer_tensor, check_item_ids, is_integer

if TYPE_CHECKING:
    from ggr_hf.modeling_recommender import RecommenderMixin

__all__ = ["ANN_INDEX_DIR", "MANIFEST_NAME", "ApproximateIndex", "GGRMissingDependencyError", "import_faiss"]

ANN_INDEX_DIR = "ann_index"
MANIFEST_NAME = "ann_index.json"
FORMAT = "ggr-hf-ann"
FORMAT_VERSION = 1
QUANTIZER_FILE = "quantizer.faiss"
# k-means training points per list: faiss's own guidance is 39-256; 64 keeps the training of 4,096
# lists on 262k points, seconds on one core.
TRAIN_POINTS_PER_LIST = 64
# Below this many scorable items a scan of everything is cheap: the automatic choice is one list.
AUTO_EXHAUSTIVE_BELOW = 50_000
MAX_AUTO_NLIST = 4096
ADD_CHUNK = 1 << 20


def import_faiss() -> Any:
    """faiss, or a one-line error naming the extra that installs it."""
    try:
        import faiss
    except ImportError as err:
        raise GGRMissingDependencyError(
            f"approximate retrieval needs faiss ({err}); install it with `pip install ggr-hf[ann]` "
            "(or `pip install faiss-cpu`)"
        ) from None
    return faiss


def auto_nlist(num_scorable: int) -> int:
    """The default number of lists: 1 (exhaustive) below `AUTO_EXHAUSTIVE_BELOW` scorable items, else
    the power of two nearest to `2 sqrt(n)`, at most `MAX_AUTO_NLIST`. Low for faiss's usual 4-16
    sqrt(n) on purpose: the lists are shared by the groups, so a group's share of a list is a fraction
    of it, and scanning many tiny lists costs more per item than a few longer ones; the cap keeps the
    k-means training and the assignment of a 10M catalogue at minutes on 2 cores."""
    if num_scorable < AUTO_EXHAUSTIVE_BELOW:
        return 1
    return int(min(MAX_AUTO_NLIST, 2 ** round(np.log2(2 * np.sqrt(num_scorable)))))


def auto_nprobe(nlist: int) -> int:
    """The default lists searched per query: 1/16 of them (at least 1), the setting measured by
    `benchmarks/bench_ann.py`."""
    return max(1, nlist // 16)


def _digest(t: torch.Tensor) -> str:
    array = np.ascontiguousarray(t.detach().cpu().numpy())
    return hashlib.sha256(array.view(np.uint8).reshape(-1)).hexdigest()


def fingerprint(item_table: torch.Tensor, compatible: torch.Tensor) -> dict[str, Any]:
    """What identifies the catalogue an index was built from: sizes and hashes of the item table and
    the item-head compatibility (a retrained or regrouped model gets another fingerprint)."""
    mask = compatible.bool().clone()
    mask[0] = False  # the padding row is never scored, whatever a model's mask holds there
    return {
        "num_items": int(item_table.shape[0]) - 1,
        "hidden_size": int(item_table.shape[1]),
        "num_heads": int(compatible.shape[1]),
        "item_table_sha256": _digest(item_table.float()),
        "head_item_mask_sha256": _digest(mask),
    }


def _numpy_f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().float().numpy())


class ApproximateIndex:
    """Approximate fused top-k (max fusion) over a model's catalogue: one faiss IVF index per prior
    group sharing one coarse quantizer, candidates re-ranked exactly (see the module docstring).

    Build with [`ApproximateIndex.build`] (from a model) or [`ApproximateIndex.from_tensors`], save with
    `save_pretrained(model_dir / "ann_index")`, load with [`ApproximateIndex.from_pretrained`], query
    with [`ApproximateIndex.search`] (a model and histories) or [`ApproximateIndex.search_queries`]
    (query vectors).

    Attributes:
        nlist (`int`): inverted lists of the shared quantizer (1: exhaustive).
        nprobe (`int`): lists searched per query by default (`nprobe = nlist`: exhaustive).
        groups (`list[list[int]]`): per group, the heads whose item set it holds.
        fingerprint (`dict`): sizes and hashes of the item table and mask the index was built from.
    """

    def __init__(
        self,
        quantizer: Any,
        indexes: list[Any],
        groups: list[list[int]],
        nprobe: int,
        fingerprint: dict[str, Any],
    ) -> None:
        self.quantizer = quantizer
        self.indexes = indexes
        self.groups = groups
        self.nlist = int(quantizer.ntotal)
        self.nprobe = int(nprobe)
        self.fingerprint = fingerprint
        # (scoring-tensor key, item table, mask) of the model last checked against the fingerprint.
        self._bound: tuple[tuple, torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        model: RecommenderMixin,
        nlist: int | None = None,
        nprobe: int | None = None,
        seed: int = 0,
    ) -> ApproximateIndex:
        """Builds the index of `model`'s catalogue (`item_table()`, `head_item_mask()`).

        Args:
            model: any ggr-hf recommendation model.
            nlist (`int`, *optional*): inverted lists; default [`auto_nlist`] of the scorable items.
            nprobe (`int`, *optional*): lists searched per query; default [`auto_nprobe`].
            seed (`int`): seed of the training sample and of k-means.
        """
        with torch.no_grad():
            table, mask = model.item_table(), model.head_item_mask()
        index = cls.from_tensors(table, mask, nlist=nlist, nprobe=nprobe, seed=seed)
        index._bound = (_scoring_key(model), table.detach().float().cpu(), mask.cpu())
        return index

    @classmethod
    def from_tensors(
        cls,
        item_table: torch.Tensor,
        compatible: torch.Tensor,
        nlist: int | None = None,
        nprobe: int | None = None,
        seed: int = 0,
    ) -> ApproximateIndex:
        """Builds the index of a catalogue given as tensors.

        Args:
            item_table (`torch.FloatTensor` of shape `(num_items + 1, hidden_size)`): the vectors the
                queries score (row 0 padding, never indexed).
            compatible (`torch.BoolTensor` of shape `(num_items + 1, num_heads)`): which items each
                head may score.
            nlist, nprobe, seed: as in [`ApproximateIndex.build`].

        Raises:
            `GGRInputError`: shapes that do not match, or `nlist` / `nprobe` not an integer >= 1.
            `GGRMissingDependencyError`: faiss is not installed.
        """
        faiss = import_faiss()
        if item_table.ndim != 2 or compatible.ndim != 2 or compatible.shape[0] != item_table.shape[0]:
            raise GGRInputError(
                f"item_table {tuple(item_table.shape)} and head_item_mask {tuple(compatible.shape)}: "
                "expected (num_items + 1, hidden_size) and (num_items + 1, num_heads)"
            )
        mask = compatible.detach().cpu().bool().clone()
        mask[0] = False
        scorable = np.flatnonzero(mask.any(1).numpy())
        if nlist is None:
            nlist = auto_nlist(len(scorable))
        _check_count("nlist", nlist)
        nlist = int(nlist)
        if nlist > max(len(scorable), 1):
            raise GGRInputError(
                f"nlist={nlist} is more than the {len(scorable)} items any head may score; "
                "lower nlist (--nlist)"
            )
        nprobe = auto_nprobe(nlist) if nprobe is None else nprobe
        _check_count("nprobe", nprobe)
        x = _numpy_f32(item_table)
        d = x.shape[1]

        quantizer = faiss.IndexFlatIP(d)
        if nlist == 1:
            quantizer.add(np.zeros((1, d), dtype=np.float32))
        else:
            gen = np.random.default_rng(seed)
            n_train = min(len(scorable), nlist * TRAIN_POINTS_PER_LIST)
            sample = x[np.sort(gen.choice(scorable, size=n_train, replace=False))]
            # Spherical k-means: centroids on the unit sphere suit an inner-product assignment.
            kmeans = faiss.Kmeans(d, nlist, niter=20, spherical=True, seed=seed, verbose=False)
            kmeans.train(sample)
            quantizer.add(kmeans.centroids)
        assign = np.zeros(x.shape[0], dtype=np.int64)
        for lo in range(0, len(scorable), ADD_CHUNK):
            rows = scorable[lo : lo + ADD_CHUNK]
            assign[rows] = quantizer.search(x[rows], 1)[1][:, 0]

        # Group the heads by their item set (a column of the mask); an empty column has no index.
        by_column: dict[bytes, list[int]] = {}
        columns = mask.numpy()
        for h in range(columns.shape[1]):
            if columns[:, h].any():
                by_column.setdefault(np.packbits(columns[:, h]).tobytes(), []).append(h)
        groups, indexes = [], []
        for heads in by_column.values():
            ids = np.flatnonzero(columns[:, heads[0]]).astype(np.int64)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            for lo in range(0, len(ids), ADD_CHUNK):
                part = ids[lo : lo + ADD_CHUNK]
                _add_preassigned(index, np.ascontiguousarray(x[part]), assign[part], part)
            groups.append(heads)
            indexes.append(index)
        return cls(quantizer, indexes, groups, nprobe, fingerprint(item_table, mask))

    # ------------------------------------------------------------------ saving and loading

    def save_pretrained(self, save_directory: str | os.PathLike, overwrite: bool = False) -> Path:
        """Writes the index files (faiss's own format, `faiss.write_index`) and a JSON manifest into
        `save_directory`, atomically: everything is written into a temporary folder beside it that is
        then renamed, so a crash never leaves a folder that looks complete.

        Raises:
            `GGRInputError`: the folder exists and `overwrite` is false, or it is a file.
        """
        faiss = import_faiss()
        target = Path(save_directory)
        check_save_target(target)
        if target.exists() and not overwrite:
            raise GGRInputError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")
        # Not `commit_folder`: its completeness marker is a model's config.json, and an index folder
        # is replaced whole (no group file of an older build may stay beside the new manifest).
        staging = staging_dir(target)
        try:
            faiss.write_index(self.quantizer, str(staging / QUANTIZER_FILE))
            files = []
            for g, index in enumerate(self.indexes):
                name = f"group_{g:04d}.faiss"
                faiss.write_index(index, str(staging / name))
                files.append({"file": name, "heads": self.groups[g], "num_items": int(index.ntotal)})
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "faiss_version": faiss.__version__,
                "metric": "inner_product",
                "fusion": "max",
                "nlist": self.nlist,
                "nprobe": self.nprobe,
                "quantizer": QUANTIZER_FILE,
                "groups": files,
                "fingerprint": self.fingerprint,
            }
            # The manifest last: a folder with a manifest holds a finished index.
            (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
            if target.exists():
                old = target.with_name(f".{target.name}.old-{os.getpid()}")
                os.replace(target, old)
                os.replace(staging, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> ApproximateIndex:
        """Loads an index written by [`ApproximateIndex.save_pretrained`]. It is checked against a model
        when first searched with it (a stale index is refused then).

        Raises:
            `GGRFileNotFoundError`: no such folder or manifest.
            `GGRModelFolderError`: a manifest or index file that is not what `save_pretrained` writes.
        """
        faiss = import_faiss()
        folder = Path(folder)
        path = folder / MANIFEST_NAME
        if not path.is_file():
            raise GGRFileNotFoundError(
                f"{path} not found: not an approximate index folder (build one with `ggr-hf index build`)"
            )
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format {manifest.get('format')!r} v{manifest.get('format_version')!r}")
            quantizer = faiss.read_index(str(folder / manifest["quantizer"]))
            indexes, groups = [], []
            for entry in manifest["groups"]:
                index = faiss.read_index(str(folder / entry["file"]))  # already its own class
                if index.ntotal != entry["num_items"] or index.nlist != quantizer.ntotal:
                    raise ValueError(
                        f"{entry['file']} holds {index.ntotal} items, the manifest says {entry['num_items']}"
                    )
                indexes.append(index)
                groups.append([int(h) for h in entry["heads"]])
            return cls(quantizer, indexes, groups, int(manifest["nprobe"]), dict(manifest["fingerprint"]))
        except (ValueError, KeyError, TypeError, RuntimeError, OSError, UnicodeDecodeError) as err:
            raise GGRModelFolderError(f"{folder}: not a readable approximate index ({err})") from err

    # ------------------------------------------------------------------ searching

    def memory_bytes(self) -> int:
        """Bytes the index holds in memory: each group's codes and 64-bit ids, and the centroids."""
        stored = sum(int(index.ntotal) * (int(index.code_size) + 8) for index in self.indexes)
        return stored + self.nlist * int(self.quantizer.d) * 4

    def check_model(self, model: RecommenderMixin) -> None:
        """Checks that `model`'s catalogue is the one the index was built from (rehashing only when a
        scoring tensor changed since the last check).

        Raises:
            `GGRInputError`: a stale index (the model was retrained, regrouped or is another model).
        """
        key = _scoring_key(model)
        if self._bound is not None and self._bound[0] == key:
            return
        with torch.no_grad():
            table, mask = model.item_table().detach().float().cpu(), model.head_item_mask().cpu()
        have = fingerprint(table, mask)
        if have != self.fingerprint:
            diff = sorted(k for k in have if have[k] != self.fingerprint.get(k))
            raise GGRInputError(
                f"the approximate index was built from another catalogue ({', '.join(diff)} differ): the "
                "model changed since; rebuild it with `ggr-hf index build --model DIR --overwrite`"
            )
        self._bound = (key, table, mask)

    @torch.no_grad()
    def search(
        self,
        model: RecommenderMixin,
        input_ids: torch.Tensor,
        k: int,
        timestamps: torch.Tensor | None = None,
        query_timestamps: torch.Tensor | None = None,
        user_groups: torch.Tensor | None = None,
        exclude: torch.Tensor | None = None,
        fusion: str | None = None,
        nprobe: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The approximate `model.score_items(..., topk=k)`: same arguments, same outputs.

        Args:
            model: the model the index was built from (checked, see [`check_model`]).
            input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`): histories, right-padded.
            k (`int`): list length.
            timestamps (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*)
            query_timestamps (`torch.LongTensor` of shape `(batch_size,)`, *optional*): request time.
            user_groups (`torch.LongTensor` of shape `(batch_size, num_user_priors)`, *optional*): the
                users' groups (models with user priors; a user's inactive heads are not searched).
            exclude (`torch.LongTensor` of shape `(batch_size, n)`, *optional*): item ids to leave out
                (0 ignored); each head over-fetches `k + n` so the list stays `k` long.
            fusion (`str`, *optional*): only `"max"` (the default of `config.fusion` must be `"max"` too).
            nprobe (`int`, *optional*): lists searched per query; default the index's.

        Returns:
            scores (`torch.FloatTensor` of shape `(batch_size, k)`), item_ids and head_index
            (`torch.LongTensor` of shape `(batch_size, k)`), best first; `-inf`, item 0 and head -1
            where fewer items were found.

        Raises:
            `GGRInputError`: bad arguments (as `score_items` reports them), another fusion than max, or
                a stale index.
        """
        effective = fusion if fusion is not None else getattr(model.config, "fusion", "max")
        if effective != "max":
            raise GGRInputError(
                f"fusion={effective!r}: approximate retrieval supports max fusion only (the per-group "
                "searches find each head's best items, not the best means); pass fusion='max' or use "
                "score_items(topk=k)"
            )
        check_integer_tensor("input_ids", input_ids, (-1, -1))
        if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
            raise GGRInputError(
                f"input_ids: expected (batch_size, seq_len) with both > 0, got {tuple(input_ids.shape)}"
            )
        check_item_ids("input_ids", input_ids, model.config.num_items)
        bsz = input_ids.shape[0]
        check_integer_tensor("timestamps", timestamps, tuple(input_ids.shape))
        check_integer_tensor("query_timestamps", query_timestamps, (bsz,))
        check_integer_tensor("exclude", exclude, (bsz, -1))
        if exclude is not None and bool(((exclude < 0) | (exclude > model.config.num_items)).any()):
            bad = exclude[(exclude < 0) | (exclude > model.config.num_items)][0]
            raise GGRInputError(
                f"exclude: item id {int(bad)} is outside 0..{model.config.num_items} (0 is ignored)"
            )
        self.check_model(model)
        q, active = model.user_queries(input_ids, timestamps, query_timestamps, user_groups, None)
        _, table, mask = self._bound
        # faiss searches on the CPU, where the checked table and mask are kept: the queries go there
        # (float32 whatever the model's dtype) and the lists come back to the model's device.
        cpu = torch.device("cpu")
        out = self.search_queries(
            q.float().to(cpu),
            table,
            mask,
            k,
            None if active is None else active.to(cpu),
            None if exclude is None else exclude.to(cpu),
            nprobe,
        )
        return tuple(t.to(input_ids.device) for t in out)

    @torch.no_grad()
    def search_queries(
        self,
        queries: torch.Tensor,
        item_table: torch.Tensor,
        compatible: torch.Tensor,
        k: int,
        head_active: torch.Tensor | None = None,
        exclude: torch.Tensor | None = None,
        nprobe: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Approximate `fused_topk(queries, build_fusion_index(item_table, compatible), k, head_active,
        exclude, "max")` (the table and mask must be those the index was built from).

        Args:
            queries (`torch.FloatTensor` of shape `(batch_size, num_heads, hidden_size)`): head queries as
                `user_queries` returns them (scaled).
            item_table (`torch.FloatTensor` of shape `(num_items + 1, hidden_size)`): for the exact
                re-ranking of the candidates.
            compatible (`torch.BoolTensor` of shape `(num_items + 1, num_heads)`)
            k (`int`): list length.
            head_active (`torch.BoolTensor` of shape `(batch_size, num_heads)`, *optional*): heads
                allowed for each user (the others are not searched).
            exclude (`torch.LongTensor` of shape `(batch_size, n)`, *optional*): ids to leave out.
            nprobe (`int`, *optional*): lists searched per query; default the index's.

        Returns:
            scores, item_ids, head_index of shape `(batch_size, k)`, as [`search`].
        """
        if not is_integer(k) or int(k) < 1:
            raise GGRInputError(f"k must be an integer >= 1, got {k!r}")
        k = int(k)
        nprobe = self.nprobe if nprobe is None else nprobe
        _check_count("nprobe", nprobe)
        nprobe = min(int(nprobe), self.nlist)
        bsz, num_heads, d = queries.shape
        if num_heads != self.fingerprint["num_heads"] or d != self.fingerprint["hidden_size"]:
            raise GGRInputError(
                f"queries {tuple(queries.shape)}: the index was built for {self.fingerprint['num_heads']} "
                f"heads of size {self.fingerprint['hidden_size']}"
            )
        import_faiss()  # the error naming the extra, before contrib's plain ImportError
        from faiss.contrib.ivf_tools import search_preassigned

        over = k
        if exclude is not None and exclude.numel():
            over += int((exclude != 0).sum(1).max())
        qx = _numpy_f32(queries.reshape(bsz * num_heads, d))  # row b * H + h
        wanted = np.ones((bsz, num_heads), dtype=bool)
        if head_active is not None:
            wanted = head_active.detach().cpu().numpy().astype(bool)
        lists = np.zeros((bsz * num_heads, nprobe), dtype=np.int64)
        rows_needed = np.flatnonzero(wanted.reshape(-1))
        if len(rows_needed):
            lists[rows_needed] = self.quantizer.search(qx[rows_needed], nprobe)[1]

        blocks = []  # per (group, head): (B, kk) candidate ids, -1 where none
        for heads, index in zip(self.groups, self.indexes):
            kk = min(over, int(index.ntotal))
            index.nprobe = nprobe
            for h in heads:
                users = np.flatnonzero(wanted[:, h])
                found = np.full((bsz, kk), -1, dtype=np.int64)
                if len(users):
                    rows = users * num_heads + h
                    found[users] = search_preassigned(index, qx[rows], kk, lists[rows])[1]
                blocks.append(found)
        if not blocks:
            blocks.append(np.full((bsz, 1), -1, dtype=np.int64))
        faiss_ids = np.concatenate(blocks, axis=1)
        return rerank(queries, item_table, compatible, torch.from_numpy(faiss_ids), k, head_active, exclude)


def rerank(
    queries: torch.Tensor,
    item_table: torch.Tensor,
    compatible: torch.Tensor,
    candidates: torch.Tensor,
    k: int,
    head_active: torch.Tensor | None = None,
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The exact fused (max) top-k among each user's candidates.

    Args:
        queries (`torch.FloatTensor` of shape `(batch_size, num_heads, hidden_size)`)
        item_table (`torch.FloatTensor` of shape `(num_items + 1, hidden_size)`)
        compatible (`torch.BoolTensor` of shape `(num_items + 1, num_heads)`)
        candidates (`torch.LongTensor` of shape `(batch_size, m)`): item ids, repeats allowed; ids < 1
            are empty slots.
        k (`int`), head_active, exclude: as in `fused_topk`.

    Returns:
        scores, item_ids, head_index of shape `(batch_size, k)`, best first (`-inf`, 0, -1 padding).
    """
    bsz = queries.shape[0]
    cand = candidates.to(queries.device)
    valid = cand > 0
    cand = cand.clamp(min=0)
    # A repeat (found by several heads) counts once: keep the first of each run of equal sorted ids.
    ordered, perm = cand.sort(dim=1)
    repeat = torch.zeros_like(valid)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    valid &= ~repeat.scatter(1, perm, repeat)
    if exclude is not None and exclude.numel():
        excl = exclude.to(cand.device).sort(dim=1).values
        pos = torch.searchsorted(excl, cand).clamp(max=excl.shape[1] - 1)
        valid &= excl.gather(1, pos) != cand
    emb = item_table.to(queries.dtype).index_select(0, cand.reshape(-1)).view(bsz, cand.shape[1], -1)
    s = torch.einsum("bmd,bhd->bmh", emb, queries)  # [B, m, H]
    allowed = compatible.to(cand.device).index_select(0, cand.reshape(-1)).view(bsz, cand.shape[1], -1)
    if head_active is not None:
        allowed = allowed & head_active.to(cand.device).unsqueeze(1)
    s = s.masked_fill(~allowed, float("-inf"))
    best, head = s.max(dim=2)  # [B, m]
    best = best.masked_fill(~valid, float("-inf"))
    n_top = min(k, best.shape[1])
    top, pick = best.topk(n_top, dim=1)
    items, heads = cand.gather(1, pick), head.gather(1, pick)
    if n_top < k:
        pad = k - n_top
        top = torch.cat([top, top.new_full((bsz, pad), float("-inf"))], dim=1)
        items = torch.cat([items, items.new_zeros((bsz, pad))], dim=1)
        heads = torch.cat([heads, heads.new_full((bsz, pad), -1)], dim=1)
    missing = torch.isinf(top) & (top < 0)
    return top, items.masked_fill(missing, 0), heads.masked_fill(missing, -1)


def _add_preassigned(index: Any, x: np.ndarray, assign: np.ndarray, ids: np.ndarray) -> None:
    from faiss.contrib.ivf_tools import add_preassigned

    add_preassigned(index, x, np.ascontiguousarray(assign), ids=np.ascontiguousarray(ids))


def _check_count(name: str, value: Any) -> None:
    if not is_integer(value) or int(value) < 1:
        raise GGRInputError(f"{name} must be an integer >= 1, got {value!r}")


def _scoring_key(model: RecommenderMixin) -> tuple:
    # The same change tracking as `RecommenderMixin.fusion_index`: optimizer steps and
    # `load_state_dict` bump the tensors' version counters.
    return tuple((t.data_ptr(), t._version) for t in model.scoring_tensors())
