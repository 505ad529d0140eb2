"""Every validation rule, on its own, decides which rows are quarantined and says why."""

import json

import pyarrow as pa

from rayline.config import ColumnRule
from rayline.data.validate import Failures, apply_rules, duplicate_mask


def _run(table, rules):
    f = Failures(table.num_rows)
    typed = apply_rules(table, {k: ColumnRule(**v) for k, v in rules.items()}, f)
    return typed, f


def test_type_rule_names_the_offending_value():
    t = pa.table({"x": ["1", "2.5", "oops"], "__rl_source_file": ["a.csv"] * 3})
    typed, f = _run(t, {"x": {"type": "float"}})
    assert f.bad.tolist() == [False, False, True]
    q = f.quarantine(t, "trips", "__rl_source_file").to_pylist()[0]
    assert (q["rule"], q["column"], q["value"], q["source_file"], q["table"]) == ("type", "x", "oops", "a.csv", "trips")
    assert json.loads(q["row"]) == {"x": "oops"}
    assert typed.column("x").type == pa.float64()


def test_not_null_rule_does_not_double_count_type_errors():
    t = pa.table({"x": ["1", None, "bad"]})
    _, f = _run(t, {"x": {"type": "int", "nullable": False}})
    assert f.rule.tolist() == [None, "not_null", "type"]


def test_range_rule_both_bounds():
    t = pa.table({"x": [-1.0, 0.0, 10.0, 11.0, None]})
    _, f = _run(t, {"x": {"min": 0, "max": 10}})
    assert f.rule.tolist() == ["range", None, None, "range", None]


def test_allowed_rule_on_strings_and_numbers():
    t = pa.table({"c": ["UA", "XX", None], "n": [1, 2, 3]})
    _, f = _run(t, {"c": {"allowed": ["UA"]}, "n": {"type": "string", "allowed": ["1", "2"]}})
    assert f.rule.tolist() == [None, "allowed", "allowed"]
    assert f.column.tolist() == [None, "c", "n"]


def test_all_failures_of_a_row_are_kept():
    t = pa.table({"a": ["x"], "b": [99]})
    _, f = _run(t, {"a": {"type": "float"}, "b": {"max": 10}})
    q = f.quarantine(t, "t", None).to_pylist()[0]
    assert q["rule"] == "type" and q["failures"] == "type:a=x; range:b=99"


def test_a_missing_column_is_all_null():
    t = pa.table({"a": [1, 2]})
    typed, f = _run(t, {"b": {"type": "float", "nullable": False}})
    assert f.rule.tolist() == ["not_null", "not_null"] and typed.column("b").null_count == 2


def test_timestamp_range_in_unix_seconds():
    t = pa.table({"ts": ["2013-01-01T00:00:00Z", "2030-01-01T00:00:00Z"]})
    _, f = _run(t, {"ts": {"type": "timestamp", "max": 1.6e9}})
    assert f.rule.tolist() == [None, "range"]


def test_duplicate_keys_flag_every_copy():
    t = pa.table({"k": ["a", "b", "a", "c", "a"], "j": [1, 1, 1, 1, 2]})
    assert duplicate_mask(t, ["k"]).tolist() == [True, False, True, False, True]
    assert duplicate_mask(t, ["k", "j"]).tolist() == [True, False, True, False, False]
