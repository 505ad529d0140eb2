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


@functools.lru_cache(maxsize=64)
def _holiday_days(first_year: int, last_year: int) -> np.ndarray:
    epoch = dt.date(1970, 1, 1)
    return np.array([(d - epoch).days for y in range(first_year, last_year + 1) for d in us_federal_holidays(y)],
                    dtype=np.int64)


def days_to_holiday(epoch_days: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """|days| to the nearest US federal holiday, capped at HORIZON_DAYS; HORIZON_DAYS where not valid."""
    out = np.full(len(epoch_days), HORIZON_DAYS, dtype=np.int64)
    if not valid.any():
        return out
    d = epoch_days[valid]
    lo, hi = 1970 + int(d.min()) // 366 - 1, 1970 + int(d.max()) // 365 + 1
    hol = _holiday_days(max(1, lo), min(9998, hi))
    i = np.clip(np.searchsorted(hol, d), 1, len(hol) - 1)
    dist = np.minimum(np.abs(d - hol[i - 1]), np.abs(hol[i] - d))
    out[valid] = np.minimum(dist, HORIZON_DAYS)
    return out
