"""Tests for the MovieLens readers; every fixture is written as text into `tmp_path`."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from ggr_hf.data import movielens
from ggr_hf.data.movielens import (
    ML100K_GENRES,
    RECBOLE_ML100K_MEMBER,
    RECBOLE_WHEEL,
    age_band,
    fetch_movielens_100k,
    load_movielens,
    movielens_genre_names,
)
from ggr_hf.data.schema import DataFormatError, RecDataBundle

# ------------------------------------------------------------------------------------------------
# The fixture: 4 users (one without interactions), 5 items (one never rated), ties in time.
# Original ids sort differently as text and as numbers (3 < 10 < 15 < 20; 5 < 7 < 12 < 50 < 100).
# ------------------------------------------------------------------------------------------------

# (user, item, rating, timestamp), in file order
RATINGS = [
    (20, 12, 4, 1000),
    (3, 100, 5, 500),
    (20, 5, 3, 900),
    (10, 7, 1, 300),
    (20, 100, 2, 1000),
    (3, 5, 4, 400),
    (10, 12, 5, 300),
    (20, 7, 1, 1000),
]
# item: (title without year, year, genres)
MOVIES = {
    5: ("Café Society", 1995, ["Comedy", "Drama"]),
    7: ("Twelve Monkeys", 1995, ["Sci-Fi", "Thriller"]),
    12: ("Usual Suspects, The", 1995, ["Crime", "Thriller"]),
    50: ("Star Wars", 1977, ["Action", "Sci-Fi", "War"]),
    100: ("Fargo", 1996, ["Crime", "Drama", "Thriller"]),
}
# user: (age, gender, occupation, zip, ML-1M age code, ML-1M occupation code)
PEOPLE = {
    3: (23, "M", "writer", "32067", 18, 20),
    10: (53, "F", "other", "94043", 50, 0),
    15: (17, "F", "student", "11111", 1, 10),
    20: (56, "M", "retired", "22222", 56, 13),
}

EXPECTED_SEQUENCES = [  # internal: users 3,10,15,20 -> 0..3; items 5,7,12,50,100 -> 1..5
    ([1, 5], [400, 500]),
    ([2, 3], [300, 300]),
    ([], []),
    ([1, 3, 5, 2], [900, 1000, 1000, 1000]),
]


def write_recbole(folder: Path, stem: str = "ml-100k") -> Path:
    """RecBole atomic files with typed headers, columns deliberately out of the usual order."""
    folder.mkdir(parents=True, exist_ok=True)
    inter = ["timestamp:float\titem_id:token\trating:float\tuser_id:token"]
    inter += [f"{t}\t{i}\t{r}\t{u}" for u, i, r, t in RATINGS]
    item = ["class:token_seq\titem_id:token\tmovie_title:token_seq\trelease_year:token"]
    for i, (title, year, genres) in MOVIES.items():
        item.append(f"{' '.join(genres)}\t{i}\t{title}\t{'unkonwn' if i == 50 else year}")
    user = ["zip_code:token\tuser_id:token\tgender:token\tage:token\toccupation:token"]
    user += [f"{z}\t{u}\t{g}\t{a}\t{o}" for u, (a, g, o, z, _, _) in PEOPLE.items()]
    for ext, lines in (("inter", inter), ("item", item), ("user", user)):
        (folder / f"{stem}.{ext}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def write_grouplens(folder: Path, newline: str = "\n") -> Path:
    """GroupLens ML-100K: u.data (tabs), u.item and u.user (pipes, latin-1)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in RATINGS]
    item = []
    for i, (title, year, genres) in MOVIES.items():
        flags = "|".join("1" if g in genres else "0" for g in ML100K_GENRES)
        date = "" if i == 50 else f"01-Jan-{year}"  # item 50: the year comes from the title
        item.append(f"{i}|{title} ({year})|{date}||http://us.imdb.com/M/title-exact?{i}|{flags}")
    user = [f"{u}|{a}|{g}|{o}|{z}" for u, (a, g, o, z, _, _) in PEOPLE.items()]
    (folder / "u.data").write_text(newline.join(data) + newline)
    (folder / "u.item").write_bytes((newline.join(item) + newline).encode("latin-1"))
    (folder / "u.user").write_bytes((newline.join(user) + newline).encode("latin-1"))
    return folder


