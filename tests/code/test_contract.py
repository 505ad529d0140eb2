"""The row contract: what online requests and batch rows are judged by, value by value."""

import json

import numpy as np
import pyarrow as pa
import pytest

from rayline.features.contract import MAX_TEXT, Contract
from rayline.features.spec import CategoricalSpec, Constraint, FeatureSpec, LabelSpec, NumericSpec, TimeSpec


@pytest.fixture
def contract():
    spec = FeatureSpec(
        numeric=[NumericSpec(name="distance", mean=500, std=100, impute=500, min=10, max=4000, null_fraction=0,
                             missing_indicator=True),
                 NumericSpec(name="temp", mean=50, std=10, impute=50, min=0, max=100, null_fraction=0.1,
                             missing_indicator=True)],
        categorical=[CategoricalSpec(name="dest", vocabulary=["IAH", "ORD"], frequencies=[0.5, 0.5])],
        time=[TimeSpec(name="ts", parts=["hour"])],
        label=LabelSpec(column="y", task="binary"),
        constraints={"distance": Constraint(required=True, min=0, max=6000)})
    return Contract(spec)


def _verdicts(contract, records):
    table, f = contract.check_records(records)
    return [None if not f.bad[i] else f.first(i)[:2] for i in range(len(records))], table


@pytest.mark.parametrize("value,verdict", [
    (2 ** 64, ("range", "distance")),          # a huge integer: a number, outside the range
    (10 ** 400, ("type", "distance")),         # beyond float64
    (int(1.7976931348623157e308) + 1, ("type", "distance")),  # float() would round it into range
    (1.7e308, ("range", "distance")),
    (float("inf"), ("type", "distance")),      # json.loads("1e400") gives inf
    ("12", ("type", "distance")),              # no numbers in strings online: JSON has numbers
    (True, ("type", "distance")),
    ({"a": [1]}, ("type", "distance")),
    (None, ("not_null", "distance")),
    (12, None), (12.5, None), (2 ** 53 + 1, ("range", "distance")),
])
def test_numbers(contract, value, verdict):
    got, _ = _verdicts(contract, [{"distance": value}])
    assert got == [verdict]


@pytest.mark.parametrize("value,verdict", [
    ("ZZZ", None), (7, None), (7.0, None), (2 ** 63 - 1, None), (-(2 ** 63), None),
    (1e20, ("type", "dest")), (1.5, ("type", "dest")), (2 ** 64, ("type", "dest")), (True, ("type", "dest")),
    ("\ud800", ("type", "dest")), ("x" * (MAX_TEXT + 1), ("too_long", "dest")), ([], ("type", "dest")),
])
def test_categories(contract, value, verdict):
    got, _ = _verdicts(contract, [{"distance": 1, "dest": value}])
    assert got == [verdict]


@pytest.mark.parametrize("value,verdict", [
    ("2013-01-01T10:00:00Z", None), ("2013-01-01 10:00:00", None), ("yesterday", ("type", "ts")),
    ("2013-01-01T10:00:00Z" + " " * 30, ("type", "ts")), ("\ud800", ("type", "ts")), (1356994800, ("type", "ts")),
])
def test_times(contract, value, verdict):
    got, _ = _verdicts(contract, [{"distance": 1, "ts": value}])
    assert got == [verdict]


def test_requests_of_any_value_types_give_one_schema(contract):
    """Isolation: whatever a request sends, its typed table can join any other in a batch."""
    a = contract.check_records([{"distance": 1, "dest": "ZZZ"}])[0]
    b = contract.check_records([{"distance": 2 ** 60, "dest": 7}])[0]
    c = contract.check_records([{"distance": 3.5}])[0]
    assert a.schema == b.schema == c.schema
    assert pa.concat_tables([a, b, c]).column("dest").to_pylist() == ["ZZZ", "7", None]


def test_the_same_rows_get_the_same_verdicts_as_json_and_as_a_table(contract):
    rows = [{"distance": 100.0, "temp": 20.0, "dest": "IAH", "ts": "2013-01-01T10:00:00Z"},
            {"distance": -5.0, "temp": 20.0, "dest": "IAH", "ts": "2013-01-01T10:00:00Z"},
            {"distance": None, "temp": 20.0, "dest": "ORD", "ts": None},
            {"distance": 7000.0, "temp": None, "dest": "x" * 300, "ts": "2013-01-02"},
            {"distance": 1.0, "temp": 5.0, "dest": "ZZZ", "ts": "not a time"},
            {"distance": 2.0, "temp": 1e308, "dest": None, "ts": None}]
    as_json, t1 = _verdicts(contract, json.loads(json.dumps(rows)))
    typed, f = contract.check_table(pa.Table.from_pylist(rows))
    as_table = [None if not f.bad[i] else f.first(i)[:2] for i in range(len(rows))]
    assert as_json == as_table == [None, ("range", "distance"), ("not_null", "distance"), ("range", "distance"),
                                   ("type", "ts"), None]
    ok = ~f.bad
    np.testing.assert_array_equal(t1.filter(pa.array(ok)).to_pylist(), typed.filter(pa.array(ok)).to_pylist())


