"""Readers of the MovieLens file layouts: RecBole's atomic files, GroupLens' ML-100K and ML-1M.

`read_movielens_folder` reads a folder in any of the layouts and `read_recbole` reads RecBole's atomic
files from their bytes (the embedded default reads them out of RecBole's wheel, see
`ggr_hf.data.movielens`). The rules (ids, ordering, errors) are described in `ggr_hf.data.movielens`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa

from .schema import DataFormatError, RecDataBundle
from .timestamps import TimestampReader

__all__ = [
    "AGE_BANDS",
    "ML100K_GENRES",
    "ML1M_AGE_BANDS",
    "ML1M_OCCUPATIONS",
    "MOVIELENS_FORMATS",
    "Source",
    "age_band",
    "read_movielens_folder",
    "read_recbole",
]

MOVIELENS_FORMATS = ("auto", "recbole", "grouplens-100k", "ml-1m")

# The genre flags of `u.item`, in column order (the content of the release's `u.genre`).
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

# Occupation codes of ML-1M's `users.dat` (from the ML-1M README).
ML1M_OCCUPATIONS = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)

# ML-1M's age bands; ML-1M stores the band's lower bound (1 for "<18") in its `Age` column.
AGE_BANDS = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
ML1M_AGE_BANDS = dict(zip((1, 18, 25, 35, 45, 50, 56), AGE_BANDS))
_AGE_BAND_LOWER = np.array([18, 25, 35, 45, 50, 56])

_INT_RE = r"\s*[+-]?\d+\s*"


def age_band(age: int) -> str:
    """Maps an age in years to the ML-1M band name (`"<18"`, `"18-24"`, ..., `"56+"`)."""
    return AGE_BANDS[int(np.searchsorted(_AGE_BAND_LOWER, int(age), side="right"))]


def read_movielens_folder(folder: Path, format: str, timestamp_unit: str = "auto") -> RecDataBundle:
    """Reads the MovieLens files in `folder`, in the layout `format` (one of `MOVIELENS_FORMATS`), with
    integer times in `timestamp_unit` (see `ggr_hf.data.timestamps`)."""
    if format == "auto":
        format = _detect_format(folder)
    if format == "recbole":
        inter, item, user = (_single_file(folder, ext) for ext in ("inter", "item", "user"))
        return read_recbole(
            inter.stem, *(Source.from_file(p) for p in (inter, item, user)), timestamp_unit=timestamp_unit
        )
    if format == "grouplens-100k":
        genre_file = folder / "u.genre"
        genres = _parse_u_genre(Source.from_file(genre_file)) if genre_file.exists() else ML100K_GENRES
        return _build_bundle(
            "ml-100k",
            _parse_u_data(Source.from_file(folder / "u.data")),
            _parse_u_item(Source.from_file(folder / "u.item"), genres),
            _parse_u_user(Source.from_file(folder / "u.user")),
            timestamp_unit,
        )
    return _build_bundle(
        "ml-1m",
        _parse_ratings_dat(Source.from_file(folder / "ratings.dat")),
        _parse_movies_dat(Source.from_file(folder / "movies.dat")),
        _parse_users_dat(Source.from_file(folder / "users.dat")),
        timestamp_unit,
    )


def read_recbole(
    name: str, inter: Source, item: Source, user: Source, *, timestamp_unit: str = "auto"
) -> RecDataBundle:
    """The bundle `name` from RecBole's atomic `.inter`, `.item` and `.user` files."""
    return _build_bundle(name, *_parse_recbole(inter, item, user), timestamp_unit)


# ----------------------------------------------------------------------------------------------
# Files and format detection
# ----------------------------------------------------------------------------------------------


@dataclass
class Source:
    """The bytes of one input file and the name used in error messages."""

    name: str
    data: bytes

    @classmethod
    def from_file(cls, path: Path) -> Source:
        if not path.is_file():
            raise DataFormatError(f"{path}: file not found")
        try:
            src = cls(str(path), path.read_bytes())
        except OSError as err:
            raise DataFormatError(f"{path}: cannot be read ({err})") from None
        src.check_not_empty()
        return src

    def check_not_empty(self) -> None:
        if not self.data.strip():
            raise DataFormatError(f"{self.name}: the file is empty")

    def text(self, encoding: str) -> str:
        try:
            return self.data.decode(encoding)
        except UnicodeDecodeError as err:
            raise DataFormatError(f"{self.name}: not valid {encoding} text ({err})") from None