def write_ml1m(folder: Path) -> Path:
    """GroupLens ML-1M: '::'-separated, latin-1, genres '|'-separated, age and occupation as codes."""
    folder.mkdir(parents=True, exist_ok=True)
    ratings = [f"{u}::{i}::{r}::{t}" for u, i, r, t in RATINGS]
    movies = [f"{i}::{title} ({year})::{'|'.join(g)}" for i, (title, year, g) in MOVIES.items()]
    users = [f"{u}::{g}::{code}::{occ}::{z}" for u, (_, g, _, z, code, occ) in PEOPLE.items()]
    (folder / "ratings.dat").write_text("\n".join(ratings) + "\n")
    (folder / "movies.dat").write_bytes(("\n".join(movies) + "\n").encode("latin-1"))
    (folder / "users.dat").write_bytes(("\n".join(users) + "\n").encode("latin-1"))
    return folder


def check_common(bundle: RecDataBundle) -> None:
    bundle.validate()
    assert bundle.num_users == 4 and bundle.num_items == 5 and bundle.num_interactions == len(RATINGS)
    assert bundle.sequences["user_id"] == [0, 1, 2, 3]
    got = list(zip(bundle.sequences["item_ids"], bundle.sequences["timestamps"]))
    assert got == [(list(i), list(t)) for i, t in EXPECTED_SEQUENCES]
    assert bundle.items["item_id"] == [1, 2, 3, 4, 5]
    assert bundle.items["original_id"] == ["5", "7", "12", "50", "100"]
    assert bundle.items["genres"] == [g for _, _, g in MOVIES.values()]
    assert bundle.users["user_id"] == [0, 1, 2, 3]
    assert bundle.users["original_id"] == ["3", "10", "15", "20"]
    assert bundle.users["gender"] == ["M", "F", "F", "M"]
    assert bundle.users["zip_code"] == ["32067", "94043", "11111", "22222"]
    assert bundle.users["age_band"] == ["18-24", "50-55", "<18", "56+"]
    assert bundle.sequences.features["item_ids"].feature.dtype == "int64"
    assert bundle.sequences.features["timestamps"].feature.dtype == "int64"
    assert movielens_genre_names(bundle) == sorted({g for _, _, gs in MOVIES.values() for g in gs})


# ------------------------------------------------------------------------------------------------
# The three layouts
# ------------------------------------------------------------------------------------------------


def test_recbole_layout(tmp_path):
    bundle = load_movielens(write_recbole(tmp_path / "rb", stem="anything"))
    check_common(bundle)
    assert bundle.name == "anything"
    assert bundle.items["title"] == [t for t, _, _ in MOVIES.values()]  # no year, as in the file
    assert bundle.items["year"] == [1995, 1995, 1995, -1, 1996]  # 'unkonwn' -> -1
    assert bundle.users["age"] == [23, 53, 17, 56]
    assert bundle.users["occupation"] == ["writer", "other", "student", "retired"]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_grouplens_100k_layout(tmp_path, newline):
    bundle = load_movielens(write_grouplens(tmp_path / "gl", newline=newline))
    check_common(bundle)
    assert bundle.name == "ml-100k"
    assert bundle.items["title"] == [f"{t} ({y})" for t, y, _ in MOVIES.values()]
    assert bundle.items["title"][0] == "Café Society (1995)"  # latin-1 decoded
    assert bundle.items["year"] == [1995, 1995, 1995, 1977, 1996]  # 50: from the title
    assert bundle.users["age"] == [23, 53, 17, 56]
    assert bundle.users["occupation"] == ["writer", "other", "student", "retired"]


def test_grouplens_genre_names_from_u_genre(tmp_path):
    folder = write_grouplens(tmp_path / "gl")
    names = list(ML100K_GENRES)
    names[15] = "Science Fiction"
    lines = [f"{n}|{k}" for k, n in enumerate(names)][::-1]  # order comes from the index, not the line
    (folder / "u.genre").write_text("\n".join(lines) + "\n\n")
    bundle = load_movielens(folder, format="grouplens-100k")
    assert bundle.items["genres"][1] == ["Science Fiction", "Thriller"]


