"""Broadcast lookups: left-join semantics, batch order kept, composite and mistyped keys."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from rayline.config import JoinConfig
from rayline.data.join import left_join, prepare_dimension
from rayline.errors import InputError


def _weather():
    return pa.table({"origin": ["EWR", "EWR", "JFK", "JFK", None],
                     "hour": [1, 2, 1, 2, 1],
                     "temp": [10.0, 11.0, 20.0, 21.0, 99.0]})


def test_composite_key_lookup_keeps_order_and_marks_misses():
    join = JoinConfig(table="weather", keys=["origin", "hour"], columns=["temp"], rename={"temp": "t"})
    dim = prepare_dimension(_weather(), join)
    batch = pa.table({"origin": ["JFK", "EWR", "LGA", None, "JFK", "EWR"], "hour": [2, 1, 1, 1, None, 2]})
    out, unmatched = left_join(batch, dim, join)
    assert out.column_names == ["origin", "hour", "t"]
    assert out.column("t").to_pylist() == [21.0, 10.0, None, None, None, 11.0]
    # LGA is unknown; null keys match nothing, not even the dimension's null-keyed row
    assert unmatched.tolist() == [False, False, True, True, True, False]


def test_key_types_are_aligned():
    # A CSV may read a key as text on one side and as a number on the other.
    join = JoinConfig(table="planes", keys={"tail": "id"}, columns=["seats"])
    dim = prepare_dimension(pa.table({"id": [101, 202, 303], "seats": [150, 200, 50]}), join)
    out, unmatched = left_join(pa.table({"tail": ["202", "101", "x", "303"]}), dim, join)
    assert out.column("seats").to_pylist() == [200, 150, None, 50] and unmatched.tolist() == [False, False, True, False]


def test_large_batch_matches_a_plain_dictionary_lookup():
    rng = np.random.default_rng(0)
    keys_a, keys_b = rng.integers(0, 50, 2000), rng.integers(0, 40, 2000)
    pairs = sorted(set(zip(keys_a.tolist(), keys_b.tolist())))
    dim = pa.table({"a": [p[0] for p in pairs], "b": [p[1] for p in pairs], "v": [p[0] * 100 + p[1] for p in pairs]})
    join = JoinConfig(table="d", keys=["a", "b"], columns=["v"])
    probe_a, probe_b = rng.integers(0, 60, 50_000), rng.integers(0, 45, 50_000)
    out, unmatched = left_join(pa.table({"a": probe_a, "b": probe_b}), prepare_dimension(dim, join), join)
    known = set(pairs)
    expected = [a * 100 + b if (a, b) in known else None for a, b in zip(probe_a.tolist(), probe_b.tolist())]
    assert out.column("v").to_pylist() == expected
    assert unmatched.tolist() == [e is None for e in expected]


def test_non_unique_dimension_key_is_refused():
    join = JoinConfig(table="planes", keys=["id"], columns=["seats"])
    with pytest.raises(InputError, match="not unique"):
        prepare_dimension(pa.table({"id": ["a", "a"], "seats": [1, 2]}), join)


def test_joined_column_must_not_shadow_a_primary_column():
    join = JoinConfig(table="planes", keys=["id"], columns=["seats"])
    dim = prepare_dimension(pa.table({"id": ["a"], "seats": [1]}), join)
    with pytest.raises(InputError, match="rename"):
        left_join(pa.table({"id": ["a"], "seats": [5]}), dim, join)


def test_empty_dimension_matches_nothing():
    join = JoinConfig(table="planes", keys=["id"], columns=["seats"])
    dim = prepare_dimension(pa.table({"id": pa.array([], pa.string()), "seats": pa.array([], pa.int64())}), join)
    out, unmatched = left_join(pa.table({"id": ["a", None]}), dim, join)
    assert out.column("seats").null_count == 2 and unmatched.all()


@pytest.mark.parametrize("keys", [
    # a time key (weather by airport and hour): the few-rows path matches on ticks, not datetimes
    ({"site": ["A", "A", "B"], "at": pa.array([0, 3_600_000_000, 0], pa.timestamp("us", tz="UTC"))},
     {"site": ["A", "B", "A", "A", None], "at": ["1970-01-01T01:00:00Z", "1970-01-01T02:00:00+02:00",
                                                 "1970-01-01T00:30:00Z", None, "1970-01-01T00:00:00Z"]},
     [1.0, 2.0, None, None, None]),
    ({"site": ["A", "B"], "at": pa.array([0, 1], pa.date32())},
     {"site": ["B", "A", "A"], "at": pa.array([1, 1, 0], pa.date32())}, [1.0, None, 0.0]),
])
def test_a_few_rows_through_the_dictionary_equal_the_arrow_path_for_time_keys(keys, monkeypatch):
    from rayline.features import lookups as lk_mod

    dim_cols, probe_cols, want = keys
    join = JoinConfig(table="weather", keys=["site", "at"], columns=["temp"])
    dim = prepare_dimension(pa.table({**dim_cols, "temp": [float(i) for i in range(len(dim_cols["site"]))]}), join)
    batch = pa.table(probe_cols)
    small = [left_join(batch.slice(i, 1), dim, join) for i in range(batch.num_rows)]
    monkeypatch.setattr(lk_mod, "SMALL_LOOKUP", 0)                        # every call takes Arrow's path
    whole, unmatched = left_join(batch, dim, join)
    assert [t.column("temp")[0].as_py() for t, _ in small] == whole.column("temp").to_pylist()
    assert [bool(u[0]) for _, u in small] == unmatched.tolist()
    assert whole.column("temp").to_pylist() == want


def _three_key_dimension(rng, n=3000):
    rows = sorted(set(zip(rng.integers(0, 40, n).tolist(), rng.integers(0, 12, n).tolist(), rng.integers(0, 31, n).tolist())))
    dim = pa.table({"a": [f"t{r[0]}" for r in rows], "m": [r[1] for r in rows], "d": [r[2] for r in rows],
                    "v": list(range(len(rows)))})
    return dim, {r: i for i, r in enumerate(rows)}


def test_fold_through_flat_tables_equals_the_hashed_fold_and_a_dictionary(monkeypatch):
    """A composite key re-densifies each step through a flat table when that is small, else with
    `index_in`: both give each row its dictionary match, nulls and unknown parts missing."""
    from rayline.features import lookups as lk_mod

    rng = np.random.default_rng(1)
    dim, known = _three_key_dimension(rng)
    join = JoinConfig(table="d", keys=["a", "m", "d"], columns=["v"])
    n = 20_000
    a = [None if x == 45 else f"t{x}" for x in rng.integers(0, 46, n).tolist()]
    m = [None if x == 13 else x for x in rng.integers(0, 14, n).tolist()]
    d = rng.integers(0, 33, n).tolist()
    batch = pa.table({"a": a, "m": m, "d": d})
    want = [None if x is None or y is None else known.get((int(x[1:]), y, z)) for x, y, z in zip(a, m, d)]
    flat_dim = prepare_dimension(dim, join)
    assert flat_dim.table_bytes == 0  # built on first use, and counted in the snapshot's memory
    flat, _ = left_join(batch, flat_dim, join)
    assert flat_dim.table_bytes > 0
    monkeypatch.setattr(lk_mod, "DENSE_PER_ROW", 0)
    monkeypatch.setattr(lk_mod, "DENSE_MIN", 0)
    prepared = prepare_dimension(dim, join)
    hashed, unmatched = left_join(batch, prepared, join)
    assert all(t is None for t in prepared._dense.values())  # the hashed fold really ran
    assert flat.column("v").to_pylist() == hashed.column("v").to_pylist() == want
    assert unmatched.tolist() == [w is None for w in want]


@pytest.mark.parametrize("int_type", [pa.int64(), pa.int8(), pa.int32(), pa.uint32(), pa.uint64()])
def test_integer_count_keys_match_as_their_text(int_type):
    """Count keys are matched as text; an integer key column is matched without spelling it,
    through the count's texts that are an integer's canonical spelling. Non-canonical texts
    ("007", "+5", "-0") never match an integer, extreme values fall back to the text."""
    from rayline.config import CountFeature
    from rayline.features.lookups import count_columns, count_join

    texts = ["0", "5", "7", "007", "+5", "-0", "-3", " 9", "1e3", "100", "99999999999999999",
             "999999999999999999", "1000000000000000000", "9223372036854775807", "-9223372036854775808"]
    feature = CountFeature(name="n", by=["k", "h"])
    dim = pa.table({"k": texts * 2, "h": ["1"] * len(texts) + ["x"] * len(texts), "n": list(range(2 * len(texts)))})
    counts = {"n": prepare_dimension(dim, count_join(feature))}
    values = [-3, -1, 0, 5, 7, 3, 9, 100, None, 99999999999999999, 999999999999999999]
    values = [v for v in values if v is None or _fits(v, int_type)]
    big = {pa.int64(): [10**18, 2**63 - 1, -2**63], pa.uint64(): [10**18, 2**64 - 1]}.get(int_type, [])
    for probe_values in (values, values + big):
        keys = pa.table({"k": pa.array(probe_values * 300, int_type), "h": pa.array([1] * (len(probe_values) * 300))})
        as_int = count_columns(keys, counts, [feature])
        as_text = count_columns(pa.table({"k": pc_cast_text(keys.column("k")), "h": pc_cast_text(keys.column("h"))}),
                                counts, [feature])
        assert as_int[1][0].to_pylist() == as_text[1][0].to_pylist()
        assert as_int[2]["n"].tolist() == as_text[2]["n"].tolist()
        assert len(set(as_int[1][0].to_pylist())) > 3  # some keys matched
    if int_type != pa.uint64():
        assert counts["n"]._ints[0] is not None  # the integer view was used


def _fits(v: int, t: pa.DataType) -> bool:
    lo, hi = (0, 2**t.bit_width - 1) if pa.types.is_unsigned_integer(t) else (-2**(t.bit_width - 1), 2**(t.bit_width - 1) - 1)
    return lo <= v <= hi


def pc_cast_text(col):
    return pc.cast(col, pa.string())