def _detect_format(folder: Path) -> str:
    found = []
    if list(folder.glob("*.inter")):
        found.append("recbole")
    if (folder / "u.data").is_file():
        found.append("grouplens-100k")
    if (folder / "ratings.dat").is_file():
        found.append("ml-1m")
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataFormatError(
            f"{folder}: no MovieLens files found; expected RecBole's *.inter/*.item/*.user, GroupLens' "
            "u.data/u.item/u.user (ML-100K) or ratings.dat/movies.dat/users.dat (ML-1M)"
        )
    raise DataFormatError(f"{folder}: holds several MovieLens layouts ({', '.join(found)}); pass format=")


def _single_file(folder: Path, ext: str) -> Path:
    files = sorted(folder.glob(f"*.{ext}"))
    if not files:
        raise DataFormatError(f"{folder / ('*.' + ext)}: file not found (RecBole atomic layout)")
    if len(files) > 1:
        names = ", ".join(p.name for p in files)
        raise DataFormatError(f"{folder}: several *.{ext} files ({names}); keep one per folder")
    return files[0]


# ----------------------------------------------------------------------------------------------
# Tables and typed columns
# ----------------------------------------------------------------------------------------------


@dataclass
class _Column:
    """One column of a parsed text table, with what error messages need to point at it."""

    src: str
    name: str
    values: pd.Series
    first_line: int  # line number of the first data row (1-based, counting header lines)

    def _fail(self, index: int, what: str) -> DataFormatError:
        value = self.values.iloc[index]
        line = self.first_line + index
        return DataFormatError(f"{self.src}: column '{self.name}', line {line}: {what}, got {value!r}")

    def _first_bad(self, bad: np.ndarray) -> int | None:
        hits = np.flatnonzero(bad)
        return int(hits[0]) if len(hits) else None

    def ints(self) -> np.ndarray:
        if pd.api.types.is_integer_dtype(self.values.dtype):
            return self.values.to_numpy(np.int64)
        strings = self.values.astype(str)
        bad = self._first_bad(~strings.str.fullmatch(_INT_RE).to_numpy(bool))
        if bad is not None:
            raise self._fail(bad, "expected an integer")
        try:
            return strings.str.strip().astype(np.int64).to_numpy()
        except (OverflowError, ValueError) as err:
            raise DataFormatError(f"{self.src}: column '{self.name}': integer out of range ({err})") from None

    def numbers(self) -> np.ndarray:
        if pd.api.types.is_numeric_dtype(self.values.dtype):
            return self.values.to_numpy(np.float64)
        parsed = pd.to_numeric(self.values.astype(str).str.strip(), errors="coerce").to_numpy(np.float64)
        bad = self._first_bad(~np.isfinite(parsed))
        if bad is not None:
            raise self._fail(bad, "expected a number")
        return parsed

    def timestamps(self) -> np.ndarray:
        """Integer times as written (the unit is applied later); floats (RecBole types timestamps as
        `float`) are floored."""
        if pd.api.types.is_integer_dtype(self.values.dtype):
            return self.values.to_numpy(np.int64)
        parsed = pd.to_numeric(self.values.astype(str).str.strip(), errors="coerce").to_numpy(np.float64)
        bad = self._first_bad(~np.isfinite(parsed) | (np.abs(parsed) > 2**62))
        if bad is not None:
            raise self._fail(bad, "expected an integer time since the epoch")
        return np.floor(parsed).astype(np.int64)

    def strings(self) -> list[str]:
        return self.values.astype(str).str.strip().tolist()


