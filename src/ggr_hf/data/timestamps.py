"""Event times from the publishers' files: the unit of integer time columns and their plausibility.

Every loader reads its time column through a `TimestampReader`. Integer columns are in
`timestamp_unit`: `"s"`, `"ms"`, `"us"`, `"ns"`, or `"auto"` (the default), which infers the unit from
the magnitude of the values and logs the choice once per file and column:

| largest value           | read as       | (seconds: years 1970..5138; milliseconds from 1973-03 ...) |
|-------------------------|---------------|-----------------------------------------------------------|
| below 10^11             | seconds       |                                                           |
| 10^11 .. 10^14          | milliseconds  |                                                           |
| 10^14 .. 10^17          | microseconds  |                                                           |
| 10^17 and above         | nanoseconds   | (pandas' `astype("int64")` of a datetime column)          |

Typed Arrow timestamp columns carry their own unit and ignore the option. After conversion every event
time must lie in 1970-01-01 .. 2100-01-01; a value outside (a wrong unit, a negative time) is a
`GGRDataError` naming the file, the column, the value and the unit to pass. With `"auto"`, a column
whose values infer different units (within one file, across its batches) is an error as well: its
unit cannot be known, and reading it either way would reorder events silently.

Conversion floors to whole seconds before any multiplication, so no unit can make the values overflow.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ggr_hf.errors import GGRDataError, GGRInputError

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_SECONDS",
    "MIN_SECONDS",
    "TIMESTAMP_UNITS",
    "TimestampReader",
    "check_timestamp_unit",
    "infer_timestamp_unit",
]

TIMESTAMP_UNITS = ("auto", "s", "ms", "us", "ns")
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_UNIT_WORDS = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
# Plausible event times, in seconds since the epoch: 1970-01-01 (inclusive) .. 2100-01-01 (exclusive).
MIN_SECONDS = 0
MAX_SECONDS = 4_102_444_800
# Upper bounds of the magnitude bands `"auto"` maps to s, ms, us; above the last one: ns.
_AUTO_BOUNDS = np.array([10**11, 10**14, 10**17], dtype=np.int64)
_AUTO_UNITS = ("s", "ms", "us", "ns")


def check_timestamp_unit(unit: str) -> str:
    """Returns `unit` if it is one of `TIMESTAMP_UNITS`.

    Raises:
        `GGRInputError` naming the value and the accepted ones.
    """
    if not isinstance(unit, str) or unit not in TIMESTAMP_UNITS:
        raise GGRInputError(f"timestamp_unit must be one of {', '.join(TIMESTAMP_UNITS)}, got {unit!r}")
    return unit


def infer_timestamp_unit(value: int) -> str:
    """The unit `"auto"` reads a non-negative integer time `value` in (see the module docstring)."""
    return _AUTO_UNITS[int(np.searchsorted(_AUTO_BOUNDS, value, side="right"))]


def _date(seconds: int) -> str:
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d")
    except (OverflowError, OSError, ValueError):  # beyond `datetime`'s years 1..9999
        return f"about year {1970 + seconds // 31_556_952}"


class TimestampReader:
    """Reads the time columns of one loader run in one `timestamp_unit`, checking every value.

    Args:
        unit (`str`, *optional*, defaults to `"auto"`): one of `TIMESTAMP_UNITS`.

    Raises:
        `GGRInputError` for another `unit`.
    """

    def __init__(self, unit: str = "auto") -> None:
        self.unit = check_timestamp_unit(unit)
        # (source, column) -> (unit inferred, the value it was inferred from), for "auto".
        self._inferred: dict[tuple[str, str], tuple[str, int]] = {}

    def _resolve(self, values: np.ndarray, source: str, column: str) -> str:
        if self.unit != "auto":
            return self.unit
        lo, hi = int(values.min()), int(values.max())
        lo_unit, hi_unit = infer_timestamp_unit(max(lo, 0)), infer_timestamp_unit(hi)
        key = (str(source), column)
        if lo_unit != hi_unit:
            self._mixed(source, column, (lo_unit, lo), (hi_unit, hi))
        seen = self._inferred.get(key)
        if seen is None:
            self._inferred[key] = (hi_unit, hi)
            logger.info(
                "%s: column '%s': integer times read as %s (timestamp_unit='auto', largest value %d); "
                "pass timestamp_unit to override",
                source,
                column,
                _UNIT_WORDS[hi_unit],
                hi,
            )
        elif seen[0] != hi_unit:
            self._mixed(source, column, seen, (hi_unit, hi))
        return hi_unit

    @staticmethod
    def _mixed(source: str, column: str, a: tuple[str, int], b: tuple[str, int]) -> None:
        raise GGRDataError(
            f"{source}: column '{column}' holds integer times of mixed magnitudes ({a[1]} looks like "
            f"{_UNIT_WORDS[a[0]]}, {b[1]} like {_UNIT_WORDS[b[0]]}); fix the column, or pass the unit it "
            f"uses with timestamp_unit (--timestamp-unit {'|'.join(_PER_SECOND)})"
        )

    def _check_range(
        self, seconds: np.ndarray, raw: np.ndarray, unit: str, source: str, column: str, typed: bool = False
    ) -> None:
        bad = np.flatnonzero((seconds < MIN_SECONDS) | (seconds >= MAX_SECONDS))
        if not len(bad):
            return
        value = int(raw[bad[0]])
        suggestion = infer_timestamp_unit(value) if value >= 0 else None
        if typed:
            how, hint = f"a timestamp[{unit}] value", "fix the column's values or its type"
        else:
            how = f"read as {_UNIT_WORDS[unit]} (timestamp_unit={self.unit!r})"
            hint = (
                f"pass timestamp_unit={suggestion!r} (--timestamp-unit {suggestion}) if the column is in "
                f"{_UNIT_WORDS[suggestion]}"
                if suggestion is not None and suggestion != unit
                else "fix or remove the row"
            )
        raise GGRDataError(
            f"{source}: column '{column}': time {value} {how} is {_date(int(seconds[bad[0]]))}, outside "
            f"1970-01-01 .. 2100-01-01; {hint} ({len(bad)} value(s) affected)"
        )

    def integers_to_microseconds(
        self, values: np.ndarray, *, source: str, column: str, valid: np.ndarray | None = None
    ) -> np.ndarray:
        """Integer times in `self.unit` as int64 microseconds since the epoch, every value checked.

        Args:
            values (`np.ndarray` of int64 `[n]`): the raw times.
            source (`str`): the file they come from, for messages.
            column (`str`): their column, for messages.
            valid (`np.ndarray` of bool `[n]`, *optional*): rows to check (e.g. non-null); the others are
                passed through unchecked (converted as well).

        Returns:
            `np.ndarray` of int64 `[n]`: microseconds; sub-second precision is kept down to microseconds.

        Raises:
            `GGRDataError` for a value outside 1970..2100 after conversion, or mixed magnitudes under
            `"auto"`.
        """
        values = np.asarray(values, dtype=np.int64)
        checked = values if valid is None else values[valid]
        if not len(checked):
            return np.zeros(len(values), dtype=np.int64)
        unit = self._resolve(checked, source, column)
        per_s = _PER_SECOND[unit]
        self._check_range(np.floor_divide(checked, per_s), checked, unit, source, column)
        if valid is not None:
            # Unchecked rows (nulls) must not overflow either: they are dropped later anyway.
            values = np.where(valid, values, 0)
        if per_s >= 1_000_000:
            return np.floor_divide(values, per_s // 1_000_000)
        return values * (1_000_000 // per_s)

    def integers_to_seconds(
        self, values: np.ndarray, *, source: str, column: str, valid: np.ndarray | None = None
    ) -> np.ndarray:
        """`integers_to_microseconds` floored to whole seconds (int64 `[n]`)."""
        return np.floor_divide(
            self.integers_to_microseconds(values, source=source, column=column, valid=valid), 1_000_000
        )

    def arrow_to_microseconds(
        self, array: pa.Array | pa.ChunkedArray, *, source: str, column: str
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """An Arrow time column (typed timestamps in any unit, or integers in `self.unit`) as int64
        microseconds `[n]` (nulls as 0) and its validity mask (`None`: no nulls).

        Raises:
            `GGRDataError` for an implausible value (see `integers_to_microseconds`) or a column that is
            neither timestamps nor integers.
        """
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
        valid = None if array.null_count == 0 else pc.is_valid(array).to_numpy(zero_copy_only=False)
        if pa.types.is_timestamp(array.type):
            per_s = _PER_SECOND[array.type.unit]
            raw = pc.fill_null(array.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
            checked = raw if valid is None else raw[valid]
            if len(checked):
                self._check_range(
                    np.floor_divide(checked, per_s), checked, array.type.unit, source, column, typed=True
                )
            if per_s >= 1_000_000:
                return np.floor_divide(raw, per_s // 1_000_000), valid
            return raw * (1_000_000 // per_s), valid
        if pa.types.is_integer(array.type):
            try:
                raw = pc.fill_null(array, 0).cast(pa.int64()).to_numpy(zero_copy_only=False)
            except pa.ArrowInvalid as err:  # unsigned values beyond int64: no plausible time
                raise GGRDataError(
                    f"{source}: column '{column}': integer times beyond the int64 range ({err})"
                ) from None
            return self.integers_to_microseconds(raw, source=source, column=column, valid=valid), valid
        raise GGRDataError(
            f"{source}: column '{column}' has type {array.type}, expected timestamps or integers"
        )