def test_ml1m_layout(tmp_path):
    bundle = load_movielens(write_ml1m(tmp_path / "m1"))
    check_common(bundle)
    assert bundle.name == "ml-1m"
    assert bundle.items["title"][0] == "Café Society (1995)"
    assert bundle.items["year"] == [1995, 1995, 1995, 1977, 1996]
    assert bundle.users["age"] == [18, 50, 1, 56]  # the band code
    assert bundle.users["occupation"] == ["writer", "other", "K-12 student", "retired"]


def test_ml1m_title_with_colons(tmp_path):
    folder = write_ml1m(tmp_path / "m1")
    text = (folder / "movies.dat").read_text(encoding="latin-1")
    (folder / "movies.dat").write_text(
        text.replace("Fargo (1996)", "Star Trek: The Motion Picture (1979)"), encoding="latin-1"
    )
    bundle = load_movielens(folder, format="ml-1m")
    assert bundle.items["title"][4] == "Star Trek: The Motion Picture (1979)"
    assert bundle.items["year"][4] == 1979


def test_detection_and_format_argument(tmp_path):
    with pytest.raises(DataFormatError, match="no MovieLens files"):
        load_movielens(tmp_path)
    write_grouplens(tmp_path)
    write_ml1m(tmp_path)
    with pytest.raises(DataFormatError, match="several MovieLens layouts"):
        load_movielens(tmp_path)
    assert load_movielens(tmp_path, format="ml-1m").name == "ml-1m"
    with pytest.raises(ValueError, match="format"):
        load_movielens(tmp_path, format="ml-20m")
    with pytest.raises(DataFormatError, match="no such folder"):
        load_movielens(tmp_path / "nope")


def test_age_band():
    assert [age_band(a) for a in (7, 17, 18, 24, 25, 34, 35, 44, 45, 49, 50, 55, 56, 73)] == [
        "<18",
        "<18",
        "18-24",
        "18-24",
        "25-34",
        "25-34",
        "35-44",
        "35-44",
        "45-49",
        "45-49",
        "50-55",
        "50-55",
        "56+",
        "56+",
    ]


# ------------------------------------------------------------------------------------------------
# Bad input: DataFormatError naming the file, the column and the value
# ------------------------------------------------------------------------------------------------

WRITERS = {"recbole": write_recbole, "grouplens-100k": write_grouplens, "ml-1m": write_ml1m}
FILES = {  # interactions, items, users
    "recbole": ("ml-100k.inter", "ml-100k.item", "ml-100k.user"),
    "grouplens-100k": ("u.data", "u.item", "u.user"),
    "ml-1m": ("ratings.dat", "movies.dat", "users.dat"),
}
COLUMNS = {  # user, item, rating, timestamp columns of the interactions; id column of the item table
    "recbole": ("user_id", "item_id", "rating", "timestamp", "item_id"),
    "grouplens-100k": ("user_id", "item_id", "rating", "timestamp", "movie_id"),
    "ml-1m": ("UserID", "MovieID", "Rating", "Timestamp", "MovieID"),
}


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_bytes().decode("latin-1")
    assert old in text, (old, text)
    path.write_bytes(text.replace(old, new, count).encode("latin-1"))


def append(path: Path, line: str) -> None:
    path.write_bytes(path.read_bytes() + (line + "\n").encode("latin-1"))


def interaction_line(fmt: str, user, item, rating, ts) -> str:
    if fmt == "recbole":
        return f"{ts}\t{item}\t{rating}\t{user}"
    if fmt == "grouplens-100k":
        return f"{user}\t{item}\t{rating}\t{ts}"
    return f"{user}::{item}::{rating}::{ts}"


def assert_error(folder: Path, fmt: str, *parts: str) -> str:
    with pytest.raises(DataFormatError) as info:
        load_movielens(folder, format=fmt)
    message = str(info.value)
    for part in parts:
        assert part in message, (part, message)
    return message


@pytest.mark.parametrize("fmt", list(WRITERS))
@pytest.mark.parametrize("which", [0, 1, 2])
def test_missing_file(tmp_path, fmt, which):
    folder = WRITERS[fmt](tmp_path)
    (folder / FILES[fmt][which]).unlink()
    name = FILES[fmt][which]
    shown = "*" + name[name.index(".") :] if fmt == "recbole" else name
    assert_error(folder, "auto" if which else fmt, shown, "not found")


