"""What the ingest advises when most of a column fails a rule, and when it stops before training."""

from collections import Counter

import pytest

from rayline.config import config_from_dict
from rayline.data.advice import check_splits, mostly_rejected, suggest_format
from rayline.errors import InputError
from tests.conftest import small_config


@pytest.mark.parametrize("values,fmt", [
    (["2012/01/01", "2012/12/31"], "%Y/%m/%d"), (["12/31/2012"], "%m/%d/%Y"), (["31.12.2012"], "%d.%m.%Y"),
    (["20121231"], "%Y%m%d"), (["31 Dec 2012"], "%d %b %Y"), (["soon"], None), ([], None),
])
def test_suggest_format(values, fmt):
    assert suggest_format(values) == fmt


def _cfg(tmp_path, **split):
    raw = small_config(tmp_path, tmp_path / "root")
    raw["data"]["split"].update(split)
    return config_from_dict(raw)


def test_only_rules_that_reject_most_rows_are_called_out(tmp_path):
    cfg = _cfg(tmp_path)
    by_rule = Counter({"trips.distance:type": 90, "trips.station:allowed": 10, "stations.code:not_null": 2})
    lines = mostly_rejected(cfg, by_rule, {"trips.distance:type": ["1 5", "2-25"]}, {"trips": 100, "stations": 3})
    assert lines == ["90 of 100 rows of 'trips' failed distance:type (e.g. '1 5', '2-25': not float values; "
                     "change `type:` in data.sources.trips.columns.distance or fix the data)",
                     "2 of 3 rows of 'stations' failed code:not_null (e.g. : check the not_null rule of "
                     "data.sources.stations.columns.code)"]


def test_a_split_the_config_leaves_empty_on_purpose_is_not_an_error(tmp_path):
    cfg = _cfg(tmp_path, valid_fraction=0.0)
    check_splits(cfg, 10, Counter({"train": 8, "test": 2}), {"train": Counter({"positive": 3, "negative": 5})},
                 Counter(), {})
    with pytest.raises(InputError, match=r"split 'test' has 0 rows \(data.split.min_rows: 1\)"):
        check_splits(cfg, 10, Counter({"train": 10}), {"train": Counter({"positive": 3, "negative": 7})}, Counter(), {})


def test_a_text_label_is_told_which_label_setting_reads_it(tmp_path):
    """A binary label of 'yes'/'no' fails the label's number rule on every row: the advice is
    data.label.positive_if with one of its values, not a column type to change."""
    raw = small_config(tmp_path, tmp_path / "root")
    raw["data"]["label"] = {"column": "churned"}
    cfg = config_from_dict(raw)
    lines = mostly_rejected(cfg, Counter({"trips.churned:type": 100}), {"trips.churned:type": ["yes", "no"]}, {"trips": 100})
    assert lines == ["100 of 100 rows of 'trips' failed churned:type (e.g. 'yes', 'no': a binary label without "
                     "data.label.positive_if must be 0/1 or true/false; for these declare data.label.positive_if: "
                     "{'==': 'yes'} (the positive class))"]
    raw["task"], raw["data"]["label"] = "regression", {"column": "price"}
    lines = mostly_rejected(config_from_dict(raw), Counter({"trips.price:type": 100}),
                            {"trips.price:type": ["cheap"]}, {"trips": 100})
    assert "a regression label must be a number; for named classes use task: multiclass" in lines[0]


@pytest.mark.parametrize("values,unit", [
    (["1356994800", "1700000000"], "epoch_s"), (["1356994800000"], "epoch_ms"), (["1356994800000000"], "epoch_us"),
    (["20121231"], None), (["12", "1356994800"], None), (["soon"], None),
])
def test_suggest_epoch(values, unit):
    from rayline.data.advice import suggest_epoch

    assert suggest_epoch(values) == unit


def test_a_categorical_feature_with_mostly_distinct_values_is_called_out():
    """A customer id listed as a category: every value seen once, nothing the model can use."""
    from types import SimpleNamespace

    from rayline.data.advice import identifier_like

    spec = SimpleNamespace(categorical=[SimpleNamespace(name="customer_id", vocabulary=[str(i) for i in range(390)]),
                                        SimpleNamespace(name="station", vocabulary=["A", "B", "C"])])
    (line,) = identifier_like(spec, 400)
    assert line.startswith("categorical feature 'customer_id' has 390 distinct values in 400 training rows")
    assert "min_frequency" in line and "identifier" in line
    assert identifier_like(spec, 150) == []  # too few rows to tell


def test_numbers_with_a_decimal_comma_are_told_the_decimal_setting(tmp_path):
    from rayline.data.advice import rule_advice

    cfg = config_from_dict(small_config(tmp_path, tmp_path))
    line = rule_advice(cfg, "trips.distance:type", ["412,5", "98,1", "7,0"])
    assert "numbers with a decimal comma; declare `decimal: \",\"` in data.sources.trips" in line
    assert "decimal comma" not in rule_advice(cfg, "trips.distance:type", ["far", "98,1"])