def test_messages_name_the_field_and_never_recurse(contract):
    deep = json.loads("[" * 900 + "]" * 900)
    _, f = contract.check_records([{"distance": deep}])
    rule, col, val = f.first(0)
    assert contract.message(rule, col, val) == "distance must be a finite number (float64 range), got an array of 1"
    _, f = contract.check_records([{"distance": 1, "dest": "\ud800" * 500}])
    assert "\\ud800" in contract.message(*f.first(0)) and len(contract.message(*f.first(0))) < 400


def test_a_few_rows_and_many_rows_get_the_same_verdicts_and_columns():
    """Small batches take Python/numpy shortcuts (one-row requests pay per kernel call, not per
    value): row by row and as one large table, every verdict and typed value is the same."""
    from rayline.features.coerce import SMALL_BATCH

    spec = FeatureSpec(
        numeric=[NumericSpec(name="distance", mean=500, std=100, impute=500, min=10, max=4000, null_fraction=0,
                             missing_indicator=True),
                 NumericSpec(name="temp", mean=50, std=10, impute=50, min=0, max=100, null_fraction=0.1,
                             missing_indicator=True)],
        categorical=[CategoricalSpec(name="dest", vocabulary=["IAH", "ORD"], frequencies=[0.5, 0.5]),
                     CategoricalSpec(name="carrier", vocabulary=["UA", "AA"], frequencies=[0.5, 0.5])],
        time=[TimeSpec(name="ts", parts=["hour"])],
        label=LabelSpec(column="y", task="binary"),
        constraints={"distance": Constraint(required=True, min=0, max=6000),
                     "temp": Constraint(min=-40, max=130), "carrier": Constraint(required=True, allowed=["UA", "AA"])})
    contract = Contract(spec)
    values = {"distance": [1.0, -1.0, 7000.0, None, float("nan"), float("inf"), -float("inf"), 1.7e308, 0.0],
              "temp": [20.0, None, 200.0, float("nan"), -50.0, float("inf")],
              "dest": ["IAH", "ORD", "ZZZ", None, "x" * (MAX_TEXT + 1), "é" * MAX_TEXT],
              "carrier": ["UA", "AA", "DL", None, "ua"],
              "ts": ["2013-01-01T10:00:00Z", None, "not a time"]}
    rng = np.random.default_rng(3)
    rows = [{k: v[rng.integers(len(v))] for k, v in values.items()} for _ in range(4 * SMALL_BATCH)]
    table = pa.Table.from_pylist(rows, schema=pa.schema([("distance", pa.float64()), ("temp", pa.float64()),
                                                         ("dest", pa.string()), ("carrier", pa.string()),
                                                         ("ts", pa.string())]))

    def judged(t):
        typed, f = contract.check_table(t)
        return [f.first(i) if f.bad[i] else None for i in range(t.num_rows)], typed

    whole, typed = judged(table)
    one_by_one = [judged(table.slice(i, 1)) for i in range(table.num_rows)]
    assert whole == [v[0] for v, _ in one_by_one]
    assert {r for r in whole if r} >= {("type", "distance", "inf"), ("not_null", "distance", None),
                                       ("range", "distance", "-1.0"), ("range", "temp", "200.0"),
                                       ("allowed", "carrier", "DL"), ("not_null", "carrier", None)}
    assert typed.to_pylist() == [t.to_pylist()[0] for _, t in one_by_one]
    ok = pa.array([r is None for r in whole])
    good = typed.filter(ok)
    batch = spec.transform(good)
    for i in range(good.num_rows):
        one = spec.transform(good.slice(i, 1))
        np.testing.assert_array_equal(one.num[0], batch.num[i])
        np.testing.assert_array_equal(one.cat[0], batch.cat[i])


def test_a_field_left_out_is_typed_as_one_sent_as_null(contract):
    """Fields no record names are not built value by value: the rules type them as all-null
    (and a required one is missing), exactly as when every record sends null for them."""
    left_out, f1 = contract.check_records([{"dest": "IAH"}, {"temp": 3.0}])
    as_nulls, f2 = contract.check_records([{"distance": None, "temp": None, "dest": "IAH", "ts": None},
                                           {"distance": None, "temp": 3.0, "dest": None, "ts": None}])
    assert left_out.schema == as_nulls.schema and left_out.to_pylist() == as_nulls.to_pylist()
    assert [f1.first(i)[:2] for i in range(2)] == [f2.first(i)[:2] for i in range(2)] == [("not_null", "distance")] * 2
    nothing, f3 = contract.check_records([{}, {}, {}])
    assert nothing.num_rows == 3 and nothing.schema == as_nulls.schema and f3.bad.all()