@pytest.mark.parametrize("fmt", list(WRITERS))
@pytest.mark.parametrize("which", [0, 1, 2])
def test_empty_file(tmp_path, fmt, which):
    folder = WRITERS[fmt](tmp_path)
    (folder / FILES[fmt][which]).write_text("")
    assert_error(folder, fmt, FILES[fmt][which], "empty")


@pytest.mark.parametrize("which,column", [(0, "timestamp"), (0, "user_id"), (1, "class"), (2, "age")])
def test_recbole_header_missing_column(tmp_path, which, column):
    folder = write_recbole(tmp_path)
    path = folder / FILES["recbole"][which]
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    pos = next(k for k, f in enumerate(header) if f.startswith(column + ":"))
    header[pos] = "other:token"
    path.write_text("\n".join(["\t".join(header), *lines[1:]]) + "\n")
    assert_error(folder, "recbole", FILES["recbole"][which], f"'{column}'")


def test_recbole_header_only_rows(tmp_path):
    folder = write_recbole(tmp_path)
    path = folder / "ml-100k.inter"
    path.write_text(path.read_text().splitlines()[0] + "\n")
    assert_error(folder, "recbole", "ml-100k.inter", "no data rows")


@pytest.mark.parametrize("fmt", list(WRITERS))
@pytest.mark.parametrize("col,value", [(0, "abc"), (1, "7.5"), (2, "bad")])
def test_wrong_type(tmp_path, fmt, col, value):
    folder = WRITERS[fmt](tmp_path)
    fields = [10, 12, 4, 300]
    fields[col] = value
    append(folder / FILES[fmt][0], interaction_line(fmt, *fields))
    message = assert_error(folder, fmt, FILES[fmt][0], f"'{COLUMNS[fmt][col]}'", repr(value))
    line = len(RATINGS) + 1 + (fmt == "recbole")
    assert f"line {line}" in message


@pytest.mark.parametrize("fmt", list(WRITERS))
@pytest.mark.parametrize("value", ["yesterday", "", "12:00"])
def test_unparsable_timestamp(tmp_path, fmt, value):
    folder = WRITERS[fmt](tmp_path)
    append(folder / FILES[fmt][0], interaction_line(fmt, 10, 12, 4, value))
    assert_error(folder, fmt, FILES[fmt][0], f"'{COLUMNS[fmt][3]}'", repr(value))


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_item_not_in_item_table(tmp_path, fmt):
    folder = WRITERS[fmt](tmp_path)
    append(folder / FILES[fmt][0], interaction_line(fmt, 10, 999, 4, 300))
    assert_error(folder, fmt, FILES[fmt][0], FILES[fmt][1], f"'{COLUMNS[fmt][1]}'", "999")


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_user_not_in_user_table(tmp_path, fmt):
    folder = WRITERS[fmt](tmp_path)
    append(folder / FILES[fmt][0], interaction_line(fmt, 77, 12, 4, 300))
    assert_error(folder, fmt, FILES[fmt][0], FILES[fmt][2], f"'{COLUMNS[fmt][0]}'", "77")


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_duplicate_item_id(tmp_path, fmt):
    folder = WRITERS[fmt](tmp_path)
    path = folder / FILES[fmt][1]
    lines = path.read_bytes().decode("latin-1").splitlines()
    dup = next(line for line in lines if "Twelve Monkeys" in line)
    append(path, dup.replace("Twelve Monkeys", "Another"))
    assert_error(folder, fmt, FILES[fmt][1], f"'{COLUMNS[fmt][4]}'", " 7 ")


def test_grouplens_bad_genre_flag(tmp_path):
    folder = write_grouplens(tmp_path)
    edit(folder / "u.item", "|0|", "|x|")
    assert_error(folder, "grouplens-100k", "u.item", "'unknown'", "'x'")


def test_grouplens_wrong_field_count(tmp_path):
    folder = write_grouplens(tmp_path)
    append(folder / "u.data", "10\t12\t4\t300\t99")
    assert_error(folder, "grouplens-100k", "u.data", "fields")