def _read_table(
    src: Source,
    *,
    sep: str,
    field_names: list[str],
    skiprows: int = 0,
    encoding: str = "utf-8",
    fast_dtypes: dict[int, type] | None = None,
) -> dict[str, _Column]:
    """Reads a headerless delimited text table into named `_Column`s.

    With `fast_dtypes` (column index -> numpy dtype) pandas parses those columns directly, which is what
    keeps ML-1M fast; if that fails (a malformed value), the table is read again as text so that the
    offending value can be named.
    """
    data = src.data
    if sep == "::":  # pandas only handles multi-character separators with its slow Python engine
        data = data.replace(b"::", b"\t")
        sep = "\t"
    kwargs = dict(
        sep=sep,
        header=None,
        skiprows=skiprows,
        encoding=encoding,
        quoting=csv.QUOTE_NONE,
        keep_default_na=False,
        na_filter=False,
        index_col=False,
        engine="c",
    )
    df = None
    if fast_dtypes:
        try:
            df = pd.read_csv(io.BytesIO(data), dtype={**fast_dtypes}, **kwargs)
        except (ValueError, OverflowError, pd.errors.ParserError):
            df = None  # read again as text below; that names the problem
    if df is None:
        try:
            df = pd.read_csv(io.BytesIO(data), dtype=str, **kwargs)
        except pd.errors.EmptyDataError:
            raise DataFormatError(f"{src.name}: the file has no data rows") from None
        except pd.errors.ParserError as err:
            raise DataFormatError(
                f"{src.name}: not {len(field_names)} {sep!r}-separated fields per line "
                f"({', '.join(field_names)}): {str(err).strip()}"
            ) from None
        except UnicodeDecodeError as err:
            raise DataFormatError(f"{src.name}: not valid {encoding} text ({err})") from None
    if len(df) == 0:
        raise DataFormatError(f"{src.name}: the file has no data rows")
    if df.shape[1] != len(field_names):
        raise DataFormatError(
            f"{src.name}: lines have {df.shape[1]} {sep!r}-separated fields, expected {len(field_names)} "
            f"({', '.join(field_names)})"
        )
    return {name: _Column(src.name, name, df.iloc[:, i], skiprows + 1) for i, name in enumerate(field_names)}


def _recbole_header(src: Source, required: tuple[str, ...]) -> list[str]:
    """Field names of a RecBole atomic file's typed header (`name:type` separated by tabs)."""
    first_line = src.text("utf-8").split("\n", 1)[0].rstrip("\r")
    names = [field.split(":", 1)[0].strip() for field in first_line.split("\t")]
    if not all(":" in field for field in first_line.split("\t")):
        raise DataFormatError(
            f"{src.name}: the first line must be RecBole's typed header (e.g. 'user_id:token'), got "
            f"{first_line[:200]!r}"
        )
    for name in required:
        if name not in names:
            raise DataFormatError(
                f"{src.name}: the header lacks the column '{name}' (header: {first_line!r})"
            )
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataFormatError(f"{src.name}: the header repeats the column '{dup[0]}'")
    return names


# ----------------------------------------------------------------------------------------------
# Parsed parts, independent of the layout
# ----------------------------------------------------------------------------------------------


@dataclass
class _Interactions:
    src: str
    user_column: str
    item_column: str
    users: np.ndarray  # original ids, int64, file order
    items: np.ndarray
    timestamps: np.ndarray  # raw integer times (floats floored), in the file's unit
    first_line: int
    time_column: str


@dataclass
class _Table:
    src: str
    id_column: str
    ids: np.ndarray  # original ids, int64
    columns: dict[str, list | np.ndarray]  # attribute columns, same order as ids
    first_line: int


def _parse_interactions(
    src: Source, cols: dict[str, _Column], user: str, item: str, rating: str | None, timestamp: str
) -> _Interactions:
    users, items, ts = cols[user].ints(), cols[item].ints(), cols[timestamp].timestamps()
    if rating is not None:
        cols[rating].numbers()  # validated, then dropped: every rating is one implicit interaction
    return _Interactions(src.name, user, item, users, items, ts, cols[user].first_line, timestamp)


def _years(titles: list[str], release: pd.Series | None = None) -> np.ndarray:
    """Release years: a 4-digit year ending `release` (RecBole's `release_year`, u.item's release date),
    else a `(1995)` ending the title, else -1. The year is a mere attribute, so an unreadable one (the
    real ml-100k.item has 'unkonwn' and 'V') gives -1 instead of an error."""
    from_title = pd.Series(titles, dtype=object).str.extract(r"\((\d{4})\)\s*$")[0]
    if release is not None:
        from_release = release.astype(str).str.strip().str.extract(r"(?:^|\D)(\d{4})$")[0]
        from_title = from_release.reset_index(drop=True).fillna(from_title)
    return from_title.fillna("-1").astype(np.int64).to_numpy()


