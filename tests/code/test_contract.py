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
