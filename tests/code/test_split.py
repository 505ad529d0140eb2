"""Split assignment depends only on a row's own values."""

import numpy as np
import pyarrow as pa

from rayline.config import SplitConfig
from rayline.data.split import assign, split_names, stable_hash


def _table(n=20000):
    rng = np.random.default_rng(0)
    return pa.table({"id": np.arange(n), "carrier": rng.choice(["UA", "AA"], n),
                     "ts": pa.array((np.datetime64("2013-01-01") + rng.integers(0, 365, n).astype("timedelta64[D]")).astype("datetime64[s]"), pa.timestamp("s", tz="UTC"))})


def test_hash_is_stable_and_order_independent():
    t = _table()
    h = stable_hash(t, ["id", "carrier"])
    perm = np.random.default_rng(1).permutation(t.num_rows)
    h2 = stable_hash(t.take(pa.array(perm)), ["id", "carrier"])
    np.testing.assert_array_equal(h[perm], h2)
    # chunking does not matter either
    np.testing.assert_array_equal(np.concatenate([stable_hash(t.slice(0, 7), ["id", "carrier"]),
                                                  stable_hash(t.slice(7), ["id", "carrier"])]), h)
    assert not np.array_equal(h, stable_hash(t, ["id", "carrier"], seed=1))


def test_hash_split_fractions():
    codes, undecided = assign(_table(), SplitConfig(method="hash", key=["id"], valid_fraction=0.2, test_fraction=0.1))
    split = split_names(codes)
    assert not undecided.any()
    frac = {s: (split == s).mean() for s in ("train", "valid", "test")}
    assert abs(frac["valid"] - 0.2) < 0.015 and abs(frac["test"] - 0.1) < 0.015


def test_time_split_holds_out_by_date_and_flags_missing_times():
    t = _table()
    t = t.set_column(2, "ts", pa.concat_arrays([t.column("ts").combine_chunks().slice(0, t.num_rows - 1),
                                                pa.nulls(1, pa.timestamp("s", tz="UTC"))]))
    cfg = SplitConfig(method="time", column="ts", test_from="2013-11-01", valid_fraction=0.1, key=["id"])
    codes, undecided = assign(t, cfg)
    split = split_names(codes)
    months = np.array([v.month if v else 0 for v in t.column("ts").to_pylist()])
    assert set(split[months >= 11]) == {"test"}
    assert "test" not in set(split[(months < 11) & (months > 0)])
    assert undecided.tolist()[-1] and undecided.sum() == 1