def _user_columns(age: np.ndarray, gender: list[str], occupation: list[str], bands: list[str], zips):
    return {"age": age, "gender": gender, "occupation": occupation, "age_band": bands, "zip_code": zips}


# ----------------------------------------------------------------------------------------------
# RecBole atomic files
# ----------------------------------------------------------------------------------------------


def _parse_recbole(inter: Source, item: Source, user: Source) -> tuple[_Interactions, _Table, _Table]:
    names = _recbole_header(inter, ("user_id", "item_id", "timestamp"))
    fast = {names.index(n): np.int64 for n in ("user_id", "item_id", "timestamp")}
    if "rating" in names:
        fast[names.index("rating")] = np.float64
    cols = _read_table(inter, sep="\t", field_names=names, skiprows=1, fast_dtypes=fast)
    interactions = _parse_interactions(
        inter, cols, "user_id", "item_id", "rating" if "rating" in names else None, "timestamp"
    )

    names = _recbole_header(item, ("item_id", "movie_title", "class"))
    cols = _read_table(item, sep="\t", field_names=names, skiprows=1)
    titles = cols["movie_title"].strings()
    years = _years(titles, cols["release_year"].values if "release_year" in cols else None)
    genres = [g.split() for g in cols["class"].strings()]
    items = _Table(
        item.name,
        "item_id",
        cols["item_id"].ints(),
        {"title": titles, "year": years, "genres": genres},
        2,
    )

    names = _recbole_header(user, ("user_id", "age", "gender", "occupation"))
    cols = _read_table(user, sep="\t", field_names=names, skiprows=1)
    age = cols["age"].ints()
    zips = cols["zip_code"].strings() if "zip_code" in cols else [""] * len(age)
    users = _Table(
        user.name,
        "user_id",
        cols["user_id"].ints(),
        _user_columns(
            age, cols["gender"].strings(), cols["occupation"].strings(), [age_band(a) for a in age], zips
        ),
        2,
    )
    return interactions, items, users


# ----------------------------------------------------------------------------------------------
# GroupLens MovieLens-100K
# ----------------------------------------------------------------------------------------------


