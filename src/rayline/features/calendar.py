"""Public holidays, computed (no data files, no network): the distance of a date to the nearest
one is known before the event and moves travel demand (Thanksgiving, Christmas, July 4)."""

from __future__ import annotations

import datetime as dt
import functools

import numpy as np

HORIZON_DAYS = 30  # farther than this counts as "no holiday near"


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    """n-th (1-based; -1 = last) `weekday` (Mon=0) of the month."""
    if n > 0:
        first = dt.date(year, month, 1)
        return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    last = dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def us_federal_holidays(year: int) -> list[dt.date]:
    days = [dt.date(year, 1, 1), _nth_weekday(year, 1, 0, 3), _nth_weekday(year, 2, 0, 3),
            _nth_weekday(year, 5, 0, -1), dt.date(year, 7, 4), _nth_weekday(year, 9, 0, 1),
            _nth_weekday(year, 10, 0, 2), dt.date(year, 11, 11), _nth_weekday(year, 11, 3, 4), dt.date(year, 12, 25)]
    if year >= 2021:
        days.append(dt.date(year, 6, 19))
    return sorted(days)


# Every day a timestamp may name (coerce.TIME_MIN..TIME_MAX), with a year's margin either side.
FIRST_YEAR, LAST_YEAR = 1677, 2262
_EPOCH = dt.date(1970, 1, 1)


@functools.lru_cache(maxsize=1)
def _distance_table() -> tuple[int, np.ndarray]:
    """(epoch day of entry 0, |days| to the nearest holiday per day, capped): built once per
    process (~6,000 holidays, ~215,000 days, a few ms), so a lookup is one index per value and
    no client's timestamps can make a request build calendars."""
    hol = np.array([(d - _EPOCH).days for y in range(FIRST_YEAR, LAST_YEAR + 1) for d in us_federal_holidays(y)],
                   dtype=np.int64)
    first, last = (dt.date(FIRST_YEAR, 1, 1) - _EPOCH).days, (dt.date(LAST_YEAR, 12, 31) - _EPOCH).days
    days = np.arange(first, last + 1, dtype=np.int64)
    i = np.clip(np.searchsorted(hol, days), 1, len(hol) - 1)
    dist = np.minimum(np.abs(days - hol[i - 1]), np.abs(hol[i] - days))
    return first, np.minimum(dist, HORIZON_DAYS).astype(np.int8)


def days_to_holiday(epoch_days: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """|days| to the nearest US federal holiday, capped at HORIZON_DAYS; HORIZON_DAYS where not
    valid or outside the table (the contract refuses such instants before they get here)."""
    out = np.full(len(epoch_days), HORIZON_DAYS, dtype=np.int64)
    if not valid.any():
        return out
    first, table = _distance_table()
    idx = epoch_days - first
    ok = valid & (idx >= 0) & (idx < len(table))
    out[ok] = table[idx[ok]]
    return out