def test_grouplens_bad_age(tmp_path):
    folder = write_grouplens(tmp_path)
    edit(folder / "u.user", "3|23|", "3|twenty|")
    assert_error(folder, "grouplens-100k", "u.user", "'age'", "'twenty'", "line 1")


@pytest.mark.parametrize("old,new,column", [("::18::", "::19::", "Age"), ("::10::", "::21::", "Occupation")])
def test_ml1m_bad_codes(tmp_path, old, new, column):
    folder = write_ml1m(tmp_path)
    edit(folder / "users.dat", old, new)
    assert_error(folder, "ml-1m", "users.dat", f"'{column}'", new.strip(":"))


def test_ml1m_bad_movie_line(tmp_path):
    folder = write_ml1m(tmp_path)
    append(folder / "movies.dat", "60 no separators")
    assert_error(folder, "ml-1m", "movies.dat", "line 6")


# ------------------------------------------------------------------------------------------------
# The embedded default: a fake wheel stands in for `pip download`
# ------------------------------------------------------------------------------------------------


def make_fake_wheel(path: Path, source: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for ext in ("inter", "item", "user"):
            zf.write(source / f"ml-100k.{ext}", f"{RECBOLE_ML100K_MEMBER}.{ext}")
        zf.writestr("recbole/__init__.py", "raise ImportError('never import recbole')\n")
    return path


@pytest.fixture
def fake_pip(tmp_path, monkeypatch):
    """Replaces the `pip download` step by copying a fake wheel; records the calls."""
    wheel = make_fake_wheel(tmp_path / "fake.whl", write_recbole(tmp_path / "src"))
    calls = []

    def fake_download(directory: Path) -> None:
        calls.append(directory)
        (directory / RECBOLE_WHEEL).write_bytes(wheel.read_bytes())

    monkeypatch.setattr(movielens, "_pip_download", fake_download)
    return calls


def test_default_fetch_and_cache(tmp_path, fake_pip, monkeypatch):
    cache = tmp_path / "cache"
    first = load_movielens(cache_dir=cache)
    check_common(first)
    assert first.name == "ml-100k" and fake_pip == [cache]
    assert len(list(cache.glob("ml-100k-*/bundle.json"))) == 1

    def parser_must_not_run(*args, **kwargs):
        raise AssertionError("the cached bundle should have been read")

    monkeypatch.setattr(movielens, "read_recbole", parser_must_not_run)
    second = load_movielens(cache_dir=cache)
    check_common(second)
    assert second.items["title"] == first.items["title"]
    assert fake_pip == [cache]  # no second download
    assert fetch_movielens_100k(cache) == cache / RECBOLE_WHEEL


def test_default_cache_dir_from_env(tmp_path, fake_pip, monkeypatch):
    monkeypatch.setenv("GGR_HF_CACHE", str(tmp_path / "root"))
    assert fetch_movielens_100k() == tmp_path / "root" / "recbole" / RECBOLE_WHEEL
    # A wheel put by hand directly in $GGR_HF_CACHE is found too.
    monkeypatch.setenv("GGR_HF_CACHE", str(tmp_path / "hand"))
    (tmp_path / "hand").mkdir()
    (tmp_path / "hand" / RECBOLE_WHEEL).write_bytes(b"")
    assert fetch_movielens_100k() == tmp_path / "hand" / RECBOLE_WHEEL
    assert len(fake_pip) == 1


def test_download_failure_explains(tmp_path, monkeypatch):
    def failing(directory: Path) -> None:
        raise subprocess.CalledProcessError(1, ["pip"])

    monkeypatch.setattr(movielens, "_pip_download", failing)
    with pytest.raises(RuntimeError, match=r"pip download --no-deps recbole==1\.2\.1 -d DIR"):
        load_movielens(cache_dir=tmp_path)

    monkeypatch.setattr(movielens, "_pip_download", lambda directory: None)
    with pytest.raises(RuntimeError, match="GGR_HF_CACHE"):
        fetch_movielens_100k(tmp_path)


def test_broken_wheel(tmp_path, monkeypatch):
    monkeypatch.setattr(movielens, "_pip_download", lambda d: (d / RECBOLE_WHEEL).write_bytes(b"not a zip"))
    with pytest.raises(DataFormatError, match="not a readable wheel"):
        load_movielens(cache_dir=tmp_path)