def _parse_u_genre(src: Source) -> tuple[str, ...]:
    """`u.genre`: lines `name|index`; returns the names in index order."""
    pairs = []
    for lineno, line in enumerate(src.text("latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, index = line.rpartition("|")
        if not sep or not index.strip().isdigit():
            raise DataFormatError(
                f"{src.name}: column 'genre index', line {lineno}: expected 'name|index', got {line!r}"
            )
        pairs.append((int(index), name.strip()))
    indices = sorted(i for i, _ in pairs)
    if indices != list(range(len(pairs))):
        raise DataFormatError(
            f"{src.name}: column 'genre index': expected 0..{len(pairs) - 1}, got {indices}"
        )
    return tuple(name for _, name in sorted(pairs))


def _parse_u_data(src: Source) -> _Interactions:
    names = ["user_id", "item_id", "rating", "timestamp"]
    cols = _read_table(src, sep="\t", field_names=names, fast_dtypes=dict.fromkeys(range(4), np.int64))
    return _parse_interactions(src, cols, "user_id", "item_id", "rating", "timestamp")


def _parse_u_item(src: Source, genres: tuple[str, ...]) -> _Table:
    names = ["movie_id", "movie_title", "release_date", "video_release_date", "IMDb_URL", *genres]
    cols = _read_table(src, sep="|", field_names=names, encoding="latin-1")
    n = len(cols["movie_id"].values)
    flags = np.zeros((n, len(genres)), dtype=bool)
    for j, genre in enumerate(genres):
        col = cols[genre]
        values = col.values.astype(str).str.strip()
        bad = col._first_bad(~values.isin(["0", "1"]).to_numpy(bool))
        if bad is not None:
            raise col._fail(bad, "expected a genre flag 0 or 1")
        flags[:, j] = (values == "1").to_numpy(bool)
    titles = cols["movie_title"].strings()
    years = _years(titles, cols["release_date"].values)
    genre_lists = [[genres[j] for j in np.flatnonzero(row)] for row in flags]
    return _Table(
        src.name,
        "movie_id",
        cols["movie_id"].ints(),
        {"title": titles, "year": years, "genres": genre_lists},
        1,
    )


def _parse_u_user(src: Source) -> _Table:
    names = ["user_id", "age", "gender", "occupation", "zip_code"]
    cols = _read_table(src, sep="|", field_names=names, encoding="latin-1")
    age = cols["age"].ints()
    return _Table(
        src.name,
        "user_id",
        cols["user_id"].ints(),
        _user_columns(
            age,
            cols["gender"].strings(),
            cols["occupation"].strings(),
            [age_band(a) for a in age],
            cols["zip_code"].strings(),
        ),
        1,
    )


# ----------------------------------------------------------------------------------------------
# GroupLens MovieLens-1M
# ----------------------------------------------------------------------------------------------


def _parse_ratings_dat(src: Source) -> _Interactions:
    names = ["UserID", "MovieID", "Rating", "Timestamp"]
    cols = _read_table(src, sep="::", field_names=names, fast_dtypes=dict.fromkeys(range(4), np.int64))
    return _parse_interactions(src, cols, "UserID", "MovieID", "Rating", "Timestamp")


def _parse_movies_dat(src: Source) -> _Table:
    # Parsed by hand: a title may hold anything, so split at the first and the last '::'.
    ids, titles, genres = [], [], []
    lineno = 0
    for lineno, line in enumerate(src.text("latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        head, sep1, rest = line.partition("::")
        title, sep2, genre_field = rest.rpartition("::")
        if not sep1 or not sep2:
            raise DataFormatError(
                f"{src.name}: line {lineno}: expected 'MovieID::Title::Genres', got {line[:200]!r}"
            )
        ids.append(head)
        titles.append(title.strip())
        genre_field = genre_field.strip()
        genres.append([] if genre_field in ("", "(no genres listed)") else genre_field.split("|"))
    if not ids:
        raise DataFormatError(f"{src.name}: the file has no data rows")
    id_col = _Column(src.name, "MovieID", pd.Series(ids, dtype=object), 1)
    return _Table(
        src.name,
        "MovieID",
        id_col.ints(),
        {"title": titles, "year": _years(titles), "genres": genres},
        1,
    )


def _parse_users_dat(src: Source) -> _Table:
    names = ["UserID", "Gender", "Age", "Occupation", "Zip-code"]
    cols = _read_table(src, sep="::", field_names=names, encoding="latin-1")
    age = cols["Age"].ints()
    bad = cols["Age"]._first_bad(~np.isin(age, list(ML1M_AGE_BANDS)))
    if bad is not None:
        raise cols["Age"]._fail(bad, f"expected an ML-1M age code {sorted(ML1M_AGE_BANDS)}")
    occ = cols["Occupation"].ints()
    bad = cols["Occupation"]._first_bad((occ < 0) | (occ >= len(ML1M_OCCUPATIONS)))
    if bad is not None:
        raise cols["Occupation"]._fail(bad, f"expected an occupation code 0..{len(ML1M_OCCUPATIONS) - 1}")
    return _Table(
        src.name,
        "UserID",
        cols["UserID"].ints(),
        _user_columns(
            age,
            cols["Gender"].strings(),
            [ML1M_OCCUPATIONS[o] for o in occ],
            [ML1M_AGE_BANDS[int(a)] for a in age],
            cols["Zip-code"].strings(),
        ),
        1,
    )


# ----------------------------------------------------------------------------------------------
# Assembling the bundle
# ----------------------------------------------------------------------------------------------


def _index_table(table: _Table, what: str) -> np.ndarray:
    """Returns the permutation sorting `table` by original id; raises on duplicate ids."""
    order = np.argsort(table.ids, kind="stable")
    sorted_ids = table.ids[order]
    dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if len(dup):
        value = int(sorted_ids[dup[0]])
        lines = [int(i) + table.first_line for i in order[dup[0] : dup[0] + 2]]
        raise DataFormatError(
            f"{table.src}: column '{table.id_column}': the {what} id {value} appears twice (lines {lines[0]} "
            f"and {lines[1]})"
        )
    return order


def _lookup(sorted_ids: np.ndarray, wanted: np.ndarray, inter: _Interactions, column: str, table: _Table):
    pos = np.searchsorted(sorted_ids, wanted)
    pos_c = np.minimum(pos, len(sorted_ids) - 1)
    missing = np.flatnonzero(sorted_ids[pos_c] != wanted)
    if len(missing):
        i = int(missing[0])
        raise DataFormatError(
            f"{inter.src}: column '{column}', line {i + inter.first_line}: {int(wanted[i])} is not in "
            f"{table.src} (column '{table.id_column}'); {len(missing)} interaction(s) are affected"
        )
    return pos_c


def _take(values: list | np.ndarray, order: np.ndarray) -> list | np.ndarray:
    if isinstance(values, np.ndarray):
        return values[order]
    return [values[i] for i in order]


def _build_bundle(
    name: str, inter: _Interactions, items: _Table, users: _Table, timestamp_unit: str
) -> RecDataBundle:
    # Seconds from here on: a column in ms or ns read as seconds would overflow and reorder events.
    seconds = TimestampReader(timestamp_unit).integers_to_seconds(
        inter.timestamps, source=inter.src, column=inter.time_column
    )
    item_order = _index_table(items, "item")
    user_order = _index_table(users, "user")
    item_ids_sorted = items.ids[item_order]
    user_ids_sorted = users.ids[user_order]
    item_idx = _lookup(item_ids_sorted, inter.items, inter, inter.item_column, items) + 1
    user_idx = _lookup(user_ids_sorted, inter.users, inter, inter.user_column, users)

    # Stable sorts: by time (in the file's unit, so sub-second order is kept), then by user; ties in time
    # keep the file's order.
    order = np.argsort(inter.timestamps, kind="stable")
    order = order[np.argsort(user_idx[order], kind="stable")]
    counts = np.bincount(user_idx, minlength=len(user_ids_sorted))
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    offsets_arr = pa.array(offsets.astype(np.int32) if offsets[-1] < 2**31 else offsets)
    list_cls = pa.ListArray if offsets_arr.type == pa.int32() else pa.LargeListArray
    sequences = pa.table(
        {
            "user_id": pa.array(np.arange(len(counts), dtype=np.int64)),
            "item_ids": list_cls.from_arrays(offsets_arr, pa.array(item_idx[order].astype(np.int64))),
            "timestamps": list_cls.from_arrays(offsets_arr, pa.array(seconds[order])),
        }
    )

    item_cols = items.columns
    item_table = pa.table(
        {
            "item_id": pa.array(np.arange(1, len(item_order) + 1, dtype=np.int64)),
            "original_id": pa.array([str(int(i)) for i in item_ids_sorted], pa.string()),
            "title": pa.array(_take(item_cols["title"], item_order), pa.string()),
            "year": pa.array(np.asarray(item_cols["year"], dtype=np.int64)[item_order]),
            "genres": pa.array(_take(item_cols["genres"], item_order), pa.list_(pa.string())),
        }
    )
    user_cols = users.columns
    user_table = pa.table(
        {
            "user_id": pa.array(np.arange(len(user_order), dtype=np.int64)),
            "original_id": pa.array([str(int(u)) for u in user_ids_sorted], pa.string()),
            "age": pa.array(np.asarray(user_cols["age"], dtype=np.int64)[user_order]),
            "gender": pa.array(_take(user_cols["gender"], user_order), pa.string()),
            "occupation": pa.array(_take(user_cols["occupation"], user_order), pa.string()),
            "age_band": pa.array(_take(user_cols["age_band"], user_order), pa.string()),
            "zip_code": pa.array(_take(user_cols["zip_code"], user_order), pa.string()),
        }
    )
    return RecDataBundle(
        name=name,
        sequences=datasets.Dataset(sequences),
        items=datasets.Dataset(item_table),
        users=datasets.Dataset(user_table),
    )
